"""Using a trained model: top-K recommendations for its users, from a saved checkpoint.

Every model scores through its own ``full_sort_predict`` (no second scoring path), for a batch
of users at a time (``eval_batch_size`` scores, as in evaluation), so all users of a large
catalogue fit in bounded memory. Each user's
training items (and, with ``exclude=("train", "valid")``, validation items) are never
recommended; neither is the padding item 0.

    from recbole_micro.serve import Recommender
    recommender = Recommender.load("saved/MICRO-....pth")
    tokens, items, scores = recommender.recommend(["196", "186"], k=20)
    recommender.write_recommendations("recs.parquet", k=20)          # every user, in batches
"""
from pathlib import Path

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_micro.errors import RecBoleMicroError

EXCLUDABLE = ("train", "valid")


class ServeError(RecBoleMicroError, ValueError):
    """A recommendation request names an unknown user, a bad file type or a bad setting."""


class Recommender:
    """A trained model, its dataset and the histories to exclude, loaded once."""

    def __init__(self, config, model, dataset, splits, exclude=("train",)):
        unknown = set(exclude) - set(EXCLUDABLE)
        if unknown:
            raise ServeError(f"exclude {sorted(unknown)}: only {', '.join(EXCLUDABLE)} histories can be excluded.")
        self.config, self.model, self.dataset = config, model.eval(), dataset
        self.uid_field, self.iid_field = dataset.uid_field, dataset.iid_field
        self.device = config["device"]
        matrices = {name: splits[name].dataset.inter_matrix(form="csr") for name in {"train", *exclude}}
        self.train_history = matrices["train"]  # the items the model was trained on (h_u averages them)
        self.history = (sum(matrices[name] for name in exclude) > 0).tocsr() if exclude else None
        self._explained = None  # what explain() reads from the model, computed on its first call

    @classmethod
    def load(cls, model_file, exclude=("train",), trust_checkpoint=False):
        """A :class:`Recommender` from a checkpoint (read without running code; see :mod:`recbole_micro.checkpoints`)."""
        from recbole_micro.quick_start import load_data_and_model

        config, model, dataset, train, valid, _ = load_data_and_model(model_file, trust_checkpoint=trust_checkpoint)
        return cls(config, model, dataset, {"train": train, "valid": valid}, exclude)

    def user_ids(self, user_tokens=None):
        """Internal ids of ``user_tokens`` (all users when None), refusing unknown tokens by name."""
        if user_tokens is None:
            return np.arange(1, self.dataset.user_num)
        return self.ids(self.uid_field, user_tokens, "user")

    def ids(self, field, tokens, what):
        """Internal ids of ``tokens`` of ``field``, refusing unknown tokens by name."""
        tokens = [str(t) for t in tokens]
        known = self.dataset.field2token_id[field]
        missing = [t for t in tokens if t not in known]
        if missing:
            raise ServeError(f"Unknown {what} token(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}: "
                             f"not {what}s of dataset {self.config['dataset']}.")
        return np.array([known[t] for t in tokens])

    @torch.no_grad()
    def scores(self, user_ids):
        """(len(user_ids), n_items) scores from ``full_sort_predict``, excluded items at -inf."""
        users = torch.as_tensor(np.asarray(user_ids), dtype=torch.long, device=self.device)
        scores = self.model.full_sort_predict(Interaction({self.uid_field: users}).to(self.device))
        scores = scores.view(len(users), -1).float().clone()
        scores[:, 0] = -torch.inf  # the padding item
        if self.history is not None:
            rows = self.history[np.asarray(user_ids)].tocoo()
            scores[torch.as_tensor(rows.row, dtype=torch.long), torch.as_tensor(rows.col, dtype=torch.long)] = -torch.inf
        return scores

    def recommend(self, user_tokens=None, k=20, batch_users=None):
        """(user tokens, (n, k) item tokens, (n, k) scores), best first; all users when None."""
        ids = self.user_ids(user_tokens)
        parts = list(self.iter_batches(ids, k, batch_users))
        if not parts:
            return np.array([]), np.empty((0, k), dtype=object), np.empty((0, k), dtype=np.float32)
        return tuple(np.concatenate(p) for p in zip(*parts))

    def iter_batches(self, user_ids, k, batch_users=None):
        """(user tokens, item tokens, scores) per batch of users."""
        if not 1 <= k < self.dataset.item_num:
            raise ServeError(f"k is {k}: it must be in [1, {self.dataset.item_num - 1}] (the number of items).")
        # as RecBole's full-ranking evaluation: eval_batch_size scores at a time
        batch_users = batch_users or max(1, self.config["eval_batch_size"] // self.dataset.item_num)
        for start in range(0, len(user_ids), batch_users):
            batch = user_ids[start:start + batch_users]
            top_scores, top_items = torch.topk(self.scores(batch), k, dim=1)
            yield (self.dataset.id2token(self.uid_field, batch),
                   self.dataset.id2token(self.iid_field, top_items.cpu().numpy()),
                   top_scores.cpu().numpy())

    def write_recommendations(self, path, k=20, user_tokens=None, batch_users=None):
        """Write ``user, rank, item, score`` rows (CSV or Parquet, by the suffix) batch by batch; the row count."""
        import pandas as pd

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise ServeError(f"{path}: write recommendations to a .csv or a .parquet file.")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        writer, rows = None, 0
        try:
            for users, items, scores in self.iter_batches(self.user_ids(user_tokens), k, batch_users):
                frame = pd.DataFrame({"user": np.repeat(users, k), "rank": np.tile(np.arange(1, k + 1), len(users)),
                                      "item": items.reshape(-1), "score": scores.reshape(-1)})
                if suffix == ".csv":
                    frame.to_csv(tmp, mode="a" if rows else "w", header=not rows, index=False)
                else:
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    writer = writer or pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table)
                rows += len(frame)
            if writer is not None:
                writer.close()
                writer = None
            tmp.replace(path)
        finally:
            if writer is not None:
                writer.close()
            if tmp.exists():
                tmp.unlink()
        return rows


