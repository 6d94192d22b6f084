"""Sparse item-item graph layers shared by LATTICE and MICRO (pure functions).

A graph over N items is a :class:`SparseGraph` of two (N, K) tensors: ``idx[i, k]`` is the
k-th neighbour of item i and ``val[i, k]`` the weight of that edge. Every row has the same
number of slots, so degrees are row sums and normalisation is a gather, and a graph costs
O(N*K) memory. Nothing here ever builds a dense N x N matrix: similarities are computed in
row chunks of O(chunk x N). Item 0 is RecBole's PAD: it has no edges and is nobody's neighbour.

Equation numbers refer to MICRO (TKDE); LATTICE's Eqs. 1-5 are the same operations.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F

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


def knn_graph(feat, k, chunk_size=None):
    """Cosine kNN graph (Eqs. 1-2): each item keeps its k most similar items.

    Negative similarities are suppressed to zero, as the paper says. The item itself (cosine 1)
    is among its own neighbours, as in Eq. 2 read literally and in the official code. PAD
    (row 0) gets no edges and is never chosen as a neighbour. Gradients reach ``feat`` through
    the kept similarity values.

    Args:
        feat (torch.Tensor): (N, d) item features; row 0 is PAD.
        k (int): neighbours per item.
        chunk_size (int): rows per similarity block (default: from DEFAULT_CHUNK_ELEMENTS).

    Returns:
        SparseGraph: (N, k) neighbours and similarities.
    """
    n = feat.shape[0]
    k = min(k, n - 1)
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


def degree_inv_sqrt(degree):
    """D^-1/2 with 0 where the degree is 0 (the reference's 'inf replaced by 0')."""
    safe = degree.clamp(min=NORM_EPS)
    return torch.where(degree > 0, safe.pow(-0.5), torch.zeros_like(degree))


def symmetric_normalize(graph):
    """D^-1/2 S D^-1/2 with D the row sums of S (Eq. 3): w_ik = s_ik / sqrt(d_i d_idx[i,k])."""
    d = degree_inv_sqrt(graph.val.sum(dim=1))
    return SparseGraph(graph.idx, graph.val * d.unsqueeze(1) * d[graph.idx])


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


class FixedSparse(NamedTuple):
    """A constant sparse matrix in CSR form, with its transpose for the backward pass.

    CSR products are several times faster than COO ones on CPU, but autograd through a CSR
    product transposes the matrix on every backward pass; keeping the transpose avoids that.
    ``matrix_t`` is None when no gradient will be needed, and ``matrix`` itself when the
    matrix is symmetric.
    """

    matrix: torch.Tensor
    matrix_t: torch.Tensor = None

    @classmethod
    def from_coo(cls, coo, symmetric=False, with_transpose=True):
        coo = coo.detach().coalesce()
        matrix = coo.to_sparse_csr()
        if not with_transpose:
            return cls(matrix)
        return cls(matrix, matrix if symmetric else coo.t().coalesce().to_sparse_csr())

    def mm(self, dense):
        """matrix @ dense, differentiable in ``dense``."""
        if self.matrix_t is None or not dense.requires_grad:
            return torch.sparse.mm(self.matrix, dense)
        return _FixedSparseMatmul.apply(self.matrix, self.matrix_t, dense)


class _FixedSparseMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix, matrix_t, dense):
        ctx.matrix_t = matrix_t
        return torch.sparse.mm(matrix, dense)

    @staticmethod
    def backward(ctx, grad):
        return None, None, torch.sparse.mm(ctx.matrix_t, grad)


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
        multiply = lambda hidden: torch.sparse.mm(adjacency, hidden)  # noqa: E731
    else:
        multiply = freeze(graph, with_transpose=embedding.requires_grad).mm
    hidden = embedding
    for _ in range(n_layers):
        hidden = multiply(hidden)
    return hidden


# exp(x - 1/tau) of a cosine logit x = cos/tau lies in [exp(-2/tau), 1]: no overflow, and no
# underflow to 0 in float32 while 2/tau stays below this; for smaller tau the row maximum is
# subtracted instead (one more pass over the block).
_FIXED_SHIFT_MAX_RANGE = 80.0
# The exponentiated logits are kept for the backward pass when all anchors' blocks together
# have at most this many floats (512 MB of float32); above it they are recomputed there.
DEFAULT_KEEP_ELEMENTS = 1 << 27


def _exp_logits(p, keys, rows, tau, shift):
    """exp(p_r . keys_j / tau - shift_r) for the anchors ``rows``, the own column n + r zeroed.

    Returns:
        tuple: ``(block (c, 2n), shift (c, 1))``.
    """
    n = p.shape[0]
    logits = torch.mm(p[rows] * (1.0 / tau), keys.t())  # (c, 2n)
    logits[torch.arange(len(rows), device=rows.device), rows + n] = float("-inf")  # j = i, same view
    if shift is None:
        shift = logits.amax(dim=1, keepdim=True)
    logits.sub_(shift).exp_()
    return logits, shift if torch.is_tensor(shift) else logits.new_full((len(rows), 1), shift)


