"""The normalized user-item graph of LightGCN (Eq. 1) as a torch sparse CSR matrix."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def normalized_adjacency(train: sp.csr_matrix) -> torch.Tensor:
    """D^-1/2 [[0, R], [R^T, 0]] D^-1/2 over users then items, as a CSR tensor."""
    n_users, n_items = train.shape
    r = sp.csr_matrix(train, dtype=np.float32)
    a = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    degree = np.asarray(a.sum(axis=1)).ravel()
    inv_sqrt = np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)
    a = sp.diags(inv_sqrt) @ a @ sp.diags(inv_sqrt)
    a = sp.csr_matrix(a, dtype=np.float32)
    a.sort_indices()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the ops used here are stable
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(a.indptr.astype(np.int64)), torch.from_numpy(a.indices.astype(np.int64)),
            torch.from_numpy(a.data), size=a.shape, check_invariants=False,
        )


class SymmetricSparseMatmul(torch.autograd.Function):
    """A @ X for a symmetric sparse CSR A; the backward is A @ grad (CSR both ways, no transpose)."""

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adjacency = adjacency
        return _spmm(adjacency, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, _spmm(ctx.adjacency, grad)


def _spmm(adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # addmm with beta = 0 into uninitialized memory: ``adjacency @ x`` zero-fills its output and copies it
    # once more, two extra passes over a (nodes x D) array, about a third of the product's time on CPU
    return torch.addmm(x.new_empty((adjacency.shape[0], x.shape[1])), adjacency, x, beta=0)


def propagate(adjacency: torch.Tensor, ego: torch.Tensor, layers: int, combination: str) -> torch.Tensor:
    """LightGCN propagation: layers 0..L combined by mean (LightGCN) or the last layer (paper's text)."""
    x, total = ego, ego
    for _ in range(layers):
        x = SymmetricSparseMatmul.apply(adjacency, x)
        total = total + x  # a running sum: no (L+1) x nodes x D stack to build and differentiate
    if combination == "last" or layers == 0:
        return x
    return total / (layers + 1)
