"""`Interactions`: the one data type every loader returns and every stage consumes.

A set of (user, item) pairs over contiguous internal ids, with the maps back to the raw ids and,
once split, a per-row split label (train / valid / test). Every removal (duplicates, rating filter,
k-core, cold items) is recorded in ``report`` so nothing disappears silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from peel.errors import DataError

SPLITS = ("train", "valid", "test")
SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}
DEFAULT_SPLIT_SEED = 2023
DEFAULT_RATIOS = (0.7, 0.1, 0.2)


def split_codes(splits: str | Iterable[str]) -> list[int]:
    """Codes of one split name or several, with a clear error for an unknown name."""
    names = [splits] if isinstance(splits, str) else list(splits)
    unknown = [s for s in names if s not in SPLIT_CODES]
    if unknown:
        raise DataError(f"unknown split {unknown[0]!r}; expected one of {', '.join(SPLITS)}")
    return [SPLIT_CODES[s] for s in names]


@dataclass(frozen=True, eq=False)
class Interactions:
    """Implicit-feedback interactions with contiguous internal ids.

    ``user[i], item[i]`` is one interaction; ``user_ids[u]`` / ``item_ids[j]`` are the raw ids of
    internal user ``u`` / item ``j``; ``split[i]`` is 0/1/2 (train/valid/test) or the whole array is
    None before splitting. ``report`` lists what was removed or filtered on the way, in order.
    """

    user: np.ndarray
    item: np.ndarray
    n_users: int
    n_items: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    split: np.ndarray | None = None
    timestamp: np.ndarray | None = None
    report: tuple[dict[str, Any], ...] = ()
    name: str = ""
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.user)
        if len(self.item) != n:
            raise DataError(f"user and item arrays differ in length ({n} vs {len(self.item)})")
        for label, arr in (("split", self.split), ("timestamp", self.timestamp)):
            if arr is not None and len(arr) != n:
                raise DataError(f"{label} array has {len(arr)} rows, expected {n}")
        if len(self.user_ids) != self.n_users or len(self.item_ids) != self.n_items:
            raise DataError("raw id maps do not match n_users / n_items")
        if n and (self.user.min() < 0 or self.user.max() >= self.n_users):
            raise DataError(f"user ids must lie in [0, {self.n_users})")
        if n and (self.item.min() < 0 or self.item.max() >= self.n_items):
            raise DataError(f"item ids must lie in [0, {self.n_items})")

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_raw(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        *,
        timestamp: np.ndarray | None = None,
        split: np.ndarray | None = None,
        report: Sequence[dict[str, Any]] = (),
        name: str = "",
    ) -> Interactions:
        """Map raw ids (ints or strings) to contiguous internal ids (sorted raw order) and dedupe."""
        users, items = np.asarray(users), np.asarray(items)
        if len(users) == 0:
            raise DataError(f"{name or 'input'}: no interactions")
        user_ids, user = np.unique(users, return_inverse=True)
        item_ids, item = np.unique(items, return_inverse=True)
        return cls.from_internal(
            user.astype(np.int32), item.astype(np.int32),
            n_users=len(user_ids), n_items=len(item_ids), user_ids=user_ids, item_ids=item_ids,
            timestamp=timestamp, split=split, report=report, name=name,
        )

    @classmethod
    def from_internal(
        cls,
        user: np.ndarray,
        item: np.ndarray,
        *,
        n_users: int,
        n_items: int,
        user_ids: np.ndarray | None = None,
        item_ids: np.ndarray | None = None,
        timestamp: np.ndarray | None = None,
        split: np.ndarray | None = None,
        report: Sequence[dict[str, Any]] = (),
        name: str = "",
    ) -> Interactions:
        """Build from internal ids: removes duplicate pairs (counted, first occurrence kept; with
        a split, the earliest split wins) and sorts rows by (user, item)."""
        user = np.asarray(user, dtype=np.int32)
        item = np.asarray(item, dtype=np.int32)
        # check lengths before indexing: a longer split/timestamp would otherwise be cut silently
        for label, arr in (("item", item), ("split", split), ("timestamp", timestamp)):
            if arr is not None and len(arr) != len(user):
                raise DataError(f"user and {label} arrays differ in length ({len(user)} vs {len(arr)})")
        key = user.astype(np.int64) * n_items + item
        if split is not None:
            split = np.asarray(split, dtype=np.int8)
            # earliest split first, so a pair in train and test stays in train
            order = np.lexsort((split, key))
        else:
            order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        keep = np.ones(len(order), dtype=bool)
        keep[1:] = sorted_key[1:] != sorted_key[:-1]
        rows = order[keep]
        report = list(report)
        removed = int(len(order) - len(rows))
        if removed:
            report.append({"step": "duplicates", "removed_interactions": removed})
        return cls(
            user=user[rows], item=item[rows], n_users=int(n_users), n_items=int(n_items),
            user_ids=np.arange(n_users) if user_ids is None else np.asarray(user_ids),
            item_ids=np.arange(n_items) if item_ids is None else np.asarray(item_ids),
            split=None if split is None else split[rows],
            timestamp=None if timestamp is None else np.asarray(timestamp)[rows],
            report=tuple(report), name=name,
        )

    # ----------------------------------------------------------------- views
    def __len__(self) -> int:
        return len(self.user)

    @property
    def is_split(self) -> bool:
        return self.split is not None

    def rows(self, splits: str | Iterable[str] | None = None) -> np.ndarray:
        """Boolean mask of the rows in the given split(s); all rows if None."""
        if splits is None:
            return np.ones(len(self), dtype=bool)
        if self.split is None:
            raise DataError("these interactions are not split yet; call .split_random() or load a pre-split directory")
        return np.isin(self.split, split_codes(splits))

    def count(self, splits: str | Iterable[str] | None = None) -> int:
        return int(self.rows(splits).sum())

    def csr(self, splits: str | Iterable[str] | None = None) -> sp.csr_matrix:
        """Binary users x items CSR matrix of the given split(s) (cached)."""
        key = ("csr", None if splits is None else tuple(sorted(split_codes(splits))))
        if key not in self._cache:
            mask = self.rows(splits)
            u, i = self.user[mask], self.item[mask]
            matrix = sp.csr_matrix(
                (np.ones(len(u), dtype=np.float32), (u, i)), shape=(self.n_users, self.n_items)
            )
            matrix.sort_indices()
            self._cache[key] = matrix
        return self._cache[key]

    def popularity(self, splits: str | Iterable[str] | None = "train") -> np.ndarray:
        """Interactions per item in the given split(s) (training by default, when split)."""
        if self.split is None:
            splits = None
        return np.bincount(self.item[self.rows(splits)], minlength=self.n_items)

    def user_degree(self, splits: str | Iterable[str] | None = None) -> np.ndarray:
        return np.bincount(self.user[self.rows(splits)], minlength=self.n_users)

    def cold_items(self) -> np.ndarray:
        """Items that occur in valid/test but never in train."""
        if self.split is None:
            return np.zeros(0, dtype=np.int64)
        in_eval = np.bincount(self.item[self.split > 0], minlength=self.n_items) > 0
        return np.flatnonzero(in_eval & (self.popularity("train") == 0))

    def replace(self, **changes: Any) -> Interactions:
        """A copy with some fields changed (and a fresh cache)."""
        changes.setdefault("_cache", {})
        return dataclasses.replace(self, **changes)

    def _subset(self, mask: np.ndarray) -> dict[str, Any]:
        return {
            "user": self.user[mask], "item": self.item[mask],
            "split": None if self.split is None else self.split[mask],
            "timestamp": None if self.timestamp is None else self.timestamp[mask],
        }

    def select_rows(self, mask: np.ndarray) -> Interactions:
        """The same id space with only the rows where ``mask`` is true."""
        return self.replace(**self._subset(mask))

    def compact(self, step: str) -> Interactions:
        """Remove users and items with no interaction left and remap ids (recorded as ``step``)."""
        user_keep = np.bincount(self.user, minlength=self.n_users) > 0
        item_keep = np.bincount(self.item, minlength=self.n_items) > 0
        removed_users = int((~user_keep).sum())
        removed_items = int((~item_keep).sum())
        if not removed_users and not removed_items:
            return self
        user_map = np.cumsum(user_keep) - 1
        item_map = np.cumsum(item_keep) - 1
        report = list(self.report)
        report.append({"step": step, "removed_users": removed_users, "removed_items": removed_items})
        return self.replace(
            user=user_map[self.user].astype(np.int32), item=item_map[self.item].astype(np.int32),
            n_users=int(user_keep.sum()), n_items=int(item_keep.sum()),
            user_ids=self.user_ids[user_keep], item_ids=self.item_ids[item_keep], report=tuple(report),
        )

    # ----------------------------------------------------------------- transforms
    def k_core(self, k: int) -> Interactions:
        """Iteratively drop users and items with fewer than ``k`` interactions until none is left."""
        if k < 1:
            raise DataError(f"k-core needs k >= 1, got {k}")
        mask = np.ones(len(self), dtype=bool)
        rounds = 0
        while True:
            rounds += 1
            u_deg = np.bincount(self.user[mask], minlength=self.n_users)
            i_deg = np.bincount(self.item[mask], minlength=self.n_items)
            bad = mask & ((u_deg[self.user] < k) | (i_deg[self.item] < k))
            if not bad.any():
                break
            mask &= ~bad
        if not mask.any():
            raise DataError(f"{self.name or 'data'}: the {k}-core is empty; lower k")
        removed = int(len(self) - mask.sum())
        out = self.select_rows(mask)
        report = list(out.report)
        report.append({"step": f"{k}-core", "removed_interactions": removed, "rounds": rounds})
        return out.replace(report=tuple(report)).compact(f"{k}-core")

    def split_random(
        self, seed: int = DEFAULT_SPLIT_SEED, ratios: tuple[float, float, float] = DEFAULT_RATIOS
    ) -> Interactions:
        """Per-user seeded random split (../shared/data/README.md).

        A user with n >= 3 interactions gives max(1, round(r_test * n)) to test and
        max(1, round(r_valid * n)) to valid (round = half to even, as Python's), the rest to train;
        users with fewer than 3 interactions go wholly to train.
        """
        if len(ratios) != 3 or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
            raise DataError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")
        degree = self.user_degree()
        n = degree[self.user]
        n_test = np.maximum(1, np.round(ratios[2] * n)).astype(np.int64)
        n_valid = np.maximum(1, np.round(ratios[1] * n)).astype(np.int64)
        rng = np.random.default_rng(seed)
        order = np.lexsort((rng.random(len(self)), self.user))
        # rank of each row among its user's rows in the random order
        first_row = np.r_[0, np.cumsum(degree)][self.user[order]]
        rank = np.empty(len(self), dtype=np.int64)
        rank[order] = np.arange(len(self)) - first_row
        split = np.zeros(len(self), dtype=np.int8)
        split[rank < n_valid + n_test] = SPLIT_CODES["valid"]
        split[rank < n_test] = SPLIT_CODES["test"]
        split[n < 3] = SPLIT_CODES["train"]
        report = list(self.report)
        small = int((degree[degree > 0] < 3).sum())
        report.append({"step": "split", "seed": seed, "ratios": list(ratios), "users_wholly_in_train": small})
        return self.replace(split=split, report=tuple(report))

    def drop_cold_items(self) -> Interactions:
        """Remove valid/test interactions of items never seen in training, then those items."""
        cold = self.cold_items()
        if not len(cold):
            return self
        mask = ~np.isin(self.item, cold)
        removed = int(len(self) - mask.sum())
        out = self.select_rows(mask)
        report = list(out.report)
        report.append({"step": "cold_items", "policy": "drop", "removed_items": int(len(cold)),
                       "removed_interactions": removed})
        return out.replace(report=tuple(report)).compact("cold_items_compact")

    # ----------------------------------------------------------------- summaries
    def stats(self) -> dict[str, Any]:
        """Counts per split, density, popularity skew and everything removed on the way."""
        from peel.data.stats import interaction_stats

        return interaction_stats(self)

    def __repr__(self) -> str:
        splits = ""
        if self.split is not None:
            splits = ", " + ", ".join(f"{s}={self.count(s)}" for s in SPLITS)
        label = f"{self.name!r}, " if self.name else ""
        return f"Interactions({label}users={self.n_users}, items={self.n_items}, interactions={len(self)}{splits})"
