"""User and item embeddings of a trained model, exported for an inner-product search (numpy, faiss)."""
from pathlib import Path

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_micro.errors import ServeError
from recbole_micro.files import write_feature_files
from recbole_micro.serve.recommend import Recommender


def model_embeddings(model, users_for_check):
    """(U, d) user and (N, d) item vectors with ``user @ item.T == full_sort_predict``, checked on some users.

    Ours define ``export_embeddings()``; RecBole's graph models cache ``restore_user_e`` /
    ``restore_item_e`` in ``full_sort_predict``, and its MF-like models score with their
    ``user_embedding`` / ``item_embedding`` tables. Whatever is found must reproduce the scores
    of ``users_for_check``, or the model is refused (its scores are not an inner product).
    """
    users = torch.as_tensor(users_for_check, dtype=torch.long, device=next(model.parameters()).device)
    with torch.no_grad():
        uid_field = model.USER_ID
        scores = model.full_sort_predict(Interaction({uid_field: users})).view(len(users), -1)
        if hasattr(model, "export_embeddings"):
            user_e, item_e = model.export_embeddings()
        elif getattr(model, "restore_user_e", None) is not None and getattr(model, "restore_item_e", None) is not None:
            user_e, item_e = model.restore_user_e, model.restore_item_e
        elif hasattr(model, "user_embedding") and hasattr(model, "item_embedding"):
            user_e, item_e = model.user_embedding.weight, model.item_embedding.weight
        else:
            raise ServeError(f"{type(model).__name__} has no user and item embeddings to export.")
        user_e, item_e = user_e.detach().float(), item_e.detach().float()
        if not torch.allclose(user_e[users] @ item_e.t(), scores.float(), rtol=1e-4, atol=1e-5):
            raise ServeError(f"{type(model).__name__}'s scores are not the inner products of its embeddings; "
                             "there is nothing faithful to export for an inner-product search.")
    return user_e.cpu().numpy(), item_e.cpu().numpy()


def export_embeddings(model_file, out_dir, with_faiss=False, trust_checkpoint=False, check_users=64):
    """Write ``<dataset>.user.npy/.tokens`` and ``<dataset>.item.npy/.tokens`` (and ``<dataset>.item.faiss``).

    Rows are in token order (the padding row 0 left out), in the feature files' own format.
    The faiss index is an exact inner-product index (``IndexFlatIP``) of the items.

    Returns:
        dict: the written paths.
    """

    recommender = Recommender.load(model_file, exclude=(), trust_checkpoint=trust_checkpoint)
    dataset = recommender.dataset
    rng = np.random.default_rng(0)
    sample = rng.choice(np.arange(1, dataset.user_num), size=min(check_users, dataset.user_num - 1), replace=False)
    user_e, item_e = model_embeddings(recommender.model, sample)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = recommender.config["dataset"]
    written = {}
    for side, field, matrix in (("user", dataset.uid_field, user_e), ("item", dataset.iid_field, item_e)):
        tokens = list(dataset.field2id_token[field][1:])
        npy, tok = out_dir / f"{name}.{side}.npy", out_dir / f"{name}.{side}.tokens"
        write_feature_files(npy, tok, tokens, matrix[1:])
        written[side] = (npy, tok)
    if with_faiss:
        from recbole_micro.files import write_atomically
        from recbole_micro.model.ann import import_faiss

        try:
            faiss = import_faiss()
        except ImportError as err:
            raise ServeError(str(err).replace("knn_backend: faiss", "--faiss")) from None
        index = faiss.IndexFlatIP(item_e.shape[1])
        index.add(np.ascontiguousarray(item_e[1:], dtype=np.float32))
        path = out_dir / f"{name}.item.faiss"
        write_atomically(path, lambda tmp: faiss.write_index(index, str(tmp)))
        written["faiss"] = path
    return written
