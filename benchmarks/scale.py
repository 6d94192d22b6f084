"""Speed and memory at the papers' scales, and a synthetic item-count sweep.

Two tables, each printed and written as CSV:

``models``: per dataset scale and model, the dataset load time (atomic files plus the feature
    hook), the model construction time (with the initial kNN graphs), the training time per epoch, the full-ranking
    evaluation time on the test users, and the peak memory of the process (RSS on CPU,
    ``torch.cuda.max_memory_allocated`` on GPU). The interaction graphs are the real ones in
    ../shared/data (the official Baby split; MMRec's Sports and Clothing); the features are
    **generated** with the papers' shapes (4096-d visual, 1024-d textual, float32), since only
    their shape matters for cost. With ``--batches B`` only the first B training batches are
    timed and the epoch time is extrapolated (first batch, which rebuilds the item graphs,
    plus the mean of the others times the remaining batches); the table says so.
``sweep``: per synthetic item count N (64-d features, k = 10): the kNN graph build, one
    propagation layer forward + backward over the built graph, and the contrastive loss alone
    forward + backward, exact (all N anchors) up to ``--exact-max`` items and with 2,048
    batch anchors at every N; with the peak RSS and, for scale, a dense N x N float32.

``ann``: per synthetic item count N (64-d features, k = 10) and feature kind (``gaussian``:
    no structure, the hard case; ``clustered``: 200 Gaussian clusters), the exact kNN build,
    the faiss build (``knn_backend: faiss``), and the recall of faiss's neighbours against the
    exact ones; ``--ann-features F.npy`` measures real feature files as well.

Every measurement runs in its own process, so that each peak memory is its own.

Examples:
    python benchmarks/scale.py --scales baby --models LightGCN VBPR LATTICE MICRO "MICRO batch"
    python benchmarks/scale.py --scales clothing --models MICRO --batches 3
    python benchmarks/scale.py --sweep 10000 30000 100000 300000 --scales
    python benchmarks/scale.py --ann 10000 100000 --scales
    python benchmarks/scale.py --ann --ann-features /tmp/sci/scientific.textual.npy --scales
    python benchmarks/scale.py --scales baby --models LightGCN MICRO FREEDOM BM3 LGMRec MGCN
    python benchmarks/scale.py --peaks --scales  # GEMM and fused-L_C FLOP rates, float32 and bfloat16
    python benchmarks/scale.py --quick          # tiny sizes, a few seconds: checks the script
"""
import argparse
import csv
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

# name -> (RecBole model, overrides)
MODELS = {
    "LightGCN": ("LightGCN", {}),
    "VBPR": ("VBPR", {}),
    "LATTICE": ("LATTICE", {}),
    "MICRO": ("MICRO", {}),
    "MICRO batch": ("MICRO", {"cl_anchors": "batch"}),
    # the chunked contrastive-loss kernel, the only one before the fused kernel: before/after in one run
    "MICRO chunked": ("MICRO", {"cl_kernel": "chunked"}),
    "MICRO batch chunked": ("MICRO", {"cl_anchors": "batch", "cl_kernel": "chunked"}),
    # RecBole's enable_amp: autocast to bfloat16 on CPU, float16 on CUDA
    "MICRO amp": ("MICRO", {"enable_amp": True}),
    "MICRO batch amp": ("MICRO", {"cl_anchors": "batch", "enable_amp": True}),
    "LATTICE amp": ("LATTICE", {"enable_amp": True}),
    # the baselines of recent multimodal work
    "FREEDOM": ("FREEDOM", {}),
    "BM3": ("BM3", {}),
    "LGMRec": ("LGMRec", {}),
    "MGCN": ("MGCN", {}),
}
DEFAULT_MODELS = ["LightGCN", "VBPR", "LATTICE", "MICRO", "MICRO batch"]
SCALES = ["baby", "sports", "clothing", "scientific", "clothing-synthetic", "scientific-real", "sparse-synthetic"]
# Clothing's sizes with random interactions, for machines without ../shared (benchmarks/gpu_check.sh)
SYNTHETIC_CLOTHING = {"n_users": 39387, "n_items": 23033, "per_user": 7}
# a sparse graph of Scientific's sizes with random interactions: 9,300 users, 6,700 items, 60,000 rows
SYNTHETIC_SPARSE = {"n_users": 9300, "n_items": 6700, "per_user": 6, "n_inter": 60000}
# Amazon Scientific as dataset_prep.scientific writes it (real text and metadata features), from dataset/
REAL_SCIENTIFIC = REPO / "dataset" / "scientific"
FEATURE_DIMS = {"visual": 4096, "textual": 1024}  # the papers' shapes
# the small sparse graph: real Amazon Scientific interactions, two generated 128-d modalities
SMALL_FEATURE_DIMS = {"visual": 128, "textual": 128}
MODEL_FIELDS = ["scale", "model", "users", "items", "train_rows", "load_s", "init_s", "batches", "timed_batches", "epoch_s",
                "extrapolated", "eval_s", "peak_rss_gb", "peak_cuda_gb", "device", "threads"]
