"""Item-item graph layers shared by LATTICE and MICRO: kNN graphs, normalisation, skip connection, propagation.

A graph over N items is a :class:`SparseGraph` of two (N, K) tensors: ``idx[i, k]`` is the
k-th neighbour of item i and ``val[i, k]`` the weight of that edge. Every row has the same
number of slots, so degrees are row sums and normalisation is a gather, and a graph costs
O(N*K) memory. Nothing here ever builds a dense N x N matrix: similarities are computed in
row chunks of O(chunk x N). Item 0 is RecBole's PAD: it has no edges and is nobody's neighbour.

Equation numbers refer to MICRO (TKDE); LATTICE's Eqs. 1-5 are the same operations.
"""
from logging import getLogger
from typing import NamedTuple

import torch
import torch.nn.functional as F

from recbole_micro.model.sparse import FixedSparse, sparse_mm

# Similarity chunks are at most this many floats (256 MB of float32).
DEFAULT_CHUNK_ELEMENTS = 1 << 26
NORM_EPS = 1e-12


class SparseGraph(NamedTuple):
    """Edges as (N, K) neighbour ids ``idx`` and weights ``val``; duplicates add up."""

    idx: torch.Tensor
    val: torch.Tensor

    def detach(self):
        return SparseGraph(self.idx, self.val.detach())

    def to_dense(self):
        """Dense (N, N) matrix: for tests on small N only."""
        n = self.idx.shape[0]
        dense = torch.zeros(n, n, dtype=self.val.dtype, device=self.val.device)
        return dense.index_put_((torch.arange(n, device=self.idx.device).unsqueeze(1).expand_as(self.idx), self.idx),
                                self.val, accumulate=True)


