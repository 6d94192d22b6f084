"""The on-disk cache of initial kNN graphs: hit, miss on changed features or k, bad files."""
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make

import recbole_micro.model.abstract_recommender as abstract_recommender
from recbole_micro.model.general_recommender.micro import MICRO
from recbole_micro.model.graph_cache import cached_graph, graph_key
from recbole_micro.model.layers import knn_graph, symmetric_normalize


def build(feat):
    return symmetric_normalize(knn_graph(feat, 3))


def test_second_call_reads_the_file_and_changed_inputs_miss(tmp_path):
    feat = torch.randn(12, 5)
    first = cached_graph(tmp_path, "d-visual", feat, build, knn_k=3)
    assert len(list(tmp_path.glob("d-visual-*.pt"))) == 1

    def fail(_):
        raise AssertionError("built again although cached")

    again = cached_graph(tmp_path, "d-visual", feat, fail, knn_k=3)
    assert torch.equal(again.idx, first.idx) and torch.equal(again.val, first.val)
    changed = feat.clone()
    changed[4, 2] += 1e-3
    assert graph_key(changed, knn_k=3) != graph_key(feat, knn_k=3) != graph_key(feat, knn_k=4)
    assert graph_key(feat.double(), knn_k=3) != graph_key(feat, knn_k=3)
    rebuilt = cached_graph(tmp_path, "d-visual", changed, build, knn_k=3)
    assert torch.equal(rebuilt.val, build(changed).val)
    assert len(list(tmp_path.glob("*.pt"))) == 2 and not list(tmp_path.glob("*.tmp"))
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".pt", ".pt"]  # no temp file left


def test_a_failed_write_leaves_neither_the_file_nor_a_temp_file(tmp_path, monkeypatch):
    def broken_save(obj, path):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cached_graph(tmp_path, "d-visual", torch.randn(8, 3), build, knn_k=3)
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_file_is_rebuilt_and_no_cache_dir_builds_every_time(tmp_path):
    feat = torch.randn(9, 4)
    path = tmp_path / f"d-t-{graph_key(feat, knn_k=3)}.pt"
    path.write_bytes(b"not a torch file")
    graph = cached_graph(tmp_path, "d-t", feat, build, knn_k=3)
    assert torch.equal(graph.idx, build(feat).idx)
    assert torch.equal(torch.load(path, weights_only=True)[0], graph.idx)  # overwritten with the real graph
    calls = []
    cached_graph(None, "d-t", feat, lambda f: calls.append(1) or build(f), knn_k=3)
    cached_graph("", "d-t", feat, lambda f: calls.append(1) or build(f), knn_k=3)
    assert len(calls) == 2


def test_models_share_cached_initial_graphs_and_can_turn_the_cache_off(tiny, monkeypatch):
    first, _, _ = make(MICRO, tiny)
    cache = tiny.root / "saved" / "graph_cache"
    assert sorted(p.name.split("-")[1] for p in cache.glob("*.pt")) == ["textual", "visual"]
    monkeypatch.setattr(abstract_recommender, "knn_graph", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rebuilt")))
    second, _, _ = make(MICRO, tiny)  # would raise if a graph were built again
    for m in first.modality_names:
        assert torch.equal(first.initial_graph(m).idx, second.initial_graph(m).idx)
        assert np.allclose(first.initial_graph(m).val.numpy(), second.initial_graph(m).val.numpy())
    monkeypatch.undo()
    for path in cache.glob("*.pt"):
        path.unlink()
    make(MICRO, tiny, graph_cache=False)
    assert not list(cache.glob("*.pt"))
