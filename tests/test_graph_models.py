"""LATTICE and MICRO: equations on the tiny dataset, schedule, ablations, backbones, cold start."""
import pytest
import torch
from helpers import SMALL, batch_of, make
from recbole.data.interaction import Interaction

from recbole_micro.model.general_recommender.lattice import LATTICE
from recbole_micro.model.general_recommender.micro import MICRO
from recbole_micro.model.layers import propagate
from recbole_micro.model.losses import info_nce_loss


def test_lattice_modality_weights_sum_to_one(tiny):
    model, _, _ = make(LATTICE, tiny)
    with torch.no_grad():
        model.modal_weight.copy_(torch.tensor([0.3, -1.2]))
    alpha = model.modality_weights()
    assert alpha.sum().item() == pytest.approx(1.0)
    assert alpha.tolist() == pytest.approx(torch.softmax(torch.tensor([0.3, -1.2]), 0).tolist())


@pytest.mark.parametrize("fusion", ["paper", "official"])
def test_lattice_graph_is_the_stated_mixture(tiny, fusion):
    model, _, _ = make(LATTICE, tiny, graph_fusion=fusion)
    model.eval()
    alpha, lam = model.modality_weights().detach(), model.lambda_coeff
    with torch.no_grad():
        graph = model.build_item_graphs().to_dense()
        names = model.modality_names
        initial = [model.initial_graph(m).to_dense() for m in names]
        if fusion == "paper":  # sum_m alpha_m (lambda S~^m + (1 - lambda) A~^m)
            learned = [model.learned_graph(m).to_dense() for m in names]
            expected = sum(a * (lam * s + (1 - lam) * l) for a, s, l in zip(alpha, initial, learned))
        else:  # lambda sum_m alpha_m S~^m + (1 - lambda) norm(sum_m alpha_m kNN(e~^m))
            raw = sum(a * model.learned_knn(m).to_dense() for a, m in zip(alpha, names))
            d = raw.sum(1)
            inv = torch.where(d > 0, d.clamp(min=1e-12).pow(-0.5), torch.zeros_like(d))
            expected = lam * sum(a * s for a, s in zip(alpha, initial)) + (1 - lam) * inv[:, None] * raw * inv[None, :]
    torch.testing.assert_close(graph, expected)


def test_lattice_item_embedding_is_eq8(tiny):
    model, _, _ = make(LATTICE, tiny)
    model.eval()
    with torch.no_grad():
        user_all, item_all = model.forward()
        user_cf, item_cf = model.cf_embeddings()
        h = propagate(model.build_item_graphs(), model.item_embedding.weight, model.n_item_layers)
    torch.testing.assert_close(user_all, user_cf)
    torch.testing.assert_close(item_all, item_cf + h / h.norm(dim=1, keepdim=True).clamp(min=1e-12))


def test_micro_attention_weights_eq7(tiny):
    model, _, _ = make(MICRO, tiny)
    model.eval()
    with torch.no_grad():
        h_m = model.modality_embeddings()
        h_c, alpha = model.fuse_shared(h_m)
        i = 5
        scores = [model.attention[2].weight[0] @ torch.tanh(model.attention[0](h_m[m][i])) for m in model.modality_names]
        expected = torch.softmax(torch.stack(scores), 0)
    torch.testing.assert_close(alpha[i], expected)
    torch.testing.assert_close(alpha.sum(1), torch.ones(alpha.shape[0]))
    torch.testing.assert_close(h_c[i], sum(expected[k] * h_m[m][i] for k, m in enumerate(model.modality_names)))


def test_micro_specific_branch_eqs_11_to_15(tiny):
    model, _, _ = make(MICRO, tiny)
    model.eval()
    with torch.no_grad():
        out = model.item_multimodal_embeddings()
        v, t = model.modality_names
        torch.testing.assert_close(out["h_s"][v], out["h_m"][v] - out["h_c"])  # Eq. 11
        i = 7
        parts = torch.stack([out["h_c"][i], out["h_s"][v][i], out["h_s"][t][i]])
        gamma = torch.softmax(parts @ model.specific_query, 0)  # Eq. 14
        torch.testing.assert_close(out["h"][i], gamma @ parts)  # Eq. 15


