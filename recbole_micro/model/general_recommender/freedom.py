r"""FREEDOM
################################################
Reference:
    Xin Zhou and Zhiqi Shen. "A Tale of Two Graphs: Freezing and Denoising Graph Structures for
    Multimodal Recommendation." in ACM MM 2023 (arXiv:2211.06924).

Reference code:
    https://github.com/enoche/FREEDOM and https://github.com/enoche/MMRec (src/models/freedom.py)

FREEDOM freezes LATTICE's item-item graph: per modality a binary cosine top-k graph built once
from the raw features, normalised, and the modality graphs mixed with fixed weights (Eqs. 1-3).
It denoises the user-item graph by degree-sensitive edge pruning, resampled every epoch
(Eqs. 4-7). Item ID embeddings are propagated over the frozen item graph (before Eq. 8), user and item
ID embeddings by LightGCN over the pruned user-item graph (before Eq. 8), and the item's final
embedding is the sum of the two (Eq. 8). The loss is BPR plus a BPR loss per modality with the
projected features as item vectors (Eqs. 9-10), plus an optional L2 term.

Differences from the paper and the authors' code (each an option; the paper's behaviour by default):
    - ``modality_graph_weights`` gives the mixing weights alpha_m (Eq. 3) for any set of
      modalities (they must sum to 1). Empty: the paper's ``image_graph_weight`` (alpha_v = 0.1,
      the code's ``mm_image_weight``) for one image and one text modality, equal weights otherwise.
    - Pruning (Eqs. 5-7) keeps ceil(|E| (1 - rho)) edges (paper); ``prune_rounding: floor`` keeps
      the code's int(|E| (1 - rho)). Edges are drawn without replacement with probability
      proportional to p_k (the code's ``torch.multinomial``, drawn here by Gumbel top-k, the same
      distribution, with no 2^24-edge limit); ``prune_replacement: True`` draws n edges with
      replacement and keeps the distinct ones (the paper's "multinomial with n trials" read
      literally). ``prune_renormalize: False`` keeps the full graph's weights on the kept edges
      instead of re-normalising the pruned graph by its own degrees (paper and code re-normalise).
    - ``reg_weight`` is an L2 term on the batch's ID embeddings (``reg_target: ego``) or final
      embeddings (``final``). The authors' code has no L2 term (its ``reg_weight`` is the
      modality-loss weight lambda, here ``modality_bpr_weight``); ``reg_weight: 0`` is the code.
    - ``feat_trainable: True`` trains the raw feature tables behind the projections (the code's
      ``nn.Embedding.from_pretrained(freeze=False)``); the graph is built before training either way.
    - Item 0 (RecBole's PAD) has no edges and is nobody's neighbour; duplicate interactions are one edge.
"""
import math
import os

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
from recbole.model.loss import EmbLoss
from recbole.utils import InputType

from recbole_micro.errors import SettingsError
from recbole_micro.files import is_writer
from recbole_micro.model.abstract_recommender import InnerProductRecommender
from recbole_micro.model.graph_cache import cached_graph
from recbole_micro.model.layers import (
    SparseGraph,
    combine,
    freeze,
    knn_graph,
    neighbour_count,
    propagate,
    symmetric_normalize,
)
from recbole_micro.model.sparse import FixedSparse

YAML = "properties/model/FREEDOM.yaml"
IMAGE_NAMES = ("visual", "image")
TEXT_NAMES = ("textual", "text")
WEIGHT_SUM_TOLERANCE = 1e-6


# ----- the frozen item-item graph (Eqs. 1-3) -----
def binary_knn_graph(feat, k, chunk_size=None):
    """S^m: each item's top-k items by cosine similarity, every kept edge of weight 1 (Eqs. 1-2).

    The item itself is among its k (cosine 1), as in the paper's top-k and the code. PAD (row 0)
    has no edges and is never a neighbour. Negative similarities are kept edges too: the graph
    is unweighted.

    Args:
        feat (torch.Tensor): (N, d) raw features; row 0 is PAD.
        k (int): neighbours per item.

    Returns:
        SparseGraph: (N, k) neighbours and weights 1 (0 on the PAD row).
    """
    graph = knn_graph(feat, k, chunk_size)  # cosine top-k, Eqs. 1-2
    ones = torch.ones_like(graph.val)
    ones[0] = 0  # PAD keeps no edges
    return SparseGraph(graph.idx, ones)


