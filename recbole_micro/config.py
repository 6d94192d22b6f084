"""RecBole ``Config`` that layers recbole-micro's YAML defaults under the user's settings.

Priority, lowest first: RecBole's own defaults < ``properties/overall.yaml`` <
``properties/model/<MODEL>.yaml`` < ``properties/dataset/<dataset>.yaml`` <
``<data_path>/<dataset>/<dataset>.yaml`` (written by the importers) < the user's config files <
config dicts < ``--key=value`` command-line flags.
"""
import functools
import glob
import hashlib
import inspect
import json
import os
import re
import sys
from datetime import timedelta
from pathlib import Path

import torch
from recbole.config import Config as RecBoleConfig

from recbole_micro.data.features import FEATURE_ARGUMENTS
from recbole_micro.errors import CheckpointError, RecBoleMicroError, SettingsError
from recbole_micro.files import sha256_of
from recbole_micro.registry import get_model, properties_dir
from recbole_micro.settings import check_settings, read_settings, unknown_settings, yaml_keys
from recbole_micro.trainer.checkpoints import from_plain, to_plain

_WARNED = set()  # unknown setting names already reported in this process


@functools.lru_cache(maxsize=1)
def known_setting_names():
    """Every key a YAML of RecBole's or ours defines (all models and datasets), and our feature keys."""
    import recbole

    return frozenset(yaml_keys([Path(recbole.__file__).parent / "properties", properties_dir()])
                     | set(FEATURE_ARGUMENTS))


@functools.lru_cache(maxsize=1)
def model_only_setting_names():
    """The keys that only model YAMLs define (RecBole's and ours): settings that belong to particular models."""
    import recbole

    recbole_properties = Path(recbole.__file__).parent / "properties"
    general = yaml_keys([recbole_properties / "dataset", properties_dir() / "dataset"]) | _keys_of(
        [recbole_properties / "overall.yaml", properties_dir() / "overall.yaml"])
    return frozenset(yaml_keys([recbole_properties / "model", properties_dir() / "model"]) - general)


def _keys_of(files):
    keys = set()
    for file in files:
        if Path(file).is_file():
            keys |= {m[1] for m in re.finditer(r"^([A-Za-z_][A-Za-z0-9_\-]*)\s*:", Path(file).read_text(), re.M)}
    return keys


@functools.lru_cache(maxsize=None)
def _own_settings_and_source(model_class):
    import recbole

    name = model_class.__name__
    own = _keys_of([Path(recbole.__file__).parent / "properties" / "model" / f"{name}.yaml",
                    properties_dir() / "model" / f"{name}.yaml"])
    source = ""
    for cls in model_class.__mro__:
        if cls.__module__.split(".")[0] in ("recbole", "recbole_micro"):
            try:
                source += inspect.getsource(cls)
            except (OSError, TypeError):
                pass
    return frozenset(own), source


def settings_not_used_by(model_class, keys):
    """Of ``keys``, those this model cannot use: another model's setting that this model's YAML does not
    define and its code never names (RecBole's BPR has no L2 term: ``reg_weight``), and, for a model
    that learns nothing by gradient (RecBole's ``TRADITIONAL`` type: ItemKNN, Pop), the learning rate.
    RecBole hands every setting to every model, so these would be taken and silently ignored."""
    from recbole.utils import ModelType

    own, source = _own_settings_and_source(model_class)
    unused = {key for key in keys if key in model_only_setting_names() and key not in own
              and f"'{key}'" not in source and f'"{key}"' not in source}
    if getattr(model_class, "type", None) == ModelType.TRADITIONAL and "learning_rate" in keys:
        unused.add("learning_rate")
    return sorted(unused)


def default_files(model, dataset):
    """Our YAMLs that may hold a run's defaults, lowest first: overall, the model's, the dataset's."""
    root = properties_dir()
    return [root / "overall.yaml", root / "model" / f"{model}.yaml", root / "dataset" / f"{dataset}.yaml"]


def model_settings(loaded, model, file):
    """The settings a dataset YAML gives for one model under ``model_settings: {MODEL: {key: value}}``
    (e.g. the layer count a paper reports as best on that dataset); they rank with the dataset's."""
    per_model = loaded.get("model_settings") or {}
    if not isinstance(per_model, dict) or not all(isinstance(v, dict) for v in per_model.values()):
        raise SettingsError(f"{file}: model_settings must map model names to settings, "
                          "e.g. model_settings: {MICRO: {n_item_layers: 2}}")
    return per_model.get(model, {})


