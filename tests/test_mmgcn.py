"""MMGCN: the layer equations on the tiny dataset, sums over modalities, and the model checks."""
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_every_parameter_learns, assert_full_sort_agrees_with_predict, build

from recbole_micro.model.general_recommender.mmgcn import MMGCN


def make(tiny, **overrides):
    config, dataset, (train, valid, test) = build("MMGCN", tiny, **{"embedding_size": 8, **overrides})
    torch.manual_seed(0)
    return MMGCN(config, train._dataset), train


def neighbours(model, node):
    edges = model.edges
    return edges[1][edges[0] == node]


@pytest.mark.parametrize("aggregation", ["mean", "max"])
@pytest.mark.parametrize("combination", ["concat", "element"])
def test_first_layer_is_the_papers_aggregation_and_combination(tiny, aggregation, combination):
    model, _ = make(tiny, aggregation=aggregation, combination=combination)
    model.eval()
    m = model.modality_names[0]
    layer = model.layers[m][0]
    with torch.no_grad():
        x = model.modality_input(m)
        id_all = torch.cat([model.user_id_embedding.weight, model.item_id_embedding.weight])
        out = layer(x, id_all, _adjacency(model), model.edges)
        for node in (1, model.n_users + 3):  # a user and an item
            messages = layer.aggregate_linear(x[neighbours(model, node)])  # W_1 x_j
            pooled = messages.mean(0) if aggregation == "mean" else messages.max(0).values
            h = F.leaky_relu(pooled)
            x_hat = F.leaky_relu(layer.self_linear(x[node])) + id_all[node]
            if combination == "concat":
                expected = F.leaky_relu(layer.combine_linear(torch.cat([h, x_hat])))
            else:
                expected = F.leaky_relu(layer.combine_linear(h) + x_hat)
            torch.testing.assert_close(out[node], expected)


def _adjacency(model):
    from recbole_micro.model.sparse import FixedSparse

    return FixedSparse(model.mean_adjacency, model.mean_adjacency_t)


def test_users_start_from_preferences_and_items_from_features_and_modalities_sum(tiny):
    model, _ = make(tiny, latent_dim=None)
    model.eval()
    with torch.no_grad():
        for m in model.modality_names:
            x = model.modality_input(m)
            torch.testing.assert_close(x[: model.n_users], model.preferences[m])
            torch.testing.assert_close(x[model.n_users:], model.modality_feat(m))
        user_all, item_all = model.forward()
        total = sum(model.modality_representation(m) for m in model.modality_names)
    torch.testing.assert_close(user_all, total[: model.n_users])
    torch.testing.assert_close(item_all, total[model.n_users:])
    assert model.preferences[model.modality_names[0]].shape[1] == model.modality_dims[model.modality_names[0]]
    projected, _ = make(tiny, latent_dim=5)
    assert all(p.shape[1] == 5 for p in projected.preferences.values())


def test_loss_gradients_and_predictions(tiny):
    model, train = make(tiny, aggregation="max")
    batch = next(iter(train))
    losses = model.calculate_loss(batch)
    assert len(losses) == 2 and all(torch.isfinite(l) for l in losses)
    sum(losses).backward()
    assert_every_parameter_learns(model)
    assert_full_sort_agrees_with_predict(model, batch)


def test_bad_switch_values_are_named(tiny):
    with pytest.raises(ValueError, match="aggregation"):
        make(tiny, aggregation="sum")
