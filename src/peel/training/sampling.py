"""Vectorized BPR triple sampling: no Python loop per sample."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from peel.errors import DataError

if TYPE_CHECKING:
    from peel.data import Interactions

REDRAWS = 10  # rejection rounds (each over the still-colliding rows only) before the exact draw


def check_negatives(data: Interactions, splits: tuple[str, ...] = ("train", "valid")) -> None:
    """Refuse a user who has every item in ``splits`` (what negatives avoid): BPR has no negative for them."""
    degree = np.bincount(data.user[data.rows(splits if data.is_split else None)], minlength=data.n_users)
    full = np.flatnonzero(degree >= data.n_items)
    if len(full):
        raise DataError(f"user {data.user_ids[full[0]]!r} (and {len(full) - 1} more) has interacted with every one "
                        f"of the {data.n_items} items in {'+'.join(splits)}: there is no negative item to train "
                        "with; remove such users (or add items)")


class TripleSampler:
    """(user, positive, negative) triples over the interactions of a binary CSR matrix.

    Negatives avoid every item of the user in ``exclude`` (default: the matrix itself). One epoch =
    every interaction once, shuffled; negatives are uniform over the items the user does not have: a few
    rounds of vectorized rejection (redraw only the collisions), then an exact draw by rank for the rows
    still colliding, so it cannot fail. A user of the matrix without a non-interacted item is refused.
    """

    def __init__(self, matrix: sp.csr_matrix, exclude: sp.csr_matrix | None = None) -> None:
        coo = matrix.tocoo()
        self.users = coo.row.astype(np.int64)
        self.positives = coo.col.astype(np.int64)
        self.n_items = matrix.shape[1]
        seen = (exclude if exclude is not None else matrix).tocoo()  # items a negative must avoid
        keys = np.sort(seen.row.astype(np.int64) * self.n_items + seen.col)
        self._keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys  # sorted, distinct
        full = np.bincount(self._keys // self.n_items, minlength=matrix.shape[0])[self.users] >= self.n_items
        if full.any():
            raise DataError(f"user {self.users[np.argmax(full)]} (internal index) has interacted with every one "
                            f"of the {self.n_items} items: there is no negative item to sample")
        self._ranks: np.ndarray | None = None  # built on the first exact draw

    def __len__(self) -> int:
        return len(self.users)

    def _clashes(self, users: np.ndarray, negatives: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + negatives
        pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return self._keys[pos] == keys

    def negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One negative per row of ``users``, uniform over the items that user does not have."""
        negatives = rng.integers(self.n_items, size=len(users))
        if not len(self._keys):
            return negatives
        rows = np.arange(len(users))
        for _ in range(REDRAWS):
            rows = rows[self._clashes(users[rows], negatives[rows])]
            if not len(rows):
                return negatives
            negatives[rows] = rng.integers(self.n_items, size=len(rows))
        rows = rows[self._clashes(users[rows], negatives[rows])]
        if len(rows):
            start, stop = (np.searchsorted(self._keys, users[rows] * self.n_items + e) for e in (0, self.n_items))
            ranks = rng.integers(self.n_items - (stop - start))  # uniform in [0, non-interacted items)
            negatives[rows] = self.nth_negative(users[rows], ranks)
        return negatives

    def nth_negative(self, users: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        """The ``ranks[i]``-th (from 0) item that ``users[i]`` does not have, vectorized.

        With the user's sorted positives p_0 < p_1 < ..., q_j = p_j - j counts the non-positives below p_j;
        the r-th non-positive is r + #{j : q_j <= r}, found by one searchsorted over (user, q) keys.
        """
        if self._ranks is None:
            users_of_key = self._keys // self.n_items
            first = np.searchsorted(self._keys, users_of_key * self.n_items)
            q = self._keys % self.n_items - (np.arange(len(self._keys)) - first)
            self._ranks = users_of_key * (self.n_items + 1) + q  # sorted: q is non-decreasing per user
        users, ranks = np.asarray(users, dtype=np.int64), np.asarray(ranks, dtype=np.int64)
        base = users * (self.n_items + 1)
        below = np.searchsorted(self._ranks, base + ranks, side="right") - np.searchsorted(self._ranks, base)
        return ranks + below

    def epoch(self, rng: np.random.Generator, batch_size: int):
        """Yield (users, positives, negatives) numpy batches covering every interaction once."""
        order = rng.permutation(len(self.users))
        users, positives = self.users[order], self.positives[order]
        negatives = self.negatives(users, rng)
        for start in range(0, len(order), batch_size):
            stop = start + batch_size
            yield users[start:stop], positives[start:stop], negatives[start:stop]

    def sample(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``size`` triples drawn with replacement (e.g. validation batches)."""
        index = rng.integers(len(self.users), size=size)
        users = self.users[index]
        return users, self.positives[index], self.negatives(users, rng)
