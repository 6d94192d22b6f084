"""LGMRec: Eqs. 4-12 on hand values and against dense references, its three losses, and the model checks."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_every_parameter_learns, assert_full_sort_agrees_with_predict, build

from recbole_micro.errors import SettingsError
from recbole_micro.model import losses
from recbole_micro.model.general_recommender.lgmrec import (
    LGMRec,
    cross_view_info_nce,
    dependency_noise,
    hyperedge_dependencies,
    hypergraph_message_passing,
)
from recbole_micro.quick_start import load_data_and_model, run_recbole_micro
from recbole_micro.registry import get_model
from recbole_micro.trainer.checkpoints import load_checkpoint


def make(tiny, **overrides):
    config, dataset, (train, valid, test) = build("LGMRec", tiny, **{"embedding_size": 8, **overrides})
    torch.manual_seed(0)
    return LGMRec(config, train._dataset), train


def user_items(train):
    """{user: its training items}, from the training interactions."""
    inter = train._dataset.inter_matrix(form="csr")
    return {u: torch.from_numpy(inter[u].indices.astype(np.int64)) for u in range(inter.shape[0])}


def dense_adjacency(train, n_users, n_items):
    """D^-1/2 A D^-1/2 of the bipartite user-item graph, dense (tiny N only)."""
    r = torch.zeros(n_users, n_items)
    for u, items in user_items(train).items():
        r[u, items] = 1.0
    a = torch.zeros(n_users + n_items, n_users + n_items)
    a[:n_users, n_users:], a[n_users:, :n_users] = r, r.t()
    d = (a.sum(1) + 1e-7).pow(-0.5)
    return d.unsqueeze(1) * a * d.unsqueeze(0)


def test_the_registry_resolves_the_mixed_case_name():
    assert get_model("LGMRec") is LGMRec


# ----- the equations on hand values -----
def test_the_noise_of_eq8_on_hand_values():
    u = torch.tensor([0.25, 0.5, 0.75])
    torch.testing.assert_close(dependency_noise(u, "logistic"), torch.tensor([math.log(1 / 3), 0.0, math.log(3)]))
    torch.testing.assert_close(dependency_noise(u, "gumbel"), torch.tensor([-0.326634, 0.366513, 1.245899]))
    assert torch.isfinite(dependency_noise(torch.tensor([0.0, 1.0]), "logistic")).all()


def test_the_dependencies_are_a_tempered_softmax_over_hyperedges():
    h = torch.tensor([[0.0, math.log(2)]])
    torch.testing.assert_close(hyperedge_dependencies(h, 1.0), torch.tensor([[1 / 3, 2 / 3]]))
    torch.testing.assert_close(hyperedge_dependencies(h, 0.5), torch.tensor([[1 / 5, 4 / 5]]))  # softmax([0, 2 ln 2])
    noise = torch.tensor([[math.log(2), 0.0]])
    torch.testing.assert_close(hyperedge_dependencies(h, 1.0, noise), torch.tensor([[0.5, 0.5]]))


def test_hypergraph_message_passing_on_a_hand_checked_hypergraph():
    item_dep = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # items 0 and 2 on hyperedge 0, item 1 on 1
    user_dep = torch.tensor([[0.5, 0.5]])
    items = torch.tensor([[1.0], [2.0], [3.0]])
    users, out = hypergraph_message_passing(item_dep, user_dep, items, 1)
    torch.testing.assert_close(out, torch.tensor([[4.0], [2.0], [4.0]]))  # hyperedges hold 1 + 3 and 2
    torch.testing.assert_close(users, torch.tensor([[3.0]]))
    users, out = hypergraph_message_passing(item_dep, user_dep, items, 2)
    torch.testing.assert_close(out, torch.tensor([[8.0], [2.0], [8.0]]))
    torch.testing.assert_close(users, torch.tensor([[5.0]]))  # the last layer's hyperedges, 8 and 2


def test_the_infonce_of_eq11_on_hand_values():
    anchor = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 1.0], [2.0, 0.0], [1.0, 1.0]])  # row 0 is PAD: in no denominator
    c = 1 / math.sqrt(2)
    first = math.log(math.e + math.exp(c)) - 1.0  # cosines of row 1 with rows 1, 2: 1 and c
    second = math.log(1.0 + math.exp(c)) - c  # row 2: 0 and c, its positive c
    rows = torch.tensor([1, 2])
    assert cross_view_info_nce(anchor, target, rows, 1.0).item() == pytest.approx(first + second, rel=1e-6)
    mean = cross_view_info_nce(anchor, target, rows, 1.0, "mean").item()
    assert mean == pytest.approx((first + second) / 2, rel=1e-6)
    assert cross_view_info_nce(anchor, target, torch.tensor([1, 1]), 1.0).item() == pytest.approx(2 * first, rel=1e-6)
    tau = 0.5
    expected = math.log(math.exp(2) + math.exp(2 * c)) - 2.0
    assert cross_view_info_nce(anchor, target, torch.tensor([1]), tau).item() == pytest.approx(expected, rel=1e-6)



@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_the_fused_denominators_equal_logsumexp_over_the_logits_in_value_and_gradients(tau):
    """The all-keys log-sum-exp (fused attention in float32 here) against float64 logsumexp, repeated anchors."""
    generator = torch.Generator().manual_seed(3)
    raw = [torch.randn(n, 8, generator=generator, dtype=torch.float64) for n in (37, 53)]
    rows = torch.tensor([0, 5, 5, 36, 12, 0, 7])
    results = []
    for dtype in (torch.float32, torch.float64):
        inputs = [x.to(dtype).requires_grad_() for x in raw]
        anchors, keys = F.normalize(inputs[0][rows], dim=1), F.normalize(inputs[1], dim=1)
        if dtype == torch.float32:
            value = losses.log_sum_exp_over_keys(anchors, keys, tau)
        else:
            value = torch.logsumexp(anchors @ keys.t() / tau, dim=1).sum()
        results.append([value, *torch.autograd.grad(value, inputs)])
    assert losses.fused_attention_for(torch.zeros(1)) is not None  # the fused path is the one compared here
    for got, want in zip(*results):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    assert float(results[1][2][0].abs().sum()) > 0  # a key no anchor names still gets a gradient

# ----- the graphs and embeddings of the model on the tiny dataset -----
def test_users_get_the_mean_of_their_items_features_and_the_sum_of_their_logits(tiny):
    model, train = make(tiny)
    items_of = user_items(train)
    m = model.modality_names[0]
    with torch.no_grad():
        projected = model.projected_item_features(m)
        torch.testing.assert_close(projected, model.modality_feat(m) @ model.feat_projections[m].weight.t())  # Eq. 3
        means = model.user_modality_features(projected)
        item_logits, user_logits = model.hyperedge_logits(m)
    assert item_logits.shape == (model.n_items, 4) and user_logits.shape == (model.n_users, 4)
    torch.testing.assert_close(item_logits, model.modality_feat(m) @ model.hyperedges[m].t())  # Eq. 7
    for u in (1, 6, 40):
        torch.testing.assert_close(means[u], projected[items_of[u]].mean(0))  # Eq. 4
        torch.testing.assert_close(user_logits[u], item_logits[items_of[u]].sum(0))  # Eq. 7: R H_i
    assert not means[0].any() and not user_logits[0].any()  # PAD has no items


def test_local_embeddings_equal_a_dense_reference(tiny):
    model, train = make(tiny, cf_n_layers=2, n_mm_layers=3)
    adj = dense_adjacency(train, model.n_users, model.n_items)
    with torch.no_grad():
        e0 = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
        collaborative = (e0 + adj @ e0 + adj @ adj @ e0) / 3  # Eqs. 1-2
        torch.testing.assert_close(torch.cat(model.collaborative_embeddings()), collaborative)
        modality = []
        for m in model.modality_names:
            projected = model.projected_item_features(m)
            hidden = torch.cat([model.user_modality_features(projected), projected])
            expected = adj @ adj @ adj @ hidden  # Eq. 5: the last of K = 3 layers
            torch.testing.assert_close(model.modality_graph_embedding(m), expected, rtol=1e-5, atol=1e-6)
            modality.append(expected)
        local = model.local_embeddings(collaborative, modality)
    torch.testing.assert_close(local, collaborative + sum(F.normalize(e, dim=1) for e in modality))  # Eq. 6
    mf, _ = make(tiny, cf_model="mf")
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(mf.collaborative_embeddings()),
                                   torch.cat([mf.user_embedding.weight, mf.item_embedding.weight]))


def test_evaluation_fuses_local_and_global_embeddings_as_eq12(tiny):
    model, _ = make(tiny, n_hyper_layers=2, alpha=0.7)
    model.eval()
    with torch.no_grad():
        user_c, item_c = model.collaborative_embeddings()
        local = model.local_embeddings(torch.cat([user_c, item_c]),
                                       [model.modality_graph_embedding(m) for m in model.modality_names])
        global_ = 0
        for m in model.modality_names:
            item_logits, user_logits = model.hyperedge_logits(m)
            item_dep = torch.softmax(item_logits / 0.2, dim=1)  # Eq. 8 without noise, no dropout
            item_dep[0] = 0  # PAD depends on no hyperedge
            user_dep = torch.softmax(user_logits / 0.2, dim=1)
            hyperedges = item_dep.t() @ item_c
            items = item_dep @ hyperedges
            hyperedges = item_dep.t() @ items  # second layer (Eq. 9)
            global_ = global_ + torch.cat([user_dep @ hyperedges, item_dep @ hyperedges])  # Eq. 10
        expected = local + 0.7 * F.normalize(global_, dim=1)  # Eq. 12
        user_all, item_all = model.forward()
    torch.testing.assert_close(torch.cat([user_all, item_all]), expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        again = torch.cat(model.forward())
    assert torch.equal(again, torch.cat([user_all, item_all]))  # evaluation is noiseless


def test_training_samples_noise_and_dropout_and_code_style_evaluation_samples_noise(tiny):
    model, _ = make(tiny)
    m = model.modality_names[0]
    with torch.no_grad():
        item_c = model.collaborative_embeddings()[1]
        first, second = (model.hypergraph_embeddings(m, item_c)[1] for _ in range(2))
        assert not torch.equal(first, second)
        model.eval()
        assert torch.equal(*(model.hypergraph_embeddings(m, item_c)[1] for _ in range(2)))
    noisy, _ = make(tiny, hyper_eval_noise=True)
    noisy.eval()
    with torch.no_grad():
        assert not torch.equal(*(noisy.forward()[1] for _ in range(2)))


# ----- losses, gradients, predictions -----
@pytest.mark.parametrize("reg_target, cl_reduce", [("ego", "sum"), ("final", "mean")])
def test_the_three_losses_on_the_batch(tiny, reg_target, cl_reduce):
    model, train = make(tiny, reg_weight=1e-2, cl_weight=0.5, reg_target=reg_target, cl_reduce=cl_reduce)
    batch = next(iter(train))
    user, pos, neg = batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]
    torch.manual_seed(3)
    mf_loss, cl_loss, reg_loss = model.calculate_loss(batch)
    torch.manual_seed(3)  # the same noise and dropout masks
    parts = model.embeddings()
    u, p, n = parts["user"][user], parts["item"][pos], parts["item"][neg]
    torch.testing.assert_close(mf_loss, -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean())  # Eq. 14
    (uv, iv), (ut, it) = (parts["hyper"][m] for m in model.modality_names)
    expected_cl = cross_view_info_nce(uv, ut, user, 0.2, cl_reduce) + cross_view_info_nce(iv, it, pos, 0.2, cl_reduce)
    torch.testing.assert_close(cl_loss, 0.5 * expected_cl)  # Eq. 11
    if reg_target == "ego":
        ids = [model.user_embedding.weight[user], model.item_embedding.weight[pos], model.item_embedding.weight[neg]]
        expected_reg = sum((e ** 2).sum() for e in ids) / (2 * len(user))
    else:  # the code's: unsquared norms of the final embeddings
        expected_reg = (u.norm() + p.norm() + n.norm()) / len(user)
    torch.testing.assert_close(reg_loss, 1e-2 * expected_reg.reshape(1))  # Eq. 15


def test_gradients_reach_every_parameter_and_full_sort_agrees_with_predict(tiny):
    model, train = make(tiny)
    batch = next(iter(train))
    losses = model.calculate_loss(batch)
    assert len(losses) == 3 and all(torch.isfinite(l).all() for l in losses)
    sum(l.sum() for l in losses).backward()
    assert_every_parameter_learns(model)
    assert_full_sort_agrees_with_predict(model, batch)
    user_all, item_all = model.final_embeddings_cached()
    assert user_all.shape == (model.n_users, 8) and item_all.shape == (model.n_items, 8)


def test_any_number_of_modalities(tiny):
    rng = np.random.default_rng(1)
    tiny.write_modality("audio", {t: rng.standard_normal(3).astype(np.float32) for t in tiny.item_tokens})
    model, train = make(tiny, modalities=tiny.modalities("visual", "textual", "audio"))
    assert model.modality_names == ["visual", "textual", "audio"] and model.hyperedges["audio"].shape == (4, 3)
    batch = next(iter(train))
    torch.manual_seed(2)
    parts = model.embeddings()
    user, pos = batch[model.USER_ID], batch[model.ITEM_ID]
    h = parts["hyper"]
    expected = sum(cross_view_info_nce(h[a][0], h[b][0], user, 0.2) + cross_view_info_nce(h[a][1], h[b][1], pos, 0.2)
                   for a, b in [("visual", "textual"), ("visual", "audio"), ("textual", "audio")])
    torch.testing.assert_close(model.contrastive_loss(h, user, pos), expected)
    single, train = make(tiny, use_modalities=["textual"], cl_weight=0.0)
    assert len(single.calculate_loss(next(iter(train)))) == 2  # BPR and L2


def test_bad_options_are_one_line_errors(tiny):
    with pytest.raises(SettingsError) as err:
        make(tiny, hyper_noise="normal")
    assert str(err.value).startswith("hyper_noise is 'normal'; allowed: one of 'logistic', 'gumbel'")
    assert "\n" not in str(err.value)
    with pytest.raises(SettingsError) as err:
        make(tiny, use_modalities=["visual"], cl_weight=1e-4)
    assert str(err.value).startswith("cl_weight is 0.0001, but LGMRec's contrastive loss (Eq. 11) pairs two")
    assert "\n" not in str(err.value)


# ----- runs through the pipeline -----
def test_a_two_epoch_run_saves_and_reloads_and_the_same_seed_repeats_it(tiny, monkeypatch):
    runs = [run_recbole_micro(model="LGMRec", dataset="tiny", config_dict=tiny.config_dict(epochs=2)) for _ in range(2)]
    result = runs[0]
    assert all(0.0 < v <= 1.0 for v in result["test_result"].values())
    assert dict(runs[0]["test_result"]) == dict(runs[1]["test_result"])
    first, second = (load_checkpoint(r["saved_model_file"])["state_dict"] for r in runs)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    monkeypatch.delattr(np, "float", raising=False)  # as in a fresh process
    config, model, dataset, train, valid, test = load_data_and_model(result["saved_model_file"])
    for name, value in first.items():
        torch.testing.assert_close(model.state_dict()[name], value)
    from recbole_micro.trainer.trainer import Trainer

    assert dict(Trainer(config, model).evaluate(test, load_best_model=False)) == dict(result["test_result"])


def test_enable_amp_trains_and_repeats_with_the_same_seed(tiny):
    runs = [run_recbole_micro(model="LGMRec", dataset="tiny", config_dict=tiny.config_dict(epochs=2, enable_amp=True))
            for _ in range(2)]
    assert all(0.0 < v <= 1.0 for v in runs[0]["test_result"].values())
    assert dict(runs[0]["test_result"]) == dict(runs[1]["test_result"])
    first, second = (load_checkpoint(r["saved_model_file"])["state_dict"] for r in runs)
    assert all(torch.isfinite(w).all() for w in first.values() if w.is_floating_point())
    assert all(torch.equal(first[k], second[k]) for k in first)
