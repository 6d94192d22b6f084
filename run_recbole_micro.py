#!/usr/bin/env python
"""Train and evaluate a recommender (ours or RecBole's) through RecBole's pipeline.

Examples:
    python run_recbole_micro.py                                  # MICRO on MovieLens-100k
    python run_recbole_micro.py --model=LightGCN --dataset=ml-100k
    python run_recbole_micro.py -m VBPR -d ml-100k --config_files="my.yaml" --learning_rate=0.0005
    python run_recbole_micro.py -d ml-100k --compare BPR LightGCN VBPR LATTICE MICRO --seeds 2020 2021 2022
    python run_recbole_micro.py -m MICRO -d ml-100k --tune hyper/MICRO.hyper --algo exhaustive

Every other ``--key=value`` flag is a RecBole setting and overrides the YAML files (in
--compare mode, for every run).
"""
import argparse
import sys
from pathlib import Path

from recbole_micro.experiments.tables import DEFAULT_PROPOSED

DEFAULT_MODEL = "MICRO"
DEFAULT_DATASET = "ml-100k"
SUMMARY_K = 20


def build_parser():
    # allow_abbrev=False: a RecBole flag that is a prefix of ours (--seed of --seeds) must reach RecBole
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL})")
    parser.add_argument("--dataset", "-d", default=DEFAULT_DATASET, help=f"dataset name (default {DEFAULT_DATASET})")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files with settings")
    parser.add_argument("--resume", metavar="CHECKPOINT", default=None,
                        help="continue an interrupted run (same settings) from its checkpoint or .resume.pth file")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="also read pickled (RecBole-format) checkpoints, which can run code: trusted files only")
    use = parser.add_argument_group("use a trained model (see README, 'After training')")
    use.add_argument("--recommend", metavar="CHECKPOINT", help="write top-K recommendations of this checkpoint to --out")
    use.add_argument("--export-embeddings", metavar="CHECKPOINT",
                     help="write the final user and item embeddings of this checkpoint to the folder --out")
    use.add_argument("--faiss", action="store_true", help="with --export-embeddings: also an exact faiss IndexFlatIP")
    use.add_argument("--explain", action="store_true",
                     help="with --recommend (LATTICE, MICRO): also <out>.explain.jsonl, one line per (user, item)")
    use.add_argument("--new-items", action="append", metavar="NAME=PATH", default=[],
                     help="with --recommend (LATTICE, MICRO): items added since training, one .npy per modality "
                          "(tokens in the .tokens file beside it); repeat for every modality")
    use.add_argument("--new-only", action="store_true", help="with --new-items: recommend among the new items only")
    use.add_argument("--new-items-cf", choices=["none", "neighbours"], default="none",
                     help="with --new-items: what stands in for their CF embedding (default none: the content part alone; "
                          "neighbours: their graph neighbours' CF embeddings)")
    use.add_argument("--k", type=int, default=20, help="recommendations per user (default 20)")
    use.add_argument("--users", nargs="+", metavar="TOKEN", help="these users only (default: every user)")
    use.add_argument("--exclude", nargs="+", default=["train"], choices=["train", "valid"],
                     help="histories never recommended (default: train)")
    ddp = parser.add_argument_group("several processes (RecBole's DDP; see README, 'Several GPUs or machines')")
    ddp.add_argument("--nproc", type=int, default=1, help="processes on this machine (one per GPU, or CPU processes)")
    ddp.add_argument("--world_size", type=int, default=-1, help="processes on all machines (default: --nproc)")
    ddp.add_argument("--ip", default="localhost", help="address of the machine that runs the first process")
    ddp.add_argument("--port", type=int, default=5678, help="a free port on that machine")
    ddp.add_argument("--group_offset", type=int, default=0, help="processes run by the machines before this one")
    compare = parser.add_argument_group("compare mode (see README, 'Compare and tune')")
    compare.add_argument("--compare", nargs="+", metavar="MODEL",
                         help="run these models side by side; MODEL:key=value,... adds settings for that row")
    compare.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021, 2022], help="one run per model and seed")
    compare.add_argument("--proposed", nargs="+", default=list(DEFAULT_PROPOSED),
                         help="models compared with the best of the others")
    compare.add_argument("--tune-each", action="store_true",
                         help="first tune every row on validation (same budget), then compare the chosen points")
    compare.add_argument("--tune-grid", default=None, metavar="GRID",
                         help='one grid for every row, e.g. "learning_rate=5e-4,1e-3,5e-3 reg_weight=1e-5,1e-4,1e-3" '
                              "(default: each model's hyper/<Model>.hyper)")
    compare.add_argument("--diagnose", action="store_true",
                         help="after each MICRO and LATTICE run, keep its graph quality, modality weights and losses "
                              "in <out>/diagnostics/ (recbole_micro.experiments.diagnostics)")
    compare.add_argument("--deadline", default=None, metavar="HH:MM|+2h30m",
                         help="start only runs expected to end by then (each at its row's mean time so far), then "
                              "stop (exit 3); the same command later goes on")
    compare.add_argument("--out", default=None, help="output folder (default: compare/<dataset>, tune/<model>-<dataset>); "
                         "with --recommend, the .csv or .parquet file")
    tune = parser.add_argument_group("tune mode (RecBole's HyperTuning; see README, 'Compare and tune')")
    tune.add_argument("--tune", metavar="PARAMS_FILE", help="tune --model over this params file: a path, or a shipped one by name (e.g. MICRO, sensitivity/MICRO-knn_k; see hyper/)")
    tune.add_argument("--algo", default="exhaustive", choices=["exhaustive", "random", "bayes"])
    tune.add_argument("--max_evals", type=int, default=50, help="points to try with random / bayes")
    tune.add_argument("--early_stop", type=int, default=None, help="stop after this many points without progress")
    return parser


