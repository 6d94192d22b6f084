#!/usr/bin/env bash
# Why GRCN peaks early and low: learning rate, patience, routing and pruning,
# one factor at a time, on Amazon Scientific, seed 2020. Rows:
#   GRCN                         ours as shipped: lr 1e-3, patience 10, num_routing 3, soft pruning
#   lr 1e-4, patience 20         the authors' learning rate and patience
#   ... + num_routing 0          what the authors' (and MMRec's) code computes: routing never reaches users
#   ... + pruning hard           MMRec's GRCN (ReLU on the merged edge weights)
#   lr 5e-4, patience 20         between the two
#   lr 1e-3, patience 20         ours with the longer patience
# Resumable (the comparison skips finished runs). Results in benchmarks/results/grcn-study/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
test -f dataset/scientific/scientific.yaml || "$PY" -m dataset_prep.scientific --out dataset
"$PY" run_recbole_micro.py -d scientific --show_progress=False --seeds 2020 --proposed GRCN \
    --out benchmarks/results/grcn-study --compare GRCN \
    "GRCN:learning_rate=1e-4,stopping_step=20" \
    "GRCN:learning_rate=1e-4,stopping_step=20,num_routing=0" \
    "GRCN:learning_rate=1e-4,stopping_step=20,num_routing=0,pruning=hard" \
    "GRCN:learning_rate=5e-4,stopping_step=20" \
    "GRCN:learning_rate=1e-3,stopping_step=20"
