#!/usr/bin/env bash
# Accuracy of mixed precision: MICRO (paper mode, exact L_C) in float32 and with enable_amp=True
# (CPU autocast to bfloat16) at its tuned point, seeds 2020, 2021, 2022, on Amazon Scientific
# (learning_rate 1e-3, reg_weight 1e-4: the point the tuned Table 4 chose on validation) and on
# ml-100k (learning_rate 1e-3: the best MICRO row of the ml-100k table). The float32 runs are
# the published tables' own runs (benchmarks/results/scientific, benchmarks/results/ml-100k),
# adopted rather than run again: same spec, same seed, same dataset is the same run. Then
# benchmarks/amp_report.py pairs the two precisions per seed -> benchmarks/results/amp/accuracy.md.
#
# Resumable like every comparison (a re-run skips finished runs). Two workers share the runs:
#   for w in 1 2; do OMP_NUM_THREADS=1 nohup benchmarks/amp_accuracy.sh >> benchmarks/results/amp/progress-$w.log 2>&1 & done
# DEADLINE=HH:MM starts only runs expected to end by then.
# Needs dataset/scientific (python -m dataset_prep.scientific --out dataset, 2.5 min).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT_DIR:-benchmarks/results/amp}
mkdir -p dataset "$OUT"
flock dataset/.scientific.lock bash -c "test -f dataset/scientific/scientific.yaml || $PY -m dataset_prep.scientific --out dataset"

run() {  # dataset, float32 row (adopted from the published table), table folder
    local data=$1 row=$2 table=$3
    "$PY" -c "
from recbole_micro.experiments.records import adopt_runs
adopt_runs('$table', '$OUT/$data', ['$row'])"
    "$PY" run_recbole_micro.py -d "$data" --show_progress=False --seeds 2020 2021 2022 --proposed "$row" \
        --out "$OUT/$data" ${DEADLINE:+--deadline "$DEADLINE"} --compare "$row" "$row,enable_amp=True"
}
run ml-100k "MICRO:learning_rate=0.001" benchmarks/results/ml-100k
run scientific "MICRO:learning_rate=0.001,reg_weight=0.0001" benchmarks/results/scientific
"$PY" benchmarks/amp_report.py "$OUT" > "$OUT/accuracy.md"
