"""Cold start: new items attached after training (inductive) against the same items in
the graphs during training (transductive, the TKDE paper's Sec. 4.2.2 protocol) and a content-only
baseline.

From a prepared dataset (default ml-100k, its interactions and modality files) it writes two:
- ``<src>-cold``: every item; the cold-start split of ``dataset_prep.split --mode cold`` (a seeded
  20% of the items leave training, half of them test items, half validation items). The
  transductive runs train on it: the cold items are in the item graphs and are BPR negatives, and
  early stopping reads the validation cold items, as in the paper.
- ``<src>-warm``: the same training interactions with the cold items removed from the dataset
  altogether (no id, no features, never a negative). One seeded training interaction per user is
  held out as validation for early stopping: the cold items are not there to validate on.
A missing feature row takes the mean of the warm items' rows, in both, so each item has one vector.

Per model and seed both are trained; the cold items are attached to the warm model
(``Recommender.add_items``), scored by their content part alone or with their graph neighbours'
CF embeddings standing in for their own (``cf="neighbours"``); every user with cold test items
is scored against
(a) all items, warm and cold (the paper's protocol; training and validation history masked), and
(b) the cold items only. The content-only baseline scores an item by its mean cosine similarity
to the user's training items, summed over the modalities (raw features, no training).
Recall@20 / NDCG@20 as RecBole computes them; the transductive (a) is checked against RecBole's
own test result. Rows land in ``runs.jsonl`` as they finish; a re-run skips them; ``table.md``
is rewritten each time.

Example (ml-100k, one seed: about 40 min on the project's 2-core CPU):
    python benchmarks/cold_start.py --out benchmarks/results/cold-start
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataset_prep.common import write_prepared  # noqa: E402
from dataset_prep.split import cold_start_split, read_item_tokens, read_pairs  # noqa: E402

MODELS = ["LATTICE", "MICRO"]  # trained both ways
TRANSDUCTIVE_ONLY = ["VBPR"]  # the papers' content-aware baseline (its cold items are in training)
K = 20


def source_features(source_dir, modalities):
    """{m: {token: row}} of the source dataset's modality files."""
    out = {}
    for name, spec in modalities.items():
        matrix = np.load(source_dir / spec["file"], allow_pickle=False)
        tokens = (source_dir / spec["tokens"]).read_text(encoding="utf-8").split("\n")
        out[name] = {t: matrix[r].astype(np.float32) for r, t in enumerate(tokens) if t}
    return out


def aligned(features, tokens, warm_tokens):
    """(len(tokens), d) rows in ``tokens`` order; a missing row is the mean of the warm items' rows."""
    present = [features[t] for t in warm_tokens if t in features]
    mean = np.mean(present, axis=0).astype(np.float32)
    return np.stack([features.get(t, mean) for t in tokens])


def prepare(data_path, source, seed, log=print):
    """Write ``<source>-cold`` and ``<source>-warm`` (once); the cold and valid-cold item tokens."""
    from recbole_micro.config import Config

    src_dir = Path(data_path) / source
    modalities = Config(model="MICRO", dataset=source, config_dict={"data_path": data_path})["modalities"]
    items = read_item_tokens(src_dir / f"{source}.item")
    splits, test_items, valid_items = cold_start_split(read_pairs(src_dir / f"{source}.inter"), items, seed)
    cold = test_items | valid_items
    warm_items = [t for t in items if t not in cold]
    cold_name, warm_name = f"{source}-cold", f"{source}-warm"
    if not (Path(data_path) / cold_name / f"{cold_name}.yaml").is_file():
        feats = source_features(src_dir, modalities)
        write_prepared(data_path, cold_name, splits, items,
                       {m: aligned(f, items, warm_items) for m, f in feats.items()}, log=log)
        rng = np.random.RandomState(seed)
        by_user = {}
        for user, item in splits["train"]:
            by_user.setdefault(user, []).append(item)
        held = {u: its[rng.randint(len(its))] for u, its in by_user.items() if len(its) >= 2}
        warm = {"train": [(u, i) for u, i in splits["train"] if held.get(u) != i],
                "valid": sorted(held.items()), "test": sorted(held.items())}
        write_prepared(data_path, warm_name, warm, warm_items,
                       {m: aligned(f, warm_items, warm_items) for m, f in feats.items()}, log=log)
        new_dir = Path(data_path) / warm_name / "cold-items"  # the cold items' features, for add_items
        new_dir.mkdir(exist_ok=True)
        from recbole_micro.files import write_feature_files

        cold_tokens = sorted(cold)
        for m, f in feats.items():
            write_feature_files(new_dir / f"{m}.npy", new_dir / f"{m}.tokens", cold_tokens, aligned(f, cold_tokens, warm_items))
    return cold_name, warm_name, cold