class _LogSumExpOverNegatives(torch.autograd.Function):
    r"""Sum over anchor rows r of :math:`\log \sum_j \exp(p_r \cdot k_j / \tau)`, j over all keys
    but r's own same-view column; exact, in row chunks, with a hand-written backward.

    The backward needs softmax(logits) per row: it is kept from the forward pass when it fits
    in ``keep_elements`` and recomputed chunk by chunk otherwise, so memory is O(chunk x N).
    Both gradients come from products with the exponentiated block scaled per row, so no
    extra pass over the block is made: d/dp_r = sum_j P_rj k_j / tau, d/dk_j = sum_r P_rj p_r / tau.
    """

    @staticmethod
    def forward(ctx, p, keys, rows, tau, step, keep_elements):
        fixed_shift = 1.0 / tau if 2.0 / tau <= _FIXED_SHIFT_MAX_RANGE else None
        keep = len(rows) * keys.shape[0] <= keep_elements
        lse, shifts, sums, kept = [], [], [], []
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            block, shift = _exp_logits(p, keys, chunk, tau, fixed_shift)
            total = block.sum(dim=1, keepdim=True)
            lse.append(shift + total.log())
            shifts.append(shift)
            sums.append(total)
            if keep:
                kept.append(block)
        ctx.save_for_backward(p, keys, rows, torch.cat(shifts), torch.cat(sums))
        ctx.tau, ctx.step, ctx.kept = tau, step, kept
        return torch.cat(lse).sum()

    @staticmethod
    def backward(ctx, grad):
        p, keys, rows, shifts, sums = ctx.saved_tensors
        tau, step = ctx.tau, ctx.step
        grad_p = torch.zeros_like(p) if ctx.needs_input_grad[0] else None
        grad_keys = torch.zeros_like(keys) if ctx.needs_input_grad[1] else None
        for number, start in enumerate(range(0, len(rows), step)):
            chunk = rows[start:start + step]
            if ctx.kept:
                block = ctx.kept[number]
            else:
                block, _ = _exp_logits(p, keys, chunk, tau, shifts[start:start + step])
            scale = grad / (tau * sums[start:start + step])  # (c, 1): softmax = block / sum
            if grad_p is not None:
                grad_p.index_add_(0, chunk, torch.mm(block, keys) * scale)
            if grad_keys is not None:
                grad_keys.addmm_(block.t(), p[chunk] * scale)
        ctx.kept = None
        return grad_p, grad_keys, None, None, None, None


def info_nce_loss(anchor, target, tau, rows=None, chunk_size=None, keep_elements=None):
    r"""Mean over anchors i of -log I(p_i, q_i), the InfoNCE term of Eqs. 9-10, exactly.

    .. math:: -\log I(p_i, q_i) = \log\big(e^{\theta(p_i, q_i)/\tau} + \sum_{j \ne i}
        e^{\theta(p_i, q_j)/\tau} + \sum_{j \ne i} e^{\theta(p_i, p_j)/\tau}\big) - \theta(p_i, q_i)/\tau

    with theta the cosine similarity: the positive pair, the cross-view and the same-view
    negatives over all items. Items 1..N-1 take part (PAD, row 0, is dropped). The anchors are
    processed in row chunks of at most DEFAULT_CHUNK_ELEMENTS floats, with a hand-written
    backward (see :class:`_LogSumExpOverNegatives`), so no N x N matrix is ever built and the
    value and gradients are the unchunked ones.

    Args:
        anchor (torch.Tensor): (N, d) h^m, one row per item.
        target (torch.Tensor): (N, d) h_c, the fused view.
        tau (float): temperature.
        rows (torch.LongTensor): anchor item ids, distinct and not PAD (default: all items but
            PAD). The negatives are always all items.
        chunk_size (int): anchors per chunk (default: from DEFAULT_CHUNK_ELEMENTS).
        keep_elements (int): keep the exponentiated logits for the backward pass up to this
            many floats (default DEFAULT_KEEP_ELEMENTS); above it they are recomputed.

    Returns:
        torch.Tensor: scalar loss.
    """
    p = F.normalize(anchor[1:], p=2, dim=1, eps=NORM_EPS)
    q = F.normalize(target[1:], p=2, dim=1, eps=NORM_EPS)
    keys = torch.cat([q, p])  # columns: theta(p_i, q_j) for j < n, theta(p_i, p_j) for j >= n
    n = p.shape[0]
    rows = torch.arange(n, device=p.device) if rows is None else rows.to(p.device) - 1
    step = chunk_rows(len(rows), 2 * n, chunk_size)
    keep = DEFAULT_KEEP_ELEMENTS if keep_elements is None else keep_elements
    log_denominators = _LogSumExpOverNegatives.apply(p, keys, rows, tau, step, keep)
    positives = (p[rows] * q[rows]).sum() / tau  # theta(p_i, q_i) / tau
    return (log_denominators - positives) / len(rows)
