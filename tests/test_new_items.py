"""Items that were not in training (inductive cold start): their rows in the trained
graphs, their h_i, and scoring them through :class:`recbole_micro.serve.recommend.Recommender`."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make, run_script

from recbole_micro.errors import FeatureFileError, NewItemsError
from recbole_micro.model.general_recommender.lattice import LATTICE
from recbole_micro.model.general_recommender.micro import MICRO
from recbole_micro.model.layers import knn_rows, normalize_attached
from recbole_micro.quick_start import run_recbole_micro
from recbole_micro.serve.recommend import Recommender

KNOWN = [3, 7, 12]  # warm items whose features come back as "new" items


def dense_rows(rows, n_items):
    """(Q, N) dense matrix of a graph's rows (duplicate edges summed): small N only."""
    out = torch.zeros(rows.idx.shape[0], n_items, dtype=rows.val.dtype)
    return out.scatter_add_(1, rows.idx, rows.val)


def trained(model_class, tiny, **settings):
    model, _, train = make(model_class, tiny, **settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for batch in list(train)[:2]:  # move the transforms and embeddings off their initial values
        model.train()
        optimizer.zero_grad()
        sum(model.calculate_loss(batch)).backward()
        optimizer.step()
    return model.eval()


def copies_of(model, items):
    return {m: model.raw_feat(m)[items].clone() for m in model.modality_names}


def test_knn_rows_and_their_normalisation_by_hand():
    keys = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # PAD, e1, e2, e3
    rows = knn_rows(torch.tensor([[1.0, 0.2]]), keys, k=2)
    cos1, cos3 = 1 / math.sqrt(1.04), 1.2 / (math.sqrt(2) * math.sqrt(1.04))
    assert rows.idx.tolist() == [[1, 3]]
    torch.testing.assert_close(rows.val, torch.tensor([[cos1, cos3]]))
    degree = torch.tensor([0.0, 2.0, 1.0, 4.0])  # the known items' degrees in their own graph
    weights = normalize_attached(rows, degree).val
    row_sum = cos1 + cos3
    torch.testing.assert_close(weights, torch.tensor([[cos1 / math.sqrt(row_sum * 2), cos3 / math.sqrt(row_sum * 4)]]))


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("item_repr", ["graph_id", "graph_feats"])
def test_micro_attaching_a_training_item_reproduces_its_rows_and_embeddings(tiny, layers, item_repr):
    model = trained(MICRO, tiny, n_item_layers=layers, item_repr=item_repr)
    attached = model.attach_items(copies_of(model, KNOWN))
    rows = model.attached_graph_rows(copies_of(model, KNOWN))
    side = model.item_multimodal_embeddings()
    graphs = model.item_graphs()
    for m in model.modality_names:
        n = model.n_items
        torch.testing.assert_close(dense_rows(rows[m]["initial"], n), model.initial_graph(m).to_dense()[KNOWN])
        torch.testing.assert_close(dense_rows(rows[m]["learned"], n), model.learned_graph(m).to_dense()[KNOWN])
        torch.testing.assert_close(dense_rows(attached["graphs"][m], n), graphs[m].to_dense()[KNOWN])
        torch.testing.assert_close(attached["h_m"][m], side["h_m"][m][KNOWN])
    torch.testing.assert_close(attached["alpha"], model.fuse_shared(side["h_m"])[1][KNOWN])
    torch.testing.assert_close(attached["h"], side["h"][KNOWN])
    torch.testing.assert_close(attached["item"], torch.nn.functional.normalize(side["h"][KNOWN], dim=1))
    # the CF stand-in: the neighbours' x~ along the same rows, fused by the same attention
    item_cf, alpha = model.cf_embeddings()[1], attached["alpha"]
    expected = sum(alpha[:, [k]] * (graphs[m].to_dense()[KNOWN] @ item_cf) for k, m in enumerate(model.modality_names))
    torch.testing.assert_close(attached["neighbour_cf"], expected)


@pytest.mark.parametrize("fusion", ["paper", "official"])
def test_lattice_attaching_a_training_item_reproduces_its_row_and_embedding(tiny, fusion):
    model = trained(LATTICE, tiny, graph_fusion=fusion, n_item_layers=2)
    attached = model.attach_items(copies_of(model, KNOWN))
    torch.testing.assert_close(dense_rows(attached["graph"], model.n_items), model.item_graphs().to_dense()[KNOWN])
    torch.testing.assert_close(attached["h"], model.item_graph_embedding()[KNOWN])
    torch.testing.assert_close(attached["neighbour_cf"], model.item_graphs().to_dense()[KNOWN] @ model.cf_embeddings()[1])


def test_a_new_item_is_never_its_own_or_pads_neighbour_and_known_rows_stay(tiny):
    model = trained(MICRO, tiny)
    before = {m: g.to_dense() for m, g in model.item_graphs().items()}
    new = {m: torch.randn(4, model.modality_dims[m]) for m in model.modality_names}
    attached = model.attach_items(new)
    for m in model.modality_names:
        idx = attached["graphs"][m].idx
        assert idx.min() >= 1 and idx.max() < model.n_items  # known items only, never PAD
        torch.testing.assert_close(model.item_graphs()[m].to_dense(), before[m])


def test_without_a_layer_there_is_nothing_to_attach_to(tiny):
    model = trained(MICRO, tiny, n_item_layers=0)
    with pytest.raises(NewItemsError, match="n_item_layers 0"):
        model.attach_items(copies_of(model, KNOWN))
    lattice = trained(LATTICE, tiny, use_item_graph=False)
    with pytest.raises(NewItemsError, match="use_item_graph False"):
        lattice.attach_items(copies_of(lattice, KNOWN))


# ----- through the Recommender (serve) -----
COPIED = ["it03", "it07"]  # known items whose features come back under new tokens


def write_new_items(tiny, folder, tokens=None, dims=None, extra=None):
    """new.<m>.npy + .tokens: copies of COPIED under new tokens, plus one random item; paths by modality."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    tokens = tokens or [f"new-{t}" for t in COPIED] + ["new-random"]
    files = {}
    for name, table in (("visual", tiny.visual), ("textual", tiny.textual)):
        dim = (dims or {}).get(name, len(next(iter(table.values()))))
        rows = [table[t][:dim] for t in COPIED] + [rng.standard_normal(dim).astype(np.float32)]
        np.save(folder / f"new.{name}.npy", np.stack(rows)[: len(tokens)].astype(np.float32))
        (folder / f"new.{name}.tokens").write_text("".join(t + "\n" for t in tokens))
        files[name] = str(folder / f"new.{name}.npy")
    files.update(extra or {})
    return files


@pytest.fixture(params=["MICRO", "LATTICE"])
def served(request, tiny):
    result = run_recbole_micro(model=request.param, dataset="tiny", config_dict=tiny.config_dict(epochs=2, knn_k=4))
    return result["saved_model_file"]


def test_added_items_are_scored_by_their_content_part_and_recommended(served, tiny):
    recommender = Recommender.load(served)
    model, dataset = recommender.model, recommender.dataset
    users = np.arange(1, dataset.user_num)
    before = recommender.raw_scores(users)
    assert recommender.add_items(write_new_items(tiny, tiny.root / "new")) == ["new-it03", "new-it07", "new-random"]
    after = recommender.raw_scores(users)
    assert after.shape == (len(users), dataset.item_num + 3)
    torch.testing.assert_close(after[:, :dataset.item_num], before)  # the trained items keep their scores
    user_final, item_final = model.final_embeddings_cached()
    item_cf = model.cf_embeddings()[1]
    copied = [dataset.token2id("item_id", t) for t in COPIED]
    # a copy of item i scores x^_u . (x^_i - x~_i): item i's score without its CF embedding
    expected = user_final[users] @ (item_final[copied] - item_cf[copied]).t()
    torch.testing.assert_close(after[:, dataset.item_num:dataset.item_num + 2], expected, rtol=1e-4, atol=1e-5)

    tokens, items, scores = recommender.recommend(["u01", "u02"], k=2, new_only=True)
    assert set(items.ravel()) <= {"new-it03", "new-it07", "new-random"}
    ids = recommender.user_ids(["u01", "u02"])
    new_scores = recommender.scores(ids)[:, dataset.item_num:]
    np.testing.assert_allclose(scores, torch.topk(new_scores, 2, dim=1).values.numpy(), rtol=1e-6)
    _, all_items, all_scores = recommender.recommend(["u01"], k=dataset.item_num + 2)  # every candidate
    assert {"new-it03", "new-it07", "new-random"} <= set(all_items[0])
    assert list(all_scores[0]) == sorted(all_scores[0], reverse=True)


def test_a_cf_stand_in_from_the_neighbours_is_added_to_the_content_part(tiny):
    result = run_recbole_micro(model="MICRO", dataset="tiny", config_dict=tiny.config_dict(epochs=2, knn_k=4))
    recommender = Recommender.load(result["saved_model_file"])
    with pytest.raises(NewItemsError, match="cf is 'mean'; use one of none, neighbours"):
        recommender.add_items(write_new_items(tiny, tiny.root / "new"), cf="mean")
    recommender.add_items(write_new_items(tiny, tiny.root / "new"), cf="neighbours")
    new = recommender.new_items
    users = np.arange(1, recommender.dataset.user_num)
    user_final = recommender.model.final_embeddings_cached()[0][users]
    torch.testing.assert_close(recommender.raw_scores(users)[:, recommender.dataset.item_num:],
                               user_final @ (new["neighbour_cf"] + new["item"]).t())
    from recbole_micro.serve.explain import explain

    _, items, scores = recommender.recommend(["u05"], k=2, new_only=True)
    for entry, score in zip(explain(recommender, "u05", list(items[0])), scores[0]):
        assert entry["terms"]["x_u.x_i"] != 0  # the stand-in is part of the score and of its terms
        assert sum(entry["terms"].values()) == pytest.approx(float(score), abs=1e-5)


def test_added_items_are_explained_with_their_attached_rows(tiny):
    from recbole_micro.serve.explain import explain

    result = run_recbole_micro(model="MICRO", dataset="tiny", config_dict=tiny.config_dict(epochs=2, knn_k=4))
    recommender = Recommender.load(result["saved_model_file"])
    recommender.add_items(write_new_items(tiny, tiny.root / "new"))
    _, items, scores = recommender.recommend(["u05"], k=3, new_only=True)
    known = recommender.dataset.field2token_id["item_id"]
    for entry, score in zip(explain(recommender, "u05", list(items[0])), scores[0]):
        assert entry["terms"]["x_u.x_i"] == 0 and entry["terms"]["h_u.x_i"] == 0  # no CF embedding
        assert sum(entry["terms"].values()) == pytest.approx(float(score), abs=1e-5)
        assert sum(entry["attention"].values()) == pytest.approx(1.0, abs=1e-5)
        assert all(n["item"] in known for ns in entry["neighbours"].values() for n in ns)  # trained items only


def test_bad_new_item_files_are_clear_errors(tiny):
    result = run_recbole_micro(model="MICRO", dataset="tiny", config_dict=tiny.config_dict(knn_k=4))
    recommender = Recommender.load(result["saved_model_file"])
    good = write_new_items(tiny, tiny.root / "good")
    with pytest.raises(NewItemsError, match=r"missing: \['textual'\]"):
        recommender.add_items({"visual": good["visual"]})
    with pytest.raises(NewItemsError, match=r"not trained on: \['audio'\]"):
        recommender.add_items({**good, "audio": good["visual"]})
    wrong_dim = write_new_items(tiny, tiny.root / "dim", dims={"textual": 4})
    with pytest.raises(NewItemsError, match=r"new\.textual\.npy has 4 columns, but the model's 'textual' features have 5"):
        recommender.add_items(wrong_dim)
    existing = write_new_items(tiny, tiny.root / "existing", tokens=["it03", "new-b", "new-c"])
    with pytest.raises(NewItemsError, match=r"new\.visual\.tokens lists item token\(s\) \['it03'\] that the model already has"):
        recommender.add_items(existing)
    odd = write_new_items(tiny, tiny.root / "odd")
    (tiny.root / "odd" / "new.textual.tokens").write_text("new-it03\nnew-it07\nnew-other\n")
    with pytest.raises(NewItemsError, match="every modality needs the same new items"):
        recommender.add_items(odd)
    with pytest.raises(FeatureFileError, match="not found"):
        recommender.add_items({**good, "visual": str(tiny.root / "nowhere.npy")})
    assert recommender.new_tokens == []  # nothing half-added
    recommender.add_items(good)
    with pytest.raises(NewItemsError, match="already has"):
        recommender.add_items(good)
    vbpr = run_recbole_micro(model="VBPR", dataset="tiny", config_dict=tiny.config_dict())
    with pytest.raises(NewItemsError, match="add_items covers LATTICE and MICRO"):
        Recommender.load(vbpr["saved_model_file"]).add_items(good)


def test_the_command_line_recommends_new_items(tiny):
    result = run_recbole_micro(model="MICRO", dataset="tiny", config_dict=tiny.config_dict(knn_k=4))
    files = write_new_items(tiny, tiny.root / "new")
    out = tiny.root / "new-recs.csv"
    done = run_script("--recommend", result["saved_model_file"], "--new-items", f"visual={files['visual']}",
                      "--new-items", f"textual={files['textual']}", "--new-only", "--k", "2", "--users", "u01", "u02",
                      "--explain", "--out", str(out), cwd=tiny.root)
    assert done.returncode == 0, done.stderr[-2000:]
    recs = pd.read_csv(out, dtype=str)
    assert len(recs) == 4 and set(recs["item"]) <= {"new-it03", "new-it07", "new-random"}
    assert (tiny.root / "new-recs.explain.jsonl").read_text().count("\n") == 4
    bad = run_script("--recommend", result["saved_model_file"], "--new-items", f"visual={files['visual']}",
                     "--out", str(out), cwd=tiny.root)
    last = bad.stderr.strip().splitlines()[-1]
    assert bad.returncode == 2 and last.startswith("error: ") and "Traceback" not in bad.stderr
    assert "missing: ['textual']" in last
