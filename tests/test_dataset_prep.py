"""dataset_prep importers: exact outputs on hand-written inputs, and the real shared data."""
import hashlib
import json
import sys

import numpy as np
import pytest
from helpers import REPO, SHARED, requires_shared

sys.path.insert(0, str(REPO))
from dataset_prep.common import PrepError  # noqa: E402
from dataset_prep.import_mmrec import import_mmrec  # noqa: E402
from dataset_prep.import_official import import_official  # noqa: E402


def quiet(*args, **kwargs):
    pass


def write_official(folder, train, val, test, item2id=None, user2id=None, n_items=4):
    core = folder / "5-core"
    core.mkdir(parents=True)
    for name, data in (("train", train), ("val", val), ("test", test)):
        (core / f"{name}.json").write_text(json.dumps(data))
    if item2id:
        (core / "item2id.json").write_text(json.dumps(item2id))
    if user2id:
        (core / "user2id.json").write_text(json.dumps(user2id))
    np.save(folder / "image_feat.npy", np.arange(n_items * 3, dtype=np.float32).reshape(n_items, 3))
    np.save(folder / "text_feat.npy", np.ones((n_items, 2), dtype=np.float32))


def test_official_folder_exact_output(tmp_path):
    src = tmp_path / "baby"
    write_official(
        src, {"0": [2, 0], "1": [1, 3, 1]}, {"0": [1], "1": [0]}, {"0": [3], "1": [2]},
        item2id={"A1": 0, "B2": 1, "C3": 2, "D4": 3}, user2id={"ux": 0, "uy": 1},
    )
    out = import_official(src, "baby", tmp_path / "data", log=quiet)
    assert (out / "baby.train.inter").read_text().splitlines() == [
        "user_id:token\titem_id:token", "ux\tC3", "ux\tA1", "uy\tB2", "uy\tD4",  # the repeated (uy, B2) collapsed
    ]
    assert (out / "baby.valid.inter").read_text().splitlines()[1:] == ["ux\tB2", "uy\tA1"]
    assert (out / "baby.test.inter").read_text().splitlines()[1:] == ["ux\tD4", "uy\tC3"]
    assert (out / "baby.item").read_text().splitlines() == ["item_id:token", "A1", "B2", "C3", "D4"]
    assert (out / "baby.visual.tokens").read_text().split() == ["A1", "B2", "C3", "D4"]
    np.testing.assert_array_equal(np.load(out / "baby.visual.npy")[2], [6, 7, 8])  # row 2 is item id 2 = C3


def test_official_malformed_entries_are_reported(tmp_path):
    src = tmp_path / "bad"
    write_official(src, {"0": [1, "x"], "u": [2], "2": [3]}, {"0": [0]}, {"0": [2]})
    with pytest.raises(PrepError) as err:
        import_official(src, "bad", tmp_path / "data", log=quiet)
    assert "2 malformed entries" in str(err.value) and "train.json" in str(err.value) and "'u'" in str(err.value)
    out = import_official(src, "bad", tmp_path / "data", skip_malformed=True, log=quiet)
    assert (out / "bad.train.inter").read_text().splitlines()[1:] == ["2\t3"]


def test_feature_rows_must_match_the_item_ids(tmp_path):
    src = tmp_path / "x"
    write_official(src, {"0": [0, 1]}, {"0": [2]}, {"0": [3]}, n_items=3)
    with pytest.raises(PrepError, match="row r must be item r"):
        import_official(src, "x", tmp_path / "data", log=quiet)


MMREC = "userID\titemID\tx_label\n0\t1\t0\n0\t2\t1\n1\t0\t0\n1\t2\t2\n0\t1\t0\n"


def test_mmrec_exact_output_and_duplicates(tmp_path, capsys):
    (tmp_path / "toy.inter").write_text(MMREC)
    np.save(tmp_path / "image_feat.npy", np.zeros((4, 3), np.float32))  # item 3 has features only: cold
    np.save(tmp_path / "text_feat.npy", np.zeros((4, 2), np.float32))
    out = import_mmrec(tmp_path / "toy.inter", "toy", tmp_path / "data")
    assert (out / "toy.train.inter").read_text().splitlines()[1:] == ["0\t1", "1\t0"]
    assert (out / "toy.valid.inter").read_text().splitlines()[1:] == ["0\t2"]
    assert (out / "toy.test.inter").read_text().splitlines()[1:] == ["1\t2"]
    assert (out / "toy.item").read_text().split()[1:] == ["0", "1", "2", "3"]
    printed = capsys.readouterr().out
    assert "1 duplicate (user, item) pairs in train collapsed" in printed
    assert "users: 2, items: 4" in printed and "train 2, valid 1, test 1" in printed


