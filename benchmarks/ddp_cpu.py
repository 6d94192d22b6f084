"""One process against several on this machine's CPU: epoch times and metrics of a few epochs.

Each row trains ``--epochs`` epochs on ml-100k with ``nproc`` gloo processes (one thread per
core shared among them) and records the mean training time of an epoch (RecBole's own
"training [time: ...]" log lines of the first process), the wall time of the whole run and
the test Recall@20. Rows land in the CSV as they finish; a re-run skips the rows it has.

Example (about 8 min on the project's 2-core CPU machine):
    python benchmarks/ddp_cpu.py --out benchmarks/results/ddp-cpu/runs.csv
"""
import argparse
import csv
import re
import socket
import sys
import time
from pathlib import Path

from recbole_micro.quick_start import run

ROWS = [  # (model, settings)
    ("LightGCN", {}),
    ("MICRO", {"cl_anchors": "all"}),
    ("MICRO", {"cl_anchors": "batch"}),
]
FIELDS = ["model", "settings", "nproc", "epochs", "train_s_per_epoch", "wall_s", "test_recall@20"]


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def epoch_train_times(log_dir, since):
    """RecBole's per-epoch training times from the newest log written after ``since``."""
    logs = [p for p in Path(log_dir).rglob("*.log") if p.stat().st_mtime >= since]
    text = max(logs, key=lambda p: p.stat().st_mtime).read_text()
    return [float(t) for t in re.findall(r"training \[time: ([0-9.]+)s", text)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/ddp-cpu/runs.csv")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.is_file():
        with out.open() as f:
            done = {(r["model"], r["settings"], int(r["nproc"])) for r in csv.DictReader(f)}
    for model, settings in ROWS:
        for nproc in args.nproc:
            key = (model, str(settings), nproc)
            if key in done:
                continue
            config = dict(settings, epochs=args.epochs, state="INFO", stopping_step=args.epochs)
            start = time.time()
            result = run(model=model, dataset="ml-100k", config_dict=config, nproc=nproc, port=free_port())
            wall = time.time() - start
            times = epoch_train_times("log", start)
            row = dict(zip(FIELDS, [model, str(settings), nproc, args.epochs, round(sum(times) / len(times), 2),
                                    round(wall, 1), result["test_result"]["recall@20"]]))
            new = not out.is_file()
            with out.open("a", newline="") as f:
                writer = csv.DictWriter(f, FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
