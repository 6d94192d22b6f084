"""VBPR: its score equation, loss, gradients, full-sort agreement and checkpoint round trip."""
import numpy as np
import pytest
import torch
from helpers import build
from recbole.data.interaction import Interaction

from recbole_micro.errors import FeatureFileError
from recbole_micro.model.general_recommender.vbpr import VBPR
from recbole_micro.quick_start import load_data_and_model, run_recbole_micro


@pytest.fixture
def vbpr(tiny):
    config, dataset, (train, _, _) = build("VBPR", tiny)
    torch.manual_seed(0)
    model = VBPR(config, train._dataset)
    with torch.no_grad():  # non-zero biases so that every term of the score is exercised
        model.item_bias.weight.normal_()
        model.feat_bias.weight.normal_()
    return model, dataset, train


def test_score_is_the_vbpr_equation(vbpr):
    model, dataset, _ = vbpr
    u, i = 3, 7
    token = dataset.field2id_token["item_id"][i]
    f_i = np.concatenate([model.visual_feat[i].numpy(), model.textual_feat[i].numpy()])
    w = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    expected = (
        w["item_bias.weight"][i, 0]
        + w["user_embedding.weight"][u] @ w["item_embedding.weight"][i]
        + w["user_feat_embedding.weight"][u] @ (w["feat_projection.weight"] @ f_i)
        + w["feat_bias.weight"][0] @ f_i
    )
    assert token in dataset.field2id_token["item_id"]
    score = model.predict(Interaction({"user_id": torch.tensor([u]), "item_id": torch.tensor([i])}))
    assert score.item() == pytest.approx(float(expected), rel=1e-5)


def test_content_is_the_concatenation_of_the_used_modalities(tiny):
    config, _, (train, _, _) = build("VBPR", tiny, use_modalities=["textual"])
    model = VBPR(config, train._dataset)
    assert model.modality_names == ["textual"]
    assert model.content_feat.shape == (train._dataset.item_num, 5)
    assert "content_feat" not in model.state_dict()  # features never go into checkpoints


def test_loss_is_finite_and_gradients_reach_every_parameter(vbpr):
    model, _, train = vbpr
    batch = next(iter(train))
    losses = model.calculate_loss(batch)
    assert len(losses) == 3 and all(torch.isfinite(l).all() for l in losses)
    model.feat_reg_weight = 1e-3  # so the content-bias regulariser also reaches beta'
    sum(l.sum() for l in model.calculate_loss(batch)).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_full_sort_predict_agrees_with_predict(vbpr):
    model, dataset, _ = vbpr
    model.eval()
    users = torch.tensor([1, 5, 9])
    with torch.no_grad():
        full = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
        n_items = dataset.item_num
        for row, u in enumerate(users):
            pairs = Interaction({"user_id": u.repeat(n_items), "item_id": torch.arange(n_items)})
            torch.testing.assert_close(full[row], model.predict(pairs), rtol=1e-5, atol=1e-5)


def test_one_epoch_run_saves_and_reloads_the_best_checkpoint(tiny, monkeypatch):
    result = run_recbole_micro(model="VBPR", dataset="tiny", config_dict=tiny.config_dict(epochs=2))
    assert set(result["test_result"]) == {f"{m}@{k}" for m in ("recall", "ndcg", "precision") for k in (10, 20)}
    # as in a fresh process: RecBole's NDCG needs np.float, which only Config.__init__ sets
    monkeypatch.delattr(np, "float", raising=False)
    config, model, dataset, train, valid, test = load_data_and_model(result["saved_model_file"])
    checkpoint = torch.load(result["saved_model_file"], weights_only=True)
    for name, value in checkpoint["state_dict"].items():
        torch.testing.assert_close(model.state_dict()[name], value)
    from recbole_micro.trainer.trainer import Trainer

    trainer = Trainer(config, model)
    reloaded = trainer.evaluate(test, load_best_model=False)
    assert dict(reloaded) == dict(result["test_result"])


def test_reloading_with_a_changed_feature_dimension_is_a_clear_error(tiny):
    result = run_recbole_micro(model="VBPR", dataset="tiny", config_dict=tiny.config_dict())
    tiny.write_modality("visual", {t: np.concatenate([v, v]) for t, v in tiny.visual.items()})
    with pytest.raises(FeatureFileError, match="visual: trained 8, now 16"):
        load_data_and_model(result["saved_model_file"])


def test_same_seed_same_metrics(tiny):
    runs = [run_recbole_micro(model="VBPR", dataset="tiny", config_dict=tiny.config_dict(epochs=2), saved=False) for _ in range(2)]
    assert runs[0]["test_result"] == runs[1]["test_result"]
    assert runs[0]["best_valid_result"] == runs[1]["best_valid_result"]
    other = run_recbole_micro(model="VBPR", dataset="tiny", config_dict=tiny.config_dict(epochs=2, seed=11), saved=False)
    assert other["best_valid_result"] != runs[0]["best_valid_result"]
