"""MGCN: the frozen kNN graphs by hand, each equation against a direct computation, the losses by hand, runs."""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_every_parameter_learns, assert_full_sort_agrees_with_predict, build

from recbole_micro.errors import SettingsError
from recbole_micro.model.general_recommender.mgcn import MGCN, in_batch_info_nce, item_knn_graph
from recbole_micro.quick_start import load_data_and_model, run_recbole_micro
from recbole_micro.trainer.checkpoints import load_checkpoint


def make(tiny, **overrides):
    config, dataset, (train, valid, test) = build("MGCN", tiny, **{"embedding_size": 8, "knn_k": 4, **overrides})
    torch.manual_seed(0)
    return MGCN(config, train._dataset), train


def interactions(model, train):
    """The (U, N) binary training interaction matrix, dense (the tiny dataset only)."""
    r = torch.tensor(train._dataset.inter_matrix(form="coo").toarray(), dtype=torch.float32)
    return (r > 0).float()


# ----- the item-item graph (Eqs. 4-6) -----
def test_knn_graph_keeps_each_item_and_its_nearest_item_with_symmetric_weights():
    # PAD, then e1 = (1, 0), e2 = (0, 1), e3 = (3, 4), e4 = (4, 3): cos(1,3) = .6, cos(1,4) = .8,
    # cos(2,3) = .8, cos(2,4) = .6, cos(3,4) = .96, cos(1,2) = 0
    feat = torch.tensor([[0.0, 0.0], [1, 0], [0, 1], [3, 4], [4, 3]])
    graph = item_knn_graph(feat, k=2)
    assert graph.idx.shape == (5, 2)
    d1, d3 = 1.8, 1.96  # row sums: 1 + .8 for items 1, 2; 1 + .96 for items 3, 4
    expected = torch.zeros(5, 5)
    expected[1, 1] = expected[2, 2] = 1 / d1
    expected[3, 3] = expected[4, 4] = 1 / d3
    expected[1, 4] = expected[2, 3] = 0.8 / math.sqrt(d1 * d3)
    expected[3, 4] = expected[4, 3] = 0.96 / d3
    torch.testing.assert_close(graph.to_dense(), expected)  # PAD: no row, no column



@pytest.mark.parametrize("model_name", ["MGCN", "FREEDOM", "MICRO"])
def test_a_knn_k_above_the_item_count_is_warned_about_even_when_the_graphs_come_from_the_cache(
        tiny, caplog, monkeypatch, model_name):
    from recbole_micro.model import layers
    from recbole_micro.registry import get_model

    for attempt in range(2):  # the second model's graphs come from the graph cache the first one wrote
        monkeypatch.setattr(layers, "_WIDE_K_WARNED", set())
        caplog.clear()
        config, _, (train, _, _) = build(model_name, tiny, embedding_size=8, knn_k=1000)
        with caplog.at_level("WARNING"):
            model = get_model(model_name)(config, train._dataset)
        n = model.n_items - 1
        assert f"knn_k is 1000, but there are only {n} items" in caplog.text, attempt
        assert list((tiny.root / "saved" / "graph_cache").iterdir())  # the graphs are cached

def test_the_models_graphs_are_the_knn_graphs_of_the_raw_features_and_stay_frozen(tiny):
    model, train = make(tiny, feat_trainable=True)
    before = {}
    for m in model.modality_names:
        graph = model.item_graph(m)
        torch.testing.assert_close(graph.to_dense(), item_knn_graph(model.modality_feat(m), 4).to_dense())
        torch.testing.assert_close(getattr(model, f"{m}_item_adj").to_dense(), graph.to_dense())
        before[m] = graph.val.clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    sum(model.calculate_loss(next(iter(train)))).backward()
    optimizer.step()
    assert not torch.equal(model.raw_feats[model.modality_names[0]], model.modality_feat(model.modality_names[0]))
    for m in model.modality_names:
        assert torch.equal(model.item_graph(m).val, before[m])
    assert not any("knn" in k or "adj" in k for k in model.state_dict())  # graphs never go into checkpoints


# ----- the equations against direct computations (Eqs. 1-14) -----
def test_purifier_gates_the_item_id_embedding_by_the_projected_features(tiny):
    model, _ = make(tiny)
    with torch.no_grad():
        for m in model.modality_names:
            item = 5
            projection, gate = model.feat_projections[m], model.purifier_gates[m]
            x = model.modality_feat(m)[item]
            projected = projection.weight @ x + projection.bias  # W_1 e^m + b_1
            expected = model.item_id_embedding.weight[item] * torch.sigmoid(gate.weight @ projected + gate.bias)
            torch.testing.assert_close(model.purified_feat(m)[item], expected)  # Eq. 1


