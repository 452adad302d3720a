"""Reference scorers (popularity, random) and the dot-product scorer every embedding model reuses."""

from __future__ import annotations

import numpy as np
import torch

from peel.data.interactions import Interactions


class PopularityScorer:
    """Scores every item by its training popularity: the floor every method must beat."""

    def __init__(self, data: Interactions) -> None:
        self.popularity = torch.as_tensor(data.popularity("train" if data.is_split else None), dtype=torch.float32)

    def __call__(self, users: np.ndarray) -> torch.Tensor:
        return self.popularity.expand(len(users), -1).clone()


class RandomScorer:
    """A random but reproducible score per (user, item): a hash, so chunking does not change it."""

    def __init__(self, n_items: int, seed: int = 0) -> None:
        self.n_items = n_items
        self.seed = seed

    def __call__(self, users: np.ndarray) -> torch.Tensor:
        key = torch.as_tensor(np.asarray(users, dtype=np.int64))[:, None] * self.n_items + torch.arange(self.n_items)
        return _hash_uniform(key ^ (self.seed * 0x9E3779B1 + 0x7F4A7C15))


def _hash_uniform(x: torch.Tensor) -> torch.Tensor:
    """A 64-bit mixing hash (splitmix64 finaliser, wrapping int64) mapped to floats in [0, 1)."""
    x = x * -7046029254386353131  # 0x9E3779B97F4A7C15 as signed int64
    x = x ^ (x >> 30) & 0x3FFFFFFFF
    x = x * -4658895280553007687  # 0xBF58476D1CE4E5B9
    x = x ^ (x >> 27) & 0x1FFFFFFFFF
    x = x * -7723592293110705685  # 0x94D049BB133111EB
    return ((x >> 40) & 0xFFFFFF).float() / float(1 << 24)


class DotProductScorer:
    """score(u, j) = <user_vectors[u], item_vectors[j]>, as one matmul per chunk of users."""

    def __init__(self, user_vectors: np.ndarray | torch.Tensor, item_vectors: np.ndarray | torch.Tensor) -> None:
        self.user_vectors = torch.as_tensor(user_vectors, dtype=torch.float32)
        self.item_vectors = torch.as_tensor(item_vectors, dtype=torch.float32)
        if self.user_vectors.shape[1] != self.item_vectors.shape[1]:
            raise ValueError(f"user vectors have {self.user_vectors.shape[1]} dims, item vectors "
                             f"{self.item_vectors.shape[1]}")

    def __call__(self, users: np.ndarray) -> torch.Tensor:
        return self.user_vectors[torch.as_tensor(np.asarray(users, dtype=np.int64))] @ self.item_vectors.T


def pure_svd_scorer(data: Interactions, dim: int = 64, seed: int = 0) -> DotProductScorer:
    """PureSVD: a truncated SVD of the training matrix as a dot-product model (fit in seconds).

    Used as a quick learned reference, e.g. to show that a dataset carries structure beyond
    popularity; the trained models of later stages use the same DotProductScorer.
    """
    from scipy.sparse.linalg import svds

    matrix = data.csr("train" if data.is_split else None).astype(np.float64)
    dim = min(dim, min(matrix.shape) - 1)
    rng = np.random.default_rng(seed)
    u, s, vt = svds(matrix, k=dim, v0=rng.random(min(matrix.shape)))
    return DotProductScorer((u * s).astype(np.float32), vt.T.astype(np.float32))
