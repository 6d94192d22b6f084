r"""MMGCN
################################################
Reference:
    Yinwei Wei, Xiang Wang, Liqiang Nie, Xiangnan He, Richang Hong and Tat-Seng Chua. "MMGCN:
    Multi-modal Graph Convolution Network for Personalized Recommendation of Micro-video."
    ACM MM 2019.

A multimodal baseline of the MICRO and LATTICE papers (Table 4). Per modality m, a graph
convolution over the user-item graph, where users start from a learned preference u_m and
items from their features i_m; each layer aggregates the neighbours (mean or max) and combines
the result with the node's own representation and its ID embedding. The user and item
representations are the sums over modalities, and the score is their inner product.

Differences from the paper (options; the paper's form by default):
    - ``latent_dim`` projects each modality's features (and sizes the user preferences) to this
      width before the first layer, as the official code can; empty keeps the raw width.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.loss import EmbLoss
from recbole.utils import InputType

from recbole_micro.model.abstract_recommender import InnerProductRecommender
from recbole_micro.model.sparse import FixedSparse, bipartite_adjacency, row_normalized

AGGREGATIONS = ("mean", "max")
COMBINATIONS = ("concat", "element")


class MMGCNLayer(nn.Module):
    """One aggregation + combination layer of one modality (MMGCN Eqs. 3-7)."""

    def __init__(self, in_dim, out_dim, aggregation, combination):
        super().__init__()
        self.aggregation = aggregation
        self.combination = combination
        self.aggregate_linear = nn.Linear(in_dim, out_dim, bias=False)  # W_1
        self.self_linear = nn.Linear(in_dim, out_dim)  # W_2
        combine_in = 2 * out_dim if combination == "concat" else out_dim
        self.combine_linear = nn.Linear(combine_in, out_dim)  # W_3

    def aggregate(self, x, mean_adjacency, edges):
        """h = LeakyReLU(mean_j W_1 x_j) or LeakyReLU(max_j W_1 x_j) over the neighbours j."""
        if self.aggregation == "mean":
            return F.leaky_relu(self.aggregate_linear(mean_adjacency.mm(x)))  # W_1 mean = mean W_1: linear
        messages = self.aggregate_linear(x)[edges[1]]  # (E, d): W_1 x_j per edge (i <- j)
        pooled = torch.zeros(x.shape[0], messages.shape[1], dtype=x.dtype, device=x.device)
        index = edges[0].unsqueeze(1).expand_as(messages)
        pooled = pooled.scatter_reduce(0, index, messages, reduce="amax", include_self=False)
        return F.leaky_relu(pooled)

    def forward(self, x, id_embedding, mean_adjacency, edges):
        h = self.aggregate(x, mean_adjacency, edges)
        x_hat = F.leaky_relu(self.self_linear(x)) + id_embedding  # u^_m = LeakyReLU(W_2 u_m) + u_id
        if self.combination == "concat":  # g_co
            return F.leaky_relu(self.combine_linear(torch.cat([h, x_hat], dim=1)))
        return F.leaky_relu(self.combine_linear(h) + x_hat)  # g_ele


class MMGCN(InnerProductRecommender):
    r"""MMGCN: one user-item graph convolution per modality, summed into :math:`u^*` and :math:`i^*`."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.latent_dim = config["latent_dim"]
        self.aggregation = config["aggregation"]
        self.combination = config["combination"]
        self.reg_weight = config["reg_weight"]
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation is {self.aggregation!r}; use one of {AGGREGATIONS}")
        if self.combination not in COMBINATIONS:
            raise ValueError(f"combination is {self.combination!r}; use one of {COMBINATIONS}")

        # the user-item graph: mean over neighbours as D^-1 A, and the (target, source) edge list
        # of both directions for max pooling
        adjacency = bipartite_adjacency(dataset.inter_matrix(form="coo"), self.n_users, self.n_items)
        mean_adjacency = FixedSparse.from_coo(row_normalized(adjacency))
        self.register_buffer("mean_adjacency", mean_adjacency.matrix, persistent=False)
        self.register_buffer("mean_adjacency_t", mean_adjacency.matrix_t, persistent=False)
        edges = adjacency.tocoo()
        self.register_buffer("edges", torch.from_numpy(np.vstack([edges.row, edges.col]).astype(np.int64)), persistent=False)

        # define layers and loss
        d = self.embedding_size
        self.user_id_embedding = nn.Embedding(self.n_users, d)  # u_id
        self.item_id_embedding = nn.Embedding(self.n_items, d)  # i_id
        self.projections = nn.ModuleDict()
        self.preferences = nn.ParameterDict()
        self.layers = nn.ModuleDict()
        for m in self.modality_names:
            in_dim = self.latent_dim or self.modality_dims[m]
            if self.latent_dim:
                self.projections[m] = nn.Linear(self.modality_dims[m], self.latent_dim)
            self.preferences[m] = nn.Parameter(torch.empty(self.n_users, in_dim))  # u_m
            self.layers[m] = nn.ModuleList(
                MMGCNLayer(in_dim if l == 0 else d, d, self.aggregation, self.combination) for l in range(self.n_layers)
            )
        self.reg_loss = EmbLoss()

        # parameters initialization
        for parameter in [self.user_id_embedding.weight, self.item_id_embedding.weight, *self.preferences.values()]:
            nn.init.xavier_uniform_(parameter)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def modality_input(self, m):
        """x_m^(0) = [u_m; i_m] (features projected when ``latent_dim`` is set), (U + N, in_dim)."""
        features = self.modality_feat(m)
        if self.latent_dim:
            features = self.projections[m](features)
        return torch.cat([self.preferences[m], features])

    def modality_representation(self, m):
        """x_m^(L): L layers of aggregation and combination over the user-item graph (U + N, d)."""
        id_embedding = torch.cat([self.user_id_embedding.weight, self.item_id_embedding.weight])
        adjacency = FixedSparse(self.mean_adjacency, self.mean_adjacency_t)
        x = self.modality_input(m)
        for layer in self.layers[m]:
            x = layer(x, id_embedding, adjacency, self.edges)
        return x

    def forward(self):
        """u* = sum_m u_m^(L), i* = sum_m i_m^(L): (U, d) and (N, d)."""
        total = sum(self.modality_representation(m) for m in self.modality_names)
        return total[: self.n_users], total[self.n_users:]

    def calculate_loss(self, interaction):
        self.clear_cache()
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        neg_item = interaction[self.NEG_ITEM_ID]
        user_all, item_all = self.forward()
        mf_loss = self.bpr_loss(interaction, user_all, item_all)
        reg_loss = self.reg_loss(
            self.user_id_embedding(user), self.item_id_embedding(pos_item), self.item_id_embedding(neg_item),
            *[self.preferences[m][user] for m in self.modality_names], require_pow=True,
        )
        return mf_loss, self.reg_weight * reg_loss