def test_behaviour_view_is_lightgcn_on_the_id_embeddings(tiny):
    model, train = make(tiny)
    r = interactions(model, train)
    n = model.n_users + model.n_items
    a = torch.zeros(n, n)
    a[: model.n_users, model.n_users:] = r
    a[model.n_users:, : model.n_users] = r.t()
    degree = a.sum(1)
    scale = torch.where(degree > 0, degree.clamp(min=1).rsqrt(), torch.zeros_like(degree))
    a_hat = scale[:, None] * a * scale[None, :]
    e0 = torch.cat([model.user_embedding.weight, model.item_id_embedding.weight]).detach()
    expected = (e0 + a_hat @ e0 + a_hat @ a_hat @ e0) / 3  # Eqs. 2-3, two layers
    with torch.no_grad():
        torch.testing.assert_close(model.behaviour_view(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_item_layers", [1, 2])
def test_modality_view_propagates_purified_features_and_users_sum_their_items(tiny, n_item_layers):
    model, train = make(tiny, n_item_layers=n_item_layers)
    r = interactions(model, train)
    user_degree, item_degree = r.sum(1), r.sum(0)
    with torch.no_grad():
        for m in model.modality_names:
            items = model.purified_feat(m)
            for _ in range(n_item_layers):
                items = model.item_graph(m).to_dense() @ items  # Eq. 7
            view = model.modality_view(m)
            torch.testing.assert_close(view[model.n_users:], items, rtol=1e-5, atol=1e-6)
            for user in (1, 7):
                liked = torch.nonzero(r[user]).flatten()
                expected = (items[liked] / torch.sqrt(user_degree[user] * item_degree[liked])[:, None]).sum(0)
                torch.testing.assert_close(view[user], expected, rtol=1e-5, atol=1e-6)  # Eq. 8


@pytest.mark.parametrize("attention_softmax", ["modality", "node"])
def test_fuser_splits_shared_and_gated_specific_parts_and_adds_the_behaviour(tiny, attention_softmax):
    model, _ = make(tiny, attention_softmax=attention_softmax)
    with torch.no_grad():
        out = model.embeddings()
        behaviour = model.behaviour_view()
        views = {m: model.modality_view(m) for m in model.modality_names}
        w, q = model.attention[0], model.attention[2].weight[0]
        scores = torch.stack([torch.tanh(views[m] @ w.weight.t() + w.bias) @ q for m in model.modality_names], dim=1)
        alpha = F.softmax(scores, dim=1 if attention_softmax == "modality" else 0)  # Eq. 9
        shared = sum(alpha[:, [k]] * views[m] for k, m in enumerate(model.modality_names))  # Eq. 10
        specific = 0
        for m in model.modality_names:
            gate = model.preference_gates[m]
            prefer = torch.sigmoid(behaviour @ gate.weight.t() + gate.bias)  # Eq. 12
            specific = specific + prefer * (views[m] - shared)  # Eq. 11
        multimodal = (shared + specific) / 3  # Eq. 13, two modalities
    torch.testing.assert_close(out["alpha"], alpha)
    torch.testing.assert_close(out["alpha"].sum(dim=1 if attention_softmax == "modality" else 0),
                               torch.ones(alpha.shape[1 if attention_softmax == "node" else 0]))
    torch.testing.assert_close(out["multimodal"], multimodal)
    torch.testing.assert_close(out["final"], behaviour + multimodal)  # Eq. 14
    user_all, item_all = model.forward()
    assert user_all.shape == (model.n_users, 8) and item_all.shape == (model.n_items, 8)


# ----- the losses on hand values (Eqs. 15-18) -----
def test_in_batch_info_nce_on_hand_values():
    eye = torch.eye(2)
    # logits [[2, 0], [0, 2]] at tau 0.5: each row log(e^2 + 1) - 2
    assert in_batch_info_nce(eye, eye, 0.5).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    # both targets (1, 0): row 0 has logits [2, 2], row 1 [0, 0]: log 2 each; cosine, so scale-free
    target = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    assert in_batch_info_nce(3 * eye, target, 0.5).item() == pytest.approx(math.log(2), rel=1e-6)
    # one row: its only negative is its positive
    assert in_batch_info_nce(eye[:1], eye[:1], 0.2).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("cl_nodes", ["batch", "unique"])
def test_contrastive_loss_contrasts_multimodal_and_behaviour_views_of_batch_users_and_items(tiny, cl_nodes):
    model, train = make(tiny, cl_nodes=cl_nodes, tau=0.3)
    batch = next(iter(train))
    users, items = batch[model.USER_ID], batch[model.ITEM_ID]
    assert len(torch.unique(users)) < len(users)  # repeats, so the two settings differ
    if cl_nodes == "unique":
        users, items = torch.unique(users), torch.unique(items)
    with torch.no_grad():
        out = model.embeddings()
        mul, beh = out["multimodal"], out["behaviour"]
        u = model.n_users
        expected = (in_batch_info_nce(mul[u + items], beh[u + items], 0.3)
                    + in_batch_info_nce(mul[users], beh[users], 0.3))
        torch.testing.assert_close(model.contrastive_loss(out, *model.contrastive_nodes(batch)), expected)  # Eq. 15
        losses = model.calculate_loss(batch)
    torch.testing.assert_close(losses[2], model.cl_weight * expected)


@pytest.mark.parametrize("reg_target", ["final", "ego"])
def test_regularisation_is_half_the_squared_norms_over_the_batch_rows(tiny, reg_target):
    model, train = make(tiny, reg_target=reg_target, reg_weight=0.5)
    batch = next(iter(train))
    user, pos, neg = batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]
    with torch.no_grad():
        if reg_target == "final":
            user_all, item_all = model.forward()
        else:
            user_all, item_all = model.user_embedding.weight, model.item_id_embedding.weight
        squares = user_all[user].pow(2).sum() + item_all[pos].pow(2).sum() + item_all[neg].pow(2).sum()
        expected = 0.5 * squares / len(user)
        losses = model.calculate_loss(batch)
    assert losses[1].item() == pytest.approx(0.5 * expected.item(), rel=1e-5)


@pytest.mark.parametrize("settings", [{}, {"feat_trainable": True, "attention_softmax": "node", "cl_nodes": "unique"}])
def test_losses_are_finite_gradients_reach_every_parameter_and_full_sort_agrees(tiny, settings):
    model, train = make(tiny, **settings)
    batch = next(iter(train))
    losses = model.calculate_loss(batch)
    assert len(losses) == 3 and all(torch.isfinite(l).all() for l in losses)
    sum(l.sum() for l in losses).backward()
    assert_every_parameter_learns(model)
    assert_full_sort_agrees_with_predict(model, batch)


# ----- runs -----
def test_two_epoch_runs_with_one_seed_are_identical_and_the_checkpoint_reloads(tiny):
    runs = [run_recbole_micro(model="MGCN", dataset="tiny", config_dict=tiny.config_dict(epochs=2)) for _ in range(2)]
    assert all(0.0 < v <= 1.0 for v in runs[0]["test_result"].values())
    assert dict(runs[0]["test_result"]) == dict(runs[1]["test_result"])
    first, second = (load_checkpoint(r["saved_model_file"])["state_dict"] for r in runs)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    config, model, dataset, train, valid, test = load_data_and_model(runs[0]["saved_model_file"])
    from recbole_micro.trainer.trainer import Trainer

    assert dict(Trainer(config, model).evaluate(test, load_best_model=False)) == dict(runs[0]["test_result"])


def test_enable_amp_trains_and_one_seed_gives_identical_runs(tiny):
    runs = [run_recbole_micro(model="MGCN", dataset="tiny", config_dict=tiny.config_dict(epochs=2, enable_amp=True))
            for _ in range(2)]
    assert all(0.0 < v <= 1.0 for v in runs[0]["test_result"].values())
    assert dict(runs[0]["test_result"]) == dict(runs[1]["test_result"])
    first, second = (load_checkpoint(r["saved_model_file"])["state_dict"] for r in runs)
    assert all(torch.isfinite(w).all() for w in first.values() if w.is_floating_point())
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("key, value", [("attention_softmax", "items"), ("tau", 0), ("cl_nodes", "all")])
def test_a_bad_option_is_a_one_line_error_naming_it(tiny, key, value):
    with pytest.raises(SettingsError) as error:
        build("MGCN", tiny, **{key: value})
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{key} is {value!r}") and "MGCN.yaml" in message
