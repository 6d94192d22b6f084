"""Recommendations from a saved checkpoint equal full_sort_predict's top-K with the history masked."""
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import run_script
from recbole.data.interaction import Interaction

from recbole_micro.errors import ServeError
from recbole_micro.model.general_recommender.micro import MICRO
from recbole_micro.quick_start import load_data_and_model, run_recbole_micro
from recbole_micro.serve.recommend import Recommender


@pytest.fixture(params=["VBPR", "BPR"])
def trained(request, tiny):
    result = run_recbole_micro(model=request.param, dataset="tiny", config_dict=tiny.config_dict(epochs=2))
    return result["saved_model_file"]


def expected_top_k(model_file, k, exclude=("train",)):
    """The reference: every user's full_sort_predict row, history and padding masked, argsort."""
    config, model, dataset, train, valid, _ = load_data_and_model(model_file)
    model.eval()
    users = torch.arange(1, dataset.user_num)
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({dataset.uid_field: users})).view(len(users), -1).clone()
    scores[:, 0] = -torch.inf
    for name, split in (("train", train), ("valid", valid)):
        if name in exclude:
            history = torch.as_tensor(split.dataset.inter_matrix(form="csr").toarray()[1:], dtype=torch.bool)
            scores[history] = -torch.inf
    order = torch.argsort(scores, dim=1, descending=True)[:, :k]
    return dataset.id2token(dataset.uid_field, users.numpy()), dataset.id2token(dataset.iid_field, order.numpy())


def test_top_k_equals_full_sort_predict_with_the_history_masked(trained):
    users, items, scores = Recommender.load(trained).recommend(k=5, batch_users=7)  # several batches
    want_users, want_items = expected_top_k(trained, 5)
    assert users.tolist() == want_users.tolist() and items.tolist() == want_items.tolist()
    assert (np.diff(scores, axis=1) <= 0).all()  # best first


def test_excluding_validation_too_leaves_out_those_items(trained):
    config, _, dataset, _, valid, _ = load_data_and_model(trained)
    users, items, _ = Recommender.load(trained, exclude=("train", "valid")).recommend(k=5)
    want_users, want_items = expected_top_k(trained, 5, exclude=("train", "valid"))
    assert items.tolist() == want_items.tolist()
    seen = valid.dataset.inter_matrix(form="csr")
    for user, row in zip(users, items):
        uid = dataset.token2id(dataset.uid_field, user)
        valid_items = set(dataset.id2token(dataset.iid_field, seen[uid].indices))
        assert not valid_items & set(row)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_written_files_round_trip_with_tokens(trained, tmp_path, suffix):
    recommender = Recommender.load(trained)
    users, items, scores = recommender.recommend(["u03", "u17"], k=4)
    path = tmp_path / f"recs{suffix}"
    assert recommender.write_recommendations(path, k=4, user_tokens=["u03", "u17"], batch_users=1) == 8
    frame = pd.read_csv(path, dtype={"user": str, "item": str}) if suffix == ".csv" else pd.read_parquet(path)
    assert frame["user"].tolist() == ["u03"] * 4 + ["u17"] * 4
    assert frame["rank"].tolist() == [1, 2, 3, 4] * 2
    assert frame["item"].tolist() == items.reshape(-1).tolist()
    np.testing.assert_allclose(frame["score"].to_numpy(), scores.reshape(-1), rtol=1e-6)


def test_bad_requests_are_clear_errors(trained, tmp_path):
    recommender = Recommender.load(trained)
    with pytest.raises(ServeError, match=r"Unknown user token\(s\) \['nobody'\]"):
        recommender.recommend(["u01", "nobody"], k=3)
    with pytest.raises(ServeError, match="k is 0"):
        recommender.recommend(k=0)
    with pytest.raises(ServeError, match="a .csv or a .parquet file"):
        recommender.write_recommendations(tmp_path / "recs.json")
    with pytest.raises(ServeError, match="only train, valid"):
        Recommender.load(trained, exclude=("test",))


