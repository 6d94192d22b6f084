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

from recbole_micro.errors import UnknownModelError

RECBOLE_MODEL_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)
OUR_MODEL_PACKAGE = "recbole_micro.model.general_recommender"


def init_seed(seed, reproducibility):
    """RecBole's ``init_seed``, and with ``reproducibility`` torch's deterministic algorithms.

    RecBole only fixes cuDNN. On a multi-core CPU, the backward of indexing with repeated
    indices (a batch's embedding lookups) sums in an order that depends on the threads, so two
    fresh processes with the same seed drifted apart from the first batch (gradients differing
    by 1e-11, test Recall@20 by 1e-3 after a run). Deterministic algorithms fix the order (a
    20-batch probe of MICRO on ml-100k showed no cost; ``make run`` took 12 min 13 s after,
    10 min 46 s before, not separated from noise). ``warn_only``: an operation without a deterministic
    version warns instead of stopping the run; on CUDA, cuBLAS gets the workspace setting it
    needs for reproducible results (``CUBLAS_WORKSPACE_CONFIG``, unless already set).
    """
    import torch

    recbole_init_seed(seed, reproducibility)
    if reproducibility:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(reproducibility), warn_only=True)


def properties_dir():
    """The folder holding ``overall.yaml``, ``model/`` and ``dataset/``.

    A source checkout (or editable install) keeps it at the top level beside the package; a
    non-editable install ships it inside the package.
    """
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "properties", package_dir.parent / "properties"):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"recbole-micro's YAML defaults (properties/overall.yaml) were not found next to "
        f"{package_dir}; reinstall the package with `pip install .`"
    )


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
    """Return ``<Model>Trainer`` from ``recbole_micro.trainer``, else RecBole's trainer.

    Every trainer returned loads its own checkpoints explicitly (torch >= 2.6 refuses RecBole's
    checkpoints by default): RecBole's trainers get :class:`CheckpointMixin` mixed in.
    """
    from recbole_micro import trainer as our_trainers

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
