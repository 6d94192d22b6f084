"""Using a trained model: top-K recommendations for its users, from a saved checkpoint.

Every model scores through its own ``full_sort_predict`` (no second scoring path), for a batch
of users at a time (``eval_batch_size`` scores, as in evaluation), so all users of a large
catalogue fit in bounded memory. Each user's
training items (and, with ``exclude=("train", "valid")``, validation items) are never
recommended; neither is the padding item 0.

    from recbole_micro.serve.recommend import Recommender
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
import json
from pathlib import Path

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_micro.errors import ServeError
from recbole_micro.serve.explain import explain
from recbole_micro.serve.new_items import attach_new_items, concat_attached

EXCLUDABLE = ("train", "valid")


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
        """A :class:`Recommender` from a checkpoint (read without running code; see :mod:`recbole_micro.trainer.checkpoints`)."""
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
        known = set(self.dataset.field2token_id[self.iid_field]) | set(self.new_tokens)
        tokens, attached = attach_new_items(self.model, feature_files, known, self.device, cf)
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