PEAK_FIELDS = ["kernel", "shape", "dtype", "seconds", "gflops", "threads", "device"]
SWEEP_FIELDS = ["items", "knn_s", "propagate_s", "cl_exact_s", "cl_batch_s", "peak_rss_gb", "dense_nxn_gb"]
ANN_FIELDS = ["items", "features", "factory", "params", "exact_s", "faiss_s", "recall"]


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


# ----- data -----
def item_tokens(dataset_dir, name):
    lines = (Path(dataset_dir) / f"{name}.item").read_text().splitlines()
    return lines[1:]


def generate_features(dataset_dir, name, dims, seed=0):
    """Write generated (random) features of the given widths for every item, labelled as such."""
    from dataset_prep.common import write_features

    tokens = item_tokens(dataset_dir, name)
    rng = np.random.default_rng(seed)
    for modality, dim in dims.items():
        # non-negative like CNN activations for 'visual', signed like sentence embeddings otherwise
        matrix = rng.random((len(tokens), dim), dtype=np.float32)
        if modality != "visual":
            matrix -= 0.5
        write_features(dataset_dir, name, modality, matrix, tokens)
    (Path(dataset_dir) / "GENERATED_FEATURES.txt").write_text(
        "The feature files here are random, generated by benchmarks/scale.py for timing only.\n"
    )


def prepare_scale(scale, work):
    """Import the real interaction graph of ``scale`` into ``work`` and add generated features."""
    from dataset_prep.import_mmrec import import_mmrec
    from dataset_prep.import_official import import_official

    out = Path(work) / scale
    if (out / "GENERATED_FEATURES.txt").is_file():
        return
    quiet = lambda *a, **k: None  # noqa: E731
    if scale == "scientific":
        write_scientific(out)
        generate_features(out, scale, SMALL_FEATURE_DIMS)
        return
    if scale == "clothing-synthetic":
        write_random_dataset(work, scale, dims=FEATURE_DIMS, **SYNTHETIC_CLOTHING)
        return
    if scale == "sparse-synthetic":
        write_random_dataset(work, scale, dims=SMALL_FEATURE_DIMS, **SYNTHETIC_SPARSE)
        return
    if scale == "baby":
        import_official(SHARED_DATA / "amazon-baby", "baby", work, no_features=True, log=quiet)
    else:
        import_mmrec(SHARED_DATA / "amazon-mmrec" / f"{scale}.inter", scale, work, no_features=True, log=quiet)
    generate_features(out, scale, FEATURE_DIMS)


def write_dataset_yaml(out, name):
    """``<name>.yaml``: the benchmark split and the two generated modalities of a dataset written here."""
    (out / f"{name}.yaml").write_text(
        "USER_ID_FIELD: user_id\nITEM_ID_FIELD: item_id\nload_col:\n  inter: [user_id, item_id]\n  item: [item_id]\n"
        "benchmark_filename: [train, valid, test]\n"
        "modalities:\n"
        f"  visual: {{file: {name}.visual.npy, tokens: {name}.visual.tokens}}\n"
        f"  textual: {{file: {name}.textual.npy, tokens: {name}.textual.tokens}}\n"
        "eval_args: {group_by: user, order: RO, mode: full}\n"
    )


