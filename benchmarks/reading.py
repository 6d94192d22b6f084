"""What a finished comparison's runs say about why the rows rank as they do.

Reads a comparison folder (``runs.jsonl``, ``logs/``, and ``diagnostics/`` from ``--diagnose``)
and writes ``reading.md`` there, for the rows given (default: every row of ``table.md``'s runs):

1. **Early stopping**, per row over its seeds: the best epoch and the last epoch of each run.
2. **The graphs and the fusion**, per MICRO and LATTICE run: each modality's lift (how much more
   often an item and its graph neighbour share a training user than random pairs) for the raw,
   learned and mixed graphs; LATTICE's modality weights; MICRO's mean attention per modality.
3. **MICRO's auxiliary losses**: beta_C L_C and beta_S L_S (train_loss3 and 4, summed over an
   epoch's batches) at the first and the best epoch, against the BPR loss (train_loss1) there.

Example:
    python benchmarks/reading.py benchmarks/results/scientific
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recbole_micro.experiments.diagnostics import losses_from_log
from recbole_micro.experiments.records import read_runs, run_name


def early_stopping(runs, folder):
    lines = ["| row | seed | best epoch | last epoch |", "|---|---:|---:|---:|"]
    for run in runs:
        if run.get("log") and (folder / run["log"]).is_file():
            parsed = losses_from_log(folder / run["log"])
            last = parsed["per_epoch"][-1]["epoch"] if parsed["per_epoch"] else None
            lines.append(f"| {run['model']} | {run['seed']} | {parsed['best_epoch']} | {last} |")
    return lines


def graphs_and_fusion(runs, folder):
    lines = ["| row | seed | modality | lift raw | lift learned | lift mixed | weight |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for run in runs:
        path = folder / "diagnostics" / f"{run_name(run['model'], run['seed'])}.json"
        if not path.is_file():
            continue
        found = json.loads(path.read_text())
        trained = found.get("trained", {})
        weights = trained.get("modality weights (LATTICE Eq. 6)") or {
            m: a["mean"] for m, a in trained.get("attention (Eq. 7)", {}).items()}
        for m, raw in found.get("raw graphs", {}).items():
            learned = trained.get(f"{m} learned graph (transformed features)", {}).get("lift")
            mixed = trained.get(f"{m} mixed graph A^m (Eq. 5)", {}).get("lift")
            lines.append(f"| {run['model']} | {run['seed']} | {m} | {raw['lift']} | {learned} | {mixed} | "
                         f"{weights.get(m, '')} |")
    return lines


def auxiliary_losses(runs, folder):
    lines = ["| row | seed | epoch | BPR | beta_C L_C | beta_S L_S |", "|---|---:|---:|---:|---:|---:|"]
    for run in runs:
        if not run["model"].startswith("MICRO") or not run.get("log") or not (folder / run["log"]).is_file():
            continue
        parsed = losses_from_log(folder / run["log"])
        epochs = {e["epoch"]: e for e in parsed["per_epoch"] if "loss1" in e}
        for epoch in dict.fromkeys([min(epochs, default=None), parsed["best_epoch"]]):
            if epoch in epochs:
                e = epochs[epoch]
                lines.append(f"| {run['model']} | {run['seed']} | {epoch} | {e['loss1']} | {e.get('loss3', '')} | "
                             f"{e.get('loss4', '')} |")
    return lines


def reading(folder, rows=None):
    folder = Path(folder)
    runs = [r for r in read_runs(folder) if rows is None or r["model"] in rows]
    runs.sort(key=lambda r: (r["model"], r["seed"]))
    parts = ["# Reading of the runs", "", "## Early stopping", "", *early_stopping(runs, folder), "",
             "## Graphs and fusion (lift: neighbours share a training user, against random pairs)", "",
             *graphs_and_fusion(runs, folder), "", "## MICRO's auxiliary losses (summed over an epoch's batches)", "",
             *auxiliary_losses(runs, folder), ""]
    return "\n".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a comparison's output folder")
    parser.add_argument("--rows", nargs="*", default=None, help="only these rows (default: all runs)")
    args = parser.parse_args()
    text = reading(args.folder, args.rows)
    (Path(args.folder) / "reading.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
