"""Ranking metrics from a hit matrix: Recall@K, NDCG@K and the paper's legacy NDCG@K.

``hits[u, r]`` is True when the item ranked r-th (0-based) for user u is one of u's target items;
``n_targets[u]`` is how many target items u has. Everything is vectorized over users.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LEGACY_DEPTH = 100  # the NGCF / LightGCN code ranks the top 100 (max of its Ks) and builds iDCG from it


def discounts(length: int) -> np.ndarray:
    """1 / log2(rank + 2) for ranks 0..length-1."""
    return 1.0 / np.log2(np.arange(length, dtype=np.float64) + 2.0)


def ranking_metrics(
    hits: np.ndarray, n_targets: np.ndarray, ks: Sequence[int], *, legacy_depth: int | None = LEGACY_DEPTH
) -> dict[str, np.ndarray]:
    """Per-user ``recall@K``, ``ndcg@K`` and (if ``legacy_depth``) ``ndcg_legacy@K`` for each K.

    Recall@K = hits in the top K / |targets| (not capped at K). NDCG@K uses binary relevance and the
    ideal DCG over min(|targets|, K). The legacy NDCG of the NGCF code builds its ideal DCG only from
    the hits found in the top ``legacy_depth``, so it is at least the standard value.
    """
    hits = np.asarray(hits, dtype=bool)
    n_targets = np.asarray(n_targets, dtype=np.int64)
    if hits.ndim != 2 or len(n_targets) != hits.shape[0]:
        raise ValueError(f"hits must be (users, ranks) and n_targets (users,), got {hits.shape} and {n_targets.shape}")
    if np.any(n_targets <= 0):
        raise ValueError("every evaluated user needs at least one target item")
    need = max(max(ks), legacy_depth or 0)
    if hits.shape[1] < need:
        raise ValueError(f"hits has {hits.shape[1]} ranks, metrics need {need}")
    disc = discounts(hits.shape[1])
    ideal = np.concatenate([[0.0], np.cumsum(disc)])  # ideal[m] = DCG of m hits at the top
    gains = hits * disc
    out: dict[str, np.ndarray] = {}
    legacy_hits = hits[:, :legacy_depth].sum(axis=1) if legacy_depth else None
    for k in ks:
        found = hits[:, :k].sum(axis=1)
        dcg = gains[:, :k].sum(axis=1)
        out[f"recall@{k}"] = found / n_targets
        out[f"ndcg@{k}"] = dcg / ideal[np.minimum(n_targets, k)]
        if legacy_hits is not None:
            # hits in the top max(depth, K): for K > depth the NGCF list is K long (else legacy NDCG > 1)
            legacy_ideal = ideal[np.minimum(np.maximum(legacy_hits, found), k)]
            out[f"ndcg_legacy@{k}"] = np.divide(dcg, legacy_ideal, out=np.zeros_like(dcg), where=legacy_ideal > 0)
    return out
