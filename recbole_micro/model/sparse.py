"""Sparse operators shared by the models: constant CSR matrices with a stored transpose, scipy conversions, adjacencies.

The backbones' user-item adjacency, MICRO's user-item mean (Eq. 16), MMGCN's graphs
and the detached item graphs are all constant during a batch; :class:`FixedSparse` multiplies by
them in CSR form and keeps the transpose for the backward pass.
"""
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch


class FixedSparse(NamedTuple):
    """A constant sparse matrix in CSR form, with its transpose for the backward pass.

    CSR products are several times faster than COO ones on CPU, but autograd through a CSR
    product transposes the matrix on every backward pass; keeping the transpose avoids that.
    ``matrix_t`` is None when no gradient will be needed, and ``matrix`` itself when the
    matrix is symmetric.
    """

    matrix: torch.Tensor
    matrix_t: torch.Tensor = None

    @classmethod
    def from_coo(cls, coo, symmetric=False, with_transpose=True):
        coo = coo.detach().coalesce()
        matrix = coo.to_sparse_csr()
        if not with_transpose:
            return cls(matrix)
        return cls(matrix, matrix if symmetric else coo.t().coalesce().to_sparse_csr())

    def mm(self, dense):
        """matrix @ dense in float32 (see :func:`sparse_mm`), differentiable in ``dense``."""
        if self.matrix_t is None or not dense.requires_grad:
            return sparse_mm(self.matrix, dense)
        return _FixedSparseMatmul.apply(self.matrix, self.matrix_t, dense)


def sparse_mm(matrix, dense):
    """``matrix @ dense`` for a sparse ``matrix``, in float32, also inside an autocast region.

    torch has no bfloat16 or float16 kernels for sparse products (CSR or COO) on CPU, and under
    mixed precision the dense operand often arrives in low precision: it is cast up, and the
    product runs in float32 with autocast off.
    """
    with torch.autocast(device_type=dense.device.type, enabled=False):
        dense = at_least_float32(dense)
        matrix = matrix if matrix.dtype == dense.dtype else matrix.to(dense.dtype)
        return torch.sparse.mm(matrix, dense)


def at_least_float32(x):
    """``x`` in float32 if it is in a lower precision (bfloat16, float16), else as it is."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


class _FixedSparseMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix, matrix_t, dense):
        ctx.matrix_t = matrix_t
        return sparse_mm(matrix, dense)

    @staticmethod
    def backward(ctx, grad):
        return None, None, sparse_mm(ctx.matrix_t, grad)


def bipartite_adjacency(inter_matrix, n_users, n_items):
    """Binary bipartite adjacency [[0, R], [R^T, 0]] over users then items, scipy CSR.

    A (user, item) pair that occurs several times in the interactions is one edge of weight 1,
    as in RecBole's own LightGCN.
    """
    r = sp.csr_matrix(inter_matrix, dtype=np.float32)  # duplicate pairs are summed here ...
    r.data[:] = 1.0  # ... and then count once
    n = n_users + n_items
    a = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    a.resize((n, n))
    return a


def row_normalized(matrix):
    """D^-1 M (each row averages its entries, taken as 1) as a torch sparse COO tensor.

    Rows without entries stay zero.
    """
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.data[:] = 1.0
    counts = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    return scipy_to_torch(sp.diags(scale) @ matrix)


def scipy_to_torch(matrix):
    """A scipy sparse matrix as a coalesced float32 torch sparse COO tensor."""
    coo = sp.coo_matrix(matrix, dtype=np.float32)
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data), coo.shape, check_invariants=False).coalesce()
