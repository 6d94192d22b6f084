"""Why a user gets an item: the terms of its score, the training items behind it, its graph neighbours."""
import torch

from recbole_micro.errors import ServeError
from recbole_micro.serve.new_items import concat_attached


def _neighbours(graph, item, tokens, top):
    """The ``top`` strongest edges of ``item``'s row in ``graph`` (duplicate edges summed): [{item, weight}]."""
    weights = {}
    for j, w in zip(graph.idx[item].tolist(), graph.val[item].tolist()):
        weights[j] = weights.get(j, 0.0) + w
    best = sorted(weights.items(), key=lambda kv: -kv[1])[:top]
    return [{"item": str(tokens[j]), "weight": round(w, 6)} for j, w in best]


@torch.no_grad()
def _explained_parts(recommender):
    """What explanations read from the model (its ``explanation_parts``), with the added items
    appended; computed once per Recommender (the weights are fixed)."""
    if recommender._explained is None:
        parts = dict(recommender.model.explanation_parts())
        new = recommender.new_items
        if new is not None:  # added items: no CF embedding, their attached rows and vectors
            parts["item_cf"] = torch.cat([parts["item_cf"], new["cf"]])
            parts["h_hat"] = torch.cat([parts["h_hat"], new["item"]])
            for key in ("h", "alpha"):
                if key in parts:
                    parts[key] = torch.cat([parts[key], new[key]])
            parts["graphs"] = concat_attached(parts["graphs"], new["graphs"] if "graphs" in new else new["graph"])
        recommender._explained = parts
    return recommender._explained


@torch.no_grad()
def explain(recommender, user_token, item_tokens, top=3):
    """Why ``user_token`` gets each of ``item_tokens``: one dict per item, tokens only.

    MICRO (TKDE Eq. 17): score = x_u.x_i + x_u.h_i + h_u.x_i + h_u.h_i, with x the CF embeddings
    and h the normalised multimodal ones; ``because`` lists the training items j whose share of
    h_u (h_j / (|N_u| |h_u|)) gives the largest part of the two h_u terms; ``attention`` is
    alpha_i^m (Eq. 7); ``neighbours`` the item's strongest edges per modality graph A^m (Eq. 5).
    LATTICE: score = x_u.x_i (cf) + x_u.h_i (item graph); ``because`` lists the user's training
    items among the item's neighbours in the fused graph, by edge weight.
    """
    model = recommender.model
    if not hasattr(model, "explanation_parts"):
        raise ServeError(f"explain covers LATTICE and MICRO; {type(model).__name__} has no item graphs to explain.")
    (uid,) = recommender.user_ids([user_token])
    items = recommender.item_ids(item_tokens).tolist()
    item_names = recommender.item_tokens
    parts = _explained_parts(recommender)
    user_cf, item_cf, graphs, h_hat = parts["user_cf"], parts["item_cf"], parts["graphs"], parts["h_hat"]
    scores = recommender.raw_scores([uid]).view(-1)  # unmasked
    trained = recommender.train_history[uid].indices
    out = []
    if "alpha" in parts:  # one graph and one attention weight per modality
        for i in items:
            terms = {"x_u.x_i": user_cf[uid] @ item_cf[i], "x_u.h_i": user_cf[uid] @ h_hat[i]}
            entry = {"user": str(user_token), "item": str(item_names[i])}
            if "h_u_hat" in parts:
                terms.update({"h_u.x_i": parts["h_u_hat"][uid] @ item_cf[i], "h_u.h_i": parts["h_u_hat"][uid] @ h_hat[i]})
                history = torch.as_tensor(trained, dtype=torch.long, device=h_hat.device)
                scale = 1.0 / (parts["h_u_norm"][uid] * max(len(trained), 1))
                shares = (parts["h"][history] * scale) @ (item_cf[i] + h_hat[i])
                order = torch.argsort(shares, descending=True)[:top]
                entry["because"] = [{"item": str(item_names[trained[k]]), "contribution": round(shares[k].item(), 6)}
                                    for k in order.tolist()]
            entry["terms"] = {k: round(v.item(), 6) for k, v in terms.items()}
            entry["score"] = round(scores[i].item(), 6)
            entry["attention"] = {m: round(parts["alpha"][i, k].item(), 6) for k, m in enumerate(model.modality_names)}
            entry["neighbours"] = {m: _neighbours(graphs[m], i, item_names, top) for m in model.modality_names}
            out.append(entry)
        return out
    trained_tokens = set(item_names[trained].tolist())
    for i in items:
        fused = _neighbours(graphs, i, item_names, graphs.idx.shape[1])
        out.append({
            "user": str(user_token), "item": str(item_names[i]),
            "terms": {"cf": round((user_cf[uid] @ item_cf[i]).item(), 6),
                      "item_graph": round((user_cf[uid] @ h_hat[i]).item(), 6)},
            "score": round(scores[i].item(), 6),
            "because": [n for n in fused if n["item"] in trained_tokens][:top],
            "neighbours": {"fused": fused[:top]},
        })
    return out
