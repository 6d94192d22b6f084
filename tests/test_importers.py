"""Importers take any set of modalities and write the dataset YAML, so `-d <name>` runs with nothing written by hand."""
import sys

import numpy as np
import pytest
import yaml
from helpers import REPO

sys.path.insert(0, str(REPO))
from dataset_prep.common import PrepError, parse_modality_args  # noqa: E402
from dataset_prep.import_mmrec import import_mmrec  # noqa: E402
from dataset_prep.import_mmrec import main as mmrec_main  # noqa: E402


def quiet(*args, **kwargs):
    pass


def write_mmrec(folder, n_users=24, n_items=30, seed=0):
    """An MMRec folder: each user has 6 items, 4 train / 1 valid / 1 test."""
    rng = np.random.default_rng(seed)
    lines = ["userID\titemID\tx_label"]
    for u in range(n_users):
        for k, i in enumerate(rng.choice(n_items, size=6, replace=False)):
            lines.append(f"{u}\t{i}\t{0 if k < 4 else k - 3}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy.inter").write_text("\n".join(lines) + "\n")
    return folder / "toy.inter"


def test_any_modalities_are_imported_and_listed_in_the_dataset_yaml(tmp_path):
    inter = write_mmrec(tmp_path / "src")
    dims = {"image": 6, "audio": 4, "text": 5}
    for name, dim in dims.items():
        np.save(tmp_path / "src" / f"{name}.npy", np.arange(30 * dim, dtype=np.float32).reshape(30, dim))
    out = import_mmrec(inter, "toy", tmp_path / "data", modality=[f"{n}={tmp_path / 'src' / (n + '.npy')}" for n in dims],
                       log=quiet)
    settings = yaml.safe_load((out / "toy.yaml").read_text())
    assert list(settings["modalities"]) == ["image", "audio", "text"]
    assert settings["modalities"]["audio"] == {"file": "toy.audio.npy", "tokens": "toy.audio.tokens"}
    assert settings["benchmark_filename"] == ["train", "valid", "test"]
    for name, dim in dims.items():
        matrix = np.load(out / f"toy.{name}.npy")
        tokens = (out / f"toy.{name}.tokens").read_text().split()
        assert matrix.shape == (30, dim)
        assert matrix[tokens.index("7")].tolist() == list(range(7 * dim, 8 * dim))  # row of item 7 stays item 7's


def test_run_on_an_imported_dataset_needs_nothing_written_by_hand(tmp_path, monkeypatch):
    from recbole_micro.quick_start import run_recbole_micro

    inter = write_mmrec(tmp_path / "src")
    np.save(tmp_path / "src" / "image_feat.npy", np.random.default_rng(1).random((30, 6), dtype=np.float32))
    np.save(tmp_path / "src" / "text_feat.npy", np.random.default_rng(2).random((30, 5), dtype=np.float32))
    import_mmrec(inter, "toy", tmp_path / "data", log=quiet)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["pytest"])
    result = run_recbole_micro(model="VBPR", dataset="toy", config_dict={
        "data_path": str(tmp_path / "data"), "checkpoint_dir": str(tmp_path / "saved"), "epochs": 1,
        "state": "WARNING", "use_gpu": False, "embedding_size": 8}, saved=False)
    config = result["config"]
    assert set(config["modalities"]) == {"visual", "textual"}  # from dataset/toy/toy.yaml
    assert config["benchmark_filename"] == ["train", "valid", "test"]
    assert set(result["test_result"]) >= {"recall@20", "ndcg@20", "precision@20"}


@pytest.mark.parametrize("spec, message", [
    ("audio", "write NAME=PATH"),
    ("audio=", "write NAME=PATH"),
    ("9x=f.npy", "must be a letter"),
])
def test_bad_modality_arguments_name_the_fix(spec, message):
    with pytest.raises(PrepError, match=message):
        parse_modality_args([spec])


def test_a_modality_given_twice_or_mixed_with_the_old_flags_is_refused(tmp_path, capsys):
    with pytest.raises(PrepError, match="given twice"):
        parse_modality_args(["a=x.npy", "a=y.npy"])
    inter = write_mmrec(tmp_path / "src")
    code = mmrec_main(["--inter", str(inter), "--name", "toy", "--out", str(tmp_path / "data"),
                       "--modality", "audio=a.npy", "--image-feat", "i.npy"])
    assert code == 2 and "not both" in capsys.readouterr().err


def test_a_modality_file_of_other_rows_names_the_file(tmp_path, capsys):
    inter = write_mmrec(tmp_path / "src")
    np.save(tmp_path / "src" / "audio.npy", np.zeros((5, 3), np.float32))
    code = mmrec_main(["--inter", str(inter), "--name", "toy", "--out", str(tmp_path / "data"),
                       "--modality", f"audio={tmp_path / 'src' / 'audio.npy'}"])
    err = capsys.readouterr().err
    assert code == 2 and "audio.npy has shape (5, 3)" in err


# --- three pickled scipy matrices -------------------------------------------------------------

import pickle  # noqa: E402

import scipy.sparse as sp  # noqa: E402

from dataset_prep.import_pickled import import_pickled, load_sparse_pickle  # noqa: E402
from dataset_prep.import_pickled import main as pickled_main  # noqa: E402


