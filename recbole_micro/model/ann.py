"""Approximate kNN item graphs with faiss, for catalogues where exact kNN's N^2 time is too long.

Exact chunked kNN (:func:`~recbole_micro.model.layers.knn_graph`) costs N^2 * d multiply-adds
(timings in docs/performance.md). faiss finds the
neighbours approximately in about N log N; the similarity values of the chosen pairs are then
computed exactly in torch, so the graph weights (and their gradients, for the learned graphs)
are the same as exact kNN's wherever the same neighbours are found. Off by default
(``knn_backend: exact``); recall against exact kNN is measured by ``benchmarks/scale.py --ann``.
"""
import numpy as np
import torch
import torch.nn.functional as F

from recbole_micro.model.layers import NORM_EPS, SparseGraph, chunk_rows

FAISS_HINT = "pip install 'faiss-cpu<1.9' (1.9+ needs numpy 2), or set knn_backend: exact"


def import_faiss():
    try:
        import faiss
    except ImportError as err:
        raise ImportError(f"knn_backend: faiss needs the faiss package, which is not installed: {FAISS_HINT}.") from err
    return faiss


def index_settings(n_items, factory=None, params=None):
    """The faiss index_factory string and search parameters to use for ``n_items`` items.

    The given ones; without a factory, an inverted-file index with about 4 sqrt(N) lists,
    searched in 16 of them unless ``params`` says otherwise.
    """
    if factory:
        return factory, params
    return f"IVF{max(1, int(4 * n_items ** 0.5))},Flat", params or "nprobe=16"


def faiss_knn_graph(feat, k, factory=None, params=None, chunk_size=None):
    """Approximate cosine kNN graph: the same contract as ``knn_graph`` (Eqs. 1-2).

    Args:
        feat (torch.Tensor): (N, d) item features; row 0 is PAD (no edges, nobody's neighbour).
        k (int): neighbours per item.
        factory (str): faiss ``index_factory`` string of an inner-product index ("HNSW32",
            "IVF1024,Flat", ...; "Flat" is exact). Empty: see :func:`index_settings`.
        params (str): faiss search parameters ("nprobe=32", "efSearch=128", ...); empty:
            the automatic index's "nprobe=16", or the index's defaults.
        chunk_size (int): rows per block when computing the kept similarities.

    Returns:
        SparseGraph: (N, k) neighbours and their cosine similarities (negatives -> 0).
    """
    faiss = import_faiss()
    n, dim = feat.shape
    factory, params = index_settings(n - 1, factory, params)
    k = min(k, n - 1)
    unit = F.normalize(feat, p=2, dim=1, eps=NORM_EPS)
    data = np.ascontiguousarray(unit.detach().cpu().numpy(), dtype=np.float32)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(data[1:])
    index.add(data[1:])  # PAD left out: faiss id j is item j + 1
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)
    _, ids = index.search(data, k)
    idx = torch.from_numpy(ids + 1).to(feat.device)  # -1 (fewer than k found) becomes PAD's 0
    idx[0] = 0
    found = idx > 0
    step = chunk_rows(n, k * dim, chunk_size)
    val = torch.cat([
        (unit[start:start + step].unsqueeze(1) * unit[idx[start:start + step]]).sum(-1)  # Eq. 1 on kept pairs
        for start in range(0, n, step)
    ])
    val = torch.where(found, val.clamp(min=0), torch.zeros_like(val))
    return SparseGraph(idx, val)
