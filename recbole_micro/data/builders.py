"""Registry of feature builders: modalities computed from a dataset's own files on first use.

A modality with ``build: <name>`` in its spec is (re)built by the builder of that name when
its files are missing or its inputs changed; each builder keeps a ``<stem>.build.json``
record of what it was built from (see :mod:`recbole_micro.files`).
"""
from pathlib import Path

from recbole_micro.data import ml100k
from recbole_micro.errors import FeatureFileError

BUILDERS = {
    "ml-100k-text": ml100k.build_text_features,
    "ml-100k-knowledge": ml100k.build_knowledge_features,
}


def run_feature_builder(spec, dataset_dir, logger):
    """Bring ``spec.file`` and ``spec.tokens`` up to date with the builder ``spec.build``."""
    if spec.build not in BUILDERS:
        raise FeatureFileError(
            f"modalities.{spec.name}.build is {spec.build!r}; known builders: {', '.join(sorted(BUILDERS))}."
        )
    BUILDERS[spec.build](Path(dataset_dir), spec.file, spec.tokens, logger=logger)
