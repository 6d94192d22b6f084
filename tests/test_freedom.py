"""FREEDOM: the frozen item graph and the pruned user-item graph by hand, Eqs. 8-10 and the propagations before them, and the model checks."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_every_parameter_learns, assert_full_sort_agrees_with_predict, build
from recbole.data.interaction import Interaction

from recbole_micro.errors import SettingsError
from recbole_micro.model.backbones import interaction_adjacency
from recbole_micro.model.general_recommender.freedom import (
    FREEDOM,
    binary_knn_graph,
    degree_weights,
    kept_edge_count,
    mixed_item_graph,
    modality_mixing_weights,
    sample_edges,
)
from recbole_micro.quick_start import load_data_and_model, run_recbole_micro
from recbole_micro.trainer.checkpoints import load_checkpoint


def make(tiny, **overrides):
    config, dataset, (train, valid, test) = build("FREEDOM", tiny, **{"embedding_size": 8, "knn_k": 4, **overrides})
    torch.manual_seed(0)
    return FREEDOM(config, train._dataset), train


# Five items (and PAD) in 2-d: 1 and 2 point right, 3 and 4 up, 5 left.
FIVE = torch.tensor([[0, 0], [1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [-1, 0]], dtype=torch.float32)


def test_binary_knn_graph_of_five_items_by_hand():
    graph = binary_knn_graph(FIVE, k=2)
    neighbours = [set(row.tolist()) for row in graph.idx[1:]]
    # each item and its nearest other; item 5's best other is 3 (cosine 0 beats 4's -0.11): still an edge
    assert neighbours == [{1, 2}, {2, 1}, {3, 4}, {4, 3}, {5, 3}]
    assert torch.equal(graph.val[1:], torch.ones(5, 2)) and torch.equal(graph.val[0], torch.zeros(2))
    assert 0 not in graph.idx[1:]  # PAD is nobody's neighbour


def test_item_graph_normalises_each_modality_then_mixes_with_alpha():
    other = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 0.1], [0.1, 1], [1, 0.2]], dtype=torch.float32)
    s1, s2 = binary_knn_graph(FIVE, 2), binary_knn_graph(other, 2)
    mixed = mixed_item_graph([s1, s2], [0.1, 0.9]).to_dense()
    # every row has k = 2 ones, so D^-1/2 S D^-1/2 puts 1/sqrt(2 * 2) = 1/2 on every edge (the normalisation before Eq. 3)
    expected = torch.zeros(6, 6)
    for (i, j) in [(1, 1), (1, 2), (2, 2), (2, 1), (3, 3), (3, 4), (4, 4), (4, 3), (5, 5), (5, 3)]:
        expected[i, j] += 0.1 * 0.5
    for (i, j) in [(1, 1), (1, 3), (2, 2), (2, 4), (3, 3), (3, 5), (4, 4), (4, 2), (5, 5), (5, 3)]:
        expected[i, j] += 0.9 * 0.5
    assert sorted(binary_knn_graph(other, 2).idx[3].tolist()) == [3, 5]  # (1, .1) is nearest to (1, .2)
    torch.testing.assert_close(mixed, expected)


def test_mixing_weights_paper_split_equal_otherwise_or_as_given():
    assert modality_mixing_weights(["visual", "textual"], None, 0.1) == [0.1, 0.9]
    assert modality_mixing_weights(["text", "image"], None, 0.3) == [0.7, 0.3]
    assert modality_mixing_weights(["visual", "audio"], None, 0.1) == [0.5, 0.5]
    assert modality_mixing_weights(["a", "b", "c", "d"], None, 0.1) == [0.25] * 4
    assert modality_mixing_weights(["visual"], None, 0.1) == [1.0]
    assert modality_mixing_weights(["visual", "textual"], {"textual": 0.25, "visual": 0.75}, 0.1) == [0.75, 0.25]
    for bad in ({"visual": 0.5, "textual": 0.6}, {"visual": 1.0}, {"visual": 1.5, "textual": -0.5}):
        with pytest.raises(SettingsError) as err:
            modality_mixing_weights(["visual", "textual"], bad, 0.1)
        assert str(err.value).startswith("modality_graph_weights is ") and "\n" not in str(err.value)


def test_model_item_graph_is_the_mixture_of_its_features_graphs(tiny):
    model, _ = make(tiny)
    assert model.mixing_weights == [0.1, 0.9]
    expected = mixed_item_graph([binary_knn_graph(model.modality_feat(m), 4) for m in model.modality_names],
                                [0.1, 0.9]).to_dense()
    dense = model.item_item_graph().to_dense()
    torch.testing.assert_close(dense, expected)
    torch.testing.assert_close(dense[1:].sum(dim=1), torch.ones(model.n_items - 1))  # alpha sums to 1, rows of 1/k
    assert dense[0].abs().sum() == 0 and dense[:, 0].abs().sum() == 0
    torch.testing.assert_close(torch.sparse.mm(model.item_adj, torch.eye(model.n_items)), dense)
    assert not any(n.startswith(("item_graph", "item_adj", "norm_adj", "edge_")) for n in model.state_dict())


def test_edge_probabilities_and_kept_counts_by_hand():
    users, items = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1])  # d_u = 2, 1, 1; d_i = 1, 3
    expected = torch.tensor([1 / math.sqrt(2), 1 / math.sqrt(6), 1 / math.sqrt(3), 1 / math.sqrt(3)])
    torch.testing.assert_close(degree_weights(users, items, 3, 2), expected)  # the pruning's p_k (Eqs. 5-7)
    assert kept_edge_count(5, 0.8) == 1  # 5 * 0.2 is 1.0000000000000002 in floating point
    assert (kept_edge_count(10, 0.85), kept_edge_count(10, 0.85, "floor")) == (2, 1)
    assert kept_edge_count(7, 0.0) == 7


def test_edges_are_drawn_without_replacement_in_proportion_to_p():
    torch.manual_seed(0)
    probs = torch.tensor([1.0, 2.0, 1.0])
    draws = torch.stack([torch.bincount(sample_edges(probs, 2), minlength=3) for _ in range(20000)]).float()
    assert torch.equal(draws.sum(dim=1), torch.full((20000,), 2.0))  # always two distinct edges
    # inclusion of edge 0: first (1/4) or second after 1 (1/2 * 1/2) or after 2 (1/4 * 1/3)
    inclusion = torch.tensor([1 / 4 + 1 / 4 + 1 / 12, 1 / 2 + 1 / 6 + 1 / 6, 1 / 4 + 1 / 4 + 1 / 12])
    torch.testing.assert_close(draws.mean(dim=0), inclusion, atol=0.015, rtol=0)
    with_replacement = [sample_edges(probs, 2, replacement=True) for _ in range(200)]
    assert {len(k) for k in with_replacement} == {1, 2}  # repeats collapse


@pytest.mark.parametrize("renormalize", [True, False])
def test_pruned_graph_keeps_n_edges_normalised_by_their_own_degrees(tiny, renormalize):
    model, _ = make(tiny, prune_ratio=0.5, prune_renormalize=renormalize)
    n_nodes, n_edges = model.n_users + model.n_items, model.edge_probs.numel()
    dense = torch.sparse.mm(model.pruned_adjacency().matrix, torch.eye(n_nodes))
    assert torch.count_nonzero(dense) == 2 * math.ceil(n_edges * 0.5)
    torch.testing.assert_close(dense, dense.t())
    block = dense[: model.n_users, model.n_users:]
    users, items = block.nonzero(as_tuple=True)
    if renormalize:  # re-normalised with the pruned graph's degrees
        d_u, d_i = (block > 0).sum(dim=1).float(), (block > 0).sum(dim=0).float()
        torch.testing.assert_close(block[users, items], (d_u[users] * d_i[items]).rsqrt())
    else:
        full = torch.sparse.mm(model.norm_adj, torch.eye(n_nodes))[: model.n_users, model.n_users:]
        torch.testing.assert_close(block[users, items], full[users, items])


def test_full_graph_is_lightgcns_symmetric_adjacency(tiny):
    model, train = make(tiny)
    n_nodes = model.n_users + model.n_items
    ours = torch.sparse.mm(model.norm_adj, torch.eye(n_nodes))
    reference = interaction_adjacency(train._dataset.inter_matrix(form="coo"), model.n_users, model.n_items, "sym")
    torch.testing.assert_close(ours, reference.to_dense())


def test_pruning_is_resampled_once_per_epoch_and_evaluation_uses_the_full_graph(tiny):
    model, _ = make(tiny)
    model.train()
    model.forward()
    first = model.training_adjacency().matrix.to_dense()
    model.forward()
    assert model.prunings == 1
    model.eval()
    model.forward()
    assert model.prunings == 1
    model.train()
    model.forward()
    assert model.prunings == 2 and not torch.equal(model.training_adjacency().matrix.to_dense(), first)
    unpruned, _ = make(tiny, prune_ratio=0.0)
    unpruned.train()
    unpruned.forward()
    assert unpruned.prunings == 0


def test_final_embeddings_are_eq11_on_dense_matrices(tiny):
    model, _ = make(tiny, n_item_layers=2)
    model.eval()
    with torch.no_grad():
        user_all, item_all = model.forward()
        adjacency = torch.sparse.mm(model.norm_adj, torch.eye(model.n_users + model.n_items))
        ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
        light = (ego + adjacency @ ego + adjacency @ adjacency @ ego) / 3  # LightGCN, L_ui = 2
        item_graph = model.item_item_graph().to_dense()
        h_tilde = item_graph @ item_graph @ model.item_embedding.weight  # the item graph, L_ii = 2, last layer
    torch.testing.assert_close(user_all, light[: model.n_users])
    torch.testing.assert_close(item_all, light[model.n_users:] + h_tilde)  # Eq. 8


def test_each_loss_term_on_hand_values(tiny):
    model, _ = make(tiny, reg_weight=0.01, modality_bpr_weight=0.5)
    batch = Interaction({"user_id": torch.tensor([1]), "item_id": torch.tensor([3]), "neg_item_id": torch.tensor([5])})
    user_all = torch.zeros(model.n_users, 8)
    user_all[1, 0] = 2.0
    with torch.no_grad():
        model.visual_feat.zero_()
        model.visual_feat[3, 0] = 1.0  # e^v_3 = (1, 0, ...), every other item's is 0
        projection = model.feat_projections["visual"]
        projection.weight.zero_()
        projection.weight[0, 0] = 1.0  # h^v = e^v W + 0: h^v_3 = (1, 0, ...), h^v_5 = 0
        projection.bias.zero_()
        model.feat_projections["textual"].weight.zero_()  # h^t = b_t for every item: a tie
        # Eq. 10's lambda term: -log sigma(2 - 0) for the image, -log sigma(0) for the text
        assert model.modality_bpr_loss(batch, user_all).item() == pytest.approx(
            -math.log(1 / (1 + math.exp(-2))) + math.log(2), rel=1e-5)
        model.user_embedding.weight.fill_(1.0)
        model.item_embedding.weight.fill_(1.0)
        # EmbLoss: (||e_u||^2 + ||e_i||^2 + ||e_j||^2) / B / 2 = 3 * 8 / 2
        assert model.regularization(batch, None, None).item() == pytest.approx(12.0, rel=1e-6)
    mf_loss, modality_loss, reg_loss = model.calculate_loss(batch)
    with torch.no_grad():
        users, items = model.forward()  # the same pruned graph: pruned once per epoch
        u, i, j = users[1], items[3], items[5]
        assert mf_loss.item() == pytest.approx(-F.logsigmoid((u * i).sum() - (u * j).sum()).item(), rel=1e-5)
        assert modality_loss.item() == pytest.approx(0.5 * model.modality_bpr_loss(batch, users).item(), rel=1e-5)
    assert reg_loss.item() == pytest.approx(0.01 * 12.0, rel=1e-6)


def test_gradients_reach_every_parameter_and_full_sort_agrees_with_predict(tiny):
    for overrides in ({}, {"feat_trainable": True, "reg_target": "final", "reg_weight": 1e-3}):
        model, train = make(tiny, **overrides)
        batch = next(iter(train))
        losses = model.calculate_loss(batch)
        assert len(losses) == 3 and all(torch.isfinite(l) for l in losses)
        sum(losses).backward()
        assert_every_parameter_learns(model)
        assert_full_sort_agrees_with_predict(model, batch)


def test_two_epoch_run_saves_and_reloads_the_best_checkpoint(tiny, monkeypatch):
    result = run_recbole_micro(model="FREEDOM", dataset="tiny", config_dict=tiny.config_dict(epochs=2))
    assert all(0.0 < v <= 1.0 and np.isfinite(v) for v in result["test_result"].values())
    monkeypatch.delattr(np, "float", raising=False)  # as in a fresh process
    config, model, dataset, train, valid, test = load_data_and_model(result["saved_model_file"])
    from recbole_micro.trainer.trainer import Trainer

    reloaded = Trainer(config, model).evaluate(test, load_best_model=False)
    assert dict(reloaded) == dict(result["test_result"])


@pytest.mark.parametrize("amp", [False, True])
def test_same_seed_same_result_and_weights(tiny, amp):
    runs = [run_recbole_micro(model="FREEDOM", dataset="tiny", config_dict=tiny.config_dict(epochs=2, enable_amp=amp))
            for _ in range(2)]
    assert dict(runs[0]["test_result"]) == dict(runs[1]["test_result"])
    first, second = (load_checkpoint(r["saved_model_file"])["state_dict"] for r in runs)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert all(torch.isfinite(w).all() for w in first.values() if w.is_floating_point())
    assert 0.0 < runs[0]["test_result"]["recall@20"] <= 1.0


def test_bad_options_are_one_line_errors(tiny):
    with pytest.raises(SettingsError) as err:
        build("FREEDOM", tiny, prune_ratio=1.0)
    assert str(err.value) == ("prune_ratio is 1.0; allowed: a float in [0, 1) "
                              "(the default is in properties/model/FREEDOM.yaml).")
    with pytest.raises(SettingsError) as err:
        make(tiny, modality_graph_weights={"visual": 0.5, "text": 0.5})
    assert str(err.value).startswith("modality_graph_weights is {'visual': 0.5, 'text': 0.5}; allowed: ")
    assert "['visual', 'textual']" in str(err.value) and "\n" not in str(err.value)
