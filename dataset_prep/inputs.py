"""Reading a converter's inputs: every problem is a PrepError naming the file and the fix.

Text files are read as UTF-8 (gzip-compressed when the name ends in ``.gz``), line by line, so an
undecodable byte is reported with its line number. JSON objects may not repeat a key. Feature
matrices are ``.npy`` files of numbers, opened memory-mapped and never unpickled.
"""
import gzip
import json
import zlib
from pathlib import Path

import numpy as np

from dataset_prep.common import PrepError

NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats: what converts to float32 unchanged


def input_file(path, hint="."):
    """``path`` as a Path once it is known to be a regular file.

    Args:
        hint (str): what follows "<path> not found", e.g. ": pass --source, the folder holding it.".
    """
    path = Path(path)
    if path.is_dir():
        raise PrepError(f"{path} is a folder, not a file{hint}")
    if not path.exists():
        raise PrepError(f"{path} not found{hint}")
    if not path.is_file():
        raise PrepError(f"{path} is not a regular file{hint}")
    return path


def open_input(path, hint="."):
    """``path`` opened for reading bytes (decompressed when it ends in ``.gz``)."""
    path = input_file(path, hint)
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as err:
        raise PrepError(f"{path} cannot be read ({err.strerror}): check its permissions.") from None


def not_gzip(path):
    """The message for a file named ``.gz`` that is not gzip data."""
    return f"{path} is not gzip data although its name ends in .gz: compress it with gzip, or drop the .gz."


def read_bytes(path, hint="."):
    """The bytes of ``path`` (decompressed when it ends in ``.gz``)."""
    path = Path(path)
    with open_input(path, hint) as f:
        try:
            return f.read()
        except gzip.BadGzipFile:
            raise PrepError(not_gzip(path)) from None
        except (OSError, EOFError, zlib.error) as err:
            raise PrepError(f"{path} cannot be read ({type(err).__name__}: {err}): is it truncated? "
                            "Copy it again.") from None


def not_utf8(path, line, byte):
    """The message for a byte that is not UTF-8 on ``line`` of ``path``."""
    return (f"{path} line {line} is not UTF-8 (byte 0x{byte:02x}): the converters read UTF-8 only; "
            "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8).")


def read_lines(path, hint="."):
    """Yield ``(line number, text)`` for each line of a UTF-8 text file, the line ending stripped.

    A byte order mark on the first line is dropped; a byte that is not UTF-8 stops the reading with
    its line number.
    """
    path = Path(path)
    with open_input(path, hint) as f:
        number = 0
        try:
            for number, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    raise PrepError(not_utf8(path, number, raw[err.start])) from None
                yield number, text.rstrip("\r\n")
        except gzip.BadGzipFile:
            raise PrepError(not_gzip(path)) from None
        except (OSError, EOFError, zlib.error) as err:
            raise PrepError(f"{path} cannot be read past line {number} ({type(err).__name__}: {err}): "
                            "is it truncated? Copy it again.") from None


def read_header(lines, path, expected):
    """The first line of ``lines`` (from :func:`read_lines`), or a PrepError if the file is empty."""
    first = next(lines, None)
    if first is None:
        raise PrepError(f"{path} is empty: expected the header {expected!r}, then one line per entry.")
    return first[1]


def read_json(path, hint="."):
    """The JSON value in ``path``; an object may not hold the same key twice."""
    path = Path(path)
    data = read_bytes(path, hint)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise PrepError(not_utf8(path, data.count(b"\n", 0, err.start) + 1, data[err.start])) from None
    if not text.strip():
        raise PrepError(f"{path} is empty: it must hold JSON. Copy it again from the source.")

    def unique_keys(pairs):
        keys = [key for key, _ in pairs]
        if len(set(keys)) < len(keys):
            twice = next(key for key in keys if keys.count(key) > 1)
            raise PrepError(f"{path} has the key {twice!r} twice in one object (the last would silently win): "
                            "keep one.")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as err:
        raise PrepError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): "
                        "fix it, or copy the file again.") from None
    except RecursionError:
        raise PrepError(f"{path} is nested too deeply to be the JSON the converters read.") from None


def json_type(value):
    """The JSON name of a parsed value's type: object, array, string, number, boolean or null."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), "null")


def npy_header(path, what):
    """(shape, dtype) of a ``.npy`` file, read from its header alone."""
    with open_input(path, f" ({what}). Pass its location, or --no-features to import interactions only.") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                return None
            shape, _, dtype = read[version](f)
        except (ValueError, OSError, EOFError) as err:
            raise PrepError(f"{path} ({what}) is not a .npy file ({err}): save the matrix with numpy.save.") from None
    return shape, dtype


def open_feature_matrix(path, what):
    """A 2-D numeric feature matrix from a ``.npy`` file, memory-mapped; never unpickled."""
    path = Path(path)
    header = npy_header(path, what)
    if header is not None:
        check_feature_dtype(path, what, *header)
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise PrepError(f"{path} ({what}) cannot be read as a .npy matrix ({err}): save it again with "
                        "numpy.save.") from None
    check_feature_dtype(path, what, matrix.shape, matrix.dtype)
    return matrix


def check_feature_dtype(path, what, shape, dtype):
    """A PrepError unless ``dtype`` is numeric and ``shape`` two-dimensional with at least one column."""
    if dtype.hasobject or dtype.kind not in NUMERIC_KINDS:
        raise PrepError(f"{path} ({what}) holds dtype {dtype}, not numbers (it is never unpickled): save it as "
                        "floats, e.g. numpy.save(path, numpy.asarray(matrix, dtype=numpy.float32)).")
    if len(shape) != 2 or shape[1] == 0:
        raise PrepError(f"{path} ({what}) has shape {tuple(shape)}: a feature file is a 2-D matrix, one row per "
                        "item and at least one column.")


def load_feature_rows(path, n_rows, what):
    """Open a feature matrix whose row r belongs to item id r, checking its shape."""
    path = Path(path)
    matrix = open_feature_matrix(path, what)
    if matrix.shape[0] != n_rows:
        raise PrepError(
            f"{path} has shape {matrix.shape}, but the interactions use {n_rows} item ids: row r must be "
            f"item r. Is it the feature file of this dataset?"
        )
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise PrepError(f"{path} has NaN or infinite values in rows {bad[:10].tolist()}; fix them before importing.")
    return matrix
