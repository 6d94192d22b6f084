"""Model/trainer/dataset lookup with fallback to RecBole, and config layering."""
import re
import sys
from pathlib import Path

import pytest
from helpers import YAML_DEFAULT, build
from recbole.data.dataset import Dataset
from recbole.model.general_recommender.lightgcn import LightGCN
from recbole.trainer import NCLTrainer
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import ModelType

from recbole_micro.config import Config
from recbole_micro.data.dataset import MultimodalDataset
from recbole_micro.errors import SettingsError, UnknownModelError
from recbole_micro.model.general_recommender.vbpr import VBPR
from recbole_micro.registry import (
    OUR_MODEL_PACKAGE,
    create_dataset,
    get_model,
    get_trainer,
    our_model_names,
    properties_dir,
)
from recbole_micro.trainer.trainer import CheckpointMixin, Trainer


def test_our_models_first_then_recbole():
    assert get_model("VBPR") is VBPR
    assert get_model("LightGCN") is LightGCN
    assert "VBPR" in our_model_names()


def test_unknown_model_names_it_and_lists_ours():
    with pytest.raises(UnknownModelError) as err:
        get_model("NoSuchModel")
    assert "'NoSuchModel'" in str(err.value) and "VBPR" in str(err.value)
    with pytest.raises(UnknownModelError, match="Did you mean 'VBPR'"):
        get_model("vbpr")


def test_trainers_load_checkpoints_explicitly():
    assert get_trainer(ModelType.GENERAL, "VBPR") is Trainer
    lightgcn_trainer = get_trainer(ModelType.GENERAL, "LightGCN")
    assert issubclass(lightgcn_trainer, CheckpointMixin) and issubclass(lightgcn_trainer, RecBoleTrainer)
    ncl_trainer = get_trainer(ModelType.GENERAL, "NCL")  # a RecBole model with its own trainer
    assert issubclass(ncl_trainer, NCLTrainer) and issubclass(ncl_trainer, CheckpointMixin)
    assert get_trainer(ModelType.GENERAL, "NCL") is ncl_trainer


def test_dataset_class_follows_the_model(tiny):
    _, dataset, _ = build("VBPR", tiny)
    assert isinstance(dataset, MultimodalDataset)
    config = Config(model="BPR", dataset="tiny", config_dict=tiny.config_dict())
    plain = create_dataset(config)
    assert type(plain) is Dataset


def test_layering_yaml_default_file_dict_cmdline(tiny, monkeypatch):
    base = Config(model="VBPR", dataset="tiny", config_dict=tiny.config_dict())
    assert base["valid_metric"] == "Recall@20"  # our overall.yaml over RecBole's MRR@10
    assert base["reg_weight"] == 1e-4  # properties/model/VBPR.yaml
    user_file = tiny.root / "user.yaml"
    user_file.write_text("reg_weight: 0.001\nembedding_size: 32\nstopping_step: 3\n")
    from_file = Config(model="VBPR", dataset="tiny", config_file_list=[str(user_file)])
    assert (from_file["reg_weight"], from_file["embedding_size"]) == (1e-3, 32)
    from_dict = Config(model="VBPR", dataset="tiny", config_file_list=[str(user_file)], config_dict={"reg_weight": 5e-3})
    assert (from_dict["reg_weight"], from_dict["embedding_size"]) == (5e-3, 32)
    monkeypatch.setattr(sys, "argv", ["run", "--reg_weight=0.007"])
    from_cmd = Config(model="VBPR", dataset="tiny", config_file_list=[str(user_file)], config_dict={"reg_weight": 5e-3})
    assert (from_cmd["reg_weight"], from_cmd["embedding_size"], from_cmd["stopping_step"]) == (7e-3, 32, 3)


def test_dataset_yaml_and_data_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])
    config = Config(model="VBPR", dataset="ml-100k", config_dict={"data_path": str(tmp_path)})
    assert config["data_path"] == str(tmp_path / "ml-100k")  # not RecBole's wheel
    assert set(config["modalities"]) == {"textual", "knowledge"}
    assert config["modalities"]["knowledge"]["missing"] == "mean"



