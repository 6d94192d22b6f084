"""Item-graph layers on hand-checked inputs, and sparse == dense references."""
import math

import numpy as np
import pytest
import torch

from recbole_micro.model.layers import (
    FixedSparse,
    SparseGraph,
    combine,
    freeze,
    info_nce_loss,
    knn_graph,
    propagate,
    skip_connection,
    symmetric_normalize,
)

# Item 0 is PAD. Items 1..5 point at 0, 45, 90, 180 and 225 degrees.
UNIT_FEATURES = torch.tensor([[0.0, 0.0], [1, 0], [1, 1], [0, 1], [-1, 0], [-1, -1]])
R = 1 / math.sqrt(2)


def as_sets(graph):
    return [dict(zip(i.tolist(), v.tolist())) for i, v in zip(graph.idx, graph.val)]


def test_knn_keeps_exactly_k_per_row_with_the_cosines():
    graph = knn_graph(UNIT_FEATURES * torch.tensor([[1.0], [2], [3], [0.5], [7], [1]]), k=3)  # scale is irrelevant
    assert graph.idx.shape == graph.val.shape == (6, 3)
    rows = as_sets(graph)
    assert rows[1] == pytest.approx({1: 1.0, 2: R, 3: 0.0})
    assert rows[4] == pytest.approx({4: 1.0, 5: R, 3: 0.0})
    assert rows[2] == pytest.approx({2: 1.0, 1: R, 3: R})


def test_knn_suppresses_negative_similarities_and_pad():
    graph = knn_graph(UNIT_FEATURES, k=5)
    rows = as_sets(graph)
    assert sorted(rows[1].values()) == pytest.approx([0.0, 0.0, 0.0, R, 1.0])  # -1 and -R become 0
    assert set(rows[1]) == {1, 2, 3, 4, 5}  # PAD never chosen, even over negatives
    assert (graph.val >= 0).all()
    assert (graph.val[0] == 0).all() and (graph.idx[1:] != 0).all()


def test_symmetric_normalisation_values():
    # Edges 1->1 (1), 1->2 (2), 2->2 (1.5), 2->3 (0.5), 3->3 (1); row 0 is PAD. Row sums d = [0, 3, 2, 1].
    idx = torch.tensor([[0, 0], [1, 2], [2, 3], [3, 1]])
    val = torch.tensor([[0.0, 0.0], [1.0, 2.0], [1.5, 0.5], [1.0, 0.0]])
    norm = symmetric_normalize(SparseGraph(idx, val))
    d = torch.tensor([0.0, 3, 2, 1])
    expected = torch.tensor([[0.0, 0.0], [1 / 3, 2 / math.sqrt(6)], [1.5 / 2, 0.5 / math.sqrt(2)], [1.0, 0.0]])  # row 3: self-loop 1 / sqrt(1 * 1)
    torch.testing.assert_close(norm.val, expected)
    dense = norm.to_dense()
    s = SparseGraph(idx, val).to_dense()
    inv = torch.where(d > 0, d.clamp(min=1e-12).pow(-0.5), torch.zeros(4))
    torch.testing.assert_close(dense, inv[:, None] * s * inv[None, :])
    assert torch.isfinite(norm.val).all()  # PAD's zero degree gives 0, not inf


def test_skip_connection_and_combine():
    a = SparseGraph(torch.tensor([[0], [2], [1]]), torch.tensor([[0.0], [1.0], [0.5]]))
    b = SparseGraph(torch.tensor([[0], [2], [2]]), torch.tensor([[0.0], [0.2], [0.4]]))
    mixed = skip_connection(a, b, 0.7)
    torch.testing.assert_close(mixed.to_dense(), 0.7 * a.to_dense() + 0.3 * b.to_dense())
    assert mixed.to_dense()[1, 2].item() == pytest.approx(0.7 * 1.0 + 0.3 * 0.2)  # duplicate edges add up
    torch.testing.assert_close(combine([a, b], [0.25, 0.75]).to_dense(), 0.25 * a.to_dense() + 0.75 * b.to_dense())


def dense_reference(feat, k):
    """The papers' formulas with dense matrices (small N only)."""
    unit = feat / feat.norm(dim=1, keepdim=True).clamp(min=1e-12)
    sim = unit @ unit.t()
    sim[:, 0] = -float("inf")
    top = sim.topk(k, dim=1)
    s_hat = torch.zeros_like(sim).scatter_(1, top.indices, top.values.clamp(min=0))
    s_hat[0] = 0
    d = s_hat.sum(1)
    inv = torch.where(d > 0, d.clamp(min=1e-12).pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * s_hat * inv[None, :]


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 50])
def test_sparse_graph_equals_dense_reference(chunk_size):
    torch.manual_seed(0)
    feat = torch.randn(50, 6, dtype=torch.float64)
    graph = symmetric_normalize(knn_graph(feat, 5, chunk_size=chunk_size))
    reference = dense_reference(feat, 5)
    torch.testing.assert_close(graph.to_dense(), reference)
    embedding = torch.randn(50, 4, dtype=torch.float64)
    torch.testing.assert_close(propagate(graph, embedding, 2), reference @ (reference @ embedding))


def test_learned_graph_gradients_match_dense_reference():
    torch.manual_seed(1)
    feat = torch.randn(30, 5, dtype=torch.float64, requires_grad=True)
    embedding = torch.randn(30, 3, dtype=torch.float64)
    propagate(symmetric_normalize(knn_graph(feat, 4, chunk_size=8)), embedding, 1).pow(2).sum().backward()
    sparse_grad = feat.grad.clone()
    feat.grad = None
    (dense_reference(feat, 4) @ embedding).pow(2).sum().backward()
    torch.testing.assert_close(sparse_grad, feat.grad)