def mixed_item_graph(graphs, weights):
    """S = sum_m alpha_m D_m^-1/2 S^m D_m^-1/2 (Eq. 3, the normalisation unnumbered): each graph normalised, then mixed.

    Args:
        graphs (list of SparseGraph): the binary kNN graphs S^m.
        weights (list of float): alpha_m, one per graph.

    Returns:
        SparseGraph: (N, M k) slots.
    """
    return combine([symmetric_normalize(g) for g in graphs], weights)  # the normalisation inside, Eq. 3


def modality_mixing_weights(names, explicit, image_weight):
    """alpha_m per modality (Eq. 3): ``explicit`` if given, else the paper's image/text split, else equal.

    Args:
        names (list of str): the modalities used.
        explicit (dict or None): ``modality_graph_weights``, {name: weight}, summing to 1.
        image_weight (float): ``image_graph_weight``, alpha of the image modality next to a text one.

    Returns:
        list of float: one weight per name, summing to 1.

    Raises:
        SettingsError: ``explicit`` does not name exactly these modalities with weights >= 0 summing to 1.
    """
    if explicit:
        ok = set(explicit) == set(names) and all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in explicit.values()
        )
        if not ok or abs(sum(explicit.values()) - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise SettingsError(
                f"modality_graph_weights is {explicit!r}; allowed: one weight >= 0 for each of the modalities "
                f"{list(names)}, summing to 1, or empty (~) (the default is in {YAML})."
            )
        return [float(explicit[n]) for n in names]
    if len(names) == 2:
        image = [n for n in names if n.lower() in IMAGE_NAMES]
        text = [n for n in names if n.lower() in TEXT_NAMES]
        if image and text:
            return [image_weight if n == image[0] else 1.0 - image_weight for n in names]
    return [1.0 / len(names)] * len(names)


# ----- the denoised user-item graph (Eqs. 4-7) -----
def interaction_edges(inter_matrix):
    """Distinct (user, item) training pairs (each one edge of A, Eq. 4), as two (E,) long tensors."""
    r = sp.csr_matrix(inter_matrix, dtype=np.float32)  # duplicate pairs are summed into one entry
    r.eliminate_zeros()
    coo = r.tocoo()
    return torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))


def degree_weights(users, items, n_users, n_items):
    """1 / sqrt(d_u d_i) per edge, with these edges' degrees: the pruning's p_k and the pruned weights (Eqs. 5-7)."""
    d_u = torch.bincount(users, minlength=n_users).to(torch.float32)
    d_i = torch.bincount(items, minlength=n_items).to(torch.float32)
    return (d_u[users] * d_i[items]).rsqrt()


def kept_edge_count(n_edges, prune_ratio, rounding="ceil"):
    """n = ceil(|E| (1 - rho)) edges are kept (paper); ``floor`` is the code's int(|E| (1 - rho))."""
    exact = n_edges * (1.0 - prune_ratio)
    return min(n_edges, math.ceil(exact - 1e-9) if rounding == "ceil" else int(exact))


def sample_edges(probs, n, replacement=False):
    """Indices of the kept edges: n draws with probability proportional to ``probs`` (Eqs. 5-7).

    Without replacement (default) by Gumbel top-k, which has the distribution of drawing one
    edge at a time in proportion to ``probs`` among those left (torch.multinomial's); with
    replacement the n draws are independent and the distinct edges are kept (at most n).

    Args:
        probs (torch.Tensor): (E,) positive weights p_k.
        n (int): number of draws.

    Returns:
        torch.LongTensor: sorted distinct edge indices.
    """
    if n >= probs.numel() and not replacement:
        return torch.arange(probs.numel(), device=probs.device)
    if replacement:
        cdf = torch.cumsum(probs.double(), 0)
        draws = torch.rand(n, dtype=torch.float64, device=probs.device) * cdf[-1]
        return torch.unique(torch.searchsorted(cdf, draws, right=True).clamp(max=probs.numel() - 1))
    uniform = torch.rand(probs.shape, dtype=torch.float64, device=probs.device).clamp(min=1e-300)
    keys = probs.double().log() - torch.log(-torch.log(uniform))  # log p_k + Gumbel noise
    return torch.sort(torch.topk(keys, n).indices).values


def bipartite_operator(users, items, values, n_users, n_items):
    """The symmetric (U + N) square matrix with ``values`` on (u, U + i) and (U + i, u), as FixedSparse."""
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    n = n_users + n_items
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.cat([values, values]), (n, n),
                                  check_invariants=False)
    return FixedSparse.from_coo(coo, symmetric=True)


