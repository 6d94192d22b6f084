r"""MGCN
################################################
Reference:
    Penghang Yu, Zhiyi Tan, Guanming Lu and Bing-Kun Bao. "Multi-View Graph Convolutional Network
    for Multimedia Recommendation." ACM MM 2023 (arXiv 2308.03588).

Reference code:
    https://github.com/demonph10/MGCN (the authors' repository) and the authors' version in MMRec,
    https://github.com/enoche/MMRec (src/models/mgcn.py).

Per modality m, the projected item features are purified by a gate and the item ID embedding
(Eq. 1). Two views are encoded apart: a user-item view, LightGCN over the interactions on the
ID embeddings (Eqs. 2-3), and an item-item view per modality, the purified features propagated
over a kNN item graph built once from the raw features and frozen (Eqs. 4-7), with each user
the normalised sum of its items (Eq. 8). A behaviour-aware fuser splits the modality views into
an attention-weighted shared part (Eqs. 9-10) and specific parts (Eq. 11) gated by the
behaviour embedding (Eq. 12), averages them into e^mul (Eq. 13), and adds it to the behaviour
embedding (Eq. 14). An in-batch InfoNCE between e^mul and the behaviour view, for users and
items (Eq. 15), is added to BPR and L2 (Eqs. 16-18).

The paper's text was not in our stored sources (only its abstract): the equation numbers are
those of arXiv v1 as we recall them and must be checked against the PDF; the computation
follows the authors' code, which the recalled equations agree with.

Differences from the paper and the authors' code (each an option; our reading of the paper by default):
    - ``attention_softmax: modality`` normalises the fuser attention over the modalities of each
      node (Eq. 9; MMRec's version of the authors' code); ``node`` normalises it over all users
      and items per modality, as demonph10/MGCN (commit 09095cb) does with ``Softmax(dim=0)``.
    - ``feat_trainable: False`` keeps the raw features fixed; the authors' code trains the raw
      feature tables (``True``). The kNN graphs are built from the initial features either way.
    - L_C (Eq. 15) runs over the batch: its anchors are the batch's users and positive items and
      its negatives the other anchors' behaviour embeddings, as in the authors' code
      (``cl_nodes: batch``, repeats kept); ``unique`` takes each distinct user and item once.
      The authors' code hard-codes tau = 0.2 (its ``self.tau = 0.5`` is unused): ``tau``.
    - ``reg_target: final`` puts the L2 term on the batch's final embeddings, 1/2 sum of squares
      over the batch rows, as the authors' code does (it divides by the configured batch size);
      ``ego`` puts it on the batch's ID embeddings.
    - With M modalities e^mul is the mean of the shared part and the M specific parts (the
      authors' code divides by 3 for its two modalities). With one modality the attention is
      constant (its weights get no gradient) unless ``attention_softmax: node``.
    - kNN graphs are sparse (N x k slots) through ``layers.knn_graph``: negative similarities
      are zeroed (the authors' code keeps them, which can only matter for an item with fewer
      than k positive neighbours), each item is its own nearest neighbour (as in the code), and
      PAD (item 0) has no edges.
    - Not built: the authors' learning-rate decay (0.96 per 50 epochs) needs an ``MGCNTrainer``
      in ``recbole_micro/trainer/trainer.py``; the learning rate is constant here.
"""
import os

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.loss import EmbLoss
from recbole.utils import InputType

from recbole_micro.files import is_writer
from recbole_micro.model.abstract_recommender import InnerProductRecommender
from recbole_micro.model.backbones import LightGCNBackbone, interaction_adjacency
from recbole_micro.model.graph_cache import cached_graph
from recbole_micro.model.layers import (
    NORM_EPS,
    SparseGraph,
    freeze,
    knn_graph,
    neighbour_count,
    propagate,
    symmetric_normalize,
)
from recbole_micro.model.sparse import FixedSparse, at_least_float32, bipartite_adjacency, scipy_to_torch