def eq10_directly(h_m, h_c, tau):
    """Eqs. 9-10 for one modality, written term by term (items 1..N-1; row 0 is PAD)."""
    cos = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    items = range(1, len(h_m))
    total = 0.0
    for i in items:
        positive = math.exp(cos(h_m[i], h_c[i]) / tau)
        negatives = sum(math.exp(cos(h_m[i], h_c[j]) / tau) + math.exp(cos(h_m[i], h_m[j]) / tau) for j in items if j != i)
        total += -math.log(positive / (positive + negatives))
    return total / len(items)


def test_contrastive_loss_is_eq10_on_a_4_item_example():
    h_m = np.array([[0.0, 0], [1, 0], [0.6, 0.8], [0, 1], [-1, 0.2]])
    h_c = np.array([[0.0, 0], [0.9, 0.1], [0.5, 0.9], [-0.2, 1], [-1, -0.3]])
    expected = eq10_directly(h_m, h_c, tau=0.5)
    value = info_nce_loss(torch.tensor(h_m), torch.tensor(h_c), tau=0.5)
    assert value.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 3, 16])
def test_chunked_contrastive_loss_equals_unchunked_value_and_gradient(chunk_size):
    torch.manual_seed(2)
    h_m = torch.randn(40, 8, dtype=torch.float64, requires_grad=True)
    h_c = torch.randn(40, 8, dtype=torch.float64, requires_grad=True)
    full = info_nce_loss(h_m, h_c, tau=0.2)
    full.backward()
    grads = h_m.grad.clone(), h_c.grad.clone()
    h_m.grad = h_c.grad = None
    chunked = info_nce_loss(h_m, h_c, tau=0.2, chunk_size=chunk_size)
    chunked.backward()
    assert chunked.item() == pytest.approx(full.item(), rel=1e-12)
    torch.testing.assert_close(h_m.grad, grads[0])
    torch.testing.assert_close(h_c.grad, grads[1])
    assert h_m.grad[0].abs().sum() == 0  # PAD takes no part


def info_nce_dense_reference(h_m, h_c, tau, rows=None):
    """Eq. 10 with plain autograd on the full (N-1) x 2(N-1) logits: for small N only."""
    p = torch.nn.functional.normalize(h_m[1:], dim=1)
    q = torch.nn.functional.normalize(h_c[1:], dim=1)
    n = p.shape[0]
    rows = torch.arange(n) if rows is None else rows - 1
    logits = p[rows] @ torch.cat([q, p]).t() / tau
    own = torch.zeros_like(logits, dtype=torch.bool)
    own[torch.arange(len(rows)), rows + n] = True
    logits = logits.masked_fill(own, float("-inf"))
    return (torch.logsumexp(logits, dim=1) - logits[torch.arange(len(rows)), rows]).mean()


@pytest.mark.parametrize(
    "tau, chunk_size, keep_elements, rows",
    [
        (0.5, None, None, None),  # one chunk, exponentiated logits kept for the backward pass
        (0.5, 7, 0, None),  # chunks, recomputed in the backward pass
        (0.2, 5, None, [3, 1, 17, 30, 8]),  # a subset of anchors (the batch-anchor mode)
        (0.01, 6, 0, None),  # tau so small that the row maximum is subtracted instead of 1/tau
    ],
)
def test_contrastive_loss_value_and_gradients_equal_a_dense_autograd_reference(tau, chunk_size, keep_elements, rows):
    torch.manual_seed(3)
    h_m = torch.randn(31, 6, dtype=torch.float64, requires_grad=True)
    h_c = torch.randn(31, 6, dtype=torch.float64, requires_grad=True)
    rows = None if rows is None else torch.tensor(rows)
    value = info_nce_loss(h_m, h_c, tau, rows=rows, chunk_size=chunk_size, keep_elements=keep_elements)
    grads = torch.autograd.grad(value, (h_m, h_c))
    expected = info_nce_dense_reference(h_m, h_c, tau, rows=rows)
    expected_grads = torch.autograd.grad(expected, (h_m, h_c))
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


def test_fixed_sparse_product_and_its_gradient_equal_the_dense_ones():
    torch.manual_seed(4)
    graph = symmetric_normalize(knn_graph(torch.randn(20, 4, dtype=torch.float64), 3))
    dense = graph.to_dense()
    x = torch.randn(20, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(20, 5, dtype=torch.float64)
    frozen = freeze(graph)
    assert isinstance(frozen, FixedSparse) and frozen.matrix.layout == torch.sparse_csr
    out = frozen.mm(x)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    torch.testing.assert_close(out, dense @ x)
    torch.testing.assert_close(grad, dense.t() @ weights)  # not symmetric: the stored transpose is used
    torch.testing.assert_close(propagate(frozen, x, 2), dense @ dense @ x)


def test_graph_build_for_30000_items_stays_far_below_dense_memory():
    """A dense 30,000 x 30,000 float32 is 3.6 GB; building the kNN graph must not come close."""
    import subprocess
    import sys

    probe = (
        "import resource, torch\n"
        "from recbole_micro.model.layers import knn_graph, symmetric_normalize, propagate\n"
        "torch.manual_seed(0)\n"
        "feat = torch.randn(30000, 64)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "g = symmetric_normalize(knn_graph(feat, 10))\n"
        "h = propagate(g, torch.randn(30000, 64), 2)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(g.idx.shape[0], g.idx.shape[1], (after - before) * 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    n, k, grown = (int(x) for x in out.stdout.split())
    assert (n, k) == (30000, 10)
    assert grown < 0.6e9, f"graph build grew RSS by {grown / 1e9:.2f} GB"
