"""The base classes of recbole-micro's multimodal models."""
import os

import numpy as np
import torch
import torch.nn as nn
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.loss import BPRLoss, EmbLoss

from recbole_micro.errors import FeatureFileError, NewItemsError
from recbole_micro.files import is_writer
from recbole_micro.model.ann import faiss_knn_graph, import_faiss
from recbole_micro.model.backbones import build_backbone
from recbole_micro.model.graph_cache import cached_graph
from recbole_micro.model.layers import (
    SparseGraph,
    freeze,
    knn_graph,
    knn_rows,
    neighbour_count,
    normalize_attached,
    propagate,
    propagate_rows,
    symmetric_normalize,
)


class MultimodalRecommender(GeneralRecommender):
    """A :class:`GeneralRecommender` that receives item modality features from the dataset.

    The features of the modalities in ``config['use_modalities']`` (all configured ones when
    it is empty) are registered as non-persistent buffers ``<name>_feat`` of shape
    (n_items, dim): they follow ``.to(device)`` but are not written into every checkpoint.
    Row 0 (PAD) is zero, so normalise with an epsilon.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        available = getattr(dataset, "item_modalities", None)
        if not available:
            raise FeatureFileError(
                f"{self.__class__.__name__} needs item modality features, but the dataset has none; "
                f"build it with recbole_micro.registry.create_dataset and name the features under "
                f"`modalities` in the dataset YAML."
            )
        self.use_modalities = config["use_modalities"]
        names = list(self.use_modalities or available)
        unknown = [n for n in names if n not in available]
        if unknown:
            raise FeatureFileError(
                f"use_modalities names {unknown}, but the dataset only has {list(available)}."
            )
        self.modality_names = names
        self.modality_dims = {}
        for name in names:
            self.register_buffer(f"{name}_feat", torch.from_numpy(available[name]), persistent=False)
            self.modality_dims[name] = int(available[name].shape[1])

    def modality_feat(self, name):
        """(n_items, dim) features of modality ``name``."""
        return getattr(self, f"{name}_feat")

    def other_parameter(self):
        parameters = super().other_parameter()
        parameters["modality_dims"] = dict(self.modality_dims)
        return parameters

    def load_other_parameter(self, para):
        para = dict(para or {})
        trained_dims = para.pop("modality_dims", None)
        if trained_dims is not None and trained_dims != self.modality_dims:
            changed = {
                n: (trained_dims.get(n), self.modality_dims.get(n))
                for n in set(trained_dims) | set(self.modality_dims)
                if trained_dims.get(n) != self.modality_dims.get(n)
            }
            raise FeatureFileError(
                "The checkpoint was trained on other modality dimensions than the dataset's feature "
                "files now have: " + ", ".join(f"{n}: trained {a}, now {b}" for n, (a, b) in sorted(changed.items()))
                + ". Retrain, or restore the feature files the model was trained with."
            )
        super().load_other_parameter(para)


class InnerProductRecommender(MultimodalRecommender):
    """A multimodal model that scores by the inner product of final user and item embeddings.

    Subclasses implement ``forward()`` -> (U, d), (N, d) final embeddings. Evaluation computes
    them once and caches them detached; ``clear_cache()`` drops them when weights change, and
    every switch between training and evaluation mode drops them too.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.mf_loss = BPRLoss()
        self.restore_user_e = None
        self.restore_item_e = None

    def bpr_loss(self, interaction, user_all, item_all):
        """BPR loss of the batch's (user, positive, negative) triples under inner-product scores."""
        u = user_all[interaction[self.USER_ID]]
        pos_scores = (u * item_all[interaction[self.ITEM_ID]]).sum(dim=1)
        neg_scores = (u * item_all[interaction[self.NEG_ITEM_ID]]).sum(dim=1)
        return self.mf_loss(pos_scores, neg_scores)

    def final_embeddings_cached(self):
        """Final (U, d) and (N, d) embeddings, computed once per evaluation (detached)."""
        if self.restore_user_e is None:
            # detach() also turns a bare Parameter (MF backbone) into a plain tensor, which a
            # module attribute must be so that it is not registered as a parameter.
            self.restore_user_e, self.restore_item_e = (e.detach() for e in self.forward())
        return self.restore_user_e, self.restore_item_e

    def predict(self, interaction):
        user_all, item_all = self.final_embeddings_cached()
        user = interaction[self.USER_ID]
        item = interaction[self.ITEM_ID]
        return (user_all[user] * item_all[item]).sum(dim=1)

    def full_sort_predict(self, interaction):
        user_all, item_all = self.final_embeddings_cached()
        return (user_all[interaction[self.USER_ID]] @ item_all.t()).view(-1)

    def clear_cache(self):
        self.restore_user_e, self.restore_item_e = None, None

    def export_embeddings(self):
        """(U, d) user and (N, d) item vectors whose inner products are ``full_sort_predict``'s scores."""
        return self.final_embeddings_cached()

    def train(self, mode=True):
        self.clear_cache()  # new mode or new weights: recompute
        return super().train(mode)

    def load_other_parameter(self, para):
        super().load_other_parameter(para)
        self.clear_cache()  # weights changed: cached final embeddings are stale


