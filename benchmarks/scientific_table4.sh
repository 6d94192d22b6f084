#!/usr/bin/env bash
# Table 4 on Amazon Industrial & Scientific, fairly tuned: every row tuned on
# validation over learning_rate {5e-4, 1e-3, 5e-3} x reg_weight {1e-5, 1e-4, 1e-3} (seed 2020,
# one full run per point), then its chosen point on seeds 2020, 2021, 2022. Resumable: a re-run
# skips every finished run (tuning.jsonl, runs.jsonl) and resumes an interrupted comparison run
# from its last epoch. Rows are ordered cheap first. Results and logs in
# benchmarks/results/scientific/ (table.md, seeds.md, tuning.md, chart.png); then the Table 5
# ablations at MICRO's chosen point in benchmarks/results/scientific-ablations/.
#
# Needs dataset/scientific (python -m dataset_prep.scientific, 2.5 min). On the project's 2-core
# CPU this is many hours (about 130 full runs; MICRO with the exact L_C is ~48 s an epoch on one
# thread here): start it in the background and let it resume after any stop. Started twice, the
# two workers share the runs (claims in the results folder), one core each:
#   for w in 1 2; do OMP_NUM_THREADS=1 nohup benchmarks/scientific_table4.sh >> benchmarks/results/scientific/progress-$w.log 2>&1 & done
# DEADLINE=HH:MM (before the machine goes) starts only runs expected to end by then (each at its
# row's mean time so far), and then stops: a run cut off with the machine is lost, since saved/
# (the resume states) does not outlive it.
# Each tuning run is also its row's seed-2020 run, and the ablation table adopts the full MICRO
# row's runs from the main table, so neither runs twice. Every MICRO and LATTICE run is diagnosed
# as it ends (graph quality, attention, L_C and L_S: <out>/diagnostics/).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT_DIR:-benchmarks/results/scientific}
mkdir -p dataset
# two workers started together prepare the dataset once: the second waits for the first
flock dataset/.scientific.lock bash -c "test -f dataset/scientific/scientific.yaml || $PY -m dataset_prep.scientific --out dataset"
"$PY" run_recbole_micro.py -d scientific --show_progress=False \
    --compare ItemKNN BPR LightGCN VBPR NGCF SGL LATTICE MMGCN GRCN FREEDOM BM3 MGCN LGMRec MICRO MICRO:cl_anchors=batch \
    --tune-each --tune-grid "learning_rate=5e-4,1e-3,5e-3 reg_weight=1e-5,1e-4,1e-3" \
    --proposed MICRO --seeds 2020 2021 2022 --out "$OUT" --diagnose ${DEADLINE:+--deadline "$DEADLINE"}

# Table 5: the MICRO ablations at MICRO's tuned point (from chosen.json), same seeds, resumable.
POINT=$("$PY" -c "
import json, sys
chosen = json.load(open('$OUT/chosen.json'))['MICRO']['point']
print(','.join(f'{k}={v}' for k, v in chosen.items()))")
"$PY" -c "
from recbole_micro.experiments.records import adopt_runs
adopt_runs('$OUT', '$OUT-ablations', ['MICRO:$POINT'])"
"$PY" run_recbole_micro.py -d scientific --show_progress=False --seeds 2020 2021 2022 --proposed MICRO \
    --out "$OUT-ablations" --diagnose ${DEADLINE:+--deadline "$DEADLINE"} --compare "MICRO:$POINT" \
    "MICRO:$POINT,use_contrastive=False,use_specific=False" "MICRO:$POINT,use_specific=False" \
    "MICRO:$POINT,use_user_pref=False" "MICRO:$POINT,item_repr=graph_feats" "MICRO:$POINT,item_repr=feats"

# The runs' early stopping, graph lifts, modality weights and MICRO's auxiliary losses, for the reading.
"$PY" benchmarks/reading.py "$OUT" > /dev/null
"$PY" benchmarks/reading.py "$OUT-ablations" > /dev/null