def write_scientific(out, name="scientific"):
    """Amazon Scientific's interactions as a benchmark split: per user, the history of its test
    row (the last item of which is its validation target) for training, then the two targets."""
    from dataset_prep.common import collapse_duplicates, write_benchmark

    splits = {"train": [], "valid": [], "test": []}
    lines = (SHARED_DATA / "amazon-scientific" / "Scientific.test.inter").read_text().splitlines()[1:]
    for line in lines:
        user, history, target = line.split("\t")
        history = history.split()
        splits["train"] += [(f"u{user}", f"i{item}") for item in history[:-1]]
        splits["valid"].append((f"u{user}", f"i{history[-1]}"))
        splits["test"].append((f"u{user}", f"i{target}"))
    splits, _ = collapse_duplicates(splits)
    items = sorted({item for pairs in splits.values() for _, item in pairs}, key=lambda t: int(t[1:]))
    write_benchmark(out, name, splits, items)
    write_dataset_yaml(out, name)


def write_random_dataset(work, name="tiny", n_users=120, n_items=200, per_user=12, dims=None, seed=0, n_inter=None):
    """A random split with the layout dataset_prep writes: per user ``per_user`` distinct items, the
    last two for validation and test (``--quick``'s tiny set, and Clothing's sizes without the data).
    With ``n_inter``, the first ``n_inter - n_users * per_user`` users get one item more, so that
    there are ``n_inter`` interactions in all."""
    from dataset_prep.common import write_benchmark

    rng = np.random.default_rng(seed)
    users = [f"u{u}" for u in range(n_users)]
    items = [f"i{i}" for i in range(n_items)]
    extra = 0 if n_inter is None else n_inter - n_users * per_user
    splits = {"train": [], "valid": [], "test": []}
    for number, user in enumerate(users):
        chosen = rng.choice(n_items, size=per_user + (number < extra), replace=False)
        for position, item in enumerate(chosen):
            split = "train" if position < len(chosen) - 2 else ("valid" if position == len(chosen) - 2 else "test")
            splits[split].append((user, items[item]))
    out = Path(work) / name
    write_benchmark(out, name, splits, items)
    generate_features(out, name, dims or {"visual": 64, "textual": 32})
    write_dataset_yaml(out, name)
    return out


# ----- one measurement per process -----
def measure_model(scale, model_key, data_path, batches, config_files, dataset_name=None):
    import torch
    from recbole.data import data_preparation

    from recbole_micro.config import Config
    from recbole_micro.registry import create_dataset, get_model, get_trainer, init_seed

    model_name, overrides = MODELS[model_key]
    config = Config(model=model_name, dataset=dataset_name or scale, config_file_list=config_files or None,
                    config_dict={"data_path": data_path, "state": "ERROR", "show_progress": False,
                                 "graph_cache": False, **overrides})  # init_s measures the kNN build
    start = time.perf_counter()
    dataset = create_dataset(config)  # atomic files and, for our models, the feature hook
    load_s = time.perf_counter() - start
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    start = time.perf_counter()
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    init_s = time.perf_counter() - start  # includes the initial kNN graphs of LATTICE and MICRO
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    device = config["device"]
    cuda = torch.cuda.is_available() and str(device).startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    model.train()  # what RecBole's trainer does at the start of every epoch
    times = []
    for number, interaction in enumerate(train_data):
        if batches and number >= batches:
            break
        start = time.perf_counter()
        interaction = interaction.to(device)
        trainer.optimizer.zero_grad()
        with torch.autocast(device_type=torch.device(device).type, enabled=bool(config["enable_amp"])):  # as RecBole
            losses = model.calculate_loss(interaction)
            loss = sum(losses) if isinstance(losses, tuple) else losses
        loss.backward()
        trainer.optimizer.step()
        sync()
        times.append(time.perf_counter() - start)
    n_batches = len(train_data)
    if len(times) == n_batches or len(times) == 1:
        epoch = sum(times) / len(times) * n_batches if len(times) == 1 else sum(times)
    else:
        epoch = times[0] + float(np.mean(times[1:])) * (n_batches - 1)
    start = time.perf_counter()
    trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    sync()
    evaluation = time.perf_counter() - start
    return {
        "scale": scale, "model": model_key, "users": dataset.user_num - 1, "items": dataset.item_num - 1,
        "train_rows": len(train_data.dataset), "load_s": round(load_s, 2), "init_s": round(init_s, 2),
        "batches": n_batches, "timed_batches": len(times),
        "epoch_s": round(epoch, 2), "extrapolated": len(times) < n_batches, "eval_s": round(evaluation, 2),
        "peak_rss_gb": round(peak_rss_gb(), 3),
        "peak_cuda_gb": round(torch.cuda.max_memory_allocated() / 1e9, 3) if cuda else "",
        "device": str(device), "threads": torch.get_num_threads(),
    }