class ItemGraphRecommender(InnerProductRecommender):
    """Shared machinery of LATTICE and MICRO: a CF backbone plus per-modality item graphs.

    Per modality m it keeps the initial graph S~^m = norm(kNN(e^m)) built once from the raw
    features (Eqs. 1-3) and the transform W_m e^m + b_m (Eq. 4) whose kNN graph A~^m is
    learned. The learned graphs are rebuilt with gradients on the first training batch of
    every epoch (RecBole calls ``train()`` once per epoch), reused detached on the other
    batches, and rebuilt without gradients for evaluation.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.read_graph_settings(config)
        self.define_graph_layers(dataset)
        self.build_initial_graphs(config)

        # graph schedule and evaluation caches
        self.rebuild_graph = True
        self.graph_builds = 0
        self._graph_cache = None

        self.init_graph_weights()

    def read_graph_settings(self, config):
        """Every setting of the item graphs and the backbone, read once into a same-named attribute."""
        self.embedding_size = config["embedding_size"]
        self.knn_k = config["knn_k"]
        neighbour_count(self.knn_k, self.n_items)  # a warning when knn_k is above the item count
        self.knn_chunk_size = config["knn_chunk_size"]
        self.knn_backend = config["knn_backend"]
        self.knn_faiss_factory = config["knn_faiss_factory"]
        self.knn_faiss_params = config["knn_faiss_params"]
        self.lambda_coeff = config["lambda_coeff"]
        self.n_item_layers = config["n_item_layers"]
        self.reg_weight = config["reg_weight"]
        self.reg_target = config["reg_target"]
        self.feat_trainable = config["feat_trainable"]
        self.cf_model = config["cf_model"]
        self.cf_n_layers = config["cf_n_layers"]
        self.cf_adj_norm = config["cf_adj_norm"]
        self.mess_dropout = config["mess_dropout"]
        if self.reg_target not in ("ego", "final"):
            raise ValueError(f"reg_target is {self.reg_target!r}; use 'ego' or 'final'")
        if self.knn_backend not in ("exact", "faiss"):
            raise ValueError(f"knn_backend is {self.knn_backend!r}; use 'exact' or 'faiss'")
        if self.knn_backend == "faiss":
            import_faiss()  # fail now, with the install hint, not at the first graph

    def define_graph_layers(self, dataset):
        """ID embeddings, the feature transforms W_m, b_m (Eq. 4), the CF backbone and the L2 loss."""
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.feat_transforms = nn.ModuleDict(
            {m: nn.Linear(self.modality_dims[m], self.embedding_size) for m in self.modality_names}
        )
        if self.feat_trainable:  # the official code trains the raw feature tables
            self.raw_feats = nn.ParameterDict(
                {m: nn.Parameter(self.modality_feat(m).clone()) for m in self.modality_names}
            )
        self.backbone = build_backbone(
            self.cf_model, dataset.inter_matrix(form="coo").astype(np.float32), self.n_users, self.n_items,
            self.cf_n_layers, self.embedding_size, self.cf_adj_norm, self.mess_dropout,
        )
        self.reg_loss = EmbLoss()

    def build_initial_graphs(self, config):
        """S~^m (Eqs. 1-3) per modality as buffers: fixed, never in checkpoints, cached on disk by feature hash."""
        cache_dir = os.path.join(config["checkpoint_dir"], "graph_cache") if config["graph_cache"] else None
        with torch.no_grad():
            for m in self.modality_names:
                graph = cached_graph(
                    cache_dir, f'{config["dataset"]}-{m}', self.modality_feat(m),
                    lambda feat: symmetric_normalize(self.knn(feat)), write=is_writer(config), knn_k=self.knn_k,
                    **self.knn_backend_settings(),
                )
                self.register_buffer(f"{m}_initial_idx", graph.idx, persistent=False)
                self.register_buffer(f"{m}_initial_val", graph.val, persistent=False)

    def init_graph_weights(self):
        """Xavier for embeddings and transforms, as the papers say; zero biases; feature tables untouched."""
        for module in [self.user_embedding, self.item_embedding, *self.feat_transforms.values()]:
            nn.init.xavier_uniform_(module.weight)
        for module in self.feat_transforms.values():
            nn.init.zeros_(module.bias)

    def train(self, mode=True):
        if mode:
            self.rebuild_graph = True
        return super().train(mode)

    def raw_feat(self, m):
        """(N, d_m) raw features e^m (trainable copies when ``feat_trainable``)."""
        return self.raw_feats[m] if self.feat_trainable else self.modality_feat(m)

    def transformed_feat(self, m):
        """e~^m = W_m e^m + b_m (Eq. 4), (N, embedding_size)."""
        return self.feat_transforms[m](self.raw_feat(m))

    def initial_graph(self, m):
        """S~^m (Eqs. 1-3), built once from the raw features."""
        return SparseGraph(getattr(self, f"{m}_initial_idx"), getattr(self, f"{m}_initial_val"))

    def knn(self, feat):
        """kNN(feat) (Eqs. 1-2): exact by default, approximate with ``knn_backend: faiss``."""
        if self.knn_backend == "faiss":
            return faiss_knn_graph(feat, self.knn_k, self.knn_faiss_factory, self.knn_faiss_params, self.knn_chunk_size)
        return knn_graph(feat, self.knn_k, self.knn_chunk_size)

    def knn_backend_settings(self):
        """What besides the features and k decides the kNN graph (for the graph cache key)."""
        if self.knn_backend == "exact":
            return {}
        return {"backend": "faiss", "factory": self.knn_faiss_factory, "params": self.knn_faiss_params}

    def learned_knn(self, m):
        """kNN(e~^m) before normalisation: A^m of Eqs. 1-2 on the transformed features."""
        return self.knn(self.transformed_feat(m))

    def learned_graph(self, m):
        """A~^m = norm(kNN(e~^m)) (Eqs. 1-4)."""
        return symmetric_normalize(self.learned_knn(m))

    def build_item_graphs(self):
        """The item graph(s) used for propagation; overridden by LATTICE and MICRO."""
        raise NotImplementedError

    def item_graphs(self):
        """The item graphs for this forward pass, following the rebuild schedule.

        In training, the first call of an epoch builds them with gradients (and keeps a
        detached copy); later calls reuse the copy. In evaluation they are rebuilt without
        gradients, from the current parameters.
        """
        if self.training and not self.rebuild_graph and self._graph_cache is not None:
            return self._graph_cache
        graphs = self.build_item_graphs()
        self.graph_builds += 1
        if self.training:
            self.rebuild_graph = False
            self._graph_cache = tree_detach(graphs)
        return graphs

    def cf_embeddings(self):
        """x~_u (U, d), x~_i (N, d) from the CF backbone."""
        return self.backbone(self.user_embedding.weight, self.item_embedding.weight)

    def regularization(self, user, pos_item, neg_item, user_all, item_all):
        """L2 on the batch's ego embeddings (paper), or on its final embeddings (official)."""
        if self.reg_target == "final":
            return self.reg_loss(user_all[user], item_all[pos_item], item_all[neg_item], require_pow=True)
        return self.reg_loss(
            self.user_embedding(user), self.item_embedding(pos_item), self.item_embedding(neg_item), require_pow=True
        )

    def bpr_and_reg(self, interaction, user_all, item_all):
        """BPR loss (Eq. 18, batch mean) and weighted L2 for one batch."""
        mf_loss = self.bpr_loss(interaction, user_all, item_all)
        reg = self.regularization(
            interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID], user_all, item_all
        )
        return mf_loss, self.reg_weight * reg

    def load_other_parameter(self, para):
        super().load_other_parameter(para)  # also drops the cached final embeddings
        self._graph_cache = None
        self.rebuild_graph = True

    # ----- items outside training (inductive cold start) -----
    @torch.no_grad()
    def attached_graph_rows(self, new_feats):
        """Per modality, the rows new items get in the trained graphs: their kNN among the known items
        on the raw and on the transformed features (Eqs. 1-4), with the same k and normalisation.

        The known items' rows and degrees stay as trained (new items never become their neighbours),
        so a new item that is a copy of a known one gets exactly that item's rows.

        Args:
            new_feats (dict): {m: (Q, d_m) raw features} of the new items.

        Returns:
            dict: {m: {"initial": rows of S~^m, "learned_knn": kNN(e~^m) rows before Eq. 3,
            "learned_degree": (N,) degrees of the known kNN(e~^m), "learned": rows of A~^m,
            "transformed": (Q, d) e~^m of the new items}}.
        """
        rows = {}
        for m in self.modality_names:
            raw = self.raw_feat(m)
            initial = knn_rows(new_feats[m], raw, self.knn_k, self.knn_chunk_size)
            transformed, known_transformed = self.feat_transforms[m](new_feats[m]), self.transformed_feat(m)  # Eq. 4
            learned_knn = knn_rows(transformed, known_transformed, self.knn_k, self.knn_chunk_size)
            learned_degree = self.knn(known_transformed).val.sum(dim=1)  # the known kNN(e~^m)'s degrees
            rows[m] = {
                "initial": normalize_attached(initial, self.knn(raw).val.sum(dim=1)),  # Eq. 3
                "learned_knn": learned_knn, "learned_degree": learned_degree,
                "learned": normalize_attached(learned_knn, learned_degree),
                "transformed": transformed,
            }
        return rows

    def propagate_attached(self, rows, known_graph, known_input):
        """h_j^(L) = sum_k a_jk H_k^(L-1) (Eq. 6 for new rows): the known items' (L-1)-layer embeddings,
        as trained, averaged along the new item's edges. A new item has no H_(0) row of its own."""
        if self.n_item_layers == 0:
            raise NewItemsError(f"{type(self).__name__} with n_item_layers 0 has no item graph to attach new items to "
                                "(their ID embedding would be the whole item-graph term, and they have none).")
        return propagate_rows(rows, propagate(known_graph, known_input, self.n_item_layers - 1))


def tree_detach(graphs):
    """Detach a graph or a dict/list of graphs, as :class:`FixedSparse` for fast reuse."""
    if isinstance(graphs, SparseGraph):
        return freeze(graphs)
    if isinstance(graphs, dict):
        return {k: tree_detach(v) for k, v in graphs.items()}
    return [tree_detach(g) for g in graphs]
