#!/usr/bin/env bash
# One-shot GPU check for a machine with one CUDA GPU available for minutes: finishes in under 9 minutes
# and writes everything it measures under $OUT (default ./gpu-check):
#   env.txt      GPU, driver, torch and CUDA versions, and which contrastive-loss kernel CUDA gets
#   pytest.log   the device-sensitive tests on cuda (kNN graph, propagation, fused and chunked
#   junit.xml    L_C, one MICRO and one LATTICE batch, both with enable_amp), `pytest -m cuda`
#   models.csv   MICRO and LATTICE in float32 and with enable_amp (float16 autocast), LightGCN and
#                MICRO with batch anchors, at Clothing scale (rows are kept as each ends): timed training
#   bench.log    batches, one full-ranking evaluation, torch.cuda.max_memory_allocated (peak_cuda_gb)
#   summary.txt  what ran, what failed, the models table
# It installs nothing beyond the README's set-up (`make install`, run only if .venv is absent).
# The interaction graph is Clothing's from ../shared/data when present, else random interactions of
# Clothing's sizes (the time depends on the sizes only); the features are generated either way.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || make install > "$OUT/install.log" 2>&1 || { echo "make install failed: $OUT/install.log"; exit 1; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
status=0
note() { echo "$*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"

{ nvidia-smi 2>&1 | head -15
  "$PY" - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    from recbole_micro.model import losses
    print("device", torch.cuda.get_device_name(0))
    attend = losses.fused_attention_for(torch.zeros(2, 2, device="cuda"))
    print("contrastive-loss kernel on cuda:", "fused" if attend is not None else "chunked", losses._checked)
PY
} > "$OUT/env.txt" 2>&1
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    note "no CUDA GPU visible to $PY: nothing to check (env.txt says what torch sees)"; exit 1
fi

# 1. the device-sensitive tests on cuda (about 1 min)
timeout 150 "$PY" -m pytest -q -m cuda -rs tests/test_devices.py --junitxml="$OUT/junit.xml" > "$OUT/pytest.log" 2>&1
rc=$?; note "pytest -m cuda: exit $rc ($(tail -1 "$OUT/pytest.log"))"; [ $rc -eq 0 ] || status=1

# 2. Clothing scale on the GPU: a few timed batches and one full-ranking evaluation per model (about 6 min)
if [ -d ../shared/data/amazon-mmrec ]; then scale=clothing; else scale=clothing-synthetic; fi
timeout 380 "$PY" benchmarks/scale.py --scales "$scale" --batches 3 \
    --models MICRO "MICRO amp" "LATTICE amp" LATTICE LightGCN "MICRO batch" \
    --work "${TMPDIR:-/tmp}/recbole_micro_gpu" --out "$OUT" > "$OUT/bench.log" 2>&1
rc=$?; note "benchmarks/scale.py --scales $scale --batches 3: exit $rc"; [ $rc -eq 0 ] || status=1
[ -f "$OUT/models.csv" ] && cat "$OUT/models.csv" >> "$OUT/summary.txt"
exit $status
