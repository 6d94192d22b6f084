"""Pair float32 and mixed-precision runs per seed: ``python benchmarks/amp_report.py benchmarks/results/amp``.

Reads ``<out>/<dataset>/runs.jsonl`` (written by benchmarks/amp_accuracy.sh) and prints, per
dataset and metric, each seed's float32 and amp test score, their difference, the mean
difference and the float32 seed spread (standard deviation over seeds), as a Markdown table.
"""

import statistics
import sys
from pathlib import Path

from recbole_micro.experiments.records import read_runs

METRICS = ("test_recall@20", "test_ndcg@20")
AMP = ",enable_amp=True"


def paired_rows(runs):
    """``{(fp32 row, metric): [(seed, fp32, amp), ...]}`` for every seed both precisions finished."""
    by_key = {(r["model"], r["seed"]): r for r in runs}
    pairs = {}
    for (model, seed), amp in sorted(by_key.items()):
        if not model.endswith(AMP) or (model[: -len(AMP)], seed) not in by_key:
            continue
        fp32 = by_key[model[: -len(AMP)], seed]
        for metric in METRICS:
            pairs.setdefault((fp32["model"], metric), []).append((seed, fp32[metric], amp[metric]))
    return pairs


def report(out_dir):
    lines = [
        "| Dataset | Row | Metric | per seed: fp32 / amp (amp − fp32) | mean amp − fp32 | fp32 seed spread (sd) |",
        "|---|---|---|---|---:|---:|",
    ]
    for folder in sorted(p for p in Path(out_dir).iterdir() if (p / "runs.jsonl").is_file()):
        runs = read_runs(folder)
        for (row, metric), triples in paired_rows(runs).items():
            cells = ", ".join(f"{s}: {f:.4f} / {a:.4f} ({a - f:+.4f})" for s, f, a in triples)
            diff = statistics.mean(a - f for _, f, a in triples)
            spread = statistics.stdev(f for _, f, _ in triples) if len(triples) > 1 else float("nan")
            lines.append(
                f"| {folder.name} | {row} | {metric[5:]} | {cells} | {diff:+.4f} | {spread:.4f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/amp"))
