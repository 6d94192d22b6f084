"""Item-graph layers and sparse operators on hand-checked inputs, and sparse == dense references."""
import math

import pytest
import torch

from recbole_micro.model import layers
from recbole_micro.model.layers import (
    SparseGraph,
    combine,
    freeze,
    knn_graph,
    propagate,
    skip_connection,
    symmetric_normalize,
)
from recbole_micro.model.sparse import FixedSparse

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



def test_a_k_above_the_item_count_keeps_every_item_and_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(layers, "_WIDE_K_WARNED", set())  # whatever ran before in this process
    with caplog.at_level("WARNING"):
        graphs = [knn_graph(UNIT_FEATURES, k=9) for _ in range(2)]
    assert all(g.idx.shape == (6, 5) for g in graphs)  # all five items, PAD left out
    assert set(as_sets(graphs[0])[1]) == {1, 2, 3, 4, 5}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["knn_k is 9, but there are only 5 items: each item keeps all 5 (a dense item graph, "
                        "5 edges a row); set knn_k below 5 for a sparse one."]

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


def test_a_duplicated_interaction_gives_the_same_graph_as_a_single_one():
    import numpy as np
    import scipy.sparse as sp

    from recbole_micro.model.backbones import interaction_adjacency
    from recbole_micro.model.sparse import bipartite_adjacency

    users, items = np.array([0, 1, 1, 2]), np.array([1, 0, 2, 2])
    single = sp.coo_matrix((np.ones(4), (users, items)), shape=(3, 3))
    twice = sp.coo_matrix((np.ones(6), (np.r_[users, 1, 2], np.r_[items, 2, 2])), shape=(3, 3))  # (1, 2), (2, 2) again
    assert bipartite_adjacency(twice, 3, 3).toarray().tolist() == bipartite_adjacency(single, 3, 3).toarray().tolist()
    assert set(bipartite_adjacency(twice, 3, 3).data.tolist()) == {1.0}
    for norm in ("sym", "rw_self_loop"):
        torch.testing.assert_close(interaction_adjacency(twice, 3, 3, norm).to_dense(),
                                   interaction_adjacency(single, 3, 3, norm).to_dense())
