"""Time LGMRec's Eq. 11 denominators, forward and backward: autograd ``logsumexp`` over the logits against
``losses.log_sum_exp_over_keys`` (the fused kernel). One thread, float32, random unit rows.

    OMP_NUM_THREADS=1 python benchmarks/cross_view_kernel.py [--batch 1024] [--keys 8441 4385] [--repeats 10]

The default key counts are Amazon Scientific's users and items (PAD left out), the batch the
project's training batch. Writes ``benchmarks/results/cross-view-kernel.csv`` (one row per key
count: milliseconds per call of each kernel and the relative difference of their values).
"""

import argparse
import csv
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from recbole_micro.model.losses import log_sum_exp_over_keys

OUT = Path(__file__).resolve().parent / "results" / "cross-view-kernel.csv"


def autograd_reference(anchors, keys, tau):
    return torch.logsumexp(anchors @ keys.t() / tau, dim=1).sum()


def timed(loss_fn, anchor, target, rows, tau, repeats):
    """Milliseconds per forward + backward call (after one warm-up call), and the last value."""

    def call():
        value = loss_fn(F.normalize(anchor[rows], dim=1), F.normalize(target, dim=1), tau)
        value.backward()
        return value.item()

    call()
    start = time.perf_counter()
    for _ in range(repeats):
        value = call()
    return (time.perf_counter() - start) / repeats * 1000, value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--keys", type=int, nargs="+", default=[8441, 4385])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tau", type=float, default=0.2)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows_out = []
    for n in args.keys:
        anchor = torch.randn(n, 64, requires_grad=True)
        target = torch.randn(n, 64, requires_grad=True)
        rows = torch.randint(0, n, (args.batch,))
        ref_ms, ref_value = timed(autograd_reference, anchor, target, rows, args.tau, args.repeats)
        fused_ms, fused_value = timed(log_sum_exp_over_keys, anchor, target, rows, args.tau, args.repeats)
        row = {"batch": args.batch, "keys": n, "threads": torch.get_num_threads(),
               "autograd_logsumexp_ms": round(ref_ms, 1), "fused_ms": round(fused_ms, 1),
               "value_rel_diff": f"{abs(fused_value - ref_value) / abs(ref_value):.1e}"}
        print(row, flush=True)
        rows_out.append(row)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows_out[0]))
        writer.writeheader()
        writer.writerows(rows_out)


if __name__ == "__main__":
    main()
