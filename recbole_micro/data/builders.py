"""Feature builders: modalities computed from a dataset's own files on first use.

A modality with ``build: <name>`` in its spec is (re)built by the builder of that name when
its files are missing or its inputs changed; each builder keeps a ``<stem>.build.json``
record of what it was built from.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from recbole_micro.errors import FeatureFileError


def _builders():
    from recbole_micro.data import ml100k

    return {
        "ml-100k-text": ml100k.build_text_features,
        "ml-100k-knowledge": ml100k.build_knowledge_features,
    }


def run_feature_builder(spec, dataset_dir, logger):
    """Bring ``spec.file`` and ``spec.tokens`` up to date with the builder ``spec.build``."""
    builders = _builders()
    if spec.build not in builders:
        raise FeatureFileError(
            f"modalities.{spec.name}.build is {spec.build!r}; known builders: {', '.join(sorted(builders))}."
        )
    builders[spec.build](Path(dataset_dir), spec.file, spec.tokens, logger=logger)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_record_path(feature_file):
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


def save_features(feature_file, token_file, tokens, matrix, record):
    """Write a feature matrix, its token list and its build record, each atomically."""
    write_feature_files(feature_file, token_file, tokens, matrix)
    write_atomically(
        build_record_path(feature_file),
        lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8"),
    )
