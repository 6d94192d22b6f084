"""Finding models, trainers, datasets and YAML defaults (the RecBole-GNN pattern).

Our classes are found by naming convention and everything else falls back to RecBole, so the
baselines (BPR, LightGCN, NGCF, ItemKNN, SGL, ...) run through the same script and pipeline.
"""
import importlib
import importlib.util
import os
import pickle
from logging import getLogger
from pathlib import Path

from recbole.utils import ModelType, set_color
from recbole.utils import get_trainer as recbole_get_trainer
from recbole.utils import init_seed as recbole_init_seed

from recbole_micro.errors import ParamsFileError, UnknownModelError

RECBOLE_MODEL_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)
OUR_MODEL_PACKAGE = "recbole_micro.model.general_recommender"
OUR_TRAINER_PACKAGE = "recbole_micro.trainer"


def init_seed(seed, reproducibility):
    """RecBole's ``init_seed``, and with ``reproducibility`` torch's deterministic algorithms.

    RecBole only fixes cuDNN. On a multi-core CPU, the backward of indexing with repeated
    indices (a batch's embedding lookups) sums in an order that depends on the threads, so two
    fresh processes with the same seed drift apart from the first batch; deterministic
    algorithms fix the order (what they cost: docs/performance.md). ``warn_only``: an operation
    without a deterministic version warns instead of stopping the run; on CUDA, cuBLAS gets the
    workspace setting it needs for reproducible results (``CUBLAS_WORKSPACE_CONFIG``, unless
    already set).
    """
    import torch

    recbole_init_seed(seed, reproducibility)
    if reproducibility:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(reproducibility), warn_only=True)