def test_micro_orthogonality_loss_eq13(tiny):
    model, _, _ = make(MICRO, tiny)
    v, t = model.modality_names
    h_s = {v: torch.tensor([[9.0, 9.0], [1, 2], [0, 1], [3, 0]]), t: torch.tensor([[9.0, 9.0], [2, 0], [5, 0], [1, 1]])}
    # items 1..3: dot products 2, 0, 3 -> mean of squares (4 + 0 + 9) / 3; PAD row ignored
    assert model.orthogonality_loss(h_s).item() == pytest.approx(13 / 3)


def test_micro_user_preference_is_the_mean_of_training_items(tiny):
    model, _, train = make(MICRO, tiny)
    h = torch.randn(model.n_items, model.embedding_size)
    h_u = model.user_preference(h)
    matrix = train._dataset.inter_matrix(form="csr")
    for u in (1, 4, 17):
        items = matrix[u].indices
        assert len(items) > 0
        torch.testing.assert_close(h_u[u], h[items].mean(0))
    torch.testing.assert_close(h_u[0], torch.zeros(model.embedding_size))  # PAD user: no items, zero


def test_micro_score_is_eq17(tiny):
    model, _, _ = make(MICRO, tiny)
    model.eval()
    with torch.no_grad():
        h = model.item_multimodal_embeddings()["h"]
        user_cf, item_cf = model.cf_embeddings()
        h_u = model.user_preference(h)
        u, i = 3, 9
        expected = (user_cf[u] + h_u[u] / h_u[u].norm()) @ (item_cf[i] + h[i] / h[i].norm())
        score = model.predict(Interaction({"user_id": torch.tensor([u]), "item_id": torch.tensor([i])}))
    assert score.item() == pytest.approx(expected.item(), rel=1e-5)


def test_micro_without_preference_scores_x_u_dot_x_i_plus_h_i(tiny):
    model, _, _ = make(MICRO, tiny, use_user_pref=False)
    model.eval()
    with torch.no_grad():
        h = model.item_multimodal_embeddings()["h"]
        user_cf, item_cf = model.cf_embeddings()
        u, i = 3, 9
        expected = user_cf[u] @ (item_cf[i] + h[i] / h[i].norm())
        score = model.predict(Interaction({"user_id": torch.tensor([u]), "item_id": torch.tensor([i])}))
    assert score.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not hasattr(model, "user_item_mean")


def test_micro_ablations_change_exactly_their_part(tiny):
    full, _, train = make(MICRO, tiny)
    batch = batch_of(train)
    assert len(full.calculate_loss(batch)) == 4  # BPR, L2, beta_C L_C, beta_S L_S
    no_specific, _, _ = make(MICRO, tiny, use_specific=False)
    out = no_specific.item_multimodal_embeddings()
    assert out["h_s"] is None and out["h"] is out["h_c"]
    assert len(no_specific.calculate_loss(batch)) == 3 and not hasattr(no_specific, "specific_query")
    no_fusion, _, _ = make(MICRO, tiny, use_contrastive=False, use_specific=False)
    losses = no_fusion.calculate_loss(batch)
    assert len(losses) == 2  # BPR only (+ L2)
    _, alpha = no_fusion.fuse_shared(no_fusion.modality_embeddings())
    assert torch.allclose(alpha, alpha[1].expand_as(alpha))  # one global weight per modality, as LATTICE


