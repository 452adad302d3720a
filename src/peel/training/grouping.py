"""Item groups by training popularity (paper §IV-A) and user groups by K-Means (Eq. 3)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from peel.errors import ConfigError

log = logging.getLogger("peel")


def item_groups(popularity: np.ndarray, n_groups: int, mode: str = "popularity", seed: int = 0) -> np.ndarray:
    """Item group of every item: equal-size groups (sizes differ by at most one).

    'popularity': sorted by training interactions (descending, ties by id), group 0 most popular.
    'random': a seeded random permutation (the 'no PopSeg' ablation).
    """
    n_items = len(popularity)
    if not 1 <= n_groups <= n_items:
        raise ConfigError(f"item_groups = {n_groups} must lie in [1, {n_items}] (the item count)")
    if mode == "popularity":
        order = np.lexsort((np.arange(n_items), -np.asarray(popularity)))
    elif mode == "random":
        order = np.random.default_rng(seed).permutation(n_items)
    else:
        raise ConfigError(f"item_grouping must be popularity or random, got {mode!r}")
    groups = np.empty(n_items, dtype=np.int64)
    for g, members in enumerate(np.array_split(order, n_groups)):  # loop over G_v groups, not items
        groups[members] = g
    return groups


@dataclass
class UserGrouping:
    labels: np.ndarray      # (users,) user group of every user
    centroids: np.ndarray   # (groups, D)
    merged: list[tuple[int, int]]  # (small group, group it was merged into), original labels


def user_groups(user_vectors: np.ndarray, n_groups: int, *, mode: str = "kmeans", seed: int = 0, n_init: int = 4,
                valid_users: np.ndarray | None = None, min_valid_users: int = 2) -> UserGrouping:
    """K-Means on the pretrained user vectors; groups with too few validation users are merged.

    ``valid_users`` is a boolean mask of users with validation interactions. Labels are renumbered
    0..G-1 after merging. 'single' puts everyone in one group (the 'no user clustering' ablation).
    """
    n_users = len(user_vectors)
    if mode == "single" or n_groups == 1:
        return UserGrouping(np.zeros(n_users, dtype=np.int64), user_vectors.mean(axis=0, keepdims=True), [])
    if mode != "kmeans":
        raise ConfigError(f"user_grouping must be kmeans or single, got {mode!r}")
    if n_groups > n_users:
        raise ConfigError(f"user_groups = {n_groups} exceeds the user count {n_users}")
    from sklearn.cluster import KMeans

    kmeans = KMeans(n_clusters=n_groups, n_init=n_init, random_state=seed).fit(user_vectors)
    labels, centroids = kmeans.labels_.astype(np.int64), kmeans.cluster_centers_
    merged: list[tuple[int, int]] = []
    if valid_users is not None:
        alive = np.ones(n_groups, dtype=bool)
        while True:
            counts = np.bincount(labels[valid_users], minlength=n_groups)
            small = np.flatnonzero(alive & (counts < min_valid_users))
            if not len(small) or alive.sum() == 1:
                break
            g = int(small[0])
            alive[g] = False
            distance = np.linalg.norm(centroids - centroids[g], axis=1)
            distance[~alive] = np.inf
            target = int(np.argmin(distance))
            labels[labels == g] = target
            merged.append((g, target))
            log.warning("user group %d has %d validation users; merged into group %d", g, counts[g], target)
        keep = np.flatnonzero(alive)
        remap = np.full(n_groups, -1)
        remap[keep] = np.arange(len(keep))
        labels, centroids = remap[labels], centroids[keep]
    return UserGrouping(labels, centroids, merged)
