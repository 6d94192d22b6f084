#!/usr/bin/env bash
# Speed of mixed precision (RecBole's enable_amp, bfloat16 autocast on the CPU) against float32,
# both in one run, on this machine; results in benchmarks/results/amp/:
#   peaks.csv     plain-GEMM float32 and bfloat16 FLOP rates, and the exact fused L_C's (the physical limit)
#   models.csv    full training epochs: MICRO exact on the Baby graph (generated 4096/1024-d features);
#                 LightGCN and MICRO exact and with batch anchors on Amazon Scientific (real features,
#                 dataset/scientific) and on a random graph of 9,300 users, 6,700 items, 60,000
#                 interactions with two 128-d modalities; each model in float32 and with amp
#   make-run-fp32.log, make-run-amp.log   `make run` (MICRO on ml-100k to early stopping) without and with
#                 --enable_amp=True; the last line of each is its wall time
#   machine.txt   the CPU, its bfloat16 support and torch's thread count
# Resumable: finished rows and make-run logs are kept and skipped. Run it on a quiet machine:
#   nohup benchmarks/amp_speed.sh > benchmarks/results/amp/speed-progress.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT_DIR:-benchmarks/results/amp}
mkdir -p "$OUT"
test -f dataset/scientific/scientific.yaml || "$PY" -m dataset_prep.scientific --out dataset
{ lscpu | grep -E "Model name|^CPU\(s\)"
  "$PY" -c "import torch; from recbole_micro.trainer.precision import native_bfloat16
print('native bfloat16:', native_bfloat16(), '| torch', torch.__version__, '| threads', torch.get_num_threads())"
} > "$OUT/machine.txt"

[ -f "$OUT/peaks.csv" ] || "$PY" benchmarks/scale.py --peaks --scales --out "$OUT"
"$PY" benchmarks/scale.py --scales baby --models MICRO "MICRO amp" --out "$OUT" --skip-done
"$PY" benchmarks/scale.py --scales scientific-real sparse-synthetic --out "$OUT" --skip-done \
    --models LightGCN MICRO "MICRO amp" "MICRO batch" "MICRO batch amp"

for precision in amp fp32; do
    log="$OUT/make-run-$precision.log"
    grep -q "^seconds=" "$log" 2>/dev/null && continue
    args=""; [ "$precision" = amp ] && args="--enable_amp=True"
    start=$(date +%s)
    make run RUN_ARGS="$args" > "$log" 2>&1
    echo "seconds=$(( $(date +%s) - start ))" >> "$log"
done