def test_papers_per_dataset_settings_reach_only_their_model(tmp_path, monkeypatch):
    """TKDE Sec. 4.4.4: MICRO's best L is 2 on Baby and Sports, 1 on Clothing; LATTICE keeps its own."""
    monkeypatch.setattr(sys, "argv", ["pytest"])
    settings = {"data_path": str(tmp_path)}
    layers = {(m, d): Config(model=m, dataset=d, config_dict=settings)["n_item_layers"]
              for m in ("MICRO", "LATTICE") for d in ("baby", "sports", "clothing")}
    assert layers == {("MICRO", "baby"): 2, ("MICRO", "sports"): 2, ("MICRO", "clothing"): 1,
                      ("LATTICE", "baby"): 1, ("LATTICE", "sports"): 1, ("LATTICE", "clothing"): 1}
    assert Config(model="MICRO", dataset="baby", config_dict={**settings, "n_item_layers": 3})["n_item_layers"] == 3
    official = str(properties_dir() / "profiles" / "official.yaml")
    assert Config(model="MICRO", dataset="baby", config_file_list=[official], config_dict=settings)["n_item_layers"] == 1


def test_a_malformed_model_settings_block_names_its_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "mine.yaml").write_text("model_settings:\n  MICRO: 2\n")
    with pytest.raises(SettingsError, match=r"mine\.yaml: model_settings must map model names"):
        Config(model="MICRO", dataset="mine", config_dict={"data_path": str(tmp_path)})

def test_yaml_defaults_ship_with_the_package():
    root = properties_dir()
    assert (root / "overall.yaml").is_file()
    for name in our_model_names():
        assert (root / "model" / f"{name}.yaml").is_file(), name


def test_every_key_a_model_reads_has_a_default(monkeypatch):
    """RecBole returns None for a missing key: every config[...] a model reads needs a YAML default."""
    import importlib
    import inspect

    monkeypatch.setattr(sys, "argv", ["pytest"])
    for name in our_model_names():
        model_class = get_model(name)
        sources = "".join(inspect.getsource(c) for c in model_class.__mro__ if c.__module__.startswith("recbole_micro"))
        keys = set(re.findall(r'config\["([A-Za-z_]+)"\]', sources))
        assert keys, name
        config = Config(model=name, dataset="ml-100k")
        missing = [k for k in keys if k not in config.final_config_dict]
        assert not missing, f"{name} reads {missing} without a YAML default"
    assert importlib.import_module(OUR_MODEL_PACKAGE)


def test_quick_start_does_not_import_ray():
    import subprocess

    probe = "import sys, recbole_micro.quick_start; print(any(m.split('.')[0] == 'ray' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_runs_started_in_the_same_second_save_to_different_checkpoints(tiny, monkeypatch):
    # RecBole's <model>-<time>.pth would be one file for both: each run would reload the
    # other's best model for its test evaluation
    import recbole.trainer.trainer

    monkeypatch.setattr(recbole.trainer.trainer, "get_local_time", lambda: "Nov-23-2026_03-55-40")
    config, dataset, (train, _, _) = build("VBPR", tiny)
    model = VBPR(config, train._dataset)
    first, second = Trainer(config, model), Trainer(config, model)
    assert first.saved_model_file != second.saved_model_file
    for trainer in (first, second):
        path = Path(trainer.saved_model_file)
        assert path.parent == Path(config["checkpoint_dir"]) and path.name.startswith("VBPR-") and path.suffix == ".pth"


def test_full_ranking_evaluates_many_users_per_batch(tiny):
    # RecBole's FullSortEvalDataLoader ranks eval_batch_size // n_items users per batch; its
    # default 4096 is one user per batch at Amazon scale, 7x slower evaluation on Baby
    config = Config(model="VBPR", dataset="ml-100k", config_dict={"data_path": str(tiny.root)})
    assert config["eval_batch_size"] // 23_034 >= 512  # Clothing's items + PAD
    config, dataset, (train, valid, test) = build("VBPR", tiny, eval_batch_size=YAML_DEFAULT)
    assert valid.step == config["eval_batch_size"] // dataset.item_num >= dataset.user_num - 1  # all users in one batch
