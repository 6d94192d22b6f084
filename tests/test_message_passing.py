"""Sparse message passing with learned edge weights: values and gradients against per-edge gathers."""
import torch

from recbole_micro.model.message_passing import EdgeList, edge_dot, edge_softmax, edge_weighted_sum


def random_edges(n_targets=7, n_sources=5, n_edges=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, n_targets, (n_edges,), generator=generator)
    source = torch.randint(0, n_sources, (n_edges,), generator=generator)
    return target, source


def test_edges_are_distinct_sorted_and_the_csr_structures_match_them():
    target, source = random_edges()
    edges = EdgeList(target, source, 7, 5)
    pairs = sorted(set(zip(target.tolist(), source.tolist())))  # duplicates dropped, sorted by target
    assert list(zip(edges.target.tolist(), edges.source.tolist())) == pairs
    values = torch.arange(1.0, len(edges) + 1)
    dense = torch.zeros(7, 5)
    dense[edges.target, edges.source] = values
    torch.testing.assert_close(edges.matrix(values).to_dense(), dense)
    torch.testing.assert_close(edges.matrix_t(values).to_dense(), dense.T)


def test_edge_softmax_by_hand():
    # edges into node 0: scores 0 and ln 2; into node 2: 0 and 0.5 (1000 apart from node 0's
    # group to show each group is shifted by its own maximum); node 1 receives nothing
    edges = EdgeList(torch.tensor([0, 0, 2, 2]), torch.tensor([0, 1, 0, 1]), 3, 2)
    scores = torch.tensor([0.0, torch.log(torch.tensor(2.0)), 1000.0, 1000.5])
    e = torch.exp(torch.tensor(0.5))
    expected = torch.tensor([1 / 3, 2 / 3, 1 / (1 + e), e / (1 + e)])
    torch.testing.assert_close(edge_softmax(edges, scores), expected)


def test_weighted_sum_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    edges = EdgeList(torch.tensor([2, 2, 0]), torch.tensor([0, 1, 2]), 3, 3)  # sorted: (0<-2), (2<-0), (2<-1)
    weights = torch.tensor([-1.0, 0.5, 0.25])
    out = edge_weighted_sum(edges, weights, x)
    torch.testing.assert_close(out, torch.tensor([[-3.0, -3.0], [0.0, 0.0], [0.5, 0.5]]))


def test_values_and_gradients_equal_per_edge_gathers():
    target, source = random_edges(n_edges=40, seed=1)
    edges = EdgeList(target, source, 7, 5)
    t, s = edges.target, edges.source
    a = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(len(edges), dtype=torch.float64, requires_grad=True)
    head = torch.randn(7, 3, dtype=torch.float64)

    def ours():
        scores = edge_dot(edges, a, b)
        return (edge_softmax(edges, scores) * w).sum() + (edge_weighted_sum(edges, w * scores, b) * head).sum()

    def reference():
        scores = (a[t] * b[s]).sum(1)
        exp = scores.exp()
        softmax = exp / torch.zeros(7, dtype=exp.dtype).index_add(0, t, exp)[t]
        summed = torch.zeros(7, 3, dtype=b.dtype).index_add(0, t, (w * scores).unsqueeze(1) * b[s])
        return (softmax * w).sum() + (summed * head).sum()

    value = ours()
    grads = torch.autograd.grad(value, (a, b, w))
    expected_value = reference()
    expected_grads = torch.autograd.grad(expected_value, (a, b, w))
    torch.testing.assert_close(value, expected_value)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda a, b, w: edge_weighted_sum(edges, w, b) + edge_dot(edges, a, b).sum(), (a, b, w))


def test_edge_lists_follow_the_module_to_device():
    module = torch.nn.Module()
    module.edges = EdgeList(torch.tensor([1, 0]), torch.tensor([0, 1]), 2, 2)
    assert {name for name, _ in module.named_buffers()} >= {"edges.target", "edges.crow_t"}
    assert not module.state_dict()  # indices are rebuilt from the dataset, never checkpointed
    module.to(torch.float64)  # index buffers keep their dtype
    assert module.edges.target.dtype == torch.int64
