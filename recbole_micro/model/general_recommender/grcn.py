r"""GRCN
################################################
Reference:
    Yinwei Wei, Xiang Wang, Liqiang Nie, Xiangnan He and Tat-Seng Chua. "Graph-Refined
    Convolutional Network for Multimedia Recommendation with Implicit Feedback." ACM MM 2020.

Reference code:
    https://github.com/weiyinwei/GRCN (the authors' code)

A multimodal baseline of the MICRO paper (Table 4). GRCN re-weights the edges of the user-item
graph by how well each item's content matches its user's preference, then propagates ID
embeddings over the re-weighted graph. Three parts:

- graph refining, per modality m: items get f_i = norm(LeakyReLU(W_m x_i + b_m)), users a
  learned preference p_u, refined by neighbour routing; each edge gets an affinity in both
  directions, a softmax over the receiving node's neighbours of <p_u, f_i>;
- pruning: the affinities of the modalities are merged per edge (max of the affinities weighted
  by a learned per-node confidence, by default) into one weight per edge and direction;
- graph convolution: L layers of weighted sums of the normalised ID embeddings over the refined
  graph, summed with the input; the prediction concatenates the ID result with every
  modality's refined representation, and the score is an inner product (BPR).

The paper's method section was not at hand when this was written: the computation follows the
authors' code, read and re-expressed here, and its choices are the defaults:
    - routing updates each user's preference from its items (``num_routing`` times), as the
      paper describes it. As we read the authors' code (not run here), its routing messages
      only reach items, so the preferences stay as initialised; ``num_routing: 0`` gives that.
    - ``pruning: soft`` (the authors' commands for all three datasets) keeps the merged weights
      as they are; ``hard`` (their code's default) passes them through a ReLU.
    - the regulariser is the mean of the squared batch ID embeddings and user preferences.
    - the authors' edge dropout (0 in all their commands) is not implemented.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.utils import InputType

from recbole_micro.model.abstract_recommender import InnerProductRecommender
from recbole_micro.model.message_passing import EdgeList, edge_dot, edge_softmax, edge_weighted_sum

WEIGHT_MODES = ("confid", "max", "mean")
PRUNING = ("soft", "hard")
FUSION_MODES = ("concat", "mean", "id")


class GRCN(InnerProductRecommender):
    r"""GRCN: ID embeddings propagated over a user-item graph re-weighted by content affinity."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.latent_dim = config["latent_dim"]
        self.num_routing = config["num_routing"]
        self.n_layers = config["n_layers"]
        self.weight_mode = config["weight_mode"]
        self.pruning = config["pruning"]
        self.fusion_mode = config["fusion_mode"]
        self.reg_weight = config["reg_weight"]
        for key, allowed in (("weight_mode", WEIGHT_MODES), ("pruning", PRUNING), ("fusion_mode", FUSION_MODES)):
            if config[key] not in allowed:
                raise ValueError(f"{key} is {config[key]!r}; use one of {allowed}")
        if self.fusion_mode == "mean" and self.latent_dim != self.embedding_size:
            raise ValueError(
                f"fusion_mode 'mean' averages the ID and modality representations, so latent_dim "
                f"({self.latent_dim}) must equal embedding_size ({self.embedding_size})."
            )

        # the training edges: item -> user for routing; both directions over all nodes (users
        # 0..U-1, then items U..U+N-1) for refining and propagation
        inter = dataset.inter_matrix(form="coo")
        user, item = torch.from_numpy(inter.row.astype(np.int64)), torch.from_numpy(inter.col.astype(np.int64))
        self.n_nodes = self.n_users + self.n_items
        self.routing_edges = EdgeList(user, item, self.n_users, self.n_items)
        self.graph_edges = EdgeList(
            torch.cat([item + self.n_users, user]), torch.cat([user, item + self.n_users]), self.n_nodes, self.n_nodes
        )

        # define layers
        self.id_embedding = nn.Parameter(torch.empty(self.n_nodes, self.embedding_size))
        self.feat_mlps = nn.ModuleDict({m: nn.Linear(self.modality_dims[m], self.latent_dim) for m in self.modality_names})
        self.preferences = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(self.n_users, self.latent_dim)) for m in self.modality_names}
        )
        if self.weight_mode == "confid":
            self.confidence = nn.Parameter(torch.empty(self.n_nodes, len(self.modality_names)))

        # parameters initialization: Xavier normal for every matrix (the authors' code does so for the
        # ID, preference and confidence tables; its feature layers keep PyTorch's default)
        for parameter in self.parameters():
            if parameter.dim() == 2:
                nn.init.xavier_normal_(parameter)
        for mlp in self.feat_mlps.values():
            nn.init.zeros_(mlp.bias)

    # --- graph refining layer (per modality) ---------------------------------------------

    def item_prototypes(self, m):
        """f_i = norm(LeakyReLU(W_m x_i + b_m)): item content in the preference space, (N, latent_dim)."""
        return F.normalize(F.leaky_relu(self.feat_mlps[m](self.modality_feat(m))), dim=1)

    def routed_preferences(self, m, items):
        """Neighbour routing: p_u <- norm(p_u + sum_i a_ui f_i), a_ui = softmax_{i in N(u)} <p_u, f_i>."""
        edges = self.routing_edges
        preference = F.normalize(self.preferences[m], dim=1)
        for _ in range(self.num_routing):
            affinity = edge_softmax(edges, edge_dot(edges, preference, items))
            preference = F.normalize(preference + edge_weighted_sum(edges, affinity, items), dim=1)
        return preference

    def refine(self, m):
        """One modality's refined representation (U + N, latent_dim) and edge affinities (2E,).

        Each directed edge j -> k of ``graph_edges`` (user -> item and item -> user) gets the
        softmax of <p_u, f_i> over the edges entering k; the representation is x plus one sum
        of the neighbours weighted by these affinities.
        """
        items = self.item_prototypes(m)
        x = torch.cat([self.routed_preferences(m, items), items])
        affinity = edge_softmax(self.graph_edges, edge_dot(self.graph_edges, x, x))
        return x + edge_weighted_sum(self.graph_edges, affinity, x), affinity

    def edge_weights(self, affinities):
        """Merge the modalities' (2E, M) affinities into one weight per directed edge, then prune."""
        if self.weight_mode == "mean":
            weights = affinities.mean(dim=1)
        elif self.weight_mode == "max":
            weights = affinities.max(dim=1).values
        else:  # confid: each affinity weighted by the source node's learned confidence in m
            weights = (affinities * self.confidence[self.graph_edges.source]).max(dim=1).values
        return F.relu(weights) if self.pruning == "hard" else weights

    # --- graph convolution and prediction -------------------------------------------------

    def propagate_ids(self, weights):
        """e* = e0 + e1 + ... + eL, e0 = norm(ID embeddings), e(l+1)_k = sum_j w_jk e(l)_j."""
        x = F.normalize(self.id_embedding, dim=1)
        total = x
        for _ in range(self.n_layers):
            x = edge_weighted_sum(self.graph_edges, weights, x)
            total = total + x
        return total

    def forward(self):
        """Final user (U, D) and item (N, D) representations: e* fused with every modality's h^m."""
        refined, affinities = zip(*(self.refine(m) for m in self.modality_names))
        ids = self.propagate_ids(self.edge_weights(torch.stack(affinities, dim=1)))
        if self.fusion_mode == "concat":
            representation = torch.cat([ids, *refined], dim=1)
        elif self.fusion_mode == "mean":
            representation = (ids + sum(refined)) / (1 + len(refined))
        else:
            representation = ids
        return representation[: self.n_users], representation[self.n_users:]

    def calculate_loss(self, interaction):
        self.clear_cache()
        user = interaction[self.USER_ID]
        items = torch.cat([interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]]) + self.n_users
        user_all, item_all = self.forward()
        mf_loss = self.bpr_loss(interaction, user_all, item_all)
        reg_loss = (self.id_embedding[user] ** 2).mean() + (self.id_embedding[items] ** 2).mean()
        reg_loss = reg_loss + sum((self.preferences[m][user] ** 2).mean() for m in self.modality_names)
        return mf_loss, self.reg_weight * reg_loss