def test_micro_batch_anchors_take_the_batchs_distinct_positives_against_all_negatives(tiny):
    model, _, train = make(MICRO, tiny, cl_anchors="batch", cl_symmetric=True)
    batch = batch_of(train)
    anchors = model.contrastive_anchors(batch)
    expected_items = set(batch[model.ITEM_ID].tolist())  # the positives; negatives are all items anyway
    assert anchors.tolist() == sorted(expected_items) and 0 not in expected_items
    losses = model.calculate_loss(batch)
    model.eval()
    with torch.no_grad():
        side = model.item_multimodal_embeddings()
        expected = 0.0
        for m in model.modality_names:
            forward = info_nce_loss(side["h_m"][m], side["h_c"], model.tau, rows=anchors)
            reverse = info_nce_loss(side["h_c"], side["h_m"][m], model.tau, rows=anchors)
            expected += 0.5 * (forward + reverse) / len(model.modality_names)
    torch.testing.assert_close(losses[2], model.cl_weight * expected)
    all_items, _, _ = make(MICRO, tiny)
    assert all_items.contrastive_anchors(batch) is None  # the paper's default: every item is an anchor


@pytest.mark.parametrize("cl_anchors", ["all", "batch"])
def test_micro_loss_and_gradients_are_the_same_with_either_contrastive_kernel(tiny, cl_anchors):
    batch, results = None, []
    for kernel in ("fused", "chunked"):
        model, _, train = make(MICRO, tiny, cl_kernel=kernel, cl_anchors=cl_anchors, cl_symmetric=True)
        batch = batch_of(train) if batch is None else batch
        losses = model.calculate_loss(batch)
        sum(losses).backward()
        results.append(([loss.item() for loss in losses], {n: p.grad.clone() for n, p in model.named_parameters()}))
    (fused_losses, fused_grads), (chunked_losses, chunked_grads) = results
    assert fused_losses == pytest.approx(chunked_losses, rel=1e-5)
    for name, grad in chunked_grads.items():
        # float32 kernels sum in another order: an entry near 1% of its tensor's largest differs by
        # ~5e-10 on some CPUs (AMD EPYC, AVX512), so the absolute slack is 1e-5 of the largest entry
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()))


@pytest.mark.parametrize("item_repr", ["graph_feats", "feats"])
def test_micro_feature_ablations(tiny, item_repr):
    model, _, _ = make(MICRO, tiny, item_repr=item_repr)
    model.eval()
    with torch.no_grad():
        h_m = model.modality_embeddings()
        for m in model.modality_names:
            features = model.transformed_feat(m)  # e~^m (Eq. 4)
            if item_repr == "feats":  # CF+feats: no graph
                torch.testing.assert_close(h_m[m], features)
            else:  # /feats: propagate e~^m instead of ID embeddings
                torch.testing.assert_close(h_m[m], propagate(model.build_item_graphs()[m], features, 1))


def test_single_modality_run(tiny):
    model, _, train = make(MICRO, tiny, use_modalities=["textual"])
    assert model.modality_names == ["textual"]
    losses = model.calculate_loss(batch_of(train))
    assert len(losses) == 3 and all(torch.isfinite(l).all() for l in losses)  # no L_S with one modality


@pytest.mark.parametrize("model_class", [LATTICE, MICRO])
@pytest.mark.parametrize("cf_model", ["lightgcn", "mf", "ngcf"])
def test_gradients_reach_every_parameter_on_the_rebuild_batch(tiny, model_class, cf_model):
    model, _, train = make(model_class, tiny, cf_model=cf_model, feat_trainable=True)
    model.train()
    batches = iter(train)
    first = sum(l.sum() for l in model.calculate_loss(next(batches)))
    first.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        assert torch.isfinite(parameter.grad).all(), name
    model.zero_grad(set_to_none=True)
    sum(l.sum() for l in model.calculate_loss(next(batches))).backward()
    graph_parts = ("feat_transforms", "raw_feats") + (("modal_weight",) if model_class is LATTICE else ())
    learned_graph_only = [n for n, p in model.named_parameters() if n.startswith(graph_parts)]
    for name, parameter in model.named_parameters():  # later batches use the detached graph
        assert (parameter.grad is None) == (name in learned_graph_only), name