def _shipped_folder(name, marker):
    """``<package>/<name>`` (a non-editable install) or ``<checkout>/<name>`` (a source checkout), holding ``marker``."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / name, package_dir.parent / name):
        if (candidate / marker).exists():
            return candidate
    return None


def properties_dir():
    """The folder holding ``overall.yaml``, ``model/`` and ``dataset/``.

    A source checkout (or editable install) keeps it at the top level beside the package; a
    non-editable install ships it inside the package.
    """
    found = _shipped_folder("properties", "overall.yaml")
    if found is None:
        raise FileNotFoundError(
            f"recbole-micro's YAML defaults (properties/overall.yaml) were not found next to "
            f"{Path(__file__).resolve().parent}; reinstall the package with `pip install .`"
        )
    return found


def hyper_dir():
    """The folder of the shipped params files (``<Model>.hyper``, ``sensitivity/``), found as :func:`properties_dir` is."""
    found = _shipped_folder("hyper", "MICRO.hyper")
    if found is None:
        raise ParamsFileError(f"recbole-micro's params files (hyper/) were not found next to "
                              f"{Path(__file__).resolve().parent}; reinstall the package with `pip install .`")
    return found


def find_params_file(name):
    """A params file given by path, or by the name of a shipped one.

    ``hyper/MICRO.hyper`` or any existing path is taken as it is; otherwise ``MICRO``,
    ``MICRO.hyper``, ``sensitivity/MICRO-knn_k`` or ``hyper/sensitivity/MICRO-knn_k.hyper`` name a
    file of :func:`hyper_dir`, so the shipped grids work from any folder after ``pip install``.
    """
    path = Path(name)
    if path.is_file():
        return path
    if path.is_dir():
        raise ParamsFileError(f"params file {name} is a folder: pass one .hyper file in it.")
    shipped = hyper_dir()
    relative = Path(*path.parts[1:]) if path.parts[:1] == ("hyper",) else path
    for candidate in (shipped / relative, shipped / relative.with_name(relative.name + ".hyper")):
        if candidate.is_file():
            return candidate
    names = sorted(str(p.relative_to(shipped).with_suffix("")) for p in shipped.rglob("*.hyper"))
    raise ParamsFileError(f"params file {name} not found, neither as a path nor among the shipped ones "
                          f"({', '.join(names)}): pass a file's path, or one of those names.")


def _module_files(package):
    """Module names inside ``package``, found without importing the package itself."""
    spec = importlib.util.find_spec(package)
    names = set()
    for location in spec.submodule_search_locations or []:
        names.update(p.stem for p in Path(location).glob("*.py") if p.stem != "__init__")
    return names


def our_model_names():
    """The model classes recbole-micro provides, e.g. ``['VBPR']``."""
    names = []
    for module_name in sorted(_module_files(OUR_MODEL_PACKAGE)):
        module = importlib.import_module(f"{OUR_MODEL_PACKAGE}.{module_name}")
        names += [n for n in dir(module) if n.lower() == module_name]
    return names


def _unknown_model(model_name, hint=""):
    return UnknownModelError(
        f"Unknown model '{model_name}'.{hint} recbole-micro models: {', '.join(our_model_names())}; "
        f"any RecBole model (e.g. BPR, LightGCN, NGCF, ItemKNN, SGL) also works. "
        f"Model names are case-sensitive."
    )


def get_model(model_name):
    """Return the model class called ``model_name``: ours first, then RecBole's.

    Raises:
        UnknownModelError: the name is neither ours nor RecBole's (RecBole's own lookup ends
            in a confusing ``No module named 'lightgbm'`` instead).
    """
    module_name = model_name.lower()
    packages = [OUR_MODEL_PACKAGE] + [f"recbole.model.{s}" for s in RECBOLE_MODEL_SUBMODULES]
    for package in packages:
        if module_name in _module_files(package):
            module = importlib.import_module(f"{package}.{module_name}")
            if hasattr(module, model_name):
                return getattr(module, model_name)
            matches = [n for n in dir(module) if n.lower() == module_name]
            hint = f" Did you mean '{matches[0]}'?" if matches else ""
            raise _unknown_model(model_name, hint)
    raise _unknown_model(model_name)


def get_trainer(model_type, model_name):
    """Return ``<Model>Trainer`` from ``recbole_micro.trainer.<model>`` (a model with a trainer of its
    own, e.g. BM3) or ``recbole_micro.trainer.trainer``, else RecBole's trainer.

    Every trainer returned loads its own checkpoints explicitly (torch >= 2.6 refuses RecBole's
    checkpoints by default): RecBole's trainers get :class:`CheckpointMixin` mixed in.
    """
    from recbole_micro.trainer import trainer as our_trainers

    if model_name.lower() in _module_files(OUR_TRAINER_PACKAGE) - {"trainer"}:
        own_module = importlib.import_module(f"{OUR_TRAINER_PACKAGE}.{model_name.lower()}")
        ours = getattr(own_module, f"{model_name}Trainer", None)
        if ours is not None:
            return ours
    ours = getattr(our_trainers, f"{model_name}Trainer", None)
    if ours is not None:
        return ours
    if model_type == ModelType.GENERAL and _is_multimodal(get_model(model_name)):
        return our_trainers.Trainer
    return our_trainers.with_checkpoint_loading(recbole_get_trainer(model_type, model_name))


def _is_multimodal(model_class):
    from recbole_micro.model.abstract_recommender import MultimodalRecommender

    return isinstance(model_class, type) and issubclass(model_class, MultimodalRecommender)


def create_dataset(config):
    """Create the dataset for ``config['model']``, as RecBole's ``create_dataset`` does.

    Multimodal models get a :class:`~recbole_micro.data.MultimodalDataset` (features loaded and
    aligned once); other models get RecBole's own dataset class. Before anything is read, the
    dataset folder is checked (and MovieLens-100k materialised from RecBole's wheel) so that a
    missing dataset gives instructions instead of RecBole's download attempt.
    """
    from recbole.data import create_dataset as recbole_create_dataset

    from recbole_micro.data.dataset import MultimodalDataset
    from recbole_micro.data.prepared import ensure_dataset_prepared

    ensure_dataset_prepared(config)
    model_class = getattr(config, "model_class", None) or get_model(config["model"])
    if not _is_multimodal(model_class):
        return recbole_create_dataset(config)

    logger = getLogger()
    saved_file = config["dataset_save_path"] or os.path.join(
        config["checkpoint_dir"], f'{config["dataset"]}-{MultimodalDataset.__name__}.pth'
    )
    if os.path.exists(saved_file):
        with open(saved_file, "rb") as f:
            dataset = pickle.load(f)
        if dataset.is_reusable_for(config):
            logger.info(set_color("Load filtered dataset from", "pink") + f": [{saved_file}]")
            return dataset
        logger.info(f"Cached dataset {saved_file} is stale (config or feature files changed); rebuilding.")
    dataset = MultimodalDataset(config)
    if config["save_dataset"]:
        dataset.save()
    return dataset
