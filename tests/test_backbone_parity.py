"""The foundation check: LATTICE without its item-graph term is RecBole's LightGCN.

Same initial embeddings, the same batches and negatives, the same symmetric adjacency and the
same squared L2 on the ego embeddings: the two must train to the same weights. RecBole's
LightGCN takes the unsquared norm unless ``require_pow: True``; that one difference is shown too.
"""
import torch
from helpers import build
from recbole.model.general_recommender.lightgcn import LightGCN

from recbole_micro.model.general_recommender.lattice import LATTICE
from recbole_micro.registry import get_trainer, init_seed

SETTINGS = {"embedding_size": 8, "reg_weight": 1e-2, "learning_rate": 1e-2, "epochs": 3}


def pair(tiny, **settings):
    """RecBole's LightGCN and our backbone-only LATTICE with the same initial embeddings."""
    settings = {**SETTINGS, **settings}
    config_l, _, (train_l, _, _) = build("LightGCN", tiny, n_layers=2, **settings)
    lightgcn = LightGCN(config_l, train_l._dataset)
    config_o, _, (train_o, _, _) = build("LATTICE", tiny, use_item_graph=False, cf_n_layers=2, knn_k=4, **settings)
    ours = LATTICE(config_o, train_o._dataset)
    with torch.no_grad():
        ours.user_embedding.weight.copy_(lightgcn.user_embedding.weight)
        ours.item_embedding.weight.copy_(lightgcn.item_embedding.weight)
    return (config_l, lightgcn, train_l), (config_o, ours, train_o)


def train(config, model, data):
    """Fit for config['epochs'] from the same sampler state; the per-epoch losses."""
    init_seed(config["seed"], config["reproducibility"])  # the same negatives for both models
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(data, valid_data=None, verbose=False, saved=False)
    return [trainer.train_loss_dict[e] for e in sorted(trainer.train_loss_dict)]


def final_embeddings(model):
    model.eval()
    with torch.no_grad():
        return model.forward()


def test_same_initial_embeddings_give_the_same_final_embeddings(tiny):
    (_, lightgcn, _), (_, ours, _) = pair(tiny, require_pow=True)
    for theirs, mine in zip(final_embeddings(lightgcn), final_embeddings(ours)):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)


def test_lattice_without_its_item_graph_trains_as_recboles_lightgcn(tiny):
    (config_l, lightgcn, train_l), (config_o, ours, train_o) = pair(tiny, require_pow=True)
    losses_l, losses_o = train(config_l, lightgcn, train_l), train(config_o, ours, train_o)
    assert len(losses_o) == SETTINGS["epochs"]
    torch.testing.assert_close(torch.tensor(losses_o), torch.tensor(losses_l), rtol=1e-5, atol=1e-6)
    for name in ("user_embedding", "item_embedding"):
        torch.testing.assert_close(getattr(ours, name).weight, getattr(lightgcn, name).weight, rtol=1e-4, atol=1e-6)


def test_recboles_default_l2_is_the_unsquared_norm(tiny):
    """With RecBole's default ``require_pow: False`` the same reg_weight is another penalty: ||E||_F / B
    instead of ||E||_F^2 / (2B), so the trained weights part."""
    (config_l, lightgcn, train_l), (config_o, ours, train_o) = pair(tiny)
    assert config_l["require_pow"] is False
    batch = next(iter(train_l))
    ego = [lightgcn.user_embedding(batch["user_id"]), lightgcn.item_embedding(batch["item_id"]),
           lightgcn.item_embedding(batch["neg_item_id"])]
    unsquared = sum(e.norm() for e in ego) / len(batch)
    squared = sum(e.norm() ** 2 for e in ego) / (2 * len(batch))
    mf_loss, reg = ours.calculate_loss(batch)
    torch.testing.assert_close(lightgcn.calculate_loss(batch).squeeze(), mf_loss + SETTINGS["reg_weight"] * unsquared)
    torch.testing.assert_close(reg.squeeze(), SETTINGS["reg_weight"] * squared)
    train(config_l, lightgcn, train_l), train(config_o, ours, train_o)
    assert not torch.allclose(ours.user_embedding.weight, lightgcn.user_embedding.weight, rtol=1e-4, atol=1e-6)