def measure_peaks(n_gemm=4096, n_items=7050, dim=64, repeats=3, seed=0):
    """The machine's plain-GEMM FLOP rate in float32 and bfloat16, and the exact fused L_C's.

    GEMM: ``n_gemm`` squared matrices, 2 n^3 operations. The fused L_C (forward and backward,
    every one of ``n_items`` items an anchor, width ``dim``, in float32 and under bfloat16
    autocast) is two attention calls of R = n queries against 2n keys: 2 x 4 R (2n) d = 16 n^2 d
    operations in its products, the rest being O(n d). Best of ``repeats`` after one warm-up.
    """
    import torch

    from recbole_micro.model.losses import info_nce_loss

    generator = torch.Generator().manual_seed(seed)
    device = "cpu"
    rows = []

    def best(fn):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(n_gemm, n_gemm, generator=generator).to(dtype)
        b = torch.randn(n_gemm, n_gemm, generator=generator).to(dtype)
        seconds = best(lambda: a @ b)
        rows.append({"kernel": "GEMM", "shape": f"{n_gemm}x{n_gemm}x{n_gemm}", "dtype": str(dtype)[6:],
                     "seconds": round(seconds, 4), "gflops": round(2 * n_gemm**3 / seconds / 1e9, 1)})
    anchor = torch.randn(n_items, dim, generator=generator, requires_grad=True)
    target = torch.randn(n_items, dim, generator=generator, requires_grad=True)
    for dtype in (torch.float32, torch.bfloat16):
        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is torch.bfloat16):
                loss = info_nce_loss(anchor, target, 0.2, kernel="fused")
            loss.backward()
        seconds = best(step)
        rows.append({"kernel": "fused L_C fwd+bwd", "shape": f"n={n_items} d={dim}", "dtype": str(dtype)[6:],
                     "seconds": round(seconds, 4), "gflops": round(16 * n_items**2 * dim / seconds / 1e9, 1)})
    for row in rows:
        row.update(threads=torch.get_num_threads(), device=device)
    return rows


def measure_sweep(n_items, exact_max, dim=64, k=10, anchors=2048, seed=0):
    import torch

    from recbole_micro.model.layers import freeze, knn_graph, propagate, symmetric_normalize
    from recbole_micro.model.losses import info_nce_loss

    torch.manual_seed(seed)
    warm = torch.randn(64, dim, requires_grad=True)  # first-call overheads out of the timings
    propagate(freeze(knn_graph(warm.detach(), 4)), warm, 1).sum().backward()
    info_nce_loss(warm, warm, 0.5).backward()
    feat = torch.randn(n_items, dim)
    start = time.perf_counter()
    graph = symmetric_normalize(knn_graph(feat, k))
    knn_s = time.perf_counter() - start

    embedding = torch.randn(n_items, dim, requires_grad=True)
    frozen = freeze(graph)
    start = time.perf_counter()
    propagate(frozen, embedding, 1).sum().backward()
    propagate_s = time.perf_counter() - start

    def contrastive(rows):
        h_m = torch.randn(n_items, dim, requires_grad=True)
        h_c = torch.randn(n_items, dim, requires_grad=True)
        start = time.perf_counter()
        info_nce_loss(h_m, h_c, 0.5, rows=rows).backward()
        return time.perf_counter() - start

    cl_exact = round(contrastive(None), 3) if n_items <= exact_max else ""
    rows = torch.randperm(n_items - 1)[: min(anchors, n_items - 1)] + 1
    cl_batch = contrastive(rows)
    return {
        "items": n_items, "knn_s": round(knn_s, 3), "propagate_s": round(propagate_s, 4), "cl_exact_s": cl_exact,
        "cl_batch_s": round(cl_batch, 3), "peak_rss_gb": round(peak_rss_gb(), 3),
        "dense_nxn_gb": round(n_items * n_items * 4 / 1e9, 2),
    }


