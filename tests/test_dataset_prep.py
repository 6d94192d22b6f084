"""dataset_prep importers: exact outputs on hand-written inputs, and the real shared data."""
import hashlib
import json
import sys

import numpy as np
import pytest

from conftest import REPO, SHARED, requires_shared

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
    from recbole_micro.utils import create_dataset

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
def test_shared_mmrec_sets_import_with_exact_counts(tmp_path, name, users, items, rows):
    out = import_mmrec(SHARED / "data" / "amazon-mmrec" / f"{name}.inter", name, tmp_path, no_features=True, log=quiet)
    pairs = [line.split("\t") for s in ("train", "valid", "test") for line in (out / f"{name}.{s}.inter").read_text().splitlines()[1:]]
    assert len(pairs) == rows
    assert len({u for u, _ in pairs}) == users and len({i for _, i in pairs}) == items
    assert len((out / f"{name}.item").read_text().splitlines()) == items + 1


def test_missing_prepared_dataset_names_the_import_commands(tiny):
    import subprocess

    result = subprocess.run([sys.executable, str(REPO / "run_recbole_micro.py"), "--dataset=baby"],
                            cwd=tiny.root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "dataset/baby/baby.train.inter" in result.stderr
    assert "python -m dataset_prep.import_official --folder <path>/data/baby --name baby --out dataset" in result.stderr
    assert "python -m dataset_prep.import_mmrec" in result.stderr