def model_embeddings(model, users_for_check):
    """(U, d) user and (N, d) item vectors with ``user @ item.T == full_sort_predict``, checked on some users.

    Ours define ``export_embeddings()``; RecBole's graph models cache ``restore_user_e`` /
    ``restore_item_e`` in ``full_sort_predict``, and its MF-like models score with their
    ``user_embedding`` / ``item_embedding`` tables. Whatever is found must reproduce the scores
    of ``users_for_check``, or the model is refused (its scores are not an inner product).
    """
    users = torch.as_tensor(users_for_check, dtype=torch.long, device=next(model.parameters()).device)
    with torch.no_grad():
        uid_field = model.USER_ID
        scores = model.full_sort_predict(Interaction({uid_field: users})).view(len(users), -1)
        if hasattr(model, "export_embeddings"):
            user_e, item_e = model.export_embeddings()
        elif getattr(model, "restore_user_e", None) is not None and getattr(model, "restore_item_e", None) is not None:
            user_e, item_e = model.restore_user_e, model.restore_item_e
        elif hasattr(model, "user_embedding") and hasattr(model, "item_embedding"):
            user_e, item_e = model.user_embedding.weight, model.item_embedding.weight
        else:
            raise ServeError(f"{type(model).__name__} has no user and item embeddings to export.")
        user_e, item_e = user_e.detach().float(), item_e.detach().float()
        if not torch.allclose(user_e[users] @ item_e.t(), scores.float(), rtol=1e-4, atol=1e-5):
            raise ServeError(f"{type(model).__name__}'s scores are not the inner products of its embeddings; "
                             "there is nothing faithful to export for an inner-product search.")
    return user_e.cpu().numpy(), item_e.cpu().numpy()


def export_embeddings(model_file, out_dir, with_faiss=False, trust_checkpoint=False, check_users=64):
    """Write ``<dataset>.user.npy/.tokens`` and ``<dataset>.item.npy/.tokens`` (and ``<dataset>.item.faiss``).

    Rows are in token order (the padding row 0 left out), in the feature files' own format.
    The faiss index is an exact inner-product index (``IndexFlatIP``) of the items.

    Returns:
        dict: the written paths.
    """
    from recbole_micro.files import write_feature_files

    recommender = Recommender.load(model_file, exclude=(), trust_checkpoint=trust_checkpoint)
    dataset = recommender.dataset
    rng = np.random.default_rng(0)
    sample = rng.choice(np.arange(1, dataset.user_num), size=min(check_users, dataset.user_num - 1), replace=False)
    user_e, item_e = model_embeddings(recommender.model, sample)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = recommender.config["dataset"]
    written = {}
    for side, field, matrix in (("user", dataset.uid_field, user_e), ("item", dataset.iid_field, item_e)):
        tokens = list(dataset.field2id_token[field][1:])
        npy, tok = out_dir / f"{name}.{side}.npy", out_dir / f"{name}.{side}.tokens"
        write_feature_files(npy, tok, tokens, matrix[1:])
        written[side] = (npy, tok)
    if with_faiss:
        from recbole_micro.files import write_atomically
        from recbole_micro.model.ann import import_faiss

        try:
            faiss = import_faiss()
        except ImportError as err:
            raise ServeError(str(err).replace("knn_backend: faiss", "--faiss")) from None
        index = faiss.IndexFlatIP(item_e.shape[1])
        index.add(np.ascontiguousarray(item_e[1:], dtype=np.float32))
        path = out_dir / f"{name}.item.faiss"
        write_atomically(path, lambda tmp: faiss.write_index(index, str(tmp)))
        written["faiss"] = path
    return written