def measure_ann(n_items, kind, factory=None, params=None, dim=64, k=10, seed=0):
    import torch

    from recbole_micro.model.ann import faiss_knn_graph, index_settings
    from recbole_micro.model.layers import knn_graph

    generator = torch.Generator().manual_seed(seed)
    if kind.endswith(".npy"):  # a real feature file: its rows, after a PAD row
        rows = torch.from_numpy(np.load(kind).astype(np.float32))
        feat = torch.cat([torch.zeros(1, rows.shape[1]), rows])
        n_items = feat.shape[0]
    elif kind == "gaussian":
        feat = torch.randn(n_items, dim, generator=generator)
    else:
        centres = torch.randn(200, dim, generator=generator)
        feat = centres[torch.randint(0, 200, (n_items,), generator=generator)] + 0.5 * torch.randn(n_items, dim, generator=generator)
    feat[0] = 0  # PAD
    factory, params = index_settings(n_items - 1, factory, params)  # recorded with the row
    faiss_knn_graph(feat[:100], 4, "Flat")  # first-call overheads out of the timings
    start = time.perf_counter()
    exact = knn_graph(feat, k)
    exact_s = time.perf_counter() - start
    start = time.perf_counter()
    approx = faiss_knn_graph(feat, k, factory, params)
    faiss_s = time.perf_counter() - start
    hits = (approx.idx[1:].unsqueeze(2) == exact.idx[1:].unsqueeze(1)).any(2).sum().item()
    return {
        "items": n_items, "features": Path(kind).name, "factory": factory, "params": params or "", "exact_s": round(exact_s, 2),
        "faiss_s": round(faiss_s, 2), "recall": round(hits / ((n_items - 1) * k), 4),
    }


