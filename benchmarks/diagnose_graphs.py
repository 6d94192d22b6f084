"""Why MICRO / LATTICE do or do not beat LightGCN on a dataset (issue 18): measured, not guessed.

1. **Graph quality against the interactions**, from the dataset alone. Each modality's kNN graph
   on the raw features (Eqs. 1-2, k as configured, the item itself left out) is tested on how
   often an item and its graph neighbour share at least one training user. Random pairs of
   items that have training interactions give the baseline. The lift is the ratio of the two.
2. **From a trained checkpoint** (``--checkpoint``, MICRO or LATTICE): the same measure for the
   learned graphs (on the transformed features) and the mixed A^m. For MICRO also the attention
   weights per modality (Eq. 7) and what the orthogonality loss does. With two modalities Eq. 11
   makes h_s^v = (1-a)(h^v - h^t) and h_s^t = -a(h^v - h^t), which are collinear and opposite.
   So L_S = mean (a(1-a)|h^v - h^t|^2)^2 can only shrink by pulling h^v towards h^t or by pushing
   a to 0 or 1. The script reports cos(h_s^v, h_s^t), |h^v - h^t| against |h^v|, and a(1-a).
3. **From a run's log** (``--log``): L_C and L_S after each epoch (MICRO logs train_loss1..4 =
   BPR, L2, beta_C L_C, beta_S L_S), the validation score, and the best epoch.

Writes one JSON file. Example (Scientific, graphs only: about 1 min on the project's 2-core CPU):
    python benchmarks/diagnose_graphs.py -d scientific --out benchmarks/results/diagnose/scientific-graphs.json
"""
import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def shared_user_rate(item_users, pairs):
    """Share of (i, j) pairs whose items have at least one training user in common."""
    if len(pairs) == 0:
        return float("nan")
    left, right = item_users[pairs[:, 0]], item_users[pairs[:, 1]]
    return float((np.asarray(left.multiply(right).sum(axis=1)).ravel() > 0).mean())


def graph_pairs(graph, items):
    """(i, j) pairs of the graph's edges from ``items`` with a positive weight, self-loops left out."""
    idx, val = graph.idx[items].cpu().numpy(), graph.val[items].detach().cpu().numpy()
    rows = np.repeat(items, idx.shape[1])
    keep = (val.ravel() > 0) & (idx.ravel() != rows) & (idx.ravel() != 0)
    return np.stack([rows[keep], idx.ravel()[keep]], axis=1)


def quality(item_users, graph, items, rng):
    """Neighbour and random shared-user rates and their lift."""
    pairs = graph_pairs(graph, items)
    random_pairs = np.stack([rng.choice(items, len(pairs)), rng.choice(items, len(pairs))], axis=1)
    random_pairs = random_pairs[random_pairs[:, 0] != random_pairs[:, 1]]
    neighbour, baseline = shared_user_rate(item_users, pairs), shared_user_rate(item_users, random_pairs)
    return {"edges": int(len(pairs)), "neighbours_share_a_user": round(neighbour, 4),
            "random_pairs_share_a_user": round(baseline, 4), "lift": round(neighbour / baseline, 2) if baseline else None}


def losses_from_log(path):
    """Per epoch: the logged loss parts and the validation score; the best epoch."""
    text = Path(path).read_text(errors="replace")
    epochs = {}
    for epoch, parts in re.findall(r"epoch (\d+) training \[time: [0-9.]+s, (.*?)\]", text):
        epochs[int(epoch)] = {f"loss{k}": float(v) for k, v in re.findall(r"train_loss(\d+): ([-0-9.e]+)", parts)}
    for epoch, score in re.findall(r"epoch (\d+) evaluating \[time: [0-9.]+s, valid_score: ([0-9.]+)\]", text):
        epochs.setdefault(int(epoch), {})["valid_score"] = float(score)
    best = re.findall(r"best eval result in epoch (\d+)", text)
    return {"per_epoch": [dict(epoch=e, **v) for e, v in sorted(epochs.items())],
            "best_epoch": int(best[-1]) if best else None}


