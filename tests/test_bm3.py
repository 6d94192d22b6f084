"""BM3: positive-only batches, the trainer that refuses negatives, each loss on hand values, the
detached target view, the LightGCN encoder on the tiny graph, and runs through run_recbole_micro."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_every_parameter_learns, assert_full_sort_agrees_with_predict, build

import recbole_micro.trainer.trainer as trainer_module
from recbole_micro.config import Config
from recbole_micro.errors import SettingsError
from recbole_micro.model.general_recommender.bm3 import BM3, negative_cosine
from recbole_micro.quick_start import load_data_and_model, run_recbole_micro
from recbole_micro.registry import get_trainer
from recbole_micro.trainer.bm3 import BM3Trainer
from recbole_micro.trainer.trainer import Trainer

UNIFORM = {"distribution": "uniform", "sample_num": 1}


def make(tiny, **overrides):
    config, dataset, (train, valid, test) = build("BM3", tiny, **{"embedding_size": 8, **overrides})
    torch.manual_seed(0)
    return BM3(config, train._dataset), config, train


def tensor(rows):
    return torch.tensor(rows, dtype=torch.float32)


# ----- batches and the trainer -----
def test_a_batch_holds_training_positives_only_and_an_epoch_each_once(tiny):
    model, config, train = make(tiny)
    assert config["train_neg_sample_args"]["distribution"] == "none"
    dataset = train._dataset
    known = set(zip(dataset.inter_feat["user_id"].tolist(), dataset.inter_feat["item_id"].tolist()))
    seen = []
    for batch in train:
        assert set(batch.interaction) == {"user_id", "item_id"}  # no neg_item_id, no label
        seen += list(zip(batch["user_id"].tolist(), batch["item_id"].tolist()))
    assert sorted(seen) == sorted(known) and len(seen) == len(known)


def test_negative_sampling_would_add_labelled_rows_and_the_trainer_refuses_it_in_one_line(tiny):
    model, config, train = make(tiny, train_neg_sample_args=UNIFORM)
    batch = next(iter(train))
    assert "label" in batch.interaction and (batch["label"] == 0).any()  # negatives BM3 would take as positives
    with pytest.raises(SettingsError) as err:
        BM3Trainer(config, model)
    message = str(err.value)
    assert message.startswith("train_neg_sample_args is {") and "\n" not in message
    assert "set train_neg_sample_args: ~ (the default is in properties/model/BM3.yaml)" in message


def test_fit_refuses_a_training_loader_that_samples_negatives(tiny):
    _, _, sampling_train = make(tiny, train_neg_sample_args=UNIFORM)
    model, config, _ = make(tiny)
    trainer = BM3Trainer(config, model)
    assert isinstance(trainer, Trainer)
    with pytest.raises(SettingsError, match="the training dataloader samples negatives"):
        trainer.fit(sampling_train, saved=False)


def test_the_registry_finds_the_trainer_in_its_own_module():
    from recbole.utils import ModelType

    assert get_trainer(ModelType.GENERAL, "BM3") is BM3Trainer  # recbole_micro/trainer/bm3.py
    assert get_trainer(ModelType.GENERAL, "MICRO") is trainer_module.MICROTrainer
    assert get_trainer(ModelType.GENERAL, "FREEDOM") is Trainer


# ----- the encoder on the tiny user-item graph -----
def test_encoder_is_lightgcn_on_the_symmetric_graph_plus_the_item_id_residual(tiny):
    model, _, train = make(tiny, n_layers=1)
    r = train._dataset.inter_matrix(form="csr")
    n_users = model.n_users
    adjacency = model.backbone.adjacency.to_dense()
    user = 1
    items = r[user].indices
    deg_user = len(items)
    row = adjacency[user]
    assert set(torch.nonzero(row).flatten().tolist()) == {n_users + i for i in items}  # edges: the user's items
    for i in items:  # weights 1 / sqrt(d_u d_i)
        deg_item = r[:, i].nnz
        assert row[n_users + i].item() == pytest.approx(1 / math.sqrt(deg_user * deg_item), rel=1e-5)
    with torch.no_grad():
        ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
        mean = (ego + adjacency @ ego) / 2  # Eqs. 2-3 with L = 1
        user_e, item_e = model.encode()
        torch.testing.assert_close(user_e, mean[:n_users])
        torch.testing.assert_close(item_e, mean[n_users:] + model.item_embedding.weight)
        model.item_id_residual = False
        torch.testing.assert_close(model.encode()[1], mean[n_users:])
    assert user_e.shape == (model.n_users, 8) and item_e.shape == (model.n_items, 8)
    assert all(model.modality_latent(m).shape == (model.n_items, 8) for m in model.modality_names)


def test_scores_are_inner_products_of_the_online_views_and_full_sort_agrees(tiny):
    model, _, train = make(tiny)
    batch = next(iter(train))
    model.eval()
    with torch.no_grad():
        user_e, item_e = model.encode()
        expected = model.predictor(user_e[batch["user_id"]]) @ model.predictor(item_e).t()
        torch.testing.assert_close(model.full_sort_predict(batch).view(len(batch), -1), expected)
    assert_full_sort_agrees_with_predict(model, batch)


# ----- each loss on hand values -----
def test_negative_cosine_on_hand_values():
    assert negative_cosine(tensor([[3, 4]]), tensor([[4, 3]])).item() == pytest.approx(-24 / 25)
    assert negative_cosine(tensor([[1, 0], [1, 1]]), tensor([[2, 0], [-1, -1]])).item() == pytest.approx(0.0, abs=1e-6)
    assert negative_cosine(tensor([[1, 0]]), tensor([[0, 5]])).item() == pytest.approx(0.0, abs=1e-6)
    assert negative_cosine(tensor([[1, 0]]).bfloat16(), tensor([[2, 0]])).dtype == torch.float32


def test_reconstruction_alignment_and_masked_losses_on_hand_values():
    u_online, i_online = tensor([[1, 0]]), tensor([[0, 1]])
    u_target, i_target = tensor([[1, 1]]), tensor([[1, 0]])
    # C(u_online, i_target) = -1, C(i_online, u_target) = -1/sqrt(2)
    assert BM3.reconstruction_loss(u_online, i_online, u_target, i_target).item() == pytest.approx(-1 - 1 / math.sqrt(2))
    m_online, m_target = tensor([[3, 4], [0, 2]]), tensor([[3, 4], [1, 0]])
    assert BM3.alignment_loss(m_online, tensor([[4, 3], [0, -1]])).item() == pytest.approx(-(24 / 25 - 1) / 2)
    assert BM3.masked_feature_loss(m_online, m_target).item() == pytest.approx(-(1 + 0) / 2)


def test_both_regularisation_forms_on_hand_values(tiny):
    model, _, _ = make(tiny, embedding_size=2)
    with torch.no_grad():
        model.user_embedding.weight[1] = tensor([1, 2])
        model.user_embedding.weight[2] = tensor([0, 3])
        model.item_embedding.weight[4] = tensor([2, 2])
        model.item_embedding.weight[5] = tensor([1, 0])
    user, item = torch.tensor([1, 2]), torch.tensor([4, 5])
    user_all = torch.zeros(model.n_users, 2)
    user_all[0] = tensor([3, 4])  # ||H_u||_F = 5
    item_all = torch.zeros(model.n_items, 2)
    item_all[3] = tensor([0, 1])  # ||H_i||_F = 1
    assert model.reg_form == "official"  # the default: the authors' code's term
    assert model.regularization(user, item, user_all, item_all).item() == pytest.approx(6 / model.n_items)
    model.reg_form = "paper"  # (1 + 4 + 9 + 8 + 1) / (2 * batch of 2)
    assert model.regularization(user, item, user_all, item_all).item() == pytest.approx(23 / 4)
    model.reg_form = "official"
    assert model.regularization(user, item, user_all, item_all).item() == pytest.approx(6 / model.n_items)


def test_calculate_loss_is_eq_10_assembled_from_its_parts(tiny):
    model, _, train = make(tiny, dropout_prob=0.0, cl_weight=2.0, reg_weight=0.1, reg_form="paper")
    batch = next(iter(train))
    user, item = batch["user_id"], batch["item_id"]
    with torch.no_grad():
        rec, align, mask, reg = model.calculate_loss(batch)
        user_e, item_e = model.encode()
        p = model.predictor

        def c(a, b):  # an independent -cos
            return -F.cosine_similarity(a, b, dim=1).mean()

        h_u, h_i = user_e[user], item_e[item]
        latents = [model.feat_projections[m](model.modality_feat(m)[item]) for m in model.modality_names]
        expected_rec = c(p(h_u), h_i) + c(p(h_i), h_u)
        expected_align = 2.0 * sum(c(p(h_m), h_i) for h_m in latents)
        expected_mask = 2.0 * sum(c(p(h_m), h_m) for h_m in latents)
        expected_reg = 0.1 * (model.user_embedding(user).pow(2).sum() + model.item_embedding(item).pow(2).sum()) / (2 * len(batch))
    for got, expected in [(rec, expected_rec), (align, expected_align), (mask, expected_mask), (reg, expected_reg)]:
        assert got.shape == () and got.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert len(model.modality_names) == 2  # both modalities summed


# ----- the contrastive view generator -----
def test_the_target_view_is_a_detached_dropout_copy(tiny):
    model, _, _ = make(tiny, dropout_prob=0.3)
    h = torch.randn(2000, 8, requires_grad=True)
    target = model.target_view(h)
    assert not target.requires_grad and target.grad_fn is None
    kept = target != 0
    torch.testing.assert_close(target[kept], (h.detach() / 0.7)[kept])  # dropout keeps and rescales the rest
    assert abs((~kept).float().mean().item() - 0.3) < 0.02


def test_no_gradient_reaches_through_the_target_view(tiny):
    model, _, train = make(tiny, dropout_prob=0.0)
    batch = next(iter(train))
    user, item = batch["user_id"], batch["item_id"]
    rec, align, mask, _ = model.calculate_loss(batch)
    params = [model.user_embedding.weight, model.item_embedding.weight, *model.feat_projections.parameters()]
    got = torch.autograd.grad(rec + align + mask, params)

    def by_hand(stop):  # the same losses with the targets detached (stop) or not
        user_e, item_e = model.encode()
        h_u, h_i = user_e[user], item_e[item]
        sg = (lambda x: x.detach()) if stop else (lambda x: x)
        loss = negative_cosine(model.predictor(h_u), sg(h_i)) + negative_cosine(model.predictor(h_i), sg(h_u))
        for m in model.modality_names:
            h_m = model.modality_latent(m, item)
            loss = loss + negative_cosine(model.predictor(h_m), sg(h_i)) + negative_cosine(model.predictor(h_m), sg(h_m))
        return torch.autograd.grad(loss, params)

    for g, e in zip(got, by_hand(stop=True)):
        torch.testing.assert_close(g, e)
    assert any(not torch.allclose(g, e) for g, e in zip(got, by_hand(stop=False)))  # the check has teeth


@pytest.mark.parametrize("overrides", [{"feat_trainable": True}, {"reg_form": "paper", "n_layers": 2}])
def test_gradients_reach_every_trained_parameter(tiny, overrides):
    model, _, train = make(tiny, **overrides)
    losses = model.calculate_loss(next(iter(train)))
    assert len(losses) == 4 and all(torch.isfinite(l) for l in losses)
    sum(losses).backward()
    assert_every_parameter_learns(model)
    assert ("raw_feats.visual" in dict(model.named_parameters())) == bool(overrides.get("feat_trainable"))


# ----- options -----
@pytest.mark.parametrize("key, value, allowed", [
    ("dropout_prob", 1.0, "a float in [0, 1)"),
    ("reg_form", "both", "one of 'official', 'paper'"),
    ("cl_weight", -1.0, "a float >= 0"),
])
def test_a_bad_option_is_one_line_naming_it(tiny, key, value, allowed):
    with pytest.raises(SettingsError) as err:
        Config(model="BM3", dataset="tiny", config_dict=tiny.config_dict(**{key: value}))
    assert str(err.value) == f"{key} is {value!r}; allowed: {allowed} (the default is in properties/model/BM3.yaml)."


# ----- runs through run_recbole_micro -----
def run(tiny, **overrides):
    return run_recbole_micro(model="BM3", dataset="tiny", config_dict=tiny.config_dict(epochs=2, **overrides))


def weights(result):
    return torch.load(result["saved_model_file"], weights_only=True)["state_dict"]


def test_two_epochs_save_a_checkpoint_that_reloads_to_the_same_test_result(tiny, monkeypatch):
    result = run(tiny)
    assert all(np.isfinite(v) and 0 < v <= 1 for v in result["test_result"].values()), result["test_result"]
    monkeypatch.delattr(np, "float", raising=False)  # as in a fresh process
    config, model, dataset, train, valid, test = load_data_and_model(result["saved_model_file"])
    for name, value in weights(result).items():
        torch.testing.assert_close(model.state_dict()[name], value)
    reloaded = BM3Trainer(config, model).evaluate(test, load_best_model=False)
    assert dict(reloaded) == dict(result["test_result"])


@pytest.mark.parametrize("enable_amp", [False, True])
def test_same_seed_same_test_result_and_weights(tiny, enable_amp):
    first, second = run(tiny, enable_amp=enable_amp), run(tiny, enable_amp=enable_amp)
    assert first["test_result"] == second["test_result"]
    assert all(np.isfinite(v) for v in first["test_result"].values())
    for name, value in weights(first).items():
        assert torch.equal(value, weights(second)[name]), name


def test_a_run_with_negative_sampling_stops_before_training(tiny):
    with pytest.raises(SettingsError, match=r"^train_neg_sample_args is .* allows no negative sampling"):
        run(tiny, train_neg_sample_args=UNIFORM)


def test_killed_after_epoch_1_and_resumed_equals_3_epochs_straight(tiny, monkeypatch):
    """Resume is inherited: the target view's dropout draws continue from the saved random states."""
    from recbole_micro.trainer.trainer import CheckpointMixin

    class Killed(Exception):
        pass

    config = tiny.config_dict(epochs=3, stopping_step=10)
    straight = run_recbole_micro(model="BM3", dataset="tiny", config_dict=config)
    save, started = CheckpointMixin.save_resume_state, []

    def save_then_die(self, epoch_idx, train_data):
        save(self, epoch_idx, train_data)
        if epoch_idx == 1:
            raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(CheckpointMixin, "save_resume_state", save_then_die)
        with pytest.raises(Killed):
            run_recbole_micro(model="BM3", dataset="tiny", config_dict=config, started=started.append)
    resumed = run_recbole_micro(model="BM3", dataset="tiny", config_dict=config, resume=started[0])
    assert resumed["test_result"] == straight["test_result"]
    for name, value in weights(straight).items():
        assert torch.equal(value, weights(resumed)[name]), name