def test_the_command_line_writes_recommendations(tiny):
    result = run_recbole_micro(model="VBPR", dataset="tiny", config_dict=tiny.config_dict())
    out = tiny.root / "recs.csv"
    done = run_script("--recommend", result["saved_model_file"], "--k", "3", "--users", "u01", "u02",
                      "--out", str(out), cwd=tiny.root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "6 recommendations" in done.stdout
    assert pd.read_csv(out, dtype=str)["user"].tolist() == ["u01"] * 3 + ["u02"] * 3
    bad = run_script("--recommend", result["saved_model_file"], "--users", "ghost", "--out", str(out), cwd=tiny.root)
    assert bad.returncode == 2 and "ghost" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("model_name", ["VBPR", "MICRO", "LightGCN", "BPR"])
def test_exported_embeddings_reproduce_the_scores_and_faiss_finds_the_same_top_k(tiny, model_name):
    from recbole_micro.serve.export import export_embeddings

    result = run_recbole_micro(model=model_name, dataset="tiny", config_dict=tiny.config_dict(epochs=1))
    written = export_embeddings(result["saved_model_file"], tiny.root / "emb", with_faiss=True)
    users = np.load(written["user"][0])
    items = np.load(written["item"][0])
    user_tokens = written["user"][1].read_text().split()
    item_tokens = written["item"][1].read_text().split()
    config, model, dataset, _, _, _ = load_data_and_model(result["saved_model_file"])
    model.eval()
    sample = ["u00", "u07", "u33"]
    ids = torch.tensor([dataset.token2id(dataset.uid_field, t) for t in sample])
    with torch.no_grad():
        full = model.full_sort_predict(Interaction({dataset.uid_field: ids})).view(len(ids), -1)[:, 1:]
    order = [dataset.token2id(dataset.iid_field, t) - 1 for t in item_tokens]  # file rows in model order
    exported = users[[user_tokens.index(t) for t in sample]] @ items.T
    np.testing.assert_allclose(exported[:, np.argsort(order)], full.numpy(), rtol=1e-4, atol=1e-5)
    import faiss

    index = faiss.read_index(str(written["faiss"]))
    _, found = index.search(np.ascontiguousarray(users[[user_tokens.index(t) for t in sample]]), 5)
    expected = torch.argsort(full, dim=1, descending=True)[:, :5].numpy()
    assert [[item_tokens[i] for i in row] for row in found] == \
        [list(dataset.id2token(dataset.iid_field, row + 1)) for row in expected]


def test_a_model_without_inner_product_scores_is_refused(tiny):
    from recbole_micro.serve.export import export_embeddings

    result = run_recbole_micro(model="ItemKNN", dataset="tiny", config_dict=tiny.config_dict(k=5))
    with pytest.raises(ServeError, match="ItemKNN has no user and item embeddings"):
        export_embeddings(result["saved_model_file"], tiny.root / "emb")


def test_the_command_line_exports_embeddings(tiny):
    result = run_recbole_micro(model="BPR", dataset="tiny", config_dict=tiny.config_dict())
    done = run_script("--export-embeddings", result["saved_model_file"], "--out", str(tiny.root / "emb"), cwd=tiny.root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.load(tiny.root / "emb" / "tiny.item.npy").shape[0] == len((tiny.root / "emb" / "tiny.item.tokens")
                                                                        .read_text().split())
    missing = run_script("--export-embeddings", result["saved_model_file"], cwd=tiny.root)
    assert missing.returncode == 2 and "needs --out DIR" in missing.stderr


@pytest.mark.parametrize("model_name", ["MICRO", "LATTICE"])
def test_explanations_add_up_to_the_score_and_name_real_neighbours(tiny, model_name):
    from recbole_micro.serve.explain import explain

    result = run_recbole_micro(model=model_name, dataset="tiny", config_dict=tiny.config_dict(epochs=2, knn_k=4))
    recommender = Recommender.load(result["saved_model_file"])
    users, items, scores = recommender.recommend(["u05"], k=3)
    entries = explain(recommender, "u05", list(items[0]))
    dataset = recommender.dataset
    for entry, item, score in zip(entries, items[0], scores[0]):
        assert entry["user"] == "u05" and entry["item"] == item
        assert sum(entry["terms"].values()) == pytest.approx(float(score), abs=1e-5)  # terms sum to the score
        assert entry["score"] == pytest.approx(float(score), abs=1e-5)
        for neighbours in entry["neighbours"].values():
            assert neighbours and all(n["item"] in dataset.field2token_id["item_id"] for n in neighbours)
            assert [n["weight"] for n in neighbours] == sorted((n["weight"] for n in neighbours), reverse=True)
    train_items = set(dataset.id2token("item_id", recommender.train_history[dataset.token2id("user_id", "u05")].indices))
    if model_name == "MICRO":
        for entry in entries:
            assert sum(entry["attention"].values()) == pytest.approx(1.0, abs=1e-5)  # Eq. 7's softmax
            assert {b["item"] for b in entry["because"]} <= train_items
            assert len(entry["because"]) == 3
        # with every training item listed, their shares add up to the two h_u terms (h_u is their mean)
        for entry in explain(recommender, "u05", list(items[0]), top=1000):
            shares = [b["contribution"] for b in entry["because"]]
            assert len(shares) == len(train_items)
            assert sum(shares) == pytest.approx(entry["terms"]["h_u.x_i"] + entry["terms"]["h_u.h_i"], abs=1e-5)
    else:
        for entry in entries:
            assert {b["item"] for b in entry["because"]} <= train_items


def test_explain_refuses_unknown_tokens_and_other_models(tiny):
    from recbole_micro.serve.explain import explain

    result = run_recbole_micro(model="VBPR", dataset="tiny", config_dict=tiny.config_dict())
    with pytest.raises(ServeError, match="explain covers LATTICE and MICRO"):
        explain(Recommender.load(result["saved_model_file"]), "u01", ["it01"])


def test_the_command_line_writes_explanations_beside_the_recommendations(tiny):
    import json

    result = run_recbole_micro(model="MICRO", dataset="tiny", config_dict=tiny.config_dict(knn_k=4))
    out = tiny.root / "recs.csv"
    done = run_script("--recommend", result["saved_model_file"], "--k", "2", "--users", "u01", "u02", "--explain",
                      "--out", str(out), cwd=tiny.root)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in (tiny.root / "recs.explain.jsonl").read_text().splitlines()]
    recs = pd.read_csv(out, dtype=str)
    assert [(e["user"], e["item"]) for e in lines] == list(zip(recs["user"], recs["item"]))
    assert {"terms", "because", "attention", "neighbours", "score"} <= set(lines[0])


class _Tokens:
    """The few dataset attributes a Recommender reads: one user 'u', items a, b, c (ids 1..3)."""

    uid_field, iid_field = "user_id", "item_id"
    user_num, item_num = 2, 4
    field2id_token = {"user_id": np.array(["[PAD]", "u"]), "item_id": np.array(["[PAD]", "a", "b", "c"])}
    field2token_id = {f: {t: i for i, t in enumerate(tokens)} for f, tokens in field2id_token.items()}

    def id2token(self, field, ids):
        return self.field2id_token[field][ids]


def hand_checked_recommender(model_class, parts):
    """A Recommender around a model whose embeddings and graphs are set by hand (``parts``).

    The user 'u' trained on a and b. Scores follow the model's rule from the same parts, so the
    explanation must take them apart into the numbers worked out below.
    """
    import scipy.sparse as sp

    from recbole_micro.model.layers import SparseGraph

    model = model_class.__new__(model_class)
    torch.nn.Module.__init__(model)
    model.modality_names, model.use_user_pref = ["v", "t"], True
    user_cf, item_cf = parts["user_cf"], parts["item_cf"]
    h_hat = torch.nn.functional.normalize(parts["h"], dim=1)
    graph = SparseGraph(torch.tensor([[0, 0, 0], [1, 2, 0], [2, 1, 0], [1, 2, 1]]),
                        torch.tensor([[0.0, 0, 0], [0.6, 0.1, 0], [0.7, 0.2, 0], [0.2, 0.5, 0.1]]))
    model.cf_embeddings = lambda: (user_cf, item_cf)
    model.item_graphs = lambda: {"v": graph, "t": graph} if model_class is MICRO else graph
    model.item_multimodal_embeddings = lambda: {"h": parts["h"], "h_m": None, "alpha": parts["alpha"]}
    model.user_preference = lambda h: (h[1:3].mean(dim=0, keepdim=True)).expand(2, -1)  # a, b
    model.item_graph_embedding = lambda: parts["h"]
    if model_class is MICRO:
        h_u = torch.nn.functional.normalize(model.user_preference(parts["h"]), dim=1)
        final_user, final_item = user_cf + h_u, item_cf + h_hat
    else:
        final_user, final_item = user_cf, item_cf + h_hat
    model.full_sort_predict = lambda interaction: (final_user[interaction["user_id"]] @ final_item.t()).view(-1)
    recommender = Recommender.__new__(Recommender)
    recommender.config, recommender.model, recommender.dataset = {"dataset": "hand"}, model, _Tokens()
    recommender.uid_field, recommender.iid_field, recommender.device = "user_id", "item_id", "cpu"
    recommender.train_history = sp.csr_matrix(np.array([[0, 0, 0, 0], [0, 1, 1, 0]], dtype=float))
    recommender.history, recommender._explained, recommender.new_tokens, recommender.new_items = None, None, [], None
    return recommender


HAND_PARTS = {
    "user_cf": torch.tensor([[0.0, 0.0], [1.0, 0.0]]),
    "item_cf": torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]),
    "h": torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 4.0]]),
    "alpha": torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.25, 0.75]]),
}