def from_checkpoint(model, item_users, items, rng):
    from recbole_micro.model.general_recommender.micro import MICRO
    from recbole_micro.model.layers import SparseGraph

    model.eval()
    out = {}
    with torch.no_grad():
        for m in model.modality_names:
            out[f"{m} learned graph (transformed features)"] = quality(item_users, model.learned_graph(m), items, rng)
        graphs = model.item_graphs()
        if isinstance(graphs, SparseGraph):
            out["fused graph A"] = quality(item_users, graphs, items, rng)
        else:
            for m, graph in graphs.items():
                out[f"{m} mixed graph A^m (Eq. 5)"] = quality(item_users, graph, items, rng)
        if isinstance(model, MICRO) and model.use_contrastive:
            side = model.item_multimodal_embeddings()
            alpha = side["alpha"][items]
            out["attention (Eq. 7)"] = {
                m: {"mean": round(float(alpha[:, k].mean()), 4), "std": round(float(alpha[:, k].std()), 4),
                    "share_of_items_above_0.5": round(float((alpha[:, k] > 0.5).float().mean()), 4)}
                for k, m in enumerate(model.modality_names)}
            if side["h_s"] is not None and len(model.modality_names) == 2:
                a, b = model.modality_names
                h_a, h_b = side["h_m"][a][items], side["h_m"][b][items]
                s_a, s_b = side["h_s"][a][items], side["h_s"][b][items]
                weight = alpha[:, 0] * alpha[:, 1]
                out["orthogonality (Eqs. 11-13)"] = {
                    "mean cos(h_s^a, h_s^b)": round(float(torch.nn.functional.cosine_similarity(s_a, s_b).mean()), 4),
                    "mean |h^a - h^b| / |h^a|": round(float(((h_a - h_b).norm(dim=1) / h_a.norm(dim=1).clamp_min(1e-12)).mean()), 4),
                    "mean a(1-a)": round(float(weight.mean()), 4),
                    "L_S": round(float(model.orthogonality_loss(side["h_s"])), 6),
                }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", "--dataset", default="scientific")
    parser.add_argument("--checkpoint", default=None, help="a MICRO or LATTICE checkpoint of this dataset")
    parser.add_argument("--log", default=None, help="the run's log file (L_C, L_S and validation per epoch)")
    parser.add_argument("--seed", type=int, default=0, help="for the random pairs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from recbole.data import data_preparation

    from recbole_micro.config import Config
    from recbole_micro.model.layers import knn_graph
    from recbole_micro.quick_start import load_data_and_model
    from recbole_micro.utils import create_dataset

    rng = np.random.default_rng(args.seed)
    if args.checkpoint:
        config, model, dataset, train, _, _ = load_data_and_model(args.checkpoint)
    else:
        config = Config(model="MICRO", dataset=args.dataset, config_dict={"state": "WARNING"})
        dataset = create_dataset(config)
        train, _, _ = data_preparation(config, dataset)
        model = None
    inter = train.dataset.inter_matrix(form="csr").astype(np.float32)
    item_users = inter.T.tocsr()  # (items, users)
    items = np.flatnonzero(np.diff(item_users.indptr))  # items with training interactions
    result = {"dataset": config["dataset"], "knn_k": config["knn_k"], "items_with_training_users": int(len(items)),
              "raw graphs": {}}
    for m, feat in dataset.item_modalities.items():
        graph = knn_graph(torch.as_tensor(np.asarray(feat), dtype=torch.float32), config["knn_k"])
        result["raw graphs"][m] = quality(item_users, graph, items, rng)
    if model is not None:
        result["checkpoint"] = str(args.checkpoint)
        result["trained"] = from_checkpoint(model, item_users, items, rng)
    if args.log:
        result["log"] = losses_from_log(args.log)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
