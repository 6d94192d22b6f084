"""Checkpoints that hold only data, so that opening one never runs code.

RecBole pickles its ``Config`` object into every checkpoint, and such a file only loads with
``torch.load(weights_only=False)``, which runs whatever the pickle holds: a checkpoint shared
by a colleague (or downloaded) is then code execution from a data file. Ours hold tensors,
numbers, strings, lists, tuples and dicts only, and are always read with ``weights_only=True``:

- ``config`` is a snapshot of the run's settings: the model and dataset names, the parameter
  categories, and every final setting, with RecBole's three enum values written as
  ``{"__enum__": class name, "name": member}``. The device is not stored: the loading machine
  chooses its own, as a new run would.
- ``other_parameter`` (the tensors a model caches besides its weights) may hold numpy arrays and
  scipy sparse matrices in RecBole's models (ItemKNN, EASE, ...): they are stored as tensors
  with a tag, and given back as what they were.

A checkpoint written by RecBole (or by recbole-micro before this format) holds pickled objects;
it loads only with ``trust=True`` (``--trust-checkpoint``), with a warning.
"""
import logging
import pickle
import warnings
from enum import Enum

import numpy as np
import scipy.sparse as sp
import torch
from recbole.utils import EvaluatorType, InputType, ModelType

from recbole_micro.errors import CheckpointError
from recbole_micro.files import write_atomically

FORMAT = "recbole-micro checkpoint 1"
ENUMS = {cls.__name__: cls for cls in (ModelType, InputType, EvaluatorType)}
NOT_STORED = ("device",)  # chosen again by the machine that loads the checkpoint


def to_plain(value):
    """``value`` with enums, numpy arrays and scipy sparse matrices replaced by tagged plain data."""
    if isinstance(value, Enum):
        if type(value).__name__ not in ENUMS:
            raise CheckpointError(f"cannot store the setting value {value!r} in a checkpoint (an unknown enum)")
        return {"__enum__": type(value).__name__, "name": value.name}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    if sp.issparse(value):
        csr = value.tocsr()
        return {"__scipy_sparse__": value.format, "shape": tuple(int(n) for n in csr.shape),
                "data": torch.from_numpy(csr.data.copy()), "indices": torch.from_numpy(csr.indices.copy()),
                "indptr": torch.from_numpy(csr.indptr.copy())}
    if isinstance(value, np.ndarray):
        return {"__numpy__": torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_plain(value):
    """The inverse of :func:`to_plain`."""
    if isinstance(value, dict):
        if "__enum__" in value:
            return ENUMS[value["__enum__"]][value["name"]]
        if "__numpy__" in value:
            return value["__numpy__"].numpy()
        if "__scipy_sparse__" in value:
            csr = sp.csr_matrix((value["data"].numpy(), value["indices"].numpy(), value["indptr"].numpy()),
                                shape=value["shape"])
            return csr.asformat(value["__scipy_sparse__"])
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(from_plain(v) for v in value)
    return value


def config_snapshot(config):
    """The run's settings as plain data (see the module docstring)."""
    settings = {k: v for k, v in config.final_config_dict.items() if k not in NOT_STORED}
    return {"model": config.model, "dataset": config.dataset, "parameters": to_plain(config.parameters),
            "settings": to_plain(settings)}




def save_checkpoint(path, state):
    """Write ``state`` (a RecBole trainer's checkpoint dict, ``config`` a Config) atomically as plain data."""
    state = dict(state, format=FORMAT, config=config_snapshot(state["config"]),
                 other_parameter=to_plain(state.get("other_parameter")))
    write_atomically(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path, device="cpu", trust=False):
    """Read a checkpoint without running code; ``config`` comes back as its plain snapshot
    (:func:`recbole_micro.config.config_from_snapshot` makes it a Config again).

    Args:
        path: the ``.pth`` file.
        device: where its tensors go.
        trust (bool): also read a checkpoint that holds pickled objects (RecBole's format), which
            runs the code they name: only for files from a source you trust.

    Raises:
        CheckpointError: the file is missing or unreadable, or holds objects and ``trust`` is False.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # RecBole's files: refused below
            state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"No checkpoint at {path}.") from None
    except pickle.UnpicklingError as err:
        if not trust:
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else "objects other than data"
            raise CheckpointError(
                f"{path} holds Python objects, and loading it would run the code they name ({reason}). "
                "RecBole's own checkpoints (and recbole-micro's older ones) are like this; so is any file built to attack. "
                "Load it only if you trust where it came from: --trust-checkpoint "
                "(Python: trust_checkpoint=True)."
            ) from None
        logging.getLogger().warning(f"Loading {path} with pickle (--trust-checkpoint): it can run code.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            state = torch.load(path, map_location=device, weights_only=False)
        if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict) or "config" not in state:
            raise CheckpointError(f"{path} is not a checkpoint: it holds {type(state).__name__!r} data, not the dict "
                                  "with 'state_dict' and 'config' a trainer writes. Pass the .pth file a run saved.")
        return state
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file gets one clear message
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err}).") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a recbole-micro checkpoint (no '{FORMAT}' format mark).")
    state["other_parameter"] = from_plain(state.get("other_parameter"))
    return state
