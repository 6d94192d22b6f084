"""On-disk cache of the initial kNN item graphs built from raw features.

Building S~^m costs N^2 * d multiply-adds (timings in docs/performance.md) and gives the same
graph in every run on the same features. The
cache file is named by a hash of the feature values, the graph's settings and a version of
the graph code, so a changed feature file or ``knn_k`` can never be served a stale graph.
"""
import hashlib
from logging import getLogger
from pathlib import Path

import torch

from recbole_micro.files import write_atomically
from recbole_micro.model.layers import SparseGraph

# Bump when the graph construction changes (kNN rule, normalisation): old files are then ignored.
GRAPH_CODE_VERSION = 1


def graph_key(feat, **settings):
    """Hex digest of the features' dtype, shape and values and of ``settings``."""
    digest = hashlib.blake2b(digest_size=16)
    array = feat.detach().cpu().contiguous().numpy()
    digest.update(f"v{GRAPH_CODE_VERSION}|{array.dtype}|{array.shape}|{sorted(settings.items())}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def cached_graph(cache_dir, name, feat, build, write=True, **settings):
    """The graph ``build(feat)`` for these features and settings, from ``cache_dir`` when there.

    Args:
        cache_dir (str or None): folder of the cache files; None or empty builds every time.
        name (str): readable prefix of the file name (dataset and modality).
        feat (torch.Tensor): the features the graph is built from (hashed).
        build (callable): feat -> SparseGraph, called on a miss.
        write (bool): write the graph on a miss (False in all but the first process of a run).
        **settings: everything else the graph depends on (knn_k, ...).

    Returns:
        SparseGraph: on the device of ``feat``.
    """
    if not cache_dir:
        return build(feat)
    path = Path(cache_dir) / f"{name}-{graph_key(feat, **settings)}.pt"
    logger = getLogger()
    if path.is_file():
        try:
            idx, val = torch.load(path, map_location=feat.device, weights_only=True)
            if idx.shape[0] == feat.shape[0]:
                logger.info(f"Initial item graph {name} read from {path}")
                return SparseGraph(idx, val)
        except Exception as err:  # a truncated or foreign file: rebuild and overwrite it
            logger.warning(f"Ignoring unreadable graph cache file {path} ({err}); rebuilding it.")
    graph = build(feat)
    if not write:
        return graph
    path.parent.mkdir(parents=True, exist_ok=True)
    # a parallel run never reads a half-written file, and a failed write leaves none behind
    write_atomically(path, lambda tmp: torch.save((graph.idx.cpu(), graph.val.cpu()), tmp))
    return graph
