#!/usr/bin/env bash
# The fast-MICRO targets in one resumable run (docs/performance.md, "Fused contrastive loss"):
# LightGCN, MICRO exact and MICRO with batch anchors, each with the fused and with the chunked
# contrastive-loss kernel, at the Scientific (small, sparse), Baby, Sports and Clothing scales.
# Rows land in benchmarks/results/fast-micro/models.csv as they finish; a re-run skips them.
# About 30 min on the project's 2-core CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT_DIR:-benchmarks/results/fast-micro}
run() { "$PY" benchmarks/scale.py --out "$OUT" --skip-done "$@"; }
# full epochs where they take minutes; the first B batches, extrapolated, where an epoch takes hours
run --scales scientific baby --models LightGCN "MICRO batch" "MICRO batch chunked"
run --scales scientific baby --models MICRO "MICRO chunked" --batches 10
run --scales sports clothing --models LightGCN
run --scales sports clothing --models "MICRO batch" "MICRO batch chunked" --batches 20
run --scales sports clothing --models MICRO "MICRO chunked" --batches 3
