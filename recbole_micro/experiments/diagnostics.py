"""Why MICRO / LATTICE do or do not beat LightGCN on a dataset: measured, not guessed.

1. **Graph quality against the interactions.** Each kNN graph is tested on how often an item and
   its graph neighbour share at least one training user; random pairs of items that have
   training interactions give the baseline, and the lift is the ratio of the two.
2. **A trained model** (:func:`trained_model_diagnostics`): the same measure for the learned
   graphs (on the transformed features) and the mixed A^m; LATTICE's modality weights (Eq. 6);
   MICRO's attention weights per modality (Eq. 7) and what the orthogonality loss does. With two
   modalities Eq. 11 makes h_s^v = (1-a)(h^v - h^t) and h_s^t = -a(h^v - h^t), collinear and
   opposite, so L_S can only shrink by pulling h^v towards h^t or by pushing a to 0 or 1: the
   result holds cos(h_s^v, h_s^t), |h^v - h^t| against |h^v|, and a(1-a).
3. **A run's log** (:func:`losses_from_log`): the logged loss parts after each epoch (MICRO's
   train_loss1..4 are BPR, L2, beta_C L_C, beta_S L_S), the validation score, the best epoch.

``benchmarks/diagnose_graphs.py`` runs these on a dataset or checkpoint; ``--compare
--diagnose`` runs them after every MICRO and LATTICE run and keeps them beside its results.
"""
import re
from pathlib import Path

import numpy as np
import torch


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


def training_item_users(train_data):
    """(items x users) CSR matrix of the training interactions, and the items that have any."""
    inter = train_data.dataset.inter_matrix(form="csr").astype(np.float32)
    item_users = inter.T.tocsr()
    return item_users, np.flatnonzero(np.diff(item_users.indptr))


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


def _weights_summary(alpha, names):
    return {m: {"mean": round(float(alpha[:, k].mean()), 4), "std": round(float(alpha[:, k].std()), 4),
                "share_of_items_above_0.5": round(float((alpha[:, k] > 0.5).float().mean()), 4)}
            for k, m in enumerate(names)}


def trained_model_diagnostics(model, item_users, items, rng):
    """Graph quality of a trained MICRO's or LATTICE's graphs, and its modality weights (see the module docstring)."""
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
        if hasattr(model, "modality_weights"):  # LATTICE's softmax weights over the modality graphs
            weights = model.modality_weights()
            out["modality weights (LATTICE Eq. 6)"] = {m: round(float(weights[k]), 4)
                                                       for k, m in enumerate(model.modality_names)}
        if getattr(model, "use_contrastive", False):  # MICRO's attention fusion of the modality views
            side = model.item_multimodal_embeddings()
            alpha = side["alpha"][items]
            out["attention (Eq. 7)"] = _weights_summary(alpha, model.modality_names)
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


def diagnose_run(checkpoint, log=None, seed=0):
    """Everything above for one finished run: its raw and trained graphs, weights, and (with its log) the losses."""
    from recbole_micro.model.layers import knn_graph
    from recbole_micro.quick_start import load_data_and_model

    rng = np.random.default_rng(seed)
    config, model, dataset, train, _, _ = load_data_and_model(checkpoint)
    item_users, items = training_item_users(train)
    result = {"dataset": config["dataset"], "model": config["model"], "knn_k": config["knn_k"],
              "items_with_training_users": int(len(items)), "raw graphs": {}}
    for m, feat in dataset.item_modalities.items():
        graph = knn_graph(torch.as_tensor(np.asarray(feat), dtype=torch.float32), config["knn_k"])
        result["raw graphs"][m] = quality(item_users, graph, items, rng)
    result["checkpoint"] = str(checkpoint)
    result["trained"] = trained_model_diagnostics(model, item_users, items, rng)
    if log is not None and Path(log).is_file():
        result["log"] = losses_from_log(log)
    return result