def test_micro_explanation_of_a_hand_checked_case():
    """x_u = (1, 0); x_c = (0.5, 0.5); h_c/|h_c| = (0, 1); h_u = mean(h_a, h_b) = (1, 1.5), so
    h_u/|h_u| = (0.5547, 0.8321). Eq. 17's terms: 0.5, 0, 0.6934, 0.8321 (sum 2.0254). Each training
    item's share of h_u . (x_c + h_c/|h_c|): a (2, 0)/(2 |h_u|) -> 0.2774, b (0, 3)/(2 |h_u|) -> 1.2481."""
    from recbole_micro.serve.explain import explain

    (entry,) = explain(hand_checked_recommender(MICRO, HAND_PARTS), "u", ["c"])
    norm = (1 + 1.5 ** 2) ** 0.5
    assert entry["terms"] == pytest.approx({"x_u.x_i": 0.5, "x_u.h_i": 0.0, "h_u.x_i": (0.5 + 0.75) / norm,
                                            "h_u.h_i": 1.5 / norm}, abs=1e-6)
    assert entry["score"] == pytest.approx(0.5 + 1.25 / norm + 1.5 / norm, abs=1e-6)
    assert [b["item"] for b in entry["because"]] == ["b", "a"]
    assert [b["contribution"] for b in entry["because"]] == pytest.approx([2.25 / norm, 0.5 / norm], abs=1e-6)
    assert sum(b["contribution"] for b in entry["because"]) == pytest.approx(entry["terms"]["h_u.x_i"] + entry["terms"]["h_u.h_i"])
    assert entry["attention"] == {"v": 0.25, "t": 0.75}
    # c's edges: a 0.2 + 0.1 (two slots, summed), b 0.5
    assert entry["neighbours"]["v"] == [{"item": "b", "weight": 0.5}, {"item": "a", "weight": pytest.approx(0.3)}]


def test_lattice_explanation_of_a_hand_checked_case():
    """LATTICE: cf = x_u . x_c = 0.5; item graph = x_u . h_c/|h_c| = 0; the user's training items
    among c's fused-graph neighbours, strongest first: b (0.5), a (0.3)."""
    from recbole_micro.model.general_recommender.lattice import LATTICE

    (entry,) = hand_checked_recommender(LATTICE, HAND_PARTS).explain("u", ["c"])  # the method form
    assert entry["terms"] == pytest.approx({"cf": 0.5, "item_graph": 0.0}, abs=1e-6)
    assert entry["score"] == pytest.approx(0.5, abs=1e-6)
    assert [b["item"] for b in entry["because"]] == ["b", "a"]
    assert entry["neighbours"]["fused"][0] == {"item": "b", "weight": 0.5}
