"""faiss kNN backend: same contract as exact kNN (PAD, self, negatives, values, gradients), recall, errors."""
import builtins

import pytest
import torch
from helpers import batch_of, make

from recbole_micro.model.general_recommender.micro import MICRO
from recbole_micro.model.layers import knn_graph

faiss = pytest.importorskip("faiss")
from recbole_micro.model.ann import faiss_knn_graph, index_settings  # noqa: E402


def clustered(n=300, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(12, dim, generator=generator)
    feat = centres[torch.arange(n) % 12] + 0.3 * torch.randn(n, dim, generator=generator)
    feat[0] = 0  # PAD
    return feat


def test_flat_index_gives_exact_knn():
    feat = clustered()
    exact = knn_graph(feat, 5)
    flat = faiss_knn_graph(feat, 5, factory="Flat")
    assert torch.equal(flat.idx[1:].sort(1).values, exact.idx[1:].sort(1).values)
    torch.testing.assert_close(flat.val.sort(1).values, exact.val.sort(1).values)


def test_hnsw_finds_the_exact_neighbours_with_exact_weights_and_gradients():
    feat = clustered().requires_grad_()
    exact = knn_graph(feat.detach(), 8)
    approx = faiss_knn_graph(feat, 8, factory="HNSW16", params="efSearch=64", chunk_size=37)
    assert approx.idx.shape == (300, 8)
    recall = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx.idx[1:], exact.idx[1:])) / (299 * 8)
    assert recall > 0.98
    assert (approx.idx[1:] == torch.arange(1, 300).unsqueeze(1)).any(1).all()  # each item is its own neighbour
    assert (approx.idx[0] == 0).all() and (approx.val[0] == 0).all() and not (approx.idx[1:] == 0).any()
    unit = torch.nn.functional.normalize(feat.detach(), dim=1)
    cosine = (unit.unsqueeze(1) * unit[approx.idx]).sum(-1).clamp(min=0)
    cosine[0] = 0
    torch.testing.assert_close(approx.val.detach(), cosine)  # weights are exact cosines of the kept pairs
    approx.val.sum().backward()
    assert feat.grad is not None and feat.grad[1:].abs().sum() > 0


def test_the_default_index_is_an_inverted_file_that_finds_clustered_neighbours():
    feat = clustered(n=2000)
    approx, exact = faiss_knn_graph(feat, 5), knn_graph(feat, 5)  # IVF178,Flat searched with nprobe=16
    hits = (approx.idx[1:].unsqueeze(2) == exact.idx[1:].unsqueeze(1)).any(2).float().mean().item()
    assert hits > 0.95
    assert index_settings(2000) == ("IVF178,Flat", "nprobe=16")


def test_negative_similarities_are_suppressed():
    feat = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.1], [0.9, 0.1]])
    graph = faiss_knn_graph(feat, 3, factory="Flat")
    row = dict(zip(graph.idx[1].tolist(), graph.val[1].tolist()))
    assert row[2] == 0.0 and row[1] == pytest.approx(1.0) and row[3] > 0.9


def test_models_build_and_train_with_the_faiss_backend_and_cache_it_apart(tiny):
    model, _, train = make(MICRO, tiny, knn_backend="faiss", knn_faiss_factory="Flat")
    exact, _, _ = make(MICRO, tiny)
    for m in model.modality_names:
        assert torch.equal(model.initial_graph(m).idx.sort(1).values, exact.initial_graph(m).idx.sort(1).values)
    assert len(list((tiny.root / "saved" / "graph_cache").glob("*.pt"))) == 4  # two backends x two modalities
    losses = model.calculate_loss(batch_of(train))
    sum(losses).backward()
    assert all(p.grad is not None for p in model.feat_transforms.parameters())


def test_a_missing_faiss_or_a_bad_backend_is_a_clear_error(tiny, monkeypatch):
    with pytest.raises(ValueError, match="knn_backend"):
        make(MICRO, tiny, knn_backend="annoy")
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__",
                        lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name)) if name == "faiss" else real_import(name, *a, **k))
    with pytest.raises(ImportError, match="pip install 'faiss-cpu"):
        make(MICRO, tiny, knn_backend="faiss")