def parse_args(argv):
    """(our flags, the rest): every flag that is not ours, spelled out in full, goes to RecBole."""
    return build_parser().parse_known_args(argv)


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
    from recbole_micro.errors import DistributedError, RecBoleMicroError, RunsStopped
    from recbole_micro.quick_start import run

    config_files = args.config_files.split() if args.config_files else None
    several = args.nproc != 1 or args.world_size > 0
    try:
        if several and (args.compare or args.tune):
            raise DistributedError("--nproc/--world_size train one run; --compare and --tune run one process per run.")
        compare_only = [flag for flag, given in (("--tune-each", args.tune_each), ("--tune-grid", args.tune_grid),
                                                 ("--diagnose", args.diagnose), ("--deadline", args.deadline)) if given]
        if compare_only and not args.compare:
            raise RecBoleMicroError(f"{', '.join(compare_only)}: only with --compare MODEL [MODEL ...]; "
                                    "without it nothing would be tuned or diagnosed.")
        if args.recommend:
            return recommend(args)
        if args.export_embeddings:
            return export(args)
        if args.compare:
            return compare(args, config_files)
        if args.tune:
            return tune(args, config_files)
        result = run(model=args.model, dataset=args.dataset, config_file_list=config_files, resume=args.resume,
                     trust_checkpoint=args.trust_checkpoint, nproc=args.nproc, world_size=args.world_size,
                     ip=args.ip, port=args.port, group_offset=args.group_offset)
    except RunsStopped as stopped:
        print(stopped, file=sys.stderr)
        return 3
    except RecBoleMicroError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(args.model, args.dataset, result))
    return 0