@pytest.mark.parametrize("model_class", [LATTICE, MICRO])
def test_graph_is_rebuilt_once_per_epoch_and_for_evaluation(tiny, model_class):
    model, _, train = make(model_class, tiny)
    model.train()
    for batch in list(train)[:3]:
        model.calculate_loss(batch)
    assert model.graph_builds == 1
    model.train()  # the trainer's call at the start of the next epoch
    model.calculate_loss(batch)
    model.calculate_loss(batch)
    assert model.graph_builds == 2
    model.eval()
    with torch.no_grad():
        model.full_sort_predict(Interaction({"user_id": torch.tensor([1, 2])}))
        model.full_sort_predict(Interaction({"user_id": torch.tensor([3])}))
    assert model.graph_builds == 3  # rebuilt without gradients once, then cached


@pytest.mark.parametrize("model_class", [LATTICE, MICRO])
def test_full_sort_predict_agrees_with_predict(tiny, model_class):
    model, dataset, _ = make(model_class, tiny)
    model.eval()
    users = torch.tensor([2, 11])
    with torch.no_grad():
        full = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
        for row, u in enumerate(users):
            pairs = Interaction({"user_id": u.repeat(dataset.item_num), "item_id": torch.arange(dataset.item_num)})
            torch.testing.assert_close(full[row], model.predict(pairs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_class", [LATTICE, MICRO])
def test_cold_items_are_in_the_graphs_and_pad_never(tiny, model_class):
    model, dataset, _ = make(model_class, tiny)
    model.eval()
    cold = [dataset.token2id("item_id", t) for t in tiny.cold_tokens]
    with torch.no_grad():
        graphs = model.build_item_graphs()
        for graph in (graphs.values() if isinstance(graphs, dict) else [graphs]):
            assert (graph.val[0] == 0).all()
            assert not ((graph.idx[1:] == 0) & (graph.val[1:] != 0)).any()  # nobody links to PAD
            for c in cold:
                assert (graph.val[c] > 0).sum() >= 2  # neighbours besides itself
                assert ((graph.idx == c) & (graph.val > 0)).sum() >= 2  # and is somebody's neighbour
        _, item_all = model.forward()
        user_cf, item_cf = model.cf_embeddings()
    for c in cold:
        assert torch.isfinite(item_all[c]).all()
        assert (item_all[c] - item_cf[c]).norm() == pytest.approx(1.0, rel=1e-4)  # + h_i/|h_i| is there
    assert torch.isfinite(item_all).all()


def test_official_profile_loads_and_decays_the_learning_rate(tiny):
    from recbole_micro.config import Config
    from recbole_micro.registry import properties_dir

    profile = properties_dir() / "profiles" / "official.yaml"
    config = Config(model="MICRO", dataset="tiny", config_file_list=[str(profile)], config_dict=tiny.config_dict(**SMALL))
    assert (config["lambda_coeff"], config["cf_adj_norm"], config["reg_target"], config["eval_step"]) == (0.9, "rw_self_loop", "final", 5)
    from recbole_micro.quick_start import _build

    _, (train, valid, _), model, trainer = _build(config)
    assert type(trainer).__name__ == "MICROTrainer"
    assert not model.use_specific and not model.use_user_pref and model.feat_trainable
    trainer._train_epoch(train, 0)
    trainer._train_epoch(train, 1)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4 * 0.96 ** (2 / 50))


def test_rw_self_loop_adjacency_rows_sum_to_one(tiny):
    model, _, _ = make(LATTICE, tiny, cf_adj_norm="rw_self_loop")
    dense = model.backbone.adjacency.to_dense()
    torch.testing.assert_close(dense.sum(1), torch.ones(dense.shape[0]), atol=1e-5, rtol=1e-5)
    assert (dense.diagonal() > 0).all()