def _neighbours(graph, item, tokens, top):
    """The ``top`` strongest edges of ``item``'s row in ``graph`` (duplicate edges summed): [{item, weight}]."""
    weights = {}
    for j, w in zip(graph.idx[item].tolist(), graph.val[item].tolist()):
        weights[j] = weights.get(j, 0.0) + w
    best = sorted(weights.items(), key=lambda kv: -kv[1])[:top]
    return [{"item": str(tokens[j]), "weight": round(w, 6)} for j, w in best]


@torch.no_grad()
def _explained_parts(recommender):
    """What explanations read from the model, computed once per Recommender (the weights are fixed).

    MICRO: the CF embeddings, the normalised h_i, h_i itself, alpha (Eq. 7), the modality graphs
    and the h_u norms; LATTICE: the CF embeddings, the normalised h_i and the fused graph.
    """
    from torch.nn import functional as F

    from recbole_micro.model.general_recommender.micro import MICRO
    from recbole_micro.model.layers import NORM_EPS

    if recommender._explained is None:
        model = recommender.model
        user_cf, item_cf = model.cf_embeddings()
        graphs = model.item_graphs()
        parts = {"user_cf": user_cf, "item_cf": item_cf, "graphs": graphs}
        if isinstance(model, MICRO):
            side = model.item_multimodal_embeddings()
            h = side["h"]
            parts.update(h=h, h_hat=F.normalize(h, p=2, dim=1, eps=NORM_EPS), alpha=model.fuse_shared(side["h_m"])[1])
            if model.use_user_pref:
                h_u = model.user_preference(h)
                parts.update(h_u_hat=F.normalize(h_u, p=2, dim=1, eps=NORM_EPS),
                             h_u_norm=h_u.norm(dim=1).clamp_min(NORM_EPS))
        else:
            parts["h_hat"] = F.normalize(model.item_graph_embedding(), p=2, dim=1, eps=NORM_EPS)
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
    from recbole_micro.model.general_recommender.lattice import LATTICE
    from recbole_micro.model.general_recommender.micro import MICRO

    model, dataset = recommender.model, recommender.dataset
    if not isinstance(model, (MICRO, LATTICE)):
        raise ServeError(f"explain covers LATTICE and MICRO; {type(model).__name__} has no item graphs to explain.")
    (uid,) = recommender.user_ids([user_token])
    items = recommender.ids(recommender.iid_field, item_tokens, "item").tolist()
    item_names = dataset.field2id_token[recommender.iid_field]
    parts = _explained_parts(recommender)
    user_cf, item_cf, graphs, h_hat = parts["user_cf"], parts["item_cf"], parts["graphs"], parts["h_hat"]
    users = torch.as_tensor([uid], dtype=torch.long, device=recommender.device)
    scores = model.full_sort_predict(Interaction({recommender.uid_field: users})).view(-1)  # unmasked
    trained = recommender.train_history[uid].indices
    out = []
    if isinstance(model, MICRO):
        for i in items:
            terms = {"x_u.x_i": user_cf[uid] @ item_cf[i], "x_u.h_i": user_cf[uid] @ h_hat[i]}
            entry = {"user": str(user_token), "item": str(item_names[i])}
            if model.use_user_pref:
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
    trained_set = set(trained.tolist())
    known = dataset.field2token_id[recommender.iid_field]
    for i in items:
        fused = _neighbours(graphs, i, item_names, graphs.idx.shape[1])
        out.append({
            "user": str(user_token), "item": str(item_names[i]),
            "terms": {"cf": round((user_cf[uid] @ item_cf[i]).item(), 6),
                      "item_graph": round((user_cf[uid] @ h_hat[i]).item(), 6)},
            "score": round(scores[i].item(), 6),
            "because": [n for n in fused if known[n["item"]] in trained_set][:top],
            "neighbours": {"fused": fused[:top]},
        })
    return out