def item_knn_graph(feat, k, chunk_size=None):
    """S^m = D^-1/2 topK(cos(e_i, e_j)) D^-1/2 (Eqs. 4-6): the frozen item-item graph of one modality.

    Args:
        feat (torch.Tensor): (N, d_m) raw features; row 0 is PAD.
        k (int): neighbours kept per item (the item itself included).

    Returns:
        SparseGraph: (N, k) neighbours and normalised weights.
    """
    return symmetric_normalize(knn_graph(feat, k, chunk_size))


def normalized_user_item(inter_matrix, n_users, n_items):
    """D_u^-1/2 R D_i^-1/2, (U, N) sparse COO: entry (u, i) = 1 / sqrt(|N_u| |N_i|) (Eq. 8).

    The user-item block of LightGCN's normalised adjacency; a pair seen several times counts once.
    """
    adjacency = bipartite_adjacency(inter_matrix, n_users, n_items)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    scale = np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)
    block = sp.diags(scale[:n_users]) @ adjacency[:n_users, n_users:] @ sp.diags(scale[n_users:])
    return scipy_to_torch(block)


def in_batch_info_nce(anchor, target, tau):
    r"""Mean over rows r of :math:`-\log \frac{e^{s(a_r, t_r)/\tau}}{\sum_j e^{s(a_r, t_j)/\tau}}` (Eq. 15).

    s is the cosine similarity; the negatives of anchor r are the other rows' targets (in-batch),
    as in the authors' code.
    ``losses.info_nce_loss`` does not fit: it adds same-view negatives and runs over all items.
    Computed in float32 also under autocast.

    Args:
        anchor (torch.Tensor): (B, d) e^mul of the batch's nodes.
        target (torch.Tensor): (B, d) their behaviour embeddings.

    Returns:
        torch.Tensor: scalar loss.
    """
    with torch.autocast(device_type=anchor.device.type, enabled=False):
        a = F.normalize(at_least_float32(anchor), p=2, dim=1, eps=NORM_EPS)
        t = F.normalize(at_least_float32(target), p=2, dim=1, eps=NORM_EPS)
        logits = a @ t.t() / tau  # (B, B)
        return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


