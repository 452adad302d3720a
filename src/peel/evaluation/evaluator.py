"""Full-ranking evaluation (../shared/DESIGN.md, evaluation protocol) for any scorer.

A scorer maps a batch of internal user ids to a (batch x items) score array (numpy or torch).
Users are processed in chunks so memory stays bounded; top-K selection is ``torch.topk``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from peel.data.interactions import Interactions, split_codes
from peel.errors import DataError
from peel.evaluation.metrics import LEGACY_DEPTH, ranking_metrics

Scorer = Callable[[np.ndarray], "np.ndarray | torch.Tensor"]
SCORE_CHUNK_BYTES = 256 * 2**20


def excluded_splits(split: str) -> list[str]:
    """Items a user already has when ranking for ``split``: train, plus valid when testing."""
    return {"train": [], "valid": ["train"], "test": ["train", "valid"]}[split]


def evaluation_users(data: Interactions, split: str = "test") -> np.ndarray:
    """Users with at least one target item in ``split``: the users every metric is averaged over."""
    return np.flatnonzero(np.diff(data.csr(split).indptr) > 0)


def default_chunk(n_items: int) -> int:
    """Users per chunk so one float32 score chunk stays near SCORE_CHUNK_BYTES."""
    return int(max(64, min(4096, SCORE_CHUNK_BYTES // (4 * max(n_items, 1)))))


def evaluate(
    scorer: Scorer,
    data: Interactions,
    split: str = "test",
    ks: Sequence[int] = (20, 50),
    *,
    users: np.ndarray | None = None,
    chunk_size: int | None = None,
    legacy_depth: int | None = LEGACY_DEPTH,
    per_user: bool = False,
    progress: bool = False,
    desc: str | None = None,
) -> dict[str, Any]:
    """Recall@K, NDCG@K and ndcg_legacy@K for every K in one full-ranking pass.

    Training items (and validation items, when ``split='test'``) are excluded from the ranking;
    metrics are averaged over users with at least one target item (or those of ``users`` that
    have one). With ``per_user=True`` the result also holds ``per_user``: the user ids and one
    array per metric, for significance tests.
    """
    split_codes(split)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise DataError(f"ks must be positive cut-offs, got {ks}")
    depth = max(ks[-1], legacy_depth or 0)
    if depth > data.n_items:
        raise DataError(f"cannot rank the top {depth} of only {data.n_items} items; lower ks or legacy_depth")
    targets = data.csr(split)
    excluded = data.csr(excluded_splits(split)) if excluded_splits(split) else None
    chosen = evaluation_users(data, split)
    if users is not None:
        chosen = np.intersect1d(chosen, np.asarray(users, dtype=np.int64))
    chunk_size = chunk_size or default_chunk(data.n_items)
    if chunk_size < 1:
        raise DataError(f"chunk_size must be a positive number of users, got {chunk_size}")
    names = ("recall", "ndcg", "ndcg_legacy") if legacy_depth else ("recall", "ndcg")
    parts: dict[str, list[np.ndarray]] = {f"{name}@{k}": [] for k in ks for name in names}  # keys even with no users
    starts = range(0, len(chosen), chunk_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc or f"evaluate {split}", unit="chunk", leave=False)
    for start in starts:
        batch = chosen[start:start + chunk_size]
        top = top_items(scorer, batch, data.n_items, depth, excluded)
        hits, n_targets = _hits(top, targets, batch)
        for key, values in ranking_metrics(hits, n_targets, ks, legacy_depth=legacy_depth).items():
            parts.setdefault(key, []).append(values)
    result: dict[str, Any] = {}
    per_user_values = {key: np.concatenate(v) if v else np.zeros(0) for key, v in parts.items()}
    for k in ks:
        for name in ("recall", "ndcg", "ndcg_legacy"):
            key = f"{name}@{k}"
            if key in per_user_values:
                result[key] = float(per_user_values[key].mean()) if len(chosen) else 0.0
    result["users"] = int(len(chosen))
    if per_user:
        result["per_user"] = {"user": chosen, **per_user_values}
    return result


def top_items(scorer: Scorer, users: np.ndarray, n_items: int, k: int, excluded: Any | None) -> np.ndarray:
    """The ``k`` highest-scoring items per user (sorted), with ``excluded`` (CSR) items masked out.

    The evaluator writes -inf into the returned scores, so a scorer must return a fresh array
    (a read-only numpy array, e.g. from ``np.broadcast_to``, is copied first).
    """
    raw = scorer(users)
    if isinstance(raw, np.ndarray) and not raw.flags.writeable:
        raw = raw.copy()
    scores = torch.as_tensor(raw)
    if tuple(scores.shape) != (len(users), n_items):
        raise DataError(f"scorer returned shape {tuple(scores.shape)}, expected ({len(users)}, {n_items})")
    if not scores.is_floating_point():
        scores = scores.float()
    if excluded is not None:
        lengths = excluded.indptr[users + 1] - excluded.indptr[users]
        rows = torch.from_numpy(np.repeat(np.arange(len(users)), lengths))
        cols = torch.from_numpy(_gather_rows(excluded, users, lengths).astype(np.int64))
        scores[rows, cols] = -torch.inf
    return torch.topk(scores, k, dim=1, sorted=True).indices.numpy()


def _gather_rows(matrix: Any, users: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Column indices of the given CSR rows, concatenated, without a Python loop."""
    starts = matrix.indptr[users]
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return matrix.indices[np.repeat(starts, lengths) + offsets]


def _hits(top: np.ndarray, targets: Any, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean hit matrix of ``top`` against each user's target items, and the target counts."""
    lengths = targets.indptr[users + 1] - targets.indptr[users]
    n_items = targets.shape[1]
    target_keys = np.repeat(np.arange(len(users), dtype=np.int64), lengths) * n_items + \
        _gather_rows(targets, users, lengths)  # sorted: rows ascend, CSR columns sorted
    top_keys = np.arange(len(users), dtype=np.int64)[:, None] * n_items + top
    pos = np.minimum(np.searchsorted(target_keys, top_keys), len(target_keys) - 1)
    return target_keys[pos] == top_keys, lengths
