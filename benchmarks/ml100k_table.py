"""The ml-100k evidence table: LightGCN, VBPR, LATTICE, MICRO and MICRO's ablations over seeds.

Each (variant, seed) is one full RecBole run to early stopping with the YAML defaults, on
MovieLens-100k with its text + knowledge modalities; test metrics are at the best validation
epoch. Rows are appended to a CSV as runs finish, and a re-run skips the (variant, seed)
pairs already there, so the table can be filled over several sessions. Long: about half an
hour per MICRO run on a 2-core CPU.

Example:
    python benchmarks/ml100k_table.py --seeds 2020 2021 2022 --variants LightGCN VBPR LATTICE MICRO
"""
import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {
    "LightGCN": ("LightGCN", {}),
    "VBPR": ("VBPR", {}),
    "LATTICE": ("LATTICE", {}),
    "MICRO": ("MICRO", {}),
    "MICRO w/o fusion": ("MICRO", {"use_contrastive": False, "use_specific": False}),
    "MICRO w/o specific": ("MICRO", {"use_specific": False}),
    "MICRO w/o preference": ("MICRO", {"use_user_pref": False}),
    "MICRO /feats": ("MICRO", {"item_repr": "graph_feats"}),
    "MICRO CF+feats": ("MICRO", {"item_repr": "feats"}),
}
METRICS = ["recall@20", "ndcg@20", "precision@20"]
FIELDS = ["variant", "seed", "seconds"] + [f"valid_{m}" for m in METRICS] + [f"test_{m}" for m in METRICS]


def done_runs(path):
    if not path.is_file():
        return set()
    with open(path, newline="") as f:
        return {(row["variant"], int(row["seed"])) for row in csv.DictReader(f)}


def run_one(variant, seed, data_path):
    from recbole_micro.quick_start import run_recbole_micro

    model, overrides = VARIANTS[variant]
    start = time.time()
    result = run_recbole_micro(model=model, dataset="ml-100k",
                               config_dict={"seed": seed, "data_path": data_path, "state": "WARNING", **overrides})
    row = {"variant": variant, "seed": seed, "seconds": round(time.time() - start)}
    row.update({f"valid_{m}": result["best_valid_result"][m] for m in METRICS})
    row.update({f"test_{m}": result["test_result"][m] for m in METRICS})
    return row


def markdown(path):
    """Mean ± std of the test metrics per variant."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    lines = ["| model | seeds | Recall@20 | NDCG@20 | Precision@20 |", "|---|---|---|---|---|"]
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            continue
        cells = []
        for m in METRICS:
            values = np.array([float(r[f"test_{m}"]) for r in mine])
            cells.append(f"{values.mean():.4f} ± {values.std():.4f}" if len(values) > 1 else f"{values[0]:.4f}")
        lines.append(f"| {variant} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ml100k.csv"))
    parser.add_argument("--data_path", default="dataset/", help="RecBole data_path (ml-100k is materialised there)")
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value flags from sys.argv: give it none
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    finished = done_runs(out)
    for seed in args.seeds:
        for variant in args.variants:
            if (variant, seed) in finished:
                continue
            row = run_one(variant, seed, args.data_path)
            new = not out.is_file()
            with open(out, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            print(f"{variant} seed {seed}: test recall@20 {row['test_recall@20']:.4f} ({row['seconds']} s)", flush=True)
    if out.is_file():
        print(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