def in_subprocess(*args):
    """Run one measurement in a fresh interpreter and return its JSON row."""
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"measurement {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----- tables -----
def merge_csv(path, fields, rows, key):
    """Write ``rows`` into the CSV at ``path``, replacing earlier rows with the same key."""
    kept = []
    if path.is_file():
        with open(path, newline="") as f:
            kept = list(csv.DictReader(f))
    new_keys = {tuple(str(row[k]) for k in key) for row in rows}
    rows = [row for row in kept if tuple(row[k] for k in key) not in new_keys] + rows
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def markdown(fields, rows):
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(str(row[f]) for f in fields) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="*", default=SCALES[:3], choices=SCALES)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=list(MODELS))
    parser.add_argument("--batches", type=int, default=0, help="time only this many training batches (0: the epoch)")
    parser.add_argument("--config_files", nargs="*", default=[], help="extra RecBole YAMLs (e.g. profiles/official.yaml)")
    parser.add_argument("--sweep", nargs="*", type=int, default=[], help="synthetic item counts, e.g. 10000 30000 100000")
    parser.add_argument("--ann", nargs="*", type=int, default=[], help="item counts for faiss vs exact kNN, e.g. 10000 100000")
    parser.add_argument("--ann-features", nargs="*", default=[], help="real .npy feature files to measure as well")
    parser.add_argument("--ann-factory", default=None, help="faiss index_factory string (default: knn_backend's automatic IVF)")
    parser.add_argument("--ann-params", default=None, help="faiss search parameters, e.g. nprobe=32 or efSearch=128")
    parser.add_argument("--peaks", action="store_true",
                        help="plain-GEMM float32 and bfloat16 FLOP rates, and the fused L_C's (peaks.csv)")
    parser.add_argument("--exact-max", type=int, default=30000, help="largest N for the exact (all-anchor) loss")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "recbole_micro_bench"),
                        help="where the imported interaction graphs and generated features go")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes only, to check the script")
    parser.add_argument("--skip-done", action="store_true",
                        help="skip the (scale, model) rows already in the output's models.csv (resume a long run)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value flags from sys.argv: give it none

    if args.one:
        kind, *rest = json.loads(args.one)
        measure = {"model": measure_model, "sweep": measure_sweep, "ann": measure_ann, "peaks": measure_peaks}[kind]
        row = measure(*rest)
        print(json.dumps(row))
        return 0

    out = Path(args.out)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.quick:
        write_random_dataset(work)
        scales, sweep, batches = ["tiny"], args.sweep or [300, 600], args.batches or 2
        ann = args.ann or ([500] if importlib.util.find_spec("faiss") else [])
        config_files = [str(work / "tiny" / "tiny.yaml")] + args.config_files
        out = out / "quick"
    else:
        scales, sweep, batches, config_files = args.scales, args.sweep, args.batches, args.config_files
        ann = args.ann

    done = set()
    if args.skip_done and (out / "models.csv").is_file():
        with open(out / "models.csv", newline="") as f:
            done = {(row["scale"], row["model"]) for row in csv.DictReader(f)}
    peak_rows = []
    if args.peaks:
        peak_rows = in_subprocess("peaks", 256, 600) if args.quick else in_subprocess("peaks")
        merge_csv(out / "peaks.csv", PEAK_FIELDS, peak_rows, key=("kernel", "shape", "dtype", "threads"))
        print(markdown(PEAK_FIELDS, peak_rows), flush=True)
    model_rows = []
    for scale in scales:
        data_path, dataset = str(work), scale
        if scale == "scientific-real":
            if not (REAL_SCIENTIFIC / "scientific.yaml").is_file():
                raise SystemExit(f"{REAL_SCIENTIFIC} is absent: python -m dataset_prep.scientific --out dataset")
            data_path, dataset = str(REAL_SCIENTIFIC.parent), "scientific"
        elif not args.quick:
            if not SHARED_DATA.is_dir() and not scale.endswith("-synthetic"):
                raise SystemExit(f"{SHARED_DATA} is absent: the real interaction graphs are needed for --scales.")
            prepare_scale(scale, work)
        own_yaml = Path(data_path) / dataset / f"{dataset}.yaml"
        scale_files = [str(own_yaml)] if scale in ("scientific", "scientific-real") or scale.endswith("-synthetic") else []
        for model_key in args.models:
            if (scale, model_key) in done:
                print(f"{scale} {model_key}: in {out / 'models.csv'} already, skipped", flush=True)
                continue
            row = in_subprocess("model", scale, model_key, data_path, batches, scale_files + config_files, dataset)
            model_rows.append(row)
            merge_csv(out / "models.csv", MODEL_FIELDS, [row], key=("scale", "model"))  # kept at once: resumable
            print(json.dumps(row), flush=True)
    sweep_rows = []
    for n_items in sweep:
        row = in_subprocess("sweep", n_items, args.exact_max)
        sweep_rows.append(row)
        print(json.dumps(row), flush=True)

    ann_runs = [(n_items, kind) for n_items in ann for kind in ("gaussian", "clustered")]
    ann_runs += [(0, str(Path(path).resolve())) for path in args.ann_features]
    ann_rows = []
    for n_items, kind in ann_runs:
        row = in_subprocess("ann", n_items, kind, args.ann_factory, args.ann_params)
        ann_rows.append(row)
        print(json.dumps(row), flush=True)

    if model_rows:
        print(markdown(MODEL_FIELDS, model_rows))
    if sweep_rows:
        merge_csv(out / "sweep.csv", SWEEP_FIELDS, sweep_rows, key=("items",))
        print(markdown(SWEEP_FIELDS, sweep_rows))
    if ann_rows:
        merge_csv(out / "ann.csv", ANN_FIELDS, ann_rows, key=("items", "features", "factory", "params"))
        print(markdown(ANN_FIELDS, ann_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
