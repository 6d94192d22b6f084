"""File I/O shared across the package: atomic writes, content hashes, feature files and their build records.

Every file the project derives (converted datasets, computed modalities, cached item graphs) is
written to a temporary file beside its target and renamed onto it, so a crash or a parallel run
never sees half a file, and a failed write leaves nothing behind.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np


def write_atomically(path, write):
    """Call ``write(tmp_path)`` then rename onto ``path``, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def sha256_of(path):
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_feature_files(feature_file, token_file, tokens, matrix):
    """Write a float32 feature matrix and its token list (row r = ``tokens[r]``), each atomically.

    Returns:
        tuple: the matrix shape.
    """
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)

    def write_matrix(tmp):
        with open(tmp, "wb") as f:
            np.save(f, matrix)

    write_atomically(feature_file, write_matrix)
    write_atomically(token_file, lambda tmp: Path(tmp).write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8"))
    return matrix.shape


def build_record_path(feature_file):
    """``<stem>.build.json`` beside ``<stem>.npy``: what a computed modality was built from."""
    name = Path(feature_file).name
    stem = name[: -len(".npy")] if name.endswith(".npy") else name
    return Path(feature_file).with_name(stem + ".build.json")


def is_up_to_date(feature_file, token_file, record):
    """Whether the outputs exist and were built from exactly ``record`` (inputs and params)."""
    record_file = build_record_path(feature_file)
    if not (Path(feature_file).is_file() and Path(token_file).is_file() and record_file.is_file()):
        return False
    with open(record_file, encoding="utf-8") as f:
        return json.load(f) == record


def save_features(feature_file, token_file, tokens, matrix, record):
    """Write a feature matrix, its token list and its build record, each atomically."""
    write_feature_files(feature_file, token_file, tokens, matrix)
    write_atomically(
        build_record_path(feature_file),
        lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8"),
    )


def is_writer(config):
    """Whether this process writes files: the only one, or the first of a multi-process run."""
    return config["single_spec"] or config["local_rank"] == 0
