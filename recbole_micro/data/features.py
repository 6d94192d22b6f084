"""Reading, validating and aligning item modality features.

A modality is named in the dataset YAML under ``modalities``, either as a feature matrix with
an explicit token list::

    modalities:
      visual:
        file: baby.visual.npy       # (n_rows, dim) float16/float32 .npy, memory-mapped
        tokens: baby.visual.tokens  # one item token per line (row order), or a .json
                                    # {token: row} mapping / [token, ...] list
        dim: 4096                   # optional: the expected dimension, checked
        missing: error              # optional: per-modality missing_feature_policy

or as a RecBole ``float_seq`` column of the ``.item`` file (``field: <column>``). Paths are
relative to the dataset folder. Rows are aligned to RecBole's internal item ids by token, never
by file order.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from recbole_micro.errors import FeatureFileError

MISSING_POLICIES = ("error", "mean", "zero")
UNKNOWN_POLICIES = ("error", "ignore")
# Settings that decide how features are built: a saved dataset is reused only if they match.
FEATURE_ARGUMENTS = ["modalities", "missing_feature_policy", "unknown_feature_policy"]
SPEC_KEYS = {"file", "tokens", "field", "dim", "missing", "build"}
TOKEN_SUFFIX = ".tokens"
NPY_MAGIC = b"\x93NUMPY"


@dataclass
class ModalitySpec:
    """One modality as configured: either ``file`` (+ ``tokens``) or a ``field`` of ``.item``."""

    name: str
    missing: str
    file: Optional[Path] = None
    tokens: Optional[Path] = None
    field: Optional[str] = None
    dim: Optional[int] = None
    build: Optional[str] = None

    @property
    def source(self):
        return str(self.file) if self.file is not None else f"float_seq column '{self.field}' of the .item file"


def parse_modalities(modalities, dataset_dir, default_missing="error"):
    """Turn the ``modalities`` config entry into a list of :class:`ModalitySpec`.

    Args:
        modalities (dict): ``{name: {file, tokens, field, dim, missing, build}}`` or
            ``{name: "file.npy"}``.
        dataset_dir (str or Path): the dataset folder; relative paths are resolved against it.
        default_missing (str): ``missing_feature_policy``, used where a modality sets none.

    Returns:
        list of ModalitySpec: in the order given.
    """
    if not modalities:
        raise FeatureFileError(
            "This model needs item modality features, but the config names none. Add a "
            "`modalities:` entry to the dataset YAML (see README, 'Use your own features'), e.g.\n"
            "modalities:\n  visual: {file: <dataset>.visual.npy, tokens: <dataset>.visual.tokens}"
        )
    if not isinstance(modalities, dict):
        raise FeatureFileError(f"`modalities` must be a mapping of name -> spec, got {modalities!r}")
    _check_policy("missing_feature_policy", default_missing, MISSING_POLICIES)
    dataset_dir = Path(dataset_dir)
    specs = []
    for name, entry in modalities.items():
        if not str(name).isidentifier():
            raise FeatureFileError(f"Modality name {name!r} must be a Python identifier (e.g. visual, textual).")
        if isinstance(entry, str):
            entry = {"file": entry}
        if not isinstance(entry, dict):
            raise FeatureFileError(f"modalities.{name} must be a file name or a mapping, got {entry!r}")
        unknown = set(entry) - SPEC_KEYS
        if unknown:
            raise FeatureFileError(
                f"modalities.{name} has unknown keys {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}"
            )
        if ("file" in entry) == ("field" in entry):
            raise FeatureFileError(
                f"modalities.{name} must set exactly one of `file` (a .npy matrix) or `field` "
                f"(a float_seq column of the .item file)."
            )
        spec = ModalitySpec(
            name=name,
            missing=entry.get("missing", default_missing),
            field=entry.get("field"),
            dim=entry.get("dim"),
            build=entry.get("build"),
        )
        _check_policy(f"modalities.{name}.missing", spec.missing, MISSING_POLICIES)
        if "file" in entry:
            spec.file = _resolve(dataset_dir, entry["file"])
            tokens = entry.get("tokens")
            spec.tokens = (
                _resolve(dataset_dir, tokens) if tokens else spec.file.with_suffix(TOKEN_SUFFIX)
            )
        specs.append(spec)
    return specs


def _resolve(dataset_dir, path):
    path = Path(path).expanduser()
    return path if path.is_absolute() else dataset_dir / path


def _check_policy(key, value, allowed):
    if value not in allowed:
        raise FeatureFileError(f"`{key}` is {value!r}; use one of {', '.join(allowed)}.")


def read_feature_matrix(spec):
    """Open ``spec.file`` memory-mapped and check that it is a 2-D numeric array.

    Returns:
        numpy.ndarray: (n_rows, dim), not copied.
    """
    path = spec.file
    if not path.is_file():
        raise FeatureFileError(
            f"Feature file for modality '{spec.name}' not found: {path}. Create it (a 2-D float "
            f".npy with one row per item token) or fix `modalities.{spec.name}.file` in the dataset "
            f"YAML; relative paths are resolved against the dataset folder."
        )
    with open(path, "rb") as f:
        if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise FeatureFileError(
                f"{path} (modality '{spec.name}') could not be read as .npy: it does not start with "
                f"the .npy header. Save the matrix with numpy.save (CSV or text files are not read)."
            )
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise FeatureFileError(
            f"{path} (modality '{spec.name}') is not a numeric .npy matrix ({err}). Ragged or "
            f"non-numeric rows cannot be used: save a 2-D float array with np.save."
        ) from err
    except Exception as err:  # truncated or not an .npy at all
        raise FeatureFileError(
            f"{path} (modality '{spec.name}') could not be read as .npy: {err}. Re-create it with np.save."
        ) from err
    if not isinstance(matrix, np.ndarray) or matrix.ndim != 2:
        raise FeatureFileError(
            f"{path} (modality '{spec.name}') has shape {getattr(matrix, 'shape', '?')}; expected a "
            f"2-D (n_items, dim) matrix."
        )
    if matrix.dtype.kind not in "fiu":
        raise FeatureFileError(
            f"{path} (modality '{spec.name}') has non-numeric dtype {matrix.dtype}; save it as float32 or float16."
        )
    if spec.dim is not None and matrix.shape[1] != spec.dim:
        raise FeatureFileError(
            f"{path} (modality '{spec.name}') has dimension {matrix.shape[1]}, but the config expects "
            f"dim {spec.dim}. Re-create the file, or update `modalities.{spec.name}.dim` (and retrain "
            f"models that were trained on the old dimension)."
        )
    return matrix


def read_token_rows(spec, n_rows):
    """Read the token list of ``spec.file``.

    Returns:
        dict: item token (str) -> row index in the feature matrix.
    """
    path = spec.tokens
    if not path.is_file():
        raise FeatureFileError(
            f"Token list for modality '{spec.name}' not found: {path}. The rows of {spec.file} are "
            f"matched to items by token: write one item token per line (in row order) to {path}, or "
            f"name the file with `modalities.{spec.name}.tokens`."
        )
    if path.suffix == ".json":
        try:
            with open(path, encoding="utf-8") as f:
                loaded = json.load(f)
        except json.JSONDecodeError as err:
            raise FeatureFileError(f"{path} is not valid JSON ({err}); expected {{token: row}} or [token, ...].") from err
        if isinstance(loaded, list):
            token_rows = _rows_from_list([str(t) for t in loaded], path, spec, n_rows)
        elif isinstance(loaded, dict):
            token_rows = {str(t): r for t, r in loaded.items()}
            bad = [t for t, r in token_rows.items() if not isinstance(r, int) or not 0 <= r < n_rows]
            if bad:
                raise FeatureFileError(
                    f"{path} maps {len(bad)} token(s) (e.g. {bad[:3]}) to rows outside 0..{n_rows - 1} "
                    f"of {spec.file}; the mapping does not belong to this feature file."
                )
            if len(set(token_rows.values())) != len(token_rows):
                raise FeatureFileError(f"{path} maps several tokens to the same row; each row is one item.")
        else:
            raise FeatureFileError(f"{path} must hold a JSON object {{token: row}} or a list of tokens.")
    else:
        with open(path, encoding="utf-8") as f:
            tokens = f.read().split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        token_rows = _rows_from_list(tokens, path, spec, n_rows)
    return token_rows


def _rows_from_list(tokens, path, spec, n_rows):
    if len(tokens) != n_rows:
        raise FeatureFileError(
            f"{path} lists {len(tokens)} tokens but {spec.file} has {n_rows} rows; they must "
            f"match one to one (row r of the matrix is the item on line r+1). Re-export both together."
        )
    empty = [i + 1 for i, t in enumerate(tokens) if t.strip() == ""]
    if empty:
        raise FeatureFileError(f"{path} has empty tokens on line(s) {empty[:5]}; every row needs an item token.")
    rows = {}
    for row, token in enumerate(tokens):
        if token in rows:
            raise FeatureFileError(
                f"{path} lists token {token!r} twice (lines {rows[token] + 1} and {row + 1}); each item needs exactly one row."
            )
        rows[token] = row
    return rows


def stack_float_seq(spec, values):
    """Stack a ``float_seq`` column (one array per internal item id) into a matrix.

    Empty arrays (items without a value) are reported as missing rather than as ragged rows.

    Returns:
        tuple: ``(matrix (n_items, dim) float32, present (n_items,) bool)``.
    """
    lengths = np.array([len(v) for v in values])
    present = lengths > 0
    present[0] = False  # PAD
    dims = sorted(set(lengths[present].tolist()))
    if not dims:
        raise FeatureFileError(f"The {spec.source} is empty for every item; check `load_col` in the dataset YAML.")
    if len(dims) > 1:
        counts = {d: int((lengths[present] == d).sum()) for d in dims}
        first = int(np.flatnonzero(present & (lengths != dims[-1]))[0])
        raise FeatureFileError(
            f"The {spec.source} (modality '{spec.name}') has ragged rows: lengths {counts}, e.g. "
            f"internal item {first}. Every item needs the same number of values."
        )
    dim = dims[0]
    if spec.dim is not None and dim != spec.dim:
        raise FeatureFileError(
            f"The {spec.source} (modality '{spec.name}') has dimension {dim}, but the config expects "
            f"dim {spec.dim}. Fix the .item file or `modalities.{spec.name}.dim`."
        )
    matrix = np.zeros((len(values), dim), dtype=np.float32)
    for i in np.flatnonzero(present):
        matrix[i] = values[i]
    return matrix, present


def align_to_items(spec, matrix, token_rows, item_tokens, raw_item_tokens, unknown_policy, logger):
    """Gather the rows of ``matrix`` into RecBole's internal item-id order.

    Args:
        spec (ModalitySpec): the modality.
        matrix (numpy.ndarray): (n_rows, dim) features, possibly memory-mapped.
        token_rows (dict): item token -> row of ``matrix``.
        item_tokens (numpy.ndarray): ``field2id_token[item_field]``; entry 0 is ``[PAD]``.
        raw_item_tokens (set): item tokens in the atomic files before RecBole's filtering.
        unknown_policy (str): ``error`` or ``ignore`` for feature tokens the dataset never had.

    Returns:
        tuple: ``(features (n_items, dim) float32, present (n_items,) bool)``; row 0 is zero.
    """
    _check_policy("unknown_feature_policy", unknown_policy, UNKNOWN_POLICIES)
    known = set(item_tokens[1:].tolist())
    unknown = [t for t in token_rows if t not in known and t not in raw_item_tokens]
    if unknown:
        message = (
            f"{spec.tokens} lists {len(unknown)} of {len(token_rows)} tokens that are not items of "
            f"this dataset (e.g. {unknown[:5]})."
        )
        if unknown_policy == "error" or len(unknown) == len(token_rows):
            raise FeatureFileError(
                message + " The feature file may belong to another dataset or use other ids. If it "
                "covers a larger catalogue on purpose, set `unknown_feature_policy: ignore`."
            )
        logger.info(message + " Ignored (unknown_feature_policy: ignore).")
    filtered = sum(1 for t in token_rows if t not in known and t in raw_item_tokens)
    if filtered:
        logger.info(f"Modality '{spec.name}': {filtered} feature rows belong to items RecBole filtered out.")
    rows = np.array([token_rows.get(t, -1) for t in item_tokens], dtype=np.int64)
    rows[0] = -1  # PAD never takes a feature row
    present = rows >= 0
    features = np.zeros((len(item_tokens), matrix.shape[1]), dtype=np.float32)
    ids = np.flatnonzero(present)
    order = np.argsort(rows[ids])  # read the (memory-mapped) file in row order
    features[ids[order]] = matrix[rows[ids[order]]]
    return features, present


def check_finite(spec, features, present, item_tokens):
    """Reject NaN or infinite values in the rows of items that have features."""
    finite = np.isfinite(features).all(axis=1)
    bad = np.flatnonzero(present & ~finite)
    if len(bad):
        raise FeatureFileError(
            f"{spec.source} (modality '{spec.name}') has NaN or infinite values for {len(bad)} "
            f"item(s), e.g. tokens {item_tokens[bad[:5]].tolist()}. Fix or drop those rows; rows "
            f"left out are handled by `missing_feature_policy`."
        )


def impute_missing(spec, features, present, item_tokens, logger):
    """Apply the missing-feature policy to items (other than PAD) without a feature row.

    Returns:
        numpy.ndarray: bool (n_items,), True where a row was imputed.
    """
    missing = ~present
    missing[0] = False
    n_missing = int(missing.sum())
    if n_missing == 0:
        return missing
    if spec.missing == "error":
        raise FeatureFileError(
            f"{n_missing} of {len(item_tokens) - 1} items have no row in {spec.source} (modality "
            f"'{spec.name}'), e.g. tokens {item_tokens[np.flatnonzero(missing)[:5]].tolist()}. Add "
            f"rows for them, or set `missing_feature_policy: mean` or `zero` (or "
            f"`modalities.{spec.name}.missing`) to impute."
        )
    if spec.missing == "mean":
        features[missing] = features[present].mean(axis=0) if present.any() else 0.0
    else:
        features[missing] = 0.0
    logger.info(
        f"Modality '{spec.name}': {n_missing} of {len(item_tokens) - 1} items have no feature row; "
        f"imputed with the {spec.missing} (missing_feature_policy '{spec.missing}')."
    )
    return missing


def file_fingerprint(path):
    """(size, mtime) of a file, to notice a feature file that changed under a cached dataset."""
    stat = Path(path).stat()
    return stat.st_size, stat.st_mtime_ns
