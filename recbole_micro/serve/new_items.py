"""Items that were not in training, attached to a trained model through their features.

Their features are read and checked against the model (:func:`read_new_items`), then attached to
the trained item graphs by the model's own ``attach_items`` (:func:`attach_new_items`). They have no
ID embedding and no interactions, so what stands in for their CF embedding is a choice (``cf``).
"""
from pathlib import Path

import numpy as np
import torch

from recbole_micro.data.features import parse_modalities, read_feature_matrix, read_token_rows
from recbole_micro.errors import NewItemsError
from recbole_micro.model.layers import SparseGraph

NEW_ITEM_CF = ("none", "neighbours")  # what stands in for a new item's CF embedding


@torch.no_grad()
def attach_new_items(model, feature_files, known_tokens, device, cf="none"):
    """Read new items' features and attach them to ``model``'s item graphs.

    Args:
        feature_files (dict): {modality: path or {file, tokens}}, see :meth:`Recommender.add_items`.
        known_tokens (set): the item tokens the model already has (trained or added before).
        cf (str): ``none`` (no CF embedding: the score is the content part alone) or ``neighbours``
            (the trained neighbours' CF embeddings averaged along the new graph edges).

    Returns:
        tuple: (the new tokens, ``attach_items``' output with ``cf`` and ``vector``, the item side of the score).
    """
    if cf not in NEW_ITEM_CF:
        raise NewItemsError(f"cf is {cf!r}; use one of {', '.join(NEW_ITEM_CF)}.")
    if not hasattr(model, "attach_items"):
        raise NewItemsError(f"add_items covers LATTICE and MICRO; {type(model).__name__} has no item graphs "
                            "to attach new items to.")
    tokens, feats = read_new_items(model, feature_files, known_tokens, device)
    attached = model.attach_items(feats)
    attached["cf"] = attached["neighbour_cf"] if cf == "neighbours" else torch.zeros_like(attached["item"])
    attached["vector"] = attached["cf"] + attached["item"]  # the item side of the score
    return tokens, attached


def read_new_items(model, feature_files, known_tokens, device):
    """(new tokens, {modality: (n_new, d) tensor on ``device``}), checked against the model's modalities."""
    specs = {spec.name: spec for spec in parse_modalities(feature_files, Path.cwd())}
    missing, extra = set(model.modality_names) - set(specs), set(specs) - set(model.modality_names)
    if missing or extra:
        raise NewItemsError(f"New items need features for exactly the modalities the model was trained on "
                            f"({', '.join(model.modality_names)}); missing: {sorted(missing) or 'none'}, "
                            f"not trained on: {sorted(extra) or 'none'}.")
    rows, first = {}, None
    for name in model.modality_names:
        spec = specs[name]
        if spec.file is None:
            raise NewItemsError(f"New items of modality '{name}' come from a .npy file (with its .tokens), not a field.")
        matrix = read_feature_matrix(spec)
        if matrix.shape[1] != model.modality_dims[name]:
            raise NewItemsError(f"{spec.file} has {matrix.shape[1]} columns, but the model's '{name}' features "
                                f"have {model.modality_dims[name]}: new items need the trained dimension.")
        token_rows = read_token_rows(spec, matrix.shape[0])
        if first is None:
            first = (spec, list(token_rows))
        elif set(token_rows) != set(first[1]):
            odd = sorted(set(token_rows) ^ set(first[1]))[:5]
            raise NewItemsError(f"{spec.tokens} and {first[0].tokens} list other items (e.g. {odd}); "
                                "every modality needs the same new items.")
        rows[name] = (spec, matrix, token_rows)
    tokens = first[1]
    taken = [t for t in tokens if t in known_tokens]
    if taken:
        raise NewItemsError(f"{first[0].tokens} lists item token(s) {taken[:5]} that the model already has; "
                            "new items need new tokens (rename them, or drop the known ones).")
    feats = {}
    for name, (spec, matrix, token_rows) in rows.items():
        values = np.asarray(matrix[[token_rows[t] for t in tokens]], dtype=np.float32)
        if not np.isfinite(values).all():
            raise NewItemsError(f"{spec.file} holds NaN or infinite values; new items need finite features.")
        feats[name] = torch.from_numpy(values).to(device)
    return tokens, feats


def concat_attached(first, second):
    """Two ``attach_items`` outputs as one (tensors and graph rows stacked, per modality for dicts)."""
    if isinstance(first, SparseGraph):
        return SparseGraph(torch.cat([first.idx, second.idx]), torch.cat([first.val, second.val]))
    if isinstance(first, dict):
        return {key: concat_attached(first[key], second[key]) for key in first}
    return torch.cat([first, second])