def light_propagate(adjacency, user_e, item_e, n_layers):
    """LightGCN: E_(l+1) = A E_(l), the output the mean of layers 0..L (before Eq. 8).

    Returns:
        tuple: (U, d) user and (N, d) item embeddings.
    """
    layers = [torch.cat([user_e, item_e])]
    for _ in range(n_layers):
        layers.append(adjacency.mm(layers[-1]))  # a layer
    out = torch.stack(layers).mean(dim=0)  # the readout
    return out[: user_e.shape[0]], out[user_e.shape[0]:]


class FREEDOM(InnerProductRecommender):
    r"""FREEDOM: a frozen multimodal item-item graph plus LightGCN over a degree-pruned user-item graph.

    :math:`h_u = \hat{h}_u`, :math:`h_i = \tilde{h}_i + \hat{h}_i`, with :math:`\tilde{h}_i` the item
    ID embedding propagated over the frozen item graph and :math:`\hat{h}` LightGCN's output on
    the user-item graph, pruned anew every training epoch and whole for evaluation.
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.n_item_layers = config["n_item_layers"]
        self.knn_k = config["knn_k"]
        neighbour_count(self.knn_k, self.n_items)  # a warning when knn_k is above the item count
        self.knn_chunk_size = config["knn_chunk_size"]
        self.graph_cache = config["graph_cache"]
        self.image_graph_weight = config["image_graph_weight"]
        self.modality_graph_weights = config["modality_graph_weights"]
        self.prune_ratio = config["prune_ratio"]
        self.prune_rounding = config["prune_rounding"]
        self.prune_replacement = config["prune_replacement"]
        self.prune_renormalize = config["prune_renormalize"]
        self.modality_bpr_weight = config["modality_bpr_weight"]
        self.reg_weight = config["reg_weight"]
        self.reg_target = config["reg_target"]
        self.feat_trainable = config["feat_trainable"]
        self.mixing_weights = modality_mixing_weights(
            self.modality_names, self.modality_graph_weights, self.image_graph_weight
        )

        # define layers and loss
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.feat_projections = nn.ModuleDict(
            {m: nn.Linear(self.modality_dims[m], self.embedding_size) for m in self.modality_names}  # W_m, b_m
        )
        if self.feat_trainable:  # the code trains the raw feature tables
            self.raw_feats = nn.ParameterDict(
                {m: nn.Parameter(self.modality_feat(m).clone()) for m in self.modality_names}
            )
        self.reg_loss = EmbLoss()

        # the two graphs: the frozen item graph, the user-item edges and their full normalised adjacency
        self.build_item_graph(config)
        self.build_interaction_graph(dataset)
        self.prune_due = True  # set by train(): prune anew on the epoch's first training forward
        self.prunings = 0
        self._pruned_adj = None

        # parameters initialization: Xavier for the ID embeddings (code); the projections keep
        # torch's Linear initialisation (code)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)

    # ----- graphs -----
    def modality_knn_graph(self, m, config):
        """The binary kNN graph S^m of modality m (Eqs. 1-2), read from the graph cache when there."""
        cache_dir = os.path.join(config["checkpoint_dir"], "graph_cache") if self.graph_cache else None
        return cached_graph(
            cache_dir, f'{config["dataset"]}-{m}-freedom', self.modality_feat(m),
            lambda feat: binary_knn_graph(feat, self.knn_k, self.knn_chunk_size),
            write=is_writer(config), knn_k=self.knn_k, rule="binary_topk",
        )

    @torch.no_grad()
    def build_item_graph(self, config):
        """S (Eqs. 1-3), once: buffers ``item_graph_idx``/``_val`` (N, M k) and its CSR form (and transpose)."""
        graph = mixed_item_graph([self.modality_knn_graph(m, config) for m in self.modality_names],
                                 self.mixing_weights)
        self.register_buffer("item_graph_idx", graph.idx, persistent=False)
        self.register_buffer("item_graph_val", graph.val, persistent=False)
        frozen = freeze(graph)
        self.register_buffer("item_adj", frozen.matrix, persistent=False)
        self.register_buffer("item_adj_t", frozen.matrix_t, persistent=False)

    def item_item_graph(self):
        """S (Eq. 3) as a SparseGraph."""
        return SparseGraph(self.item_graph_idx, self.item_graph_val)

    @torch.no_grad()
    def build_interaction_graph(self, dataset):
        """The edges of A (Eq. 4), their sampling weights p_k (Eqs. 5-7) and the full D^-1/2 A D^-1/2 (evaluation)."""
        users, items = interaction_edges(dataset.inter_matrix(form="coo"))
        probs = degree_weights(users, items, self.n_users, self.n_items)
        self.register_buffer("edge_users", users, persistent=False)
        self.register_buffer("edge_items", items, persistent=False)
        self.register_buffer("edge_probs", probs, persistent=False)
        self.register_buffer(
            "norm_adj", bipartite_operator(users, items, probs, self.n_users, self.n_items).matrix, persistent=False
        )

    def full_adjacency(self):
        """D^-1/2 A D^-1/2 of all training edges: the graph of evaluation (and of training when rho = 0)."""
        return FixedSparse(self.norm_adj, self.norm_adj)

    @torch.no_grad()
    def pruned_adjacency(self):
        """A_rho of this epoch (Eqs. 5-7): the sampled edges, normalised by their own degrees.

        Returns:
            FixedSparse: symmetric (U + N) square matrix.
        """
        n = kept_edge_count(self.edge_probs.numel(), self.prune_ratio, self.prune_rounding)
        kept = sample_edges(self.edge_probs, n, self.prune_replacement)  # Eqs. 5-7: the kept edges
        users, items = self.edge_users[kept], self.edge_items[kept]
        if self.prune_renormalize:
            values = degree_weights(users, items, self.n_users, self.n_items)  # Eqs. 5-7: renormalised
        else:
            values = self.edge_probs[kept]  # the full graph's weights on the kept edges
        return bipartite_operator(users, items, values, self.n_users, self.n_items)

    def training_adjacency(self):
        """The user-item graph of this training epoch, pruned on its first forward pass."""
        if self.prune_ratio == 0:
            return self.full_adjacency()
        stale = self._pruned_adj is None or self._pruned_adj.matrix.device != self.norm_adj.device
        if self.prune_due or stale:
            self._pruned_adj = self.pruned_adjacency()
            self.prune_due = False
            self.prunings += 1
        return self._pruned_adj

    def train(self, mode=True):
        if mode:
            self.prune_due = True  # RecBole calls train() once at the start of every epoch
        return super().train(mode)

    # ----- embeddings -----
    def item_graph_embedding(self):
        """h~ = S^L E_i (before Eq. 8): item ID embeddings over the frozen item graph, the last layer, (N, d)."""
        graph = FixedSparse(self.item_adj, self.item_adj_t)
        return propagate(graph, self.item_embedding.weight, self.n_item_layers)

    def user_item_embeddings(self, adjacency):
        """h^_u (U, d), h^_i (N, d): LightGCN over ``adjacency`` (before Eq. 8)."""
        return light_propagate(adjacency, self.user_embedding.weight, self.item_embedding.weight, self.n_layers)

    def forward(self):
        """h_u = h^_u and h_i = h~_i + h^_i (Eq. 8): (U, d) and (N, d).

        Training uses this epoch's pruned graph, evaluation the full one.
        """
        adjacency = self.training_adjacency() if self.training else self.full_adjacency()
        user_ui, item_ui = self.user_item_embeddings(adjacency)
        return user_ui, item_ui + self.item_graph_embedding()  # Eq. 8

    def raw_feat(self, m):
        """(N, d_m) raw features e^m (trainable copies when ``feat_trainable``)."""
        return self.raw_feats[m] if self.feat_trainable else self.modality_feat(m)

    def projected_feat(self, m):
        """h^m = e^m W_m + b_m (Eq. 9), (N, d)."""
        return self.feat_projections[m](self.raw_feat(m))

    # ----- losses -----
    def modality_bpr_loss(self, interaction, user_all):
        """sum_m BPR(h_u, h^m_i, h^m_j) (the lambda term of Eq. 10): projected features as item vectors."""
        return sum(self.bpr_loss(interaction, user_all, self.projected_feat(m)) for m in self.modality_names)

    def regularization(self, interaction, user_all, item_all):
        """L2 on the batch's ID embeddings (``ego``) or final embeddings (``final``), RecBole's EmbLoss."""
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        if self.reg_target == "final":
            return self.reg_loss(user_all[user], item_all[pos], item_all[neg], require_pow=True)
        return self.reg_loss(self.user_embedding(user), self.item_embedding(pos), self.item_embedding(neg),
                             require_pow=True)

    def calculate_loss(self, interaction):
        """BPR and lambda x the modality BPR losses (Eq. 10), reg_weight x L2: three logged terms."""
        self.clear_cache()
        user_all, item_all = self.forward()
        mf_loss = self.bpr_loss(interaction, user_all, item_all)
        modality_loss = self.modality_bpr_weight * self.modality_bpr_loss(interaction, user_all)
        reg_loss = self.reg_weight * self.regularization(interaction, user_all, item_all)
        return mf_loss, modality_loss, reg_loss