def test_mmrec_malformed_lines_are_reported_with_line_numbers(tmp_path):
    (tmp_path / "toy.inter").write_text(MMREC + "7\tabc\t0\n3\t1\t9\n4\t1\n")
    with pytest.raises(PrepError) as err:
        import_mmrec(tmp_path / "toy.inter", "toy", tmp_path / "data", no_features=True, log=quiet)
    assert "3 malformed entries" in str(err.value)
    assert all(f"line {n}" in str(err.value) for n in (7, 8, 9))
    out = import_mmrec(tmp_path / "toy.inter", "toy", tmp_path / "data", no_features=True, skip_malformed=True, log=quiet)
    assert len((out / "toy.train.inter").read_text().splitlines()) == 3


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@requires_shared("data", "amazon-baby")
def test_shared_baby_split_imports_with_exact_counts(tmp_path, monkeypatch):
    from recbole.data import data_preparation

    from recbole_micro.config import Config
    from recbole_micro.registry import create_dataset

    rng = np.random.default_rng(0)
    np.save(tmp_path / "image.npy", rng.standard_normal((7050, 8)).astype(np.float32))  # generated: shape only
    np.save(tmp_path / "text.npy", rng.standard_normal((7050, 4)).astype(np.float32))
    baby = SHARED / "data" / "amazon-baby"
    args = (baby, "baby", tmp_path / "data", tmp_path / "image.npy", tmp_path / "text.npy")
    out = import_official(*args, log=quiet)
    first = digest(out)
    import_official(*args, log=quiet)
    assert digest(out) == first  # byte-identical re-run

    item2id = json.loads((baby / "item2id.json").read_text())
    tokens = (out / "baby.visual.tokens").read_text().split()
    assert all(tokens[i] == asin for asin, i in item2id.items())
    user2id = json.loads((baby / "user2id.json").read_text())
    id2user = {i: u for u, i in user2id.items()}
    train = json.loads((baby / "train.json").read_text())
    lines = (out / "baby.train.inter").read_text().splitlines()
    assert lines[1] == f"{id2user[0]}\t{tokens[train['0'][0]]}"

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    config = Config(model="MICRO", dataset="baby", config_dict={"data_path": str(tmp_path / "data"), "use_gpu": False})
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    assert (dataset.user_num - 1, dataset.item_num - 1) == (19445, 7050)
    assert (len(train_data.dataset), len(valid_data.dataset), len(test_data.dataset)) == (119674, 20559, 20559)
    item_id = dataset.token2id("item_id", "B00000IZQI")
    np.testing.assert_array_equal(dataset.item_modalities["visual"][item_id], np.load(tmp_path / "image.npy")[2])


@requires_shared("data", "amazon-mmrec")
@pytest.mark.parametrize("name, users, items, rows", [("sports", 35598, 18357, 296337), ("clothing", 39387, 23033, 278677)])
def test_shared_mmrec_sets_import_with_exact_counts(tmp_path, monkeypatch, name, users, items, rows):
    from recbole.data import data_preparation

    from recbole_micro.config import Config
    from recbole_micro.registry import create_dataset

    out = import_mmrec(SHARED / "data" / "amazon-mmrec" / f"{name}.inter", name, tmp_path, no_features=True, log=quiet)
    pairs = [line.split("\t") for s in ("train", "valid", "test") for line in (out / f"{name}.{s}.inter").read_text().splitlines()[1:]]
    assert len(pairs) == rows
    assert len({u for u, _ in pairs}) == users and len({i for _, i in pairs}) == items
    assert len((out / f"{name}.item").read_text().splitlines()) == items + 1
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    config = Config(model="BPR", dataset=name, config_dict={"data_path": str(tmp_path), "use_gpu": False})
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    assert (dataset.user_num - 1, dataset.item_num - 1) == (users, items)
    assert len(train_data.dataset) + len(valid_data.dataset) + len(test_data.dataset) == rows


