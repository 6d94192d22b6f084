"""Using a trained model: top-K recommendations for its users, from a saved checkpoint.

Every model scores through its own ``full_sort_predict`` (no second scoring path), for a batch
of users at a time (``eval_batch_size`` scores, as in evaluation), so all users of a large
catalogue fit in bounded memory. Each user's
training items (and, with ``exclude=("train", "valid")``, validation items) are never
recommended; neither is the padding item 0.

    from recbole_micro.serve import Recommender
    recommender = Recommender.load("saved/MICRO-....pth")
    tokens, items, scores = recommender.recommend(["196", "186"], k=20)
    recommender.explain("196", items[0][:3])                         # LATTICE, MICRO
    recommender.write_recommendations("recs.parquet", k=20)          # every user, in batches
    recommender.add_items({"visual": "new.visual.npy", "textual": "new.textual.npy"})  # LATTICE, MICRO
    recommender.recommend(["196"], k=10, new_only=True)               # the new items only

Items added after training (:meth:`Recommender.add_items`) are attached to the trained item
graphs through their features (the models' ``attach_items``) and scored by the content part of
the score alone: they have no CF embedding, because they have no ID embedding and no interactions.
"""
from pathlib import Path

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_micro.errors import NewItemsError, RecBoleMicroError

EXCLUDABLE = ("train", "valid")
NEW_ITEM_CF = ("none", "neighbours")  # what stands in for a new item's CF embedding


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
        self.new_tokens = []  # items added after training (add_items), ids from dataset.item_num on
        self.new_items = None  # their attach_items() outputs, concatenated

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

    @property
    def item_tokens(self):
        """Token of every item id: the trained items (PAD first), then the added ones."""
        return np.concatenate([self.dataset.field2id_token[self.iid_field], np.array(self.new_tokens, dtype=object)])

    def item_ids(self, tokens):
        """Ids of item ``tokens``, trained or added, refusing unknown tokens by name."""
        added = {t: self.dataset.item_num + k for k, t in enumerate(self.new_tokens)}
        tokens = [str(t) for t in tokens]
        trained = [t for t in tokens if t not in added]
        ids = dict(zip(trained, self.ids(self.iid_field, trained, "item").tolist())) if trained else {}
        return np.array([added[t] if t in added else ids[t] for t in tokens]) if tokens else np.array([], dtype=int)

    @torch.no_grad()
    def add_items(self, feature_files, cf="none"):
        """Attach items that were not in training, from their features, so they are recommended and explained.

        Args:
            feature_files (dict): {modality: path of a .npy} (one row per item, its tokens in the
                ``.tokens`` file beside it) or {modality: {file, tokens}}, as under ``modalities`` in
                a dataset YAML; one entry for every modality the model was trained on, rows of the
                trained dimension, the same new tokens in each. Relative paths are read from the
                current folder.
            cf (str): what stands in for their absent CF embedding x~_i: ``none`` (nothing: the
                score is the content part alone) or ``neighbours`` (the trained neighbours' CF
                embeddings averaged along the item's new graph edges, ``neighbour_cf`` of
                ``attach_items``), which puts new items on the trained items' scale.

        Returns:
            list: the added item tokens, in the order of the first modality's file.
        """
        from recbole_micro.data.features import parse_modalities, read_feature_matrix, read_token_rows

        model = self.model
        if cf not in NEW_ITEM_CF:
            raise NewItemsError(f"cf is {cf!r}; use one of {', '.join(NEW_ITEM_CF)}.")
        if not hasattr(model, "attach_items"):
            raise NewItemsError(f"add_items covers LATTICE and MICRO; {type(model).__name__} has no item graphs "
                                "to attach new items to.")
        specs = {spec.name: spec for spec in parse_modalities(feature_files, Path.cwd())}
        missing, extra = set(model.modality_names) - set(specs), set(specs) - set(model.modality_names)
        if missing or extra:
            raise NewItemsError(f"New items need features for exactly the modalities the model was trained on "
                                f"({', '.join(model.modality_names)}); missing: {sorted(missing) or 'none'}, "
                                f"not trained on: {sorted(extra) or 'none'}.")
        rows, first = {}, None
        for name in model.modality_names:
            spec = specs[name]
            if spec.file is None:
                raise NewItemsError(f"New items of modality '{name}' come from a .npy file (with its .tokens), not a field.")
            matrix = read_feature_matrix(spec)
            if matrix.shape[1] != model.modality_dims[name]:
                raise NewItemsError(f"{spec.file} has {matrix.shape[1]} columns, but the model's '{name}' features "
                                    f"have {model.modality_dims[name]}: new items need the trained dimension.")
            token_rows = read_token_rows(spec, matrix.shape[0])
            if first is None:
                first = (spec, list(token_rows))
            elif set(token_rows) != set(first[1]):
                odd = sorted(set(token_rows) ^ set(first[1]))[:5]
                raise NewItemsError(f"{spec.tokens} and {first[0].tokens} list other items (e.g. {odd}); "
                                    "every modality needs the same new items.")
            rows[name] = (spec, matrix, token_rows)
        tokens = first[1]
        known, added = self.dataset.field2token_id[self.iid_field], set(self.new_tokens)
        taken = [t for t in tokens if t in known or t in added]
        if taken:
            raise NewItemsError(f"{first[0].tokens} lists item token(s) {taken[:5]} that the model already has; "
                                "new items need new tokens (rename them, or drop the known ones).")
        feats = {}
        for name, (spec, matrix, token_rows) in rows.items():
            values = np.asarray(matrix[[token_rows[t] for t in tokens]], dtype=np.float32)
            if not np.isfinite(values).all():
                raise NewItemsError(f"{spec.file} holds NaN or infinite values; new items need finite features.")
            feats[name] = torch.from_numpy(values).to(self.device)
        attached = model.attach_items(feats)
        attached["cf"] = attached["neighbour_cf"] if cf == "neighbours" else torch.zeros_like(attached["item"])
        attached["vector"] = attached["cf"] + attached["item"]  # the item side of the score
        self.new_items = attached if self.new_items is None else concat_attached(self.new_items, attached)
        self.new_tokens += tokens
        self._explained = None
        return tokens

    def explain(self, user_token, item_tokens, top=3):
        """Why ``user_token`` gets each of ``item_tokens`` (LATTICE, MICRO): one dict per item; see :func:`explain`."""
        return explain(self, user_token, item_tokens, top)

    @torch.no_grad()
    def raw_scores(self, user_ids):
        """(len(user_ids), n_items + added) scores, unmasked: ``full_sort_predict``, then the added items,
        scored as the inner product of the user's final embedding with their item vector (``add_items``)."""
        users = torch.as_tensor(np.asarray(user_ids), dtype=torch.long, device=self.device)
        scores = self.model.full_sort_predict(Interaction({self.uid_field: users}).to(self.device))
        scores = scores.view(len(users), -1).float()
        if self.new_items is None:
            return scores
        user_final = self.model.final_embeddings_cached()[0][users]
        return torch.cat([scores, (user_final @ self.new_items["vector"].t()).float()], dim=1)

    @torch.no_grad()
    def scores(self, user_ids):
        """(len(user_ids), n_items + added) scores, excluded items at -inf."""
        scores = self.raw_scores(user_ids).clone()
        scores[:, 0] = -torch.inf  # the padding item
        if self.history is not None:
            rows = self.history[np.asarray(user_ids)].tocoo()
            scores[torch.as_tensor(rows.row, dtype=torch.long), torch.as_tensor(rows.col, dtype=torch.long)] = -torch.inf
        return scores

    def recommend(self, user_tokens=None, k=20, batch_users=None, new_only=False):
        """(user tokens, (n, k) item tokens, (n, k) scores), best first; all users when None;
        among the added items only with ``new_only``."""
        ids = self.user_ids(user_tokens)
        parts = list(self.iter_batches(ids, k, batch_users, new_only))
        if not parts:
            return np.array([]), np.empty((0, k), dtype=object), np.empty((0, k), dtype=np.float32)
        return tuple(np.concatenate(p) for p in zip(*parts))

    def iter_batches(self, user_ids, k, batch_users=None, new_only=False):
        """(user tokens, item tokens, scores) per batch of users."""
        first = self.dataset.item_num if new_only else 1  # the first candidate id
        n_candidates = self.dataset.item_num + len(self.new_tokens) - first
        if new_only and not self.new_tokens:
            raise ServeError("new_only needs added items: call add_items (--new-items) first.")
        if not 1 <= k <= n_candidates:
            raise ServeError(f"k is {k}: it must be in [1, {n_candidates}] (the number of candidate items).")
        tokens = self.item_tokens
        # as RecBole's full-ranking evaluation: eval_batch_size scores at a time
        batch_users = batch_users or max(1, self.config["eval_batch_size"] // (n_candidates + first))
        for start in range(0, len(user_ids), batch_users):
            batch = user_ids[start:start + batch_users]
            top_scores, top_items = torch.topk(self.scores(batch)[:, first:], k, dim=1)
            yield (self.dataset.id2token(self.uid_field, batch), tokens[top_items.cpu().numpy() + first],
                   top_scores.cpu().numpy())

    def write_recommendations(self, path, k=20, user_tokens=None, batch_users=None, new_only=False, explain_path=None):
        """Write ``user, rank, item, score`` rows (CSV or Parquet, by the suffix) batch by batch; the row count.

        With ``explain_path`` (LATTICE, MICRO), the explanation of every written (user, item) goes
        there as one JSON line, from the same batches (the scores are computed once).
        """
        import json

        import pandas as pd

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise ServeError(f"{path}: write recommendations to a .csv or a .parquet file.")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        explain_tmp = Path(explain_path).with_name(f".{Path(explain_path).name}.tmp") if explain_path else None
        writer, rows = None, 0
        try:
            for users, items, scores in self.iter_batches(self.user_ids(user_tokens), k, batch_users, new_only):
                if explain_tmp is not None:
                    with open(explain_tmp, "a" if rows else "w", encoding="utf-8") as f:
                        for user, row in zip(users, items):
                            f.writelines(json.dumps(entry) + "\n" for entry in explain(self, user, list(row)))
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
            if explain_tmp is not None:
                explain_tmp.replace(explain_path)
        finally:
            if writer is not None:
                writer.close()
            for leftover in (tmp, explain_tmp):
                if leftover is not None and leftover.exists():
                    leftover.unlink()
        return rows


def concat_attached(first, second):
    """Two ``attach_items`` outputs as one (tensors and graph rows stacked, per modality for dicts)."""
    from recbole_micro.model.layers import SparseGraph

    if isinstance(first, SparseGraph):
        return SparseGraph(torch.cat([first.idx, second.idx]), torch.cat([first.val, second.val]))
    if isinstance(first, dict):
        return {key: concat_attached(first[key], second[key]) for key in first}
    return torch.cat([first, second])


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
            parts.update(h=h, h_hat=F.normalize(h, p=2, dim=1, eps=NORM_EPS), alpha=side["alpha"])
            if model.use_user_pref:
                h_u = model.user_preference(h)
                parts.update(h_u_hat=F.normalize(h_u, p=2, dim=1, eps=NORM_EPS),
                             h_u_norm=h_u.norm(dim=1).clamp_min(NORM_EPS))
        else:
            parts["h_hat"] = F.normalize(model.item_graph_embedding(), p=2, dim=1, eps=NORM_EPS)
        new = recommender.new_items
        if new is not None:  # added items: no CF embedding, their attached rows and vectors
            parts["item_cf"] = torch.cat([item_cf, new["cf"]])
            parts["h_hat"] = torch.cat([parts["h_hat"], new["item"]])
            if isinstance(model, MICRO):
                parts.update(h=torch.cat([parts["h"], new["h"]]), alpha=torch.cat([parts["alpha"], new["alpha"]]),
                             graphs=concat_attached(graphs, new["graphs"]))
            else:
                parts["graphs"] = concat_attached(graphs, new["graph"])
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

    model = recommender.model
    if not isinstance(model, (MICRO, LATTICE)):
        raise ServeError(f"explain covers LATTICE and MICRO; {type(model).__name__} has no item graphs to explain.")
    (uid,) = recommender.user_ids([user_token])
    items = recommender.item_ids(item_tokens).tolist()
    item_names = recommender.item_tokens
    parts = _explained_parts(recommender)
    user_cf, item_cf, graphs, h_hat = parts["user_cf"], parts["item_cf"], parts["graphs"], parts["h_hat"]
    scores = recommender.raw_scores([uid]).view(-1)  # unmasked
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
