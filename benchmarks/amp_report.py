"""Pair float32 and mixed-precision runs per seed: ``python benchmarks/amp_report.py benchmarks/results/amp``.

Reads ``<out>/<dataset>/runs.jsonl`` (written by benchmarks/amp_accuracy.sh) and prints, per
dataset and metric, each seed's float32 and amp test score, their difference, the mean
difference and the float32 seed spread (standard deviation over seeds), as a Markdown table;
then, per seed, the best epoch of each precision and how far apart their validation curves are
over the epochs both ran (from the runs' logs).
"""

import re
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


def valid_curve(folder, run):
    """The validation score of every evaluated epoch, in order, from the run's log."""
    log = Path(folder) / run.get("log", "")
    return [float(v) for v in re.findall(r"valid_score: ([0-9.]+)", log.read_text())] if log.is_file() else []


def best_epoch(folder, run):
    log = Path(folder) / run.get("log", "")
    found = re.findall(r"best eval result in epoch (\d+)", log.read_text()) if log.is_file() else []
    return int(found[-1]) if found else None


def curves(folder, runs):
    """Per paired seed: best epochs and the mean and largest |valid amp - valid fp32| over the common epochs."""
    by_key = {(r["model"], r["seed"]): r for r in runs}
    lines = []
    for (model, seed), amp in sorted(by_key.items()):
        fp32 = by_key.get((model[: -len(AMP)], seed)) if model.endswith(AMP) else None
        if fp32 is None:
            continue
        a, f = valid_curve(folder, amp), valid_curve(folder, fp32)
        gaps = [abs(x - y) for x, y in zip(a, f)]
        gap = f"{statistics.mean(gaps):.4f} / {max(gaps):.4f} over {len(gaps)}" if gaps else "no logs"
        lines.append(f"| {Path(folder).name} | {seed} | {best_epoch(folder, fp32)} / {best_epoch(folder, amp)} | "
                     f"{max(f, default=float('nan')):.4f} / {max(a, default=float('nan')):.4f} | {gap} |")
    return lines


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
    lines += ["", "| Dataset | Seed | best epoch fp32 / amp | best valid Recall@20 fp32 / amp | "
                  "mean / largest \\|valid amp − valid fp32\\| over the epochs both ran |", "|---|---|---|---|---|"]
    for folder in sorted(p for p in Path(out_dir).iterdir() if (p / "runs.jsonl").is_file()):
        lines += curves(folder, read_runs(folder))
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/amp"))
