"""Recommendations from a saved checkpoint equal full_sort_predict's top-K with the history masked."""
import numpy as np
import pandas as pd
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_micro.quick_start import load_data_and_model, run_recbole_micro
from recbole_micro.serve import Recommender, ServeError

from helpers import run_script


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
    from recbole_micro.serve import export_embeddings

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
    from recbole_micro.serve import export_embeddings

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
    from recbole_micro.serve import explain

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
    from recbole_micro.serve import explain

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
