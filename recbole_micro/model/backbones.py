"""Collaborative-filtering backbones for LATTICE and MICRO (the papers' Table 5): MF, NGCF, LightGCN.

Each maps the user and item ID embeddings to the CF outputs x~_u, x~_i over the training
user-item graph. The item-graph embeddings of LATTICE/MICRO are then added to x~_i.
"""
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_micro.model.sparse import FixedSparse, bipartite_adjacency, scipy_to_torch

ADJ_NORMS = ("sym", "rw_self_loop")
CF_MODELS = ("mf", "ngcf", "lightgcn")


def interaction_adjacency(inter_matrix, n_users, n_items, norm="sym"):
    """Normalised bipartite adjacency [[0, R], [R^T, 0]] of the training interactions.

    Args:
        inter_matrix (scipy.sparse matrix): (n_users, n_items) training interactions.
        norm (str): ``sym``: D^-1/2 A D^-1/2 (LightGCN's, no self-loops); ``rw_self_loop``:
            D^-1 (A + I), the official LATTICE/MICRO code's.

    Returns:
        torch.Tensor: sparse (n_users + n_items) square matrix.
    """
    if norm not in ADJ_NORMS:
        raise ValueError(f"cf_adj_norm is {norm!r}; use one of {ADJ_NORMS}")
    a = bipartite_adjacency(inter_matrix, n_users, n_items)
    n = n_users + n_items
    if norm == "rw_self_loop":
        a = a + sp.eye(n, dtype=np.float32, format="csr")
    degree = np.asarray(a.sum(axis=1)).ravel() + 1e-7
    if norm == "sym":
        d = degree ** -0.5
        a = sp.diags(d) @ a @ sp.diags(d)
    else:
        a = sp.diags(1.0 / degree) @ a
    return scipy_to_torch(a)


class MFBackbone(nn.Module):
    """Matrix factorisation: x~ are the ID embeddings themselves."""

    def forward(self, user_e, item_e):
        return user_e, item_e


class GraphBackbone(nn.Module):
    """A backbone that multiplies by the fixed normalised adjacency (kept in CSR form)."""

    def __init__(self, adjacency, symmetric):
        super().__init__()
        operator = FixedSparse.from_coo(adjacency, symmetric=symmetric)
        self.symmetric = symmetric
        self.register_buffer("adjacency", operator.matrix, persistent=False)
        if not symmetric:
            self.register_buffer("adjacency_t", operator.matrix_t, persistent=False)

    def adjacency_mm(self, dense):
        """A @ dense, differentiable in ``dense``."""
        return FixedSparse(self.adjacency, self.adjacency if self.symmetric else self.adjacency_t).mm(dense)


class LightGCNBackbone(GraphBackbone):
    """LightGCN: E_(l+1) = A E_(l); the output is the mean of layers 0..L."""

    def __init__(self, adjacency, n_layers, symmetric=True):
        super().__init__(adjacency, symmetric)
        self.n_layers = n_layers

    def forward(self, user_e, item_e):
        ego = torch.cat([user_e, item_e])
        layers = [ego]
        for _ in range(self.n_layers):
            layers.append(self.adjacency_mm(layers[-1]))
        out = torch.stack(layers).mean(dim=0)
        return out[: user_e.shape[0]], out[user_e.shape[0]:]


class NGCFBackbone(GraphBackbone):
    """NGCF: E_(l+1) = LeakyReLU((A + I) E W1 + (A E * E) W2) with message dropout.

    The layers are L2-normalised and averaged (NGCF concatenates them), so the output keeps
    the embedding size that the item-graph term is added to.
    """

    def __init__(self, adjacency, n_layers, embedding_size, mess_dropout, symmetric=True):
        super().__init__(adjacency, symmetric)
        self.gc_linears = nn.ModuleList(nn.Linear(embedding_size, embedding_size) for _ in range(n_layers))
        self.bi_linears = nn.ModuleList(nn.Linear(embedding_size, embedding_size) for _ in range(n_layers))
        self.dropout = nn.Dropout(mess_dropout)

    def forward(self, user_e, item_e):
        ego = torch.cat([user_e, item_e])
        layers = [ego]
        for gc, bi in zip(self.gc_linears, self.bi_linears):
            side = self.adjacency_mm(ego)
            ego = F.leaky_relu(gc(side + ego) + bi(side * ego), negative_slope=0.2)
            ego = self.dropout(ego)
            layers.append(F.normalize(ego, p=2, dim=1))
        out = torch.stack(layers).mean(dim=0)
        return out[: user_e.shape[0]], out[user_e.shape[0]:]


def build_backbone(cf_model, inter_matrix, n_users, n_items, n_layers, embedding_size, adj_norm, mess_dropout):
    """The backbone called ``cf_model`` (``mf``, ``ngcf`` or ``lightgcn``)."""
    if cf_model not in CF_MODELS:
        raise ValueError(f"cf_model is {cf_model!r}; use one of {CF_MODELS}")
    if cf_model == "mf":
        return MFBackbone()
    adjacency = interaction_adjacency(inter_matrix, n_users, n_items, adj_norm)
    symmetric = adj_norm == "sym"
    if cf_model == "lightgcn":
        return LightGCNBackbone(adjacency, n_layers, symmetric)
    return NGCFBackbone(adjacency, n_layers, embedding_size, mess_dropout, symmetric)