class Config(RecBoleConfig):
    """RecBole's ``Config`` with our model lookup and our YAML defaults.

    Args:
        model (str or type): model name (ours or RecBole's) or class.
        dataset (str): dataset name.
        config_file_list (list of str): the user's YAML files.
        config_dict (dict): parameters that override the files.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        super().__init__(model, dataset, config_file_list, config_dict)
        self.check_settings()

    def check_settings(self):
        """Refuse, with one line naming the key, a value its YAML does not allow (see :mod:`recbole_micro.settings`);
        warn about a setting name no YAML defines (a typo reaches RecBole, which ignores it)."""
        check_settings(self.final_config_dict, read_settings(default_files(self.model, self.dataset)), root=properties_dir())
        for key, guess in unknown_settings(self.external_config_dict, known_setting_names()):
            if key not in _WARNED:
                _WARNED.add(key)
                hint = f"; did you mean {guess!r}?" if guess else "."
                print(f"warning: {key!r} is not a setting of RecBole or recbole-micro (no YAML defines it){hint} "
                      "It is passed on, and only a model that reads it will use it.", file=sys.stderr)
        for key in settings_not_used_by(get_model(self.model), self.external_config_dict):
            if (self.model, key) not in _WARNED:
                _WARNED.add((self.model, key))
                print(f"warning: {key!r} is set, but {self.model} does not use it (its YAML does not define it and "
                      "its code never reads it): it has no effect on this run.", file=sys.stderr)

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError("Set the model: Config(model=...), a config file, a dict or --model=...")
        if isinstance(model, str):
            final_model, final_model_class = model, get_model(model)
        else:
            final_model, final_model_class = model.__name__, model
        final_dataset = dataset if dataset is not None else self.external_config_dict.get("dataset")
        if final_dataset is None:
            raise KeyError("Set the dataset: Config(dataset=...), a config file, a dict or --dataset=...")
        return final_model, final_model_class, final_dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        # ours, then the one a dataset_prep importer wrote beside the data (above ours, below the user's)
        files = default_files(model, dataset) + [self.dataset_folder_file(dataset)]
        for file in files:
            if file.is_file():
                loaded = self._update_internal_config_dict(str(file)) or {}
                if file in files[-2:]:  # the dataset's own settings
                    self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]
                    self.internal_config_dict.update(model_settings(loaded, model, file))
        self.parameters["Dataset"] += [k for k in FEATURE_ARGUMENTS if k not in self.parameters["Dataset"]]

    def dataset_folder_file(self, dataset):
        """``<data_path>/<dataset>/<dataset>.yaml``: the settings a dataset_prep importer wrote beside the data."""
        data_path = self.external_config_dict.get("data_path") or self.internal_config_dict.get("data_path") or "dataset/"
        return Path(data_path) / dataset / f"{dataset}.yaml"

    def _set_default_parameters(self):
        data_root = self.final_config_dict["data_path"]
        super()._set_default_parameters()
        # RecBole points ml-100k at the copy inside its wheel; we keep every dataset, ml-100k
        # included, under data_path so that its cached features are written to a user folder.
        self.final_config_dict["data_path"] = os.path.join(data_root, self.dataset)

    def _init_device(self):
        """RecBole's device choice; in a multi-process run (``local_rank`` set by the launcher), join
        the process group with NCCL on GPUs and gloo on CPUs (RecBole's own always asks for NCCL)."""
        settings = self.final_config_dict
        if "local_rank" not in settings:
            return super()._init_device()
        gpu_id = settings["gpu_id"]
        settings["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, tuple) else str(gpu_id)
        use_cuda = settings["use_gpu"] and settings["gpu_id"] != "" and torch.cuda.is_available()
        rank = settings["local_rank"]
        if use_cuda:
            os.environ["CUDA_VISIBLE_DEVICES"] = settings["gpu_id"]
            torch.cuda.set_device(rank)
        else:  # the processes on this machine share its cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings["nproc"]))
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(
                backend="nccl" if use_cuda else "gloo",
                init_method=f"tcp://{settings['ip']}:{settings['port']}",
                rank=rank + settings["offset"],
                world_size=settings["world_size"],
                timeout=timedelta(seconds=settings["ddp_timeout"]),
            )
        settings["device"] = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
        settings["single_spec"] = False
        if rank != 0:  # only the first process logs and shows progress
            settings.update(state="error", show_progress=False, verbose=False)
        return None


def config_from_snapshot(snapshot):
    """A :class:`~recbole_micro.config.Config` with exactly the snapshot's settings, on this machine's device.

    The YAML files are not read again: a default changed since training does not change the run.
    """
    config = Config.__new__(Config)
    config.compatibility_settings()  # the numpy aliases RecBole 1.2.1's metrics use
    config.yaml_loader = config._build_yaml_loader()
    config.model, config.dataset = snapshot["model"], snapshot["dataset"]
    config.model_class = get_model(config.model)
    config.parameters = from_plain(snapshot["parameters"])
    config.file_config_dict = config.variable_config_dict = config.cmd_config_dict = {}
    config.external_config_dict, config.internal_config_dict = {}, {}
    config.final_config_dict = from_plain(snapshot["settings"])
    config.final_config_dict.update(single_spec=True, local_rank=0)  # loading is one process
    use_cuda = torch.cuda.is_available() and str(config.final_config_dict.get("gpu_id", "")) != ""
    config.final_config_dict["device"] = torch.device("cuda" if use_cuda else "cpu")
    return config


def config_of_checkpoint(saved, path="the checkpoint"):
    """The Config of a loaded checkpoint's ``config``: rebuilt from our plain snapshot, or RecBole's pickled one.

    Raises:
        CheckpointError: ``saved`` is neither (a file that loaded, but is not a run's checkpoint).
    """
    if isinstance(saved, dict):
        try:
            config = config_from_snapshot(saved)
        except (KeyError, TypeError, AttributeError, RecBoleMicroError) as err:
            raise CheckpointError(f"{path} holds no usable run settings ({type(err).__name__}: {err}): pass a "
                                  "checkpoint that a run saved.") from None
    elif isinstance(saved, RecBoleConfig):
        config = saved
    else:
        raise CheckpointError(f"{path} is not a run's checkpoint: its 'config' is {type(saved).__name__} data, not "
                              "a run's settings. Pass a checkpoint that a run saved.")
    # A Config that was not built by __init__ (rebuilt or unpickled) lacks the numpy aliases
    # (np.float, ...) that RecBole 1.2.1's metrics still use: without this, evaluating fails.
    config.compatibility_settings()
    return config


MODEL_SHAPING_SETTINGS = ("embedding_size", "modalities", "use_modalities")  # beside each model's own YAML keys


def run_identity(config):
    """What a resume state must match to be continued by this run: the dataset and the settings that shape the model.

    Returns:
        dict: ``dataset`` (its name), ``dataset_files`` (a SHA-256 over the names and bytes of the
        dataset folder's ``<dataset>.*`` files and the feature files its ``modalities`` name) and
        ``settings`` (the model's own YAML keys, ours or RecBole's, and :data:`MODEL_SHAPING_SETTINGS`,
        as text).
    """
    own, _ = _own_settings_and_source(config.model_class)
    keys = sorted((set(own) | set(MODEL_SHAPING_SETTINGS)) & set(config.final_config_dict))
    settings = {key: json.dumps(to_plain(config[key]), sort_keys=True, default=str) for key in keys}
    return {"dataset": config["dataset"], "dataset_files": dataset_files_digest(config), "settings": settings}


def dataset_files_digest(config):
    """SHA-256 over the names and bytes of a dataset's files: ``<data_path>/<dataset>.*`` and its feature files."""
    folder = Path(config["data_path"])
    files = set(folder.glob(f"{glob.escape(config['dataset'])}.*")) if folder.is_dir() else set()
    modalities = config["modalities"] if isinstance(config["modalities"], dict) else {}
    for spec in filter(lambda s: isinstance(s, dict), modalities.values()):
        files.update(folder / spec[key] for key in ("file", "tokens") if isinstance(spec.get(key), str))
    digest = hashlib.sha256()
    for path in sorted(p for p in files if p.is_file()):
        digest.update(f"{path.name}\0{sha256_of(path)}\0".encode())
    return digest.hexdigest()
