"""Where a training batch's time goes: torch profiler over the first batches of an epoch.

Each part of the model (item graphs, propagation, fusions, h_u, the CF backbone, each loss) is
wrapped in a labelled profiler range (``M::<method>``), and the backward pass and the optimiser
step get their own (``M::backward``, ``M::optimizer_step``). The table sorted by total time, the
mean time per batch without the profiler, and the settings are written to ``--out``.

Examples:
    python benchmarks/profile_batch.py --model MICRO --dataset ml-100k --out benchmarks/results/profile
    python benchmarks/profile_batch.py --model MICRO --dataset ml-100k --set cl_kernel=chunked
    python benchmarks/profile_batch.py --model LATTICE --dataset ml-100k
    python benchmarks/profile_batch.py --model MICRO --dataset scientific --config_files dataset/scientific/scientific.yaml \
        --set enable_amp=True cl_anchors=batch
"""
import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PARTS = ["build_item_graphs", "modality_embeddings", "fuse_shared", "fuse_final", "user_preference", "cf_embeddings",
         "final_embeddings", "contrastive_loss", "orthogonality_loss", "bpr_and_reg"]


def labelled(model, torch):
    """Wrap each of the model's parts that exists in a profiler range named after it."""
    for name in PARTS:
        method = getattr(model, name, None)
        if method is None:
            continue

        def wrapper(*args, _method=method, _name=name, **kwargs):
            with torch.profiler.record_function(f"M::{_name}"):
                return _method(*args, **kwargs)

        setattr(model, name, functools.wraps(method)(wrapper))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="MICRO")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--batches", type=int, default=20, help="batches timed and profiled (after one warm-up)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="settings, e.g. cl_kernel=chunked")
    parser.add_argument("--config_files", nargs="*", default=[])
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "profile"))
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value flags from sys.argv: give it none
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import yaml
    from recbole.data import data_preparation

    from recbole_micro.config import Config
    from recbole_micro.data.prepared import ensure_dataset_prepared
    from recbole_micro.registry import create_dataset, get_model, get_trainer, init_seed

    settings = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    config = Config(model=args.model, dataset=args.dataset, config_file_list=args.config_files or None,
                    config_dict={"state": "ERROR", "show_progress": False, **settings})
    ensure_dataset_prepared(config)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    labelled(model, torch)
    batches = [b.to(config["device"]) for _, b in zip(range(args.batches + 1), train_data)]

    def step(batch):
        trainer.optimizer.zero_grad()
        with torch.autocast(device_type=torch.device(config["device"]).type, enabled=bool(config["enable_amp"])):
            losses = model.calculate_loss(batch)  # as RecBole's trainer: under autocast with enable_amp
            loss = sum(losses) if isinstance(losses, tuple) else losses
        with torch.profiler.record_function("M::backward"):
            loss.backward()
        with torch.profiler.record_function("M::optimizer_step"):
            trainer.optimizer.step()

    model.train()  # as RecBole's trainer at an epoch's start: the first batch rebuilds the item graphs
    step(batches[0])
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    per_batch = (time.perf_counter() - start) / (len(batches) - 1)
    model.train()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for batch in batches:
            step(batch)
    table = profile.key_averages().table(sort_by="cpu_time_total", row_limit=args.rows, max_name_column_width=60)
    label = "-".join([args.model, args.dataset] + [f"{k}={v}" for k, v in settings.items()]).replace("/", "_")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"model": args.model, "dataset": args.dataset, "settings": settings, "batches": len(batches),
               "batches_per_epoch": len(train_data), "ms_per_batch_without_profiler": round(per_batch * 1e3, 1),
               "threads": torch.get_num_threads(), "torch": torch.__version__}
    (out / f"{label}.txt").write_text(json.dumps(summary) + "\n\n" + table + "\n")
    print(json.dumps(summary))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