def split_matrix(dataset, dataset_dir, name, split):
    """(users, items) CSR of ``<name>.<split>.inter`` in ``dataset``'s ids."""
    pairs = read_pairs(Path(dataset_dir) / f"{name}.{split}.inter")
    users, items = dataset.field2token_id[dataset.uid_field], dataset.field2token_id[dataset.iid_field]
    rows, cols = [users[u] for u, _ in pairs], [items[i] for _, i in pairs]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(dataset.user_num, dataset.item_num))


def ranking_metrics(scores, targets, k=K):
    """Mean Recall@k and NDCG@k (RecBole's definitions) over the rows of ``scores`` (users) with targets."""
    top_scores, top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    ranked = torch.isfinite(top_scores).numpy()  # masked items (-inf) are not ranked
    recalls, ndcgs = [], []
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    for row, items in enumerate(top.numpy()):
        wanted = set(targets[row].indices.tolist())
        hits = np.array([i in wanted for i in items], dtype=float) * ranked[row]
        recalls.append(hits.sum() / len(wanted))
        ndcgs.append((hits * discount[:len(hits)]).sum() / discount[:min(len(wanted), k)].sum())
    return {f"recall@{k}": float(np.mean(recalls)), f"ndcg@{k}": float(np.mean(ndcgs))}


