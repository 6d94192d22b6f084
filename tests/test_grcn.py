"""GRCN: edge softmax and message passing by hand, routing, refining, pruning, propagation, model checks."""
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_every_parameter_learns, assert_full_sort_agrees_with_predict, build

from recbole_micro.model.general_recommender.grcn import GRCN


def make(tiny, **overrides):
    settings = {"embedding_size": 6, "latent_dim": 4, **overrides}
    config, dataset, (train, valid, test) = build("GRCN", tiny, **settings)
    torch.manual_seed(0)
    return GRCN(config, train._dataset), train


def items_of(model, user):
    edges = model.routing_edges
    return edges.source[edges.target == user]


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
        x = torch.cat([model.routed_preferences(m, items), items])
    edges = model.graph_edges
    assert affinity.shape == (2 * len(model.routing_edges),) == (len(edges),)
    for node in (3, model.n_users + int(model.routing_edges.source[0])):  # a user, an item
        into = torch.nonzero(edges.target == node).flatten()
        neighbours = x[edges.source[into]]
        assert ((edges.source[into] >= model.n_users) == (node < model.n_users)).all()  # users <-> items only
        expected = torch.softmax(neighbours @ x[node], dim=0)  # softmax over the node's neighbours of <p_u, f_i>
        torch.testing.assert_close(affinity[into], expected)
        torch.testing.assert_close(refined[node], x[node] + (expected.unsqueeze(1) * neighbours).sum(0))
    # a cold-start item has no edges: its content prototype alone
    cold = model.n_users + model.n_items - 1
    assert not (edges.target == cold).any() and not (edges.source == cold).any()
    torch.testing.assert_close(refined[cold], x[cold])


@pytest.mark.parametrize("weight_mode", ["confid", "max", "mean"])
@pytest.mark.parametrize("pruning", ["soft", "hard"])
def test_edge_weights_merge_modalities_and_prune(tiny, weight_mode, pruning):
    model, _ = make(tiny, weight_mode=weight_mode, pruning=pruning)
    source = model.graph_edges.source
    affinities = torch.rand(len(source), 2)
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
    edges = model.graph_edges
    weights = torch.randn(len(edges))
    dense = torch.zeros(model.n_nodes, model.n_nodes)
    dense[edges.target, edges.source] = weights  # row k holds the weights of the edges into k
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
    assert_every_parameter_learns(model)
    assert_full_sort_agrees_with_predict(model, batch)


def test_bad_switch_values_are_named(tiny):
    with pytest.raises(ValueError, match="weight_mode"):
        make(tiny, weight_mode="sum")
    with pytest.raises(ValueError, match="pruning"):
        make(tiny, pruning="ReLU")
    with pytest.raises(ValueError, match="latent_dim"):
        make(tiny, fusion_mode="mean")