def test_missing_prepared_dataset_names_the_import_commands(tiny):
    import subprocess

    result = subprocess.run([sys.executable, str(REPO / "run_recbole_micro.py"), "--dataset=baby"],
                            cwd=tiny.root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "dataset/baby/baby.train.inter" in result.stderr
    assert "python -m dataset_prep.import_official --folder <path>/data/baby --name baby --out dataset" in result.stderr
    assert "python -m dataset_prep.import_mmrec" in result.stderr


from dataset_prep.split import split_dataset  # noqa: E402


def write_inter(folder, name, pairs, items):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text("user_id:token\titem_id:token\n" + "".join(f"{u}\t{i}\n" for u, i in pairs))
    (folder / f"{name}.item").write_text("item_id:token\n" + "".join(f"{i}\n" for i in items))


def test_official_warm_split_follows_the_official_procedure(tmp_path):
    pairs = [("a", f"a{k}") for k in range(5)] + [("b", f"b{k}") for k in range(12)] + [("c", f"c{k}") for k in range(25)]
    write_inter(tmp_path / "toy", "toy", pairs, sorted({i for _, i in pairs}))
    split_dataset(tmp_path / "toy", "toy", "official", log=quiet)
    rows = {s: (tmp_path / "toy" / f"toy.{s}.inter").read_text().splitlines()[1:] for s in ("train", "valid", "test")}
    # RandomState(123): choice(5, 2) = [1, 3]; choice(12, 2) = [4, 10]; choice(25, 5) = [6, 10, 12, 9, 5]
    assert rows["test"] == ["a\ta1", "b\tb4", "c\tc6", "c\tc10"]
    assert rows["valid"] == ["a\ta3", "b\tb10", "c\tc12", "c\tc9", "c\tc5"]
    assert len(rows["train"]) == 3 + 10 + 20 and "a\ta1" not in rows["train"]
    before = {s: (tmp_path / "toy" / f"toy.{s}.inter").read_bytes() for s in ("train", "valid", "test")}
    split_dataset(tmp_path / "toy", "toy", "official", log=quiet)
    assert before == {s: (tmp_path / "toy" / f"toy.{s}.inter").read_bytes() for s in ("train", "valid", "test")}
    split_dataset(tmp_path / "toy", "toy", "official", seed=7, log=quiet)
    assert before != {s: (tmp_path / "toy" / f"toy.{s}.inter").read_bytes() for s in ("train", "valid", "test")}


def test_official_split_refuses_a_user_with_one_interaction_clearly(tmp_path):
    pairs = [("a", f"a{k}") for k in range(5)] + [("z", "a0")]
    write_inter(tmp_path / "toy", "toy", pairs, sorted({i for _, i in pairs}))
    with pytest.raises(PrepError, match=r"1 users have a single interaction \(e.g. \['z'\]\).*k-core"):
        split_dataset(tmp_path / "toy", "toy", "official", log=quiet)


def test_cold_start_split(tmp_path):
    items = [f"i{k}" for k in range(10)]
    pairs = [("u1", "i0"), ("u1", "i1"), ("u1", "i4"), ("u2", "i2"), ("u2", "i3"), ("u3", "i4"), ("u3", "i5")]
    write_inter(tmp_path / "toy", "toy", pairs, items)
    split_dataset(tmp_path / "toy", "toy", "cold", prefix="cold-", log=quiet)
    rows = {s: (tmp_path / "toy" / f"toy.cold-{s}.inter").read_text().splitlines()[1:] for s in ("train", "valid", "test")}
    # RandomState(123).choice(10, 2) = [4, 0]: i4 is a test item, i0 a validation item
    assert rows["test"] == ["u1\ti4", "u3\ti4"]
    assert rows["valid"] == ["u1\ti0"]
    assert rows["train"] == ["u1\ti1", "u2\ti2", "u2\ti3", "u3\ti5"]  # u2 has no targets: not evaluated


def test_cold_start_split_loads_with_cold_items_ranked_and_in_the_graph(tiny):
    import torch
    from helpers import build

    pairs = [line.split("\t") for line in (tiny.dir / "tiny.inter").read_text().splitlines()[1:]]
    write_inter(tiny.dir, "tiny", [(u, i) for u, i, *_ in pairs], tiny.item_tokens)
    splits = split_dataset(tiny.dir, "tiny", "cold", prefix="cold-", log=quiet)
    cold = {i for _, i in splits["test"]} | {i for _, i in splits["valid"]}
    config, dataset, (train, valid, test) = build(
        "MICRO", tiny, benchmark_filename=["cold-train", "cold-valid", "cold-test"], knn_k=4, embedding_size=8
    )
    train_items = set(train.dataset.inter_feat["item_id"].tolist())
    cold_ids = [dataset.token2id("item_id", t) for t in cold]
    assert cold and not train_items & set(cold_ids)
    from recbole_micro.model.general_recommender.micro import MICRO

    model = MICRO(config, train.dataset)
    model.eval()
    with torch.no_grad():
        for graph in model.build_item_graphs().values():
            for c in cold_ids:
                assert (graph.val[c] > 0).sum() >= 2
        scores = model.full_sort_predict(test.dataset[:1]).view(-1)
    assert scores.shape[0] == dataset.item_num and torch.isfinite(scores[cold_ids]).all()


@requires_shared("data", "amazon-baby")
def test_shared_baby_cold_start_split(tmp_path):
    out = import_official(SHARED / "data" / "amazon-baby", "baby", tmp_path, no_features=True, log=quiet)
    splits = split_dataset(out, "baby", "cold", prefix="cold-", log=quiet)
    test_items, valid_items = {i for _, i in splits["test"]}, {i for _, i in splits["valid"]}
    assert not (test_items | valid_items) & {i for _, i in splits["train"]}
    assert len(test_items) <= 705 and len(valid_items) <= 705  # 20% of 7,050 items, half each
    assert sum(len(v) for v in splits.values()) == 160792
