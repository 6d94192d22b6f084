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