class MGCN(InnerProductRecommender):
    r"""MGCN: purified modality features in an item-item view, ID embeddings in a user-item view, fused by behaviour.

    The score is :math:`e_u^\top e_i` with :math:`e = \bar{e}^{id} + e^{mul}` (Eqs. 14, 16).
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.n_ui_layers = config["n_ui_layers"]
        self.n_item_layers = config["n_item_layers"]
        self.attention_softmax = config["attention_softmax"]
        self.knn_k = config["knn_k"]
        neighbour_count(self.knn_k, self.n_items)  # a warning when knn_k is above the item count
        self.knn_chunk_size = config["knn_chunk_size"]
        self.feat_trainable = config["feat_trainable"]
        self.cl_weight = config["cl_weight"]
        self.tau = config["tau"]
        self.cl_nodes = config["cl_nodes"]
        self.reg_weight = config["reg_weight"]
        self.reg_target = config["reg_target"]

        # the user-item graph: LightGCN's adjacency and its user-item block (Eqs. 2, 8)
        inter = dataset.inter_matrix(form="coo").astype(np.float32)
        adjacency = interaction_adjacency(inter, self.n_users, self.n_items, "sym")
        self.backbone = LightGCNBackbone(adjacency, self.n_ui_layers)
        user_item = FixedSparse.from_coo(normalized_user_item(inter, self.n_users, self.n_items))
        self.register_buffer("user_item_adj", user_item.matrix, persistent=False)
        self.register_buffer("user_item_adj_t", user_item.matrix_t, persistent=False)

        # the item-item graphs (Eqs. 4-6): built once from the raw features, frozen
        self.build_item_graphs(config)

        # define layers and loss
        d = self.embedding_size
        self.user_embedding = nn.Embedding(self.n_users, d)  # e_u^id
        self.item_id_embedding = nn.Embedding(self.n_items, d)  # e_i^id
        names = self.modality_names
        if self.feat_trainable:  # the authors' code trains the raw feature tables
            self.raw_feats = nn.ParameterDict({m: nn.Parameter(self.modality_feat(m).clone()) for m in names})
        self.feat_projections = nn.ModuleDict({m: nn.Linear(self.modality_dims[m], d) for m in names})  # W_1, b_1
        self.purifier_gates = nn.ModuleDict({m: nn.Linear(d, d) for m in names})  # W_2, b_2
        self.attention = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))  # W_3, b_3, q
        self.preference_gates = nn.ModuleDict({m: nn.Linear(d, d) for m in names})  # W_4, b_4
        self.reg_loss = EmbLoss()

        # parameters initialization: Xavier for the ID embeddings, PyTorch's default for the
        # linear layers (both as in the authors' code); feature tables untouched
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)

    def build_item_graphs(self, config):
        """S^m per modality (Eqs. 4-6) as buffers: its (N, k) table and a CSR copy for products; cached on disk."""
        cache_dir = os.path.join(config["checkpoint_dir"], "graph_cache") if config["graph_cache"] else None
        with torch.no_grad():
            for m in self.modality_names:
                graph = cached_graph(
                    cache_dir, f'{config["dataset"]}-{m}', self.modality_feat(m),
                    lambda feat: item_knn_graph(feat, self.knn_k, self.knn_chunk_size),
                    write=is_writer(config), knn_k=self.knn_k,
                )
                frozen = freeze(graph)
                self.register_buffer(f"{m}_knn_idx", graph.idx, persistent=False)
                self.register_buffer(f"{m}_knn_val", graph.val, persistent=False)
                self.register_buffer(f"{m}_item_adj", frozen.matrix, persistent=False)
                self.register_buffer(f"{m}_item_adj_t", frozen.matrix_t, persistent=False)

    def item_graph(self, m):
        """S^m (Eq. 6) as its (N, k) neighbour and weight table."""
        return SparseGraph(getattr(self, f"{m}_knn_idx"), getattr(self, f"{m}_knn_val"))

    # ----- behaviour-guided purifier (Eq. 1) -----
    def raw_feat(self, m):
        """(N, d_m) raw features e_i^m (the trained copies when ``feat_trainable``)."""
        return self.raw_feats[m] if self.feat_trainable else self.modality_feat(m)

    def purified_feat(self, m):
        r"""\dot{e}_i^m = e_i^id * sigmoid(W_2 (W_1 e_i^m + b_1) + b_2), (N, d)."""
        projected = self.feat_projections[m](self.raw_feat(m))
        return self.item_id_embedding.weight * torch.sigmoid(self.purifier_gates[m](projected))  # Eq. 1

    # ----- the two views (Eqs. 2-8) -----
    def behaviour_view(self):
        r"""\bar{e}^id: the mean of layers 0..L of LightGCN on the ID embeddings (Eqs. 2-3), (U + N, d)."""
        user, item = self.backbone(self.user_embedding.weight, self.item_id_embedding.weight)
        return torch.cat([user, item])

    def modality_view(self, m):
        r"""\ddot{e}^m of users and items, (U + N, d).

        Items: the purified features propagated ``n_item_layers`` times over S^m (Eq. 7);
        users: sum over their items of \ddot{e}_i^m / sqrt(|N_u| |N_i|) (Eq. 8).
        """
        item = propagate(FixedSparse(getattr(self, f"{m}_item_adj"), getattr(self, f"{m}_item_adj_t")),
                         self.purified_feat(m), self.n_item_layers)  # Eq. 7
        user = FixedSparse(self.user_item_adj, self.user_item_adj_t).mm(item)  # Eq. 8
        return torch.cat([user, item])

    # ----- behaviour-aware fuser (Eqs. 9-14) -----
    def modality_attention(self, views):
        """alpha^m = softmax(q^T tanh(W_3 e^m + b_3)) (Eq. 9), (U + N, M).

        Softmax over the modalities of each node (``attention_softmax: modality``), or over all
        nodes per modality (``node``, the authors' repository).
        """
        scores = torch.cat([self.attention(views[m]) for m in self.modality_names], dim=1)
        return F.softmax(scores, dim=1 if self.attention_softmax == "modality" else 0)  # Eq. 9

    def shared_embedding(self, views, alpha):
        """e^s = sum_m alpha^m e^m (Eq. 10), (U + N, d)."""
        return sum(alpha[:, [k]] * views[m] for k, m in enumerate(self.modality_names))  # Eq. 10

    def preferences(self, behaviour):
        r"""P^m = sigmoid(W_4^m \bar{e}^id + b_4^m) (Eq. 12): {m: (U + N, d)}."""
        return {m: torch.sigmoid(self.preference_gates[m](behaviour)) for m in self.modality_names}  # Eq. 12

    def multimodal_embedding(self, views, behaviour):
        r"""e^mul = (e^s + sum_m P^m * (e^m - e^s)) / (M + 1) (Eqs. 9-13).

        Returns:
            tuple: ``(e^mul (U + N, d), alpha (U + N, M))``.
        """
        alpha = self.modality_attention(views)
        shared = self.shared_embedding(views, alpha)
        prefer = self.preferences(behaviour)
        specific = [prefer[m] * (views[m] - shared) for m in self.modality_names]  # Eq. 11, gated by Eq. 12
        return (shared + sum(specific)) / (len(self.modality_names) + 1), alpha  # Eq. 13

    def embeddings(self):
        r"""Every representation the score and the losses need.

        Returns:
            dict: ``behaviour`` \bar{e}^id, ``multimodal`` e^mul, ``final`` e = \bar{e}^id + e^mul
            (Eq. 14), all (U + N, d), and ``alpha`` (U + N, M).
        """
        behaviour = self.behaviour_view()
        views = {m: self.modality_view(m) for m in self.modality_names}
        multimodal, alpha = self.multimodal_embedding(views, behaviour)
        final = behaviour + multimodal  # Eq. 14
        return {"behaviour": behaviour, "multimodal": multimodal, "final": final, "alpha": alpha}

    def forward(self):
        """Final user and item embeddings e_u, e_i (Eq. 14), (U, d) and (N, d)."""
        final = self.embeddings()["final"]
        return final[: self.n_users], final[self.n_users:]

    # ----- losses (Eqs. 15-18) -----
    def contrastive_nodes(self, interaction):
        """The users and items of L_C: the batch's users and positive items, as they come or each once."""
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        if self.cl_nodes == "unique":
            return torch.unique(users), torch.unique(items)
        return users, items

    def contrastive_loss(self, embeddings, users, items):
        """L_C = InfoNCE(e^mul, e^id) over the items plus over the users (Eq. 15)."""
        multimodal, behaviour = embeddings["multimodal"], embeddings["behaviour"]
        offset = self.n_users
        item_term = in_batch_info_nce(multimodal[offset + items], behaviour[offset + items], self.tau)
        user_term = in_batch_info_nce(multimodal[users], behaviour[users], self.tau)
        return item_term + user_term  # Eq. 15

    def regularization(self, interaction, user_all, item_all):
        """1/2 sum of squares over the batch rows: of the final embeddings (code) or of the ID embeddings ('ego')."""
        user, pos_item, neg_item = (interaction[k] for k in (self.USER_ID, self.ITEM_ID, self.NEG_ITEM_ID))
        if self.reg_target == "final":
            return self.reg_loss(user_all[user], item_all[pos_item], item_all[neg_item], require_pow=True)
        return self.reg_loss(self.user_embedding(user), self.item_id_embedding(pos_item),
                             self.item_id_embedding(neg_item), require_pow=True)

    def calculate_loss(self, interaction):
        """L = L_BPR + lambda_C L_C + lambda_E ||E||^2 (Eq. 18), as three terms RecBole logs apart."""
        self.clear_cache()
        embeddings = self.embeddings()
        final = embeddings["final"]
        user_all, item_all = final[: self.n_users], final[self.n_users:]
        mf_loss = self.bpr_loss(interaction, user_all, item_all)  # Eqs. 16-17
        reg_loss = self.reg_weight * self.regularization(interaction, user_all, item_all)
        cl_loss = self.cl_weight * self.contrastive_loss(embeddings, *self.contrastive_nodes(interaction))
        return mf_loss, reg_loss, cl_loss
