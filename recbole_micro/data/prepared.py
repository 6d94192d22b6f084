"""Checking that a dataset's atomic files exist before RecBole reads (or tries to download) them."""
import os
import shutil
from pathlib import Path

import recbole

from recbole_micro.errors import DatasetNotPreparedError
from recbole_micro.files import write_atomically

ML100K_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user", "ml-100k.kg", "ml-100k.link")


def recbole_ml100k_dir():
    """MovieLens-100k as shipped inside RecBole's wheel."""
    return Path(recbole.__file__).resolve().parent / "dataset_example" / "ml-100k"


def materialize_ml100k(dataset_dir):
    """Copy MovieLens-100k's atomic files from RecBole's wheel into ``dataset_dir`` once.

    Its derived features (text, knowledge) are then cached beside them, in a user folder
    rather than inside site-packages.
    """
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    for name in ML100K_FILES:
        if not (dataset_dir / name).is_file():
            write_atomically(dataset_dir / name, lambda tmp, n=name: shutil.copyfile(recbole_ml100k_dir() / n, tmp))


def expected_inter_files(config):
    dataset_dir = Path(config["data_path"])
    name = config["dataset"]
    suffixes = config["benchmark_filename"] or [None]
    return [dataset_dir / (f"{name}.{s}.inter" if s else f"{name}.inter") for s in suffixes]


def ensure_dataset_prepared(config):
    """Raise :class:`DatasetNotPreparedError` (with what to do) if the atomic files are missing."""
    if config["dataset"] == "ml-100k":
        materialize_ml100k(config["data_path"])
    missing = [p for p in expected_inter_files(config) if not p.is_file()]
    if not missing:
        return
    hint = config["prepare_hint"] or (
        "Write RecBole atomic files there (see README, 'Use your own data'), or set `data_path` "
        "to the folder that contains the dataset folder."
    )
    files = "\n  ".join(os.path.abspath(p) for p in missing)
    raise DatasetNotPreparedError(
        f"Dataset '{config['dataset']}' is not prepared: expected\n  {files}\n{hint.strip()}"
    )
