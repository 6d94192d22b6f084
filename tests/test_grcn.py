"""GRCN: edge softmax and message passing by hand, routing, refining, pruning, propagation, model checks."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import build
from recbole_micro.model.general_recommender.grcn import GRCN, edge_softmax, weighted_sum


def make(tiny, **overrides):
    settings = {"embedding_size": 6, "latent_dim": 4, **overrides}
    config, dataset, (train, valid, test) = build("GRCN", tiny, **settings)
    torch.manual_seed(0)
    return GRCN(config, train._dataset), train


def test_edge_softmax_normalises_over_each_target_by_hand():
    scores = torch.tensor([0.0, math.log(2.0), 0.0, 0.5])
    target = torch.tensor([0, 0, 2, 2])
    # node 0: e^0 / (1 + 2), 2 / 3; node 2: 1 / (1 + e^0.5), e^0.5 / (1 + e^0.5); node 1 receives nothing
    expected = torch.tensor([1 / 3, 2 / 3, 1 / (1 + math.exp(0.5)), math.exp(0.5) / (1 + math.exp(0.5))])
    torch.testing.assert_close(edge_softmax(scores, target, 3), expected)


def test_weighted_sum_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    source, target = torch.tensor([0, 1, 2]), torch.tensor([2, 2, 0])
    weights = torch.tensor([0.5, 0.25, -1.0])
    out = weighted_sum(x, source, target, weights, 3)
    torch.testing.assert_close(out, torch.tensor([[-3.0, -3.0], [0.0, 0.0], [0.5, 0.5]]))


def items_of(model, user):
    return model.edge_item[model.edge_user == user]


def test_routing_moves_each_user_towards_its_items(tiny):
    model, _ = make(tiny, num_routing=2)
    m = model.modality_names[0]
    with torch.no_grad():
        items = model.item_prototypes(m)
        routed = model.routed_preferences(m, items)
        for user in (1, 7):
            neighbours = items[items_of(model, user)]
            p = F.normalize(model.preferences[m][user], dim=0)
            for _ in range(2):
                a = torch.softmax(neighbours @ p, dim=0)
                p = F.normalize(p + (a.unsqueeze(1) * neighbours).sum(0), dim=0)
            torch.testing.assert_close(routed[user], p)
        none = make(tiny, num_routing=0)[0]
        torch.testing.assert_close(none.routed_preferences(m, items), F.normalize(none.preferences[m], dim=1))
        features = model.modality_feat(m)
        expected = F.normalize(F.leaky_relu(features @ model.feat_mlps[m].weight.T + model.feat_mlps[m].bias), dim=1)
        torch.testing.assert_close(items, expected)


def test_refining_gives_each_edge_its_affinity_in_both_directions(tiny):
    model, _ = make(tiny)
    m = model.modality_names[1]
    with torch.no_grad():
        refined, affinity = model.refine(m)
        items = model.item_prototypes(m)
        users = model.routed_preferences(m, items)
    n_edges = len(model.edge_user)
    assert affinity.shape == (2 * n_edges,)
    user = 3
    edge_ids = torch.nonzero(model.edge_user == user).flatten()
    # item -> user half: softmax over the user's items of <p_u, f_i>
    scores = items[model.edge_item[edge_ids]] @ users[user]
    torch.testing.assert_close(affinity[n_edges + edge_ids], torch.softmax(scores, dim=0))
    torch.testing.assert_close(refined[user], users[user] + (torch.softmax(scores, 0).unsqueeze(1) * items[model.edge_item[edge_ids]]).sum(0))
    item = int(model.edge_item[0])
    edge_ids = torch.nonzero(model.edge_item == item).flatten()
    scores = users[model.edge_user[edge_ids]] @ items[item]
    torch.testing.assert_close(affinity[edge_ids], torch.softmax(scores, dim=0))
    expected = items[item] + (torch.softmax(scores, 0).unsqueeze(1) * users[model.edge_user[edge_ids]]).sum(0)
    torch.testing.assert_close(refined[model.n_users + item], expected)
    # a cold-start item has no edges: its content prototype alone
    cold = model.n_items - 1
    assert not (model.edge_item == cold).any()
    torch.testing.assert_close(refined[model.n_users + cold], items[cold])


@pytest.mark.parametrize("weight_mode", ["confid", "max", "mean"])
@pytest.mark.parametrize("pruning", ["soft", "hard"])
def test_edge_weights_merge_modalities_and_prune(tiny, weight_mode, pruning):
    model, _ = make(tiny, weight_mode=weight_mode, pruning=pruning)
    n = 2 * len(model.edge_user)
    affinities = torch.rand(n, 2)
    source, target = model.directed_edges()
    assert (source[: n // 2] < model.n_users).all() and (target[: n // 2] >= model.n_users).all()
    with torch.no_grad():
        if weight_mode == "confid":
            model.confidence[:, 0] = -1.0  # negative confidence in modality 0 for every node
            model.confidence[:, 1] = 0.5
            model.confidence[source[0], 1] = -2.0  # and in both modalities for the first edge's user
        weights = model.edge_weights(affinities)
    if weight_mode == "mean":
        expected = affinities.mean(1)
    elif weight_mode == "max":
        expected = affinities.max(1).values
    else:
        expected = torch.maximum(-affinities[:, 0], 0.5 * affinities[:, 1])
        first_user_edges = source == source[0]
        expected[first_user_edges] = torch.maximum(-affinities[first_user_edges, 0], -2.0 * affinities[first_user_edges, 1])
    if pruning == "hard":
        expected = expected.clamp(min=0)
    torch.testing.assert_close(weights, expected)
    if weight_mode == "confid":
        assert (weights[source == source[0]] <= 0).all() and ((weights < 0).any() == (pruning == "soft"))


def test_id_propagation_equals_a_dense_reference(tiny):
    model, _ = make(tiny, n_layers=3)
    source, target = model.directed_edges()
    weights = torch.randn(len(source))
    dense = torch.zeros(model.n_nodes, model.n_nodes)
    dense[target, source] = weights  # row k holds the weights of the edges into k
    with torch.no_grad():
        x = F.normalize(model.id_embedding, dim=1)
        expected = x + dense @ x + dense @ dense @ x + dense @ dense @ dense @ x
        torch.testing.assert_close(model.propagate_ids(weights), expected, rtol=1e-4, atol=1e-5)


def test_fusion_modes_build_the_final_representation(tiny):
    model, _ = make(tiny)
    with torch.no_grad():
        user_all, item_all = model.forward()
        refined = [model.refine(m)[0] for m in model.modality_names]
        affinities = torch.stack([model.refine(m)[1] for m in model.modality_names], dim=1)
        ids = model.propagate_ids(model.edge_weights(affinities))
    assert user_all.shape == (model.n_users, 6 + 2 * 4) and item_all.shape == (model.n_items, 6 + 2 * 4)
    torch.testing.assert_close(torch.cat([user_all, item_all]), torch.cat([ids, *refined], dim=1))
    mean, _ = make(tiny, embedding_size=4, fusion_mode="mean")
    id_only, _ = make(tiny, fusion_mode="id")
    with torch.no_grad():
        assert mean.forward()[0].shape == (mean.n_users, 4)
        assert id_only.forward()[1].shape == (id_only.n_items, 6)


def test_loss_gradients_and_predictions(tiny):
    model, train = make(tiny, reg_weight=1e-2)
    batch = next(iter(train))
    mf_loss, reg_loss = model.calculate_loss(batch)
    assert torch.isfinite(mf_loss) and reg_loss > 0
    user = batch[model.USER_ID]
    items = torch.cat([batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]]) + model.n_users
    expected_reg = (model.id_embedding[user] ** 2).mean() + (model.id_embedding[items] ** 2).mean()
    expected_reg = expected_reg + sum((p[user] ** 2).mean() for p in model.preferences.values())
    torch.testing.assert_close(reg_loss, 1e-2 * expected_reg)
    (mf_loss + reg_loss).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    model.eval()
    with torch.no_grad():
        full = model.full_sort_predict(batch).view(len(batch), -1)
        single = model.predict(batch)
    rows = torch.arange(len(batch))
    torch.testing.assert_close(full[rows, batch[model.ITEM_ID]], single)


def test_bad_switch_values_are_named(tiny):
    with pytest.raises(ValueError, match="weight_mode"):
        make(tiny, weight_mode="sum")
    with pytest.raises(ValueError, match="pruning"):
        make(tiny, pruning="ReLU")
    with pytest.raises(ValueError, match="latent_dim"):
        make(tiny, fusion_mode="mean")