def chunk_rows(n_rows, n_cols, chunk_size=None):
    """Row chunk size so that a (chunk, n_cols) block stays within DEFAULT_CHUNK_ELEMENTS."""
    if chunk_size:
        return int(chunk_size)
    return max(1, min(n_rows, DEFAULT_CHUNK_ELEMENTS // max(n_cols, 1)))


_WIDE_K_WARNED = set()  # (k, N) pairs already warned about


def neighbour_count(k, n):
    """The neighbours an item keeps among ``n`` rows (PAD included): ``min(k, n - 1)``.

    A ``k`` above ``n - 1`` is warned about once per (k, n) in the process (learned graphs are
    rebuilt every pass): every item then keeps every item, a dense graph.
    """
    if k > n - 1 and (k, n) not in _WIDE_K_WARNED:
        _WIDE_K_WARNED.add((k, n))
        getLogger().warning(f"knn_k is {k}, but there are only {n - 1} items: each item keeps all {n - 1} "
                            f"(a dense item graph, {n - 1} edges a row); set knn_k below {n - 1} for a sparse one.")
    return min(k, n - 1)


def knn_graph(feat, k, chunk_size=None):
    """Cosine kNN graph (Eqs. 1-2): each item keeps its k most similar items.

    Negative similarities are suppressed to zero, as the paper says. The item itself (cosine 1)
    is among its own neighbours, as in Eq. 2 read literally and in the official code. PAD
    (row 0) gets no edges and is never chosen as a neighbour. Gradients reach ``feat`` through
    the kept similarity values.

    Args:
        feat (torch.Tensor): (N, d) item features; row 0 is PAD.
        k (int): neighbours per item; above N - 1 it is N - 1, with a warning.
        chunk_size (int): rows per similarity block (default: from DEFAULT_CHUNK_ELEMENTS).

    Returns:
        SparseGraph: (N, min(k, N - 1)) neighbours and similarities.
    """
    n = feat.shape[0]
    k = neighbour_count(k, n)
    unit = F.normalize(feat, p=2, dim=1, eps=NORM_EPS)
    step = chunk_rows(n, n, chunk_size)
    idx_chunks, val_chunks = [], []
    for start in range(0, n, step):
        sim = unit[start:start + step] @ unit.t()  # (chunk, N)  Eq. 1
        sim[:, 0] = float("-inf")  # PAD is nobody's neighbour
        val, idx = sim.topk(k, dim=1)  # Eq. 2
        idx_chunks.append(idx)
        val_chunks.append(val)
    idx, val = torch.cat(idx_chunks), torch.cat(val_chunks).clamp(min=0)  # negatives -> 0
    pad_row = torch.arange(n, device=feat.device) == 0
    idx = idx.masked_fill(pad_row.unsqueeze(1), 0)
    val = val.masked_fill(pad_row.unsqueeze(1), 0)
    return SparseGraph(idx, val)


def knn_rows(query, keys, k, chunk_size=None):
    """The kNN rows of items outside the graph (Eqs. 1-2 for new items): each query row keeps its k
    most similar ``keys`` (the known items), cosine, negatives -> 0, PAD (key 0) never chosen.

    Args:
        query (torch.Tensor): (Q, d) features of the new items.
        keys (torch.Tensor): (N, d) features of the known items; row 0 is PAD.
        k (int): neighbours per item (as for the known items' graph).

    Returns:
        SparseGraph: (Q, k) neighbour ids into ``keys`` and similarities.
    """
    k = min(k, keys.shape[0] - 1)
    unit_keys = F.normalize(keys, p=2, dim=1, eps=NORM_EPS)
    unit_query = F.normalize(query, p=2, dim=1, eps=NORM_EPS)
    step = chunk_rows(query.shape[0], keys.shape[0], chunk_size)
    idx_chunks, val_chunks = [], []
    for start in range(0, query.shape[0], step):
        sim = unit_query[start:start + step] @ unit_keys.t()  # Eq. 1
        sim[:, 0] = float("-inf")
        val, idx = sim.topk(k, dim=1)  # Eq. 2
        idx_chunks.append(idx)
        val_chunks.append(val.clamp(min=0))
    return SparseGraph(torch.cat(idx_chunks), torch.cat(val_chunks))


def degree_inv_sqrt(degree):
    """D^-1/2 with 0 where the degree is 0 (the reference's 'inf replaced by 0')."""
    safe = degree.clamp(min=NORM_EPS)
    return torch.where(degree > 0, safe.pow(-0.5), torch.zeros_like(degree))


def symmetric_normalize(graph):
    """D^-1/2 S D^-1/2 with D the row sums of S (Eq. 3): w_ik = s_ik / sqrt(d_i d_idx[i,k])."""
    d = degree_inv_sqrt(graph.val.sum(dim=1))
    return SparseGraph(graph.idx, graph.val * d.unsqueeze(1) * d[graph.idx])


def normalize_attached(rows, known_degree):
    """Eq. 3 for new items' rows against the known graph: w_jk = s_jk / sqrt(d_j d_k), with d_j the
    new row's sum and d_k the known item's degree in its own graph (which the new items leave as it is)."""
    d_new = degree_inv_sqrt(rows.val.sum(dim=1))
    return SparseGraph(rows.idx, rows.val * d_new.unsqueeze(1) * degree_inv_sqrt(known_degree)[rows.idx])


def combine(graphs, weights):
    """Weighted sum of graphs, sum_g weights[g] * graphs[g], as one graph with all their slots.

    Used for the skip connection of Eq. 5 and for LATTICE's modality mixing.

    Args:
        graphs (list of SparseGraph): graphs over the same N items.
        weights (list): one scalar (float or 0-d tensor) per graph.
    """
    idx = torch.cat([g.idx for g in graphs], dim=1)
    val = torch.cat([w * g.val for g, w in zip(graphs, weights)], dim=1)
    return SparseGraph(idx, val)


def skip_connection(initial, learned, lambda_coeff):
    """A = lambda * S~ + (1 - lambda) * A~ (Eq. 5): both inputs normalised."""
    return combine([initial, learned], [lambda_coeff, 1.0 - lambda_coeff])


def to_sparse_tensor(graph):
    """The graph as a coalesced torch sparse COO (N, N) matrix (duplicate edges summed)."""
    n, k = graph.idx.shape
    rows = torch.arange(n, device=graph.idx.device).repeat_interleave(k)
    indices = torch.stack([rows, graph.idx.reshape(-1)])
    return torch.sparse_coo_tensor(indices, graph.val.reshape(-1), (n, n), check_invariants=False).coalesce()


def freeze(graph, with_transpose=True):
    """A detached item graph as a :class:`FixedSparse` for fast repeated propagation."""
    if isinstance(graph, FixedSparse):
        return graph
    return FixedSparse.from_coo(to_sparse_tensor(graph.detach()), with_transpose=with_transpose)


def propagate(graph, embedding, n_layers):
    """H_(l) = A H_(l-1), L times, with no transform or activation (Eq. 6).

    Args:
        graph (SparseGraph or FixedSparse): the (N, N) item graph A. A SparseGraph whose
            weights require gradients is multiplied in COO form so that they get them; any
            other graph in CSR form.
        embedding (torch.Tensor): (N, d) input H_(0).
        n_layers (int): L.

    Returns:
        torch.Tensor: (N, d) H_(L).
    """
    if isinstance(graph, SparseGraph) and graph.val.requires_grad:
        adjacency = to_sparse_tensor(graph)
        multiply = lambda hidden: sparse_mm(adjacency, hidden)  # noqa: E731
    else:
        multiply = freeze(graph, with_transpose=embedding.requires_grad).mm
    hidden = embedding
    for _ in range(n_layers):
        hidden = multiply(hidden)
    return hidden


def propagate_rows(rows, hidden):
    """One more layer for rows outside the graph: h_j = sum_k w_jk hidden[idx_jk] (Eq. 6), (Q, d)."""
    return (rows.val.unsqueeze(-1) * hidden[rows.idx]).sum(dim=1)