class OpensAFile:
    """Unpickling this creates ``path``: a stand-in for a pickle that runs code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def write_pickled(folder, n_users=6, n_items=5, protocol=4):
    """Train, valid and test matrices; item 4 has no interaction (cold)."""
    folder.mkdir(parents=True, exist_ok=True)
    train = sp.coo_matrix(([1.0] * 6, ([0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 1, 2])), shape=(n_users, n_items))
    valid = sp.coo_matrix(([1.0] * 2, ([0, 1], [3, 3])), shape=(n_users, n_items)).tocsr()
    test = sp.coo_matrix(([1.0] * 2, ([2, 3], [3, 1])), shape=(n_users, n_items)).tocsr()
    for file, matrix in (("trnMat.pkl", train), ("valMat.pkl", valid), ("tstMat.pkl", test)):
        (folder / file).write_bytes(pickle.dumps(matrix, protocol=protocol))
    np.save(folder / "image_feat.npy", np.arange(n_items * 3, dtype=np.float32).reshape(n_items, 3))
    np.save(folder / "text_feat.npy", np.ones((n_items, 2), np.float32))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickled_splits_import_exactly_with_the_cold_item_kept(tmp_path, protocol):
    write_pickled(tmp_path / "src", protocol=protocol)
    out = import_pickled("pk", tmp_path / "data", folder=tmp_path / "src", log=quiet)
    assert (out / "pk.train.inter").read_text().splitlines()[1:] == ["0\t0", "1\t1", "2\t2", "3\t0", "4\t1", "5\t2"]
    assert (out / "pk.valid.inter").read_text().splitlines()[1:] == ["0\t3", "1\t3"]
    assert (out / "pk.test.inter").read_text().splitlines()[1:] == ["2\t3", "3\t1"]
    assert (out / "pk.item").read_text().split()[1:] == ["0", "1", "2", "3", "4"]  # item 4: features, no interaction
    tokens = (out / "pk.visual.tokens").read_text().split()
    assert np.load(out / "pk.visual.npy")[tokens.index("4")].tolist() == [12.0, 13.0, 14.0]
    assert set(yaml.safe_load((out / "pk.yaml").read_text())["modalities"]) == {"visual", "textual"}


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, capsys):
    write_pickled(tmp_path / "src")
    marker = tmp_path / "code-ran"
    (tmp_path / "src" / "valMat.pkl").write_bytes(pickle.dumps(OpensAFile(marker)))
    code = pickled_main(["--name", "pk", "--out", str(tmp_path / "data"), "--folder", str(tmp_path / "src")])
    err = capsys.readouterr().err
    assert code == 2 and "valMat.pkl holds io.open" in err and "refused without loading it" in err
    assert not marker.exists()
    pickle.loads((tmp_path / "src" / "valMat.pkl").read_bytes())  # the premise: loaded plainly, it runs
    assert marker.exists()


def test_a_pickled_dense_array_or_junk_is_a_clear_error(tmp_path):
    (tmp_path / "dense.pkl").write_bytes(pickle.dumps(np.eye(3)))
    with pytest.raises(PrepError, match="holds a ndarray, not a scipy sparse"):
        load_sparse_pickle(tmp_path / "dense.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(PrepError, match="not a readable pickle"):
        load_sparse_pickle(tmp_path / "junk.pkl")


def test_shapes_must_agree_across_splits_and_features(tmp_path):
    write_pickled(tmp_path / "src")
    (tmp_path / "src" / "tstMat.pkl").write_bytes(pickle.dumps(sp.csr_matrix((6, 7))))
    with pytest.raises(PrepError, match=r"disagree on their shape \(trnMat.pkl \(6, 5\), valMat.pkl \(6, 5\), "
                                        r"tstMat.pkl \(6, 7\)\)"):
        import_pickled("pk", tmp_path / "data", folder=tmp_path / "src", log=quiet)
    write_pickled(tmp_path / "src")
    np.save(tmp_path / "src" / "image_feat.npy", np.zeros((4, 3), np.float32))
    with pytest.raises(PrepError, match="image_feat.npy has shape"):
        import_pickled("pk", tmp_path / "data", folder=tmp_path / "src", log=quiet)


def test_a_pair_in_two_splits_is_refused_unless_allowed(tmp_path):
    write_pickled(tmp_path / "src")
    leak = sp.csr_matrix(([1.0, 1.0], ([0, 2], [0, 3])), shape=(6, 5))  # (0, 0) is a train pair
    (tmp_path / "src" / "tstMat.pkl").write_bytes(pickle.dumps(leak))
    with pytest.raises(PrepError, match="1 of tstMat.pkl are also in an earlier split"):
        import_pickled("pk", tmp_path / "data", folder=tmp_path / "src", log=quiet)
    out = import_pickled("pk", tmp_path / "data", folder=tmp_path / "src", allow_overlap=True, log=quiet)
    assert (out / "pk.test.inter").read_text().splitlines()[1:] == ["2\t3"]


def test_values_other_than_one_are_reported_and_stored_zeros_left_out(tmp_path):
    write_pickled(tmp_path / "src")
    ratings = sp.csr_matrix(([5.0, 3.0, 0.0, 1.0, 1.0, 1.0], ([0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 1, 2])), shape=(6, 5))
    (tmp_path / "src" / "trnMat.pkl").write_bytes(pickle.dumps(ratings))
    lines = []
    out = import_pickled("pk", tmp_path / "data", folder=tmp_path / "src", log=lines.append)
    report = "\n".join(lines)
    assert "2 stored entries are neither 0 nor 1 (3: 1, 5: 1)" in report
    assert "1 explicitly stored zeros are not interactions" in report
    assert "2\t2" not in (out / "pk.train.inter").read_text().splitlines()
