"""Message passing over a fixed edge list with learned edge weights, as sparse CSR kernels.

For models whose edge weights are computed from node embeddings on every batch (GRCN's
affinities): the edge scores <a_target, b_source> are a sampled dense-dense product (SDDMM)
and the weighted sums over neighbours a CSR sparse-dense product (SpMM). Both have
hand-written backward passes made of the same two kernels, so no (E, d) per-edge tensor is
materialised, unlike gathering per-edge rows and scattering them back (the timings are in
docs/performance.md), and the cost is O(E * d) time and O(E) extra memory.
"""
import torch
import torch.nn as nn

from recbole_micro.model.sparse import at_least_float32, sparse_mm


class EdgeList(nn.Module):
    """A fixed set of distinct directed edges source -> target, sorted by (target, source).

    Edge-valued tensors (scores, weights) are in this sorted order: ``target[e]`` and
    ``source[e]`` name edge e's nodes. The CSR structure of the (n_targets, n_sources) matrix
    and of its transpose are kept, so that a weighted matrix is built without sorting. A
    module only so that its index buffers follow ``.to(device)``; they are not checkpointed.
    """

    def __init__(self, target, source, n_targets, n_sources):
        super().__init__()
        target, source = torch.as_tensor(target, dtype=torch.int64), torch.as_tensor(source, dtype=torch.int64)
        keys = torch.unique(target * n_sources + source)  # sorted, duplicates dropped
        target, source = keys // n_sources, keys % n_sources
        self.shape = (n_targets, n_sources)
        order_t = torch.argsort(source * n_targets + target)  # the transpose: sorted by (source, target)
        buffers = {
            "target": target, "source": source, "crow": _row_pointers(target, n_targets),
            "order_t": order_t, "crow_t": _row_pointers(source[order_t], n_sources), "col_t": target[order_t],
        }
        for name, tensor in buffers.items():
            self.register_buffer(name, tensor, persistent=False)

    def __len__(self):
        return len(self.target)

    def matrix(self, values):
        """The (n_targets, n_sources) CSR matrix with ``values`` on the edges."""
        return torch.sparse_csr_tensor(self.crow, self.source, values, self.shape, check_invariants=False)

    def matrix_t(self, values):
        """The transposed (n_sources, n_targets) CSR matrix with ``values`` on the edges."""
        shape = (self.shape[1], self.shape[0])
        return torch.sparse_csr_tensor(self.crow_t, self.col_t, values[self.order_t], shape, check_invariants=False)


def _row_pointers(rows, n_rows):
    counts = torch.bincount(rows, minlength=n_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def edge_dot(edges, target_x, source_x):
    """s_e = <target_x[target_e], source_x[source_e]> for every edge e: (E,)."""
    return _EdgeDot.apply(target_x, source_x, edges)


def edge_weighted_sum(edges, weights, source_x):
    """out_k = sum over edges (j -> k) of w_jk source_x[j]: (n_targets, d)."""
    return _EdgeWeightedSum.apply(weights, source_x, edges)


def edge_softmax(edges, scores):
    """Softmax of edge ``scores`` over the edges that enter the same target node: (E,).

    Each group is shifted by its own maximum (constant for the gradient), as a softmax is.
    """
    n_targets = edges.shape[0]
    group_max = scores.new_full((n_targets,), float("-inf")).scatter_reduce(
        0, edges.target, scores.detach(), reduce="amax", include_self=True
    )
    exp = (scores - group_max[edges.target]).exp()
    total = torch.zeros(edges.shape[0], dtype=scores.dtype, device=scores.device).index_add(0, edges.target, exp)
    return exp / total[edges.target]


def _sddmm(edges, left, right):
    """(left @ right.T) at the edges: left (n_targets, d), right (n_sources, d) -> (E,)."""
    with torch.autocast(device_type=left.device.type, enabled=False):  # no low-precision sparse kernels
        left, right = at_least_float32(left), at_least_float32(right)
        pattern = edges.matrix(left.new_zeros(len(edges)))
        return torch.sparse.sampled_addmm(pattern, left, right.t(), beta=0.0).values()


class _EdgeDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, target_x, source_x, edges):
        ctx.edges = edges
        ctx.save_for_backward(target_x, source_x)
        return _sddmm(edges, target_x.detach(), source_x.detach())

    @staticmethod
    def backward(ctx, grad):
        target_x, source_x = ctx.saved_tensors
        edges = ctx.edges
        grad_target = sparse_mm(edges.matrix(grad), source_x) if ctx.needs_input_grad[0] else None
        grad_source = sparse_mm(edges.matrix_t(grad), target_x) if ctx.needs_input_grad[1] else None
        return grad_target, grad_source, None


class _EdgeWeightedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights, source_x, edges):
        ctx.edges = edges
        ctx.save_for_backward(weights, source_x)
        return sparse_mm(edges.matrix(weights.detach()), source_x.detach())

    @staticmethod
    def backward(ctx, grad):
        weights, source_x = ctx.saved_tensors
        edges = ctx.edges
        grad = grad.contiguous()
        grad_weights = _sddmm(edges, grad, source_x) if ctx.needs_input_grad[0] else None
        grad_source = sparse_mm(edges.matrix_t(weights), grad) if ctx.needs_input_grad[1] else None
        return grad_weights, grad_source, None