def evaluate(scores, targets, history, cold_columns):
    """Both protocols for one (users, items) score matrix in the cold dataset's item order."""
    scores = scores.clone()
    scores[:, 0] = -torch.inf
    rows = history.tocoo()
    scores[torch.as_tensor(rows.row), torch.as_tensor(rows.col)] = -torch.inf
    out = {f"all_{k}": v for k, v in ranking_metrics(scores, targets).items()}
    only_cold = torch.full_like(scores, -torch.inf)
    only_cold[:, cold_columns] = scores[:, cold_columns]
    out.update({f"cold_{k}": v for k, v in ranking_metrics(only_cold, targets).items()})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="ml-100k")
    parser.add_argument("--data_path", default="dataset")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020])
    parser.add_argument("--split-seed", type=int, default=123, help="the cold-start draw (official: 123)")
    parser.add_argument("--settings", default="", help="extra key=value,... for every run (e.g. cl_anchors=batch)")
    parser.add_argument("--out", default="benchmarks/results/cold-start")
    parser.add_argument("--table-only", action="store_true", help="rewrite table.md from runs.jsonl and stop")
    args = parser.parse_args()
    if args.table_only:
        rows = [json.loads(line) for line in (Path(args.out) / "runs.jsonl").read_text().splitlines()]
        return write_table(Path(args.out), rows)

    from recbole_micro.config import Config
    from recbole_micro.experiments.compare import parse_model_spec
    from recbole_micro.quick_start import run_recbole_micro
    from recbole_micro.registry import create_dataset
    from recbole_micro.serve.recommend import Recommender

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / "runs.jsonl"
    done = [json.loads(line) for line in runs_file.read_text().splitlines()] if runs_file.is_file() else []
    cold_name, warm_name, cold = prepare(args.data_path, args.source, args.split_seed)
    extra = parse_model_spec(f"X:{args.settings}")[1] if args.settings else {}
    cold_dir = Path(args.data_path) / cold_name

    def record(row):
        done.append(row)
        with open(runs_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    def have(method, seed):
        return any(r["method"] == method and r["seed"] == seed for r in done)

    def train(model, dataset, seed):
        settings = {"data_path": args.data_path, "seed": seed, "show_progress": False,
                    "checkpoint_dir": "saved/cold-start", **extra}
        start = time.time()
        result = run_recbole_micro(model=model, dataset=dataset, config_dict=settings)
        return result, time.time() - start

    config = Config(model="MICRO", dataset=cold_name, config_dict={"data_path": args.data_path})
    dataset = create_dataset(config)  # the cold dataset's ids: every score matrix is put in this order
    tokens = list(dataset.field2id_token[dataset.iid_field])
    targets = split_matrix(dataset, cold_dir, cold_name, "test")
    users = np.flatnonzero(np.diff(targets.indptr))  # the users with cold test items
    targets = targets[users]
    train_matrix = split_matrix(dataset, cold_dir, cold_name, "train")[users]
    history = train_matrix + split_matrix(dataset, cold_dir, cold_name, "valid")[users]
    cold_columns = torch.as_tensor([k for k, t in enumerate(tokens) if t in cold])
    user_tokens = dataset.id2token(dataset.uid_field, users)

    def scores_of(recommender):
        """The recommender's unmasked scores of ``users`` (by token) over ``tokens`` (by token)."""
        column = {t: k for k, t in enumerate(recommender.item_tokens)}
        order = torch.as_tensor([column[t] for t in tokens])
        return recommender.raw_scores(recommender.user_ids(user_tokens))[:, order]

    if not have("content kNN (raw features)", None):
        profile = sp.diags(1.0 / np.maximum(train_matrix.sum(axis=1).A1, 1)) @ train_matrix
        scores = torch.zeros(len(users), len(tokens))
        for m, feat in dataset.item_modalities.items():
            unit = torch.nn.functional.normalize(torch.as_tensor(np.asarray(feat), dtype=torch.float32), dim=1).numpy()
            scores += torch.as_tensor((profile @ unit) @ unit.T, dtype=torch.float32)
        record({"method": "content kNN (raw features)", "seed": None, "users": len(users), "seconds": 0,
                **evaluate(scores, targets, history, cold_columns)})
    for seed in args.seeds:
        for model in MODELS + TRANSDUCTIVE_ONLY:
            if not have(f"{model} transductive", seed):
                result, seconds = train(model, cold_name, seed)
                metrics = evaluate(scores_of(Recommender.load(result["saved_model_file"], exclude=())),
                                   targets, history, cold_columns)
                recbole_recall = float(result["test_result"][f"recall@{K}"])
                if abs(recbole_recall - metrics[f"all_recall@{K}"]) > 1e-4:
                    raise SystemExit(f"{model}: this evaluation gives Recall@{K} {metrics[f'all_recall@{K}']:.5f} "
                                     f"where RecBole's gives {recbole_recall:.5f}; the two protocols differ.")
                record({"method": f"{model} transductive", "seed": seed, "users": len(users), "seconds": round(seconds),
                        "checkpoint": result["saved_model_file"], **metrics})
            variants = {f"{model} inductive": "none", f"{model} inductive, CF from neighbours": "neighbours"}
            if model in TRANSDUCTIVE_ONLY or all(have(method, seed) for method in variants):
                continue
            result, seconds = train(model, warm_name, seed)
            new_dir = Path(args.data_path) / warm_name / "cold-items"
            for method, cf in variants.items():
                warm = Recommender.load(result["saved_model_file"], exclude=())
                warm.add_items({m: str(new_dir / f"{m}.npy") for m in warm.model.modality_names}, cf=cf)
                record({"method": method, "seed": seed, "users": len(users), "seconds": round(seconds),
                        "checkpoint": result["saved_model_file"], **evaluate(scores_of(warm), targets, history, cold_columns)})
    write_table(out, done)


def write_table(out, rows):
    """table.md: one row per method, mean ± std over seeds of each metric."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    keys = [f"all_recall@{K}", f"all_ndcg@{K}", f"cold_recall@{K}", f"cold_ndcg@{K}"]
    lines = ["| method | seeds | all items: Recall@20 | NDCG@20 | cold items only: Recall@20 | NDCG@20 |",
             "|---|---|---|---|---|---|"]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        cells = [f"{np.mean([r[k] for r in mine]):.4f} ± {np.std([r[k] for r in mine]):.4f}" for k in keys]
        seeds = "-" if mine[0]["seed"] is None else str(len(mine))
        lines.append(f"| {method} | {seeds} | " + " | ".join(cells) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
