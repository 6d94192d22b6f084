#!/usr/bin/env python
"""Train and evaluate a recommender (ours or RecBole's) through RecBole's pipeline.

Examples:
    python run_recbole_micro.py                                  # MICRO on MovieLens-100k
    python run_recbole_micro.py --model=LightGCN --dataset=ml-100k
    python run_recbole_micro.py -m VBPR -d ml-100k --config_files="my.yaml" --learning_rate=0.0005

Every other ``--key=value`` flag is a RecBole setting and overrides the YAML files.
"""
import argparse
import sys

DEFAULT_MODEL = "MICRO"
DEFAULT_DATASET = "ml-100k"
SUMMARY_K = 20


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL})")
    parser.add_argument("--dataset", "-d", default=DEFAULT_DATASET, help=f"dataset name (default {DEFAULT_DATASET})")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files with settings")
    return parser.parse_known_args(argv)


def summary(model, dataset, result, k=SUMMARY_K):
    names = [f"recall@{k}", f"ndcg@{k}", f"precision@{k}"]
    rows = [f"{model} on {dataset}", f"{'':8}" + "".join(f"{n:>14}" for n in names)]
    for split, key in (("valid", "best_valid_result"), ("test", "test_result")):
        values = result[key] or {}
        rows.append(f"{split:8}" + "".join(f"{values.get(n, float('nan')):>14.4f}" for n in names))
    return "\n".join(rows)


def main(argv=None):
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    # RecBole's Config reads --key=value flags from sys.argv itself: leave it only those.
    sys.argv = [sys.argv[0]] + rest
    from recbole_micro.errors import RecBoleMicroError
    from recbole_micro.quick_start import run_recbole_micro

    config_files = args.config_files.split() if args.config_files else None
    try:
        result = run_recbole_micro(model=args.model, dataset=args.dataset, config_file_list=config_files)
    except RecBoleMicroError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(args.model, args.dataset, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
