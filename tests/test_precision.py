"""Mixed precision (RecBole's enable_amp) for every plugin model, and the trainer settings checked at start-up."""
import pytest
import torch
from helpers import build

from recbole_micro.errors import SettingsError
from recbole_micro.model import losses
from recbole_micro.model.sparse import sparse_mm
from recbole_micro.quick_start import run_recbole_micro
from recbole_micro.registry import get_model, get_trainer
from recbole_micro.trainer.checkpoints import load_checkpoint


def test_a_sparse_product_inside_autocast_runs_in_float32():
    torch.manual_seed(0)
    matrix = torch.eye(5).to_sparse_csr()
    dense = torch.randn(5, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = torch.nn.functional.linear(dense, torch.eye(3))  # autocast makes this bfloat16
        out = sparse_mm(matrix, low)
    assert low.dtype == torch.bfloat16 and out.dtype == torch.float32
    assert torch.equal(out, low.float())


def test_the_exact_contrastive_loss_under_bfloat16_matches_float64():
    """Only the two attention products run in bfloat16; value and gradients stay close to float64."""
    torch.manual_seed(0)
    a, c = torch.randn(400, 16, requires_grad=True), torch.randn(400, 16, requires_grad=True)
    exact = losses.info_nce_loss(a.double(), c.double(), 0.2, kernel="chunked")
    want = torch.autograd.grad(exact, [a, c])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = losses.info_nce_loss(a, c, 0.2, kernel="fused")  # raises if the bfloat16 kernel failed its check
    got = torch.autograd.grad(value, [a, c])
    assert value.dtype == torch.float32
    assert abs(value.item() - exact.item()) <= 1e-3 * abs(exact.item())
    for g, w in zip(got, want):
        assert float((g.double() - w).abs().max()) <= losses.SELF_CHECK_TOLERANCE[torch.bfloat16] * float(w.abs().max())


PLUGIN_RUNS = [("MICRO", {}), ("MICRO", {"cl_anchors": "batch"}), ("MICRO", {"use_specific": False}),
               ("MICRO", {"use_contrastive": False, "use_specific": False}), ("MICRO", {"use_user_pref": False}),
               ("MICRO", {"item_repr": "graph_feats"}), ("LATTICE", {}), ("VBPR", {}), ("MMGCN", {}), ("GRCN", {}),
               ("FREEDOM", {}), ("BM3", {}), ("LGMRec", {}), ("MGCN", {})]


@pytest.mark.parametrize("model, settings", PLUGIN_RUNS)
def test_enable_amp_trains_and_evaluates_every_plugin_model(tiny, model, settings):
    result = run_recbole_micro(model=model, dataset="tiny",
                               config_dict=tiny.config_dict(epochs=2, enable_amp=True, **settings))
    assert 0.0 < result["test_result"]["recall@20"] <= 1.0
    weights = load_checkpoint(result["saved_model_file"])["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_same_seed_same_result_with_amp(tiny):
    runs = [run_recbole_micro(model="MICRO", dataset="tiny", config_dict=tiny.config_dict(epochs=2, enable_amp=True))
            for _ in range(2)]
    assert dict(runs[0]["test_result"]) == dict(runs[1]["test_result"])
    first, second = (load_checkpoint(r["saved_model_file"])["state_dict"] for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_recbole_model_whose_sparse_products_fail_in_bfloat16_is_one_line(tiny):
    with pytest.raises(SettingsError, match="LightGCN multiplies sparse matrices in bfloat16"):
        run_recbole_micro(model="LightGCN", dataset="tiny", config_dict=tiny.config_dict(enable_amp=True))


@pytest.mark.parametrize("settings, says", [
    ({"enable_scaler": True}, "enable_scaler is for float16 on CUDA"),
    ({"learner": "adamm"}, "learner is 'adamm'"),
    ({"clip_grad_norm": 5}, "clip_grad_norm is 5"),
    ({"clip_grad_norm": {"norm": 5}}, "clip_grad_norm is"),
])
def test_trainer_settings_recbole_would_drop_are_refused_before_training(tiny, settings, says):
    config, _, (train, _, _) = build("VBPR", tiny, **settings)
    with pytest.raises(SettingsError, match=says):
        get_trainer(config["MODEL_TYPE"], "VBPR")(config, get_model("VBPR")(config, train._dataset))
    assert not (tiny.root / "saved").exists() or not any((tiny.root / "saved").glob("*.pth"))


def test_learner_weight_decay_and_clip_grad_norm_reach_the_optimizer(tiny, monkeypatch):
    clipped = []
    import recbole.trainer.trainer as recbole_trainer

    real = recbole_trainer.clip_grad_norm_
    monkeypatch.setattr(recbole_trainer, "clip_grad_norm_", lambda params, **kw: clipped.append(kw) or real(params, **kw))
    config, _, (train, valid, _) = build("VBPR", tiny, learner="sgd", weight_decay=0.01, reg_weight=0.0,
                                         clip_grad_norm={"max_norm": 0.5})
    trainer = get_trainer(config["MODEL_TYPE"], "VBPR")(config, get_model("VBPR")(config, train._dataset))
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.01
    trainer.fit(train, valid, saved=False)
    assert clipped and all(kw == {"max_norm": 0.5} for kw in clipped)


SCHEDULE_TRAINERS = ["MICRO", "VBPR"]  # MICROTrainer (learning-rate decay) and the plain Trainer


def fitted(model_name, tiny, monkeypatch, valid_score=None, **settings):
    """Fit ``model_name`` on the tiny dataset, counting evaluations and the batches the model saw;
    ``valid_score(n)``, if given, replaces the n-th validation score."""
    seen = {"train": [], "eval": [], "validations": 0}
    config, _, (train, valid, _) = build(model_name, tiny, **settings)
    model = get_model(model_name)(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    loss, predict = model.calculate_loss, model.full_sort_predict
    monkeypatch.setattr(model, "calculate_loss", lambda inter: seen["train"].append(len(inter)) or loss(inter))
    monkeypatch.setattr(model, "full_sort_predict", lambda inter: seen["eval"].append(len(inter)) or predict(inter))
    valid_epoch = trainer._valid_epoch

    def counted(*args, **kwargs):
        seen["validations"] += 1
        score, result = valid_epoch(*args, **kwargs)
        return (score, result) if valid_score is None else (valid_score(seen["validations"]), result)

    monkeypatch.setattr(trainer, "_valid_epoch", counted)
    trainer.fit(train, valid, saved=False)
    return seen, train


@pytest.mark.parametrize("model", SCHEDULE_TRAINERS)
def test_eval_step_evaluates_every_nth_epoch(tiny, monkeypatch, model):
    seen, _ = fitted(model, tiny, monkeypatch, epochs=6, eval_step=3, stopping_step=10)
    assert seen["validations"] == 2  # after epochs 3 and 6


@pytest.mark.parametrize("model", SCHEDULE_TRAINERS)
def test_stopping_step_stops_after_that_many_evaluations_without_improvement(tiny, monkeypatch, model):
    seen, _ = fitted(model, tiny, monkeypatch, valid_score=lambda n: 1.0 / n, epochs=30, eval_step=1, stopping_step=2)
    assert seen["validations"] == 4  # the first sets the best; stopping_step + 1 worse ones stop it (a tie resets)


@pytest.mark.parametrize("model", SCHEDULE_TRAINERS)
def test_train_and_eval_batch_sizes_reach_the_dataloaders(tiny, monkeypatch, model):
    seen, train = fitted(model, tiny, monkeypatch, epochs=1, train_batch_size=16, eval_batch_size=99)
    assert max(seen["train"]) == 16 and sum(seen["train"]) == len(train._dataset)  # one epoch, every row once
    users_per_batch = 99 // train._dataset.item_num  # RecBole's full ranking: eval_batch_size scores per batch
    assert max(seen["eval"]) == users_per_batch and len(seen["eval"]) > 1