def recommend(args):
    from recbole_micro.errors import RecBoleMicroError
    from recbole_micro.serve.recommend import Recommender

    if not args.out:
        raise RecBoleMicroError("--recommend needs --out recs.csv (or .parquet): where the recommendations go.")
    if args.new_only and not args.new_items:
        raise RecBoleMicroError("--new-only needs --new-items NAME=PATH (one per modality): the items to recommend.")
    new_items = {}
    for entry in args.new_items:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise RecBoleMicroError(f"--new-items {entry!r}: write NAME=PATH, e.g. --new-items visual=new.visual.npy")
        new_items[name] = path
    recommender = Recommender.load(args.recommend, exclude=tuple(args.exclude), trust_checkpoint=args.trust_checkpoint)
    if new_items:
        added = recommender.add_items(new_items, cf=args.new_items_cf)
        print(f"{len(added)} new items attached to the trained item graphs")
    explain_path = Path(args.out).with_suffix(".explain.jsonl") if args.explain else None
    rows = recommender.write_recommendations(args.out, k=args.k, user_tokens=args.users, new_only=args.new_only,
                                             explain_path=explain_path)
    print(f"{rows} recommendations ({args.k} per user) in {args.out}")
    if explain_path:
        print(f"explanations in {explain_path}")
    return 0


def export(args):
    from recbole_micro.errors import RecBoleMicroError
    from recbole_micro.serve.export import export_embeddings

    if not args.out:
        raise RecBoleMicroError("--export-embeddings needs --out DIR: the folder the embeddings go to.")
    written = export_embeddings(args.export_embeddings, args.out, with_faiss=args.faiss,
                                trust_checkpoint=args.trust_checkpoint)
    for what, paths in written.items():
        print(f"{what}: " + ", ".join(str(p) for p in (paths if isinstance(paths, tuple) else (paths,))))
    return 0


def compare(args, config_files):
    from recbole_micro.config import Config
    from recbole_micro.errors import ModelSpecError
    from recbole_micro.experiments.compare import parse_deadline, parse_model_spec, run_comparison
    from recbole_micro.experiments.tuned_compare import parse_grid, run_tuned_comparison

    configs = []
    for spec in args.compare:  # an unknown name or a bad setting fails now, not after hours of other runs
        name, overrides = parse_model_spec(spec)
        configs.append(Config(model=name, dataset=args.dataset, config_file_list=config_files, config_dict=overrides))
    # RecBole's per-epoch progress bar when a person watches; show_progress stays the user's to set
    settings = {} if "show_progress" in configs[0].external_config_dict else {"show_progress": sys.stdout.isatty()}
    out = args.out or f"compare/{args.dataset}"
    deadline = parse_deadline(args.deadline) if args.deadline else None
    if args.tune_each:
        grid = parse_grid(args.tune_grid) if args.tune_grid else None  # every row's grid is checked before any run
        run_tuned_comparison(args.compare, args.dataset, args.seeds, out, grid=grid,
                             config_file_list=config_files,
                             config_dict=settings, proposed=args.proposed, diagnose=args.diagnose, deadline=deadline)
    elif args.tune_grid:
        raise ModelSpecError("--tune-grid is the grid of --tune-each: add --tune-each.")
    else:
        run_comparison(args.compare, args.dataset, args.seeds, out, config_file_list=config_files,
                       config_dict=settings, proposed=args.proposed, diagnose=args.diagnose, deadline=deadline)
    print(Path(out, "table.md").read_text())
    print(f"runs, logs, configs and chart in {out}/")
    return 0


def tune(args, config_files):
    from recbole_micro.config import Config
    from recbole_micro.experiments.tune import run_tuning
    from recbole_micro.registry import find_params_file

    params_file = find_params_file(args.tune)  # a path, or a shipped file's name: an unknown one fails first
    Config(model=args.model, dataset=args.dataset, config_file_list=config_files)  # the fixed settings, checked now
    out = args.out or f"tune/{args.model}-{args.dataset}"
    tuner = run_tuning(params_file, args.model, args.dataset, out, algo=args.algo, max_evals=args.max_evals,
                       early_stop=args.early_stop, config_file_list=config_files)
    print(f"best valid score {tuner.best_score:.4f} at {tuner.best_params}")
    print(f"best settings in {out}/best.yaml: reuse them with --config_files={out}/best.yaml")
    print(f"every point in {out}/trials.csv, RecBole's export in {out}/hyper_result.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
