"""Checkpoints hold only data: they load with weights_only=True, and a pickle that would run code is refused."""
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from helpers import REPO, build
from recbole.utils import EvaluatorType, InputType, ModelType

from recbole_micro.config import Config, config_from_snapshot
from recbole_micro.errors import CheckpointError
from recbole_micro.quick_start import load_data_and_model, run_recbole_micro
from recbole_micro.registry import get_model, get_trainer
from recbole_micro.trainer.checkpoints import config_snapshot, from_plain, load_checkpoint, save_checkpoint, to_plain
from recbole_micro.trainer.trainer import Trainer


class OpensAFile:
    """Unpickling this creates ``path``: the stand-in for a pickle that runs code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_plain_data_round_trip_of_what_models_cache():
    value = {
        "enums": [ModelType.GENERAL, InputType.PAIRWISE, EvaluatorType.RANKING],
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "csr": sp.csr_matrix(np.array([[0, 1.5], [2.0, 0]])),
        "coo": sp.coo_matrix(np.array([[0, 0, 3.0]])),
        "scalar": np.float64(0.25),
        "tensor": torch.tensor([1, 2]),
        "tuple": (1, "a", None),
    }
    plain = to_plain(value)
    assert plain["enums"][0] == {"__enum__": "ModelType", "name": "GENERAL"}
    back = from_plain(plain)
    assert back["enums"] == value["enums"]
    np.testing.assert_array_equal(back["array"], value["array"])
    assert back["csr"].format == "csr" and (back["csr"] != value["csr"]).nnz == 0
    assert back["coo"].format == "coo" and np.array_equal(back["coo"].toarray(), value["coo"].toarray())
    assert back["scalar"] == 0.25 and type(back["scalar"]) is float
    assert torch.equal(back["tensor"], value["tensor"]) and back["tuple"] == (1, "a", None)


def test_a_run_checkpoint_is_plain_data_and_reloads_its_exact_settings(tiny):
    result = run_recbole_micro(model="VBPR", dataset="tiny", config_dict=tiny.config_dict(epochs=2))
    raw = torch.load(result["saved_model_file"], weights_only=True)  # would raise if it held an object
    assert raw["format"] == "recbole-micro checkpoint 1" and "device" not in raw["config"]["settings"]
    config, model, _, _, _, test = load_data_and_model(result["saved_model_file"])
    trained = result["config"].final_config_dict
    assert set(config.final_config_dict) == set(trained)
    for key, value in trained.items():
        assert config[key] == value, key
    assert config.model == "VBPR" and config.dataset == "tiny" and config.parameters == result["config"].parameters
    reloaded = Trainer(config, model).evaluate(test, load_best_model=False)
    assert dict(reloaded) == dict(result["test_result"])


def test_a_recbole_model_caching_scipy_matrices_reloads(tiny):
    """ItemKNN keeps its similarity as a scipy sparse matrix: stored as tensors, given back as scipy."""
    result = run_recbole_micro(model="ItemKNN", dataset="tiny", config_dict=tiny.config_dict(k=5))
    config, model, _, _, _, test = load_data_and_model(result["saved_model_file"])
    assert sp.issparse(model.w)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    assert dict(trainer.evaluate(test, load_best_model=False)) == dict(result["test_result"])


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tiny):
    marker = tiny.root / "code-ran"
    evil = tiny.root / "evil.pth"
    torch.save({"state_dict": {}, "config": OpensAFile(marker)}, evil)
    with pytest.raises(CheckpointError, match="--trust-checkpoint") as err:
        load_checkpoint(evil)
    assert str(evil) in str(err.value)
    with pytest.raises(CheckpointError):
        load_data_and_model(evil)
    config, _, (train, _, test) = build("VBPR", tiny)
    trainer = Trainer(config, get_model("VBPR")(config, train._dataset))
    with pytest.raises(CheckpointError):  # the trainer's reload of a best model goes the same way
        trainer.evaluate(test, model_file=str(evil))
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "evaluate_checkpoint.py"), str(evil)],
                         cwd=tiny.root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "--trust-checkpoint" in out.stderr and "Traceback" not in out.stderr
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the premise: loaded plainly, the file does run code
    assert marker.exists()


def test_a_recbole_format_checkpoint_needs_trust_and_then_loads(tiny, caplog):
    result = run_recbole_micro(model="VBPR", dataset="tiny", config_dict=tiny.config_dict())
    ours = load_checkpoint(result["saved_model_file"])
    legacy = tiny.root / "recbole-format.pth"
    torch.save(dict(ours, config=result["config"]), legacy, pickle_protocol=4)  # as RecBole's trainer writes it
    with pytest.raises(CheckpointError, match="holds Python objects"):
        load_data_and_model(legacy)
    config, model, _, _, _, _ = load_data_and_model(legacy, trust_checkpoint=True)
    assert "it can run code" in caplog.text
    assert config["embedding_size"] == result["config"]["embedding_size"]
    for name, value in ours["state_dict"].items():
        assert torch.equal(model.state_dict()[name], value)


def test_missing_truncated_and_foreign_files_are_clear_errors(tiny):
    with pytest.raises(CheckpointError, match="No checkpoint at"):
        load_checkpoint(tiny.root / "nothing.pth")
    config = Config(model="VBPR", dataset="tiny", config_dict=tiny.config_dict())
    good = tiny.root / "good.pth"
    save_checkpoint(good, {"config": config, "state_dict": {"w": torch.ones(3)}, "other_parameter": None})
    assert config_from_snapshot(load_checkpoint(good)["config"])["embedding_size"] == config["embedding_size"]
    truncated = tiny.root / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    foreign = tiny.root / "foreign.pth"
    torch.save({"w": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a recbole-micro checkpoint"):
        load_checkpoint(foreign)


def test_the_snapshot_stores_no_device_and_the_loader_picks_this_machines(tiny):
    config = Config(model="VBPR", dataset="tiny", config_dict=tiny.config_dict())
    snapshot = config_snapshot(config)
    assert "device" not in snapshot["settings"]
    path = tiny.root / "c.pth"
    save_checkpoint(path, {"config": config, "state_dict": {}})
    assert config_from_snapshot(load_checkpoint(path)["config"])["device"] == torch.device("cpu")


def test_a_trusted_file_that_is_not_a_checkpoint_is_one_line_naming_it(tiny):
    """--trust-checkpoint lets a pickle run, as documented; what it loads is still checked before use."""
    import fractions

    from helpers import run_script

    from recbole_micro.trainer.checkpoints import FORMAT

    not_a_checkpoint = tiny.root / "fraction.pth"
    torch.save(fractions.Fraction(1, 3), not_a_checkpoint)  # a pickle weights_only refuses: trust reads it
    odd_config = tiny.root / "odd-config.pth"
    torch.save({"state_dict": {}, "config": fractions.Fraction(1, 3)}, odd_config)
    for path, says in ((not_a_checkpoint, "holds 'Fraction' data"), (odd_config, "its 'config' is Fraction data")):
        with pytest.raises(CheckpointError, match=says):
            load_data_and_model(path, trust_checkpoint=True)
        out = run_script("--recommend", str(path), "--trust-checkpoint", "--out", "recs.csv", cwd=tiny.root)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        (line,) = [line for line in out.stderr.splitlines() if line.startswith("error:")]  # RecBole's own warnings aside
        assert out.stderr.strip().endswith(line)
        assert line.startswith(f"error: {path}") and says in line
        assert not (tiny.root / "recs.csv").exists()
    plain = tiny.root / "plain.pth"  # plain data with our format mark, but no settings in it
    torch.save({"format": FORMAT, "state_dict": {}, "config": 5}, plain)
    with pytest.raises(CheckpointError, match="its 'config' is int data"):
        load_data_and_model(plain)
