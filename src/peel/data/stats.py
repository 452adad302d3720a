"""Dataset statistics: counts per split, density, popularity skew, removals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from peel.data.interactions import Interactions


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = uniform popularity, -> 1 = all on one item)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2 * np.sum(np.arange(1, n + 1) * x) / (n * total)) - (n + 1) / n)


def top_share(counts: np.ndarray, fraction: float) -> float:
    """Share of all interactions that go to the most popular ``fraction`` of items."""
    x = np.sort(np.asarray(counts))[::-1]
    k = max(1, int(round(fraction * len(x))))
    total = x.sum()
    return float(x[:k].sum() / total) if total else 0.0


def interaction_stats(data: Interactions) -> dict[str, Any]:
    from peel.data.interactions import SPLITS

    out: dict[str, Any] = {
        "name": data.name,
        "users": data.n_users,
        "items": data.n_items,
        "interactions": len(data),
    }
    if data.split is not None:
        for s in SPLITS:
            out[f"{s}_interactions"] = data.count(s)
    out["density"] = len(data) / (data.n_users * data.n_items) if data.n_users and data.n_items else 0.0
    pop = data.popularity("train" if data.split is not None else None)
    degree = data.user_degree()
    out["popularity"] = {
        "split": "train" if data.split is not None else "all",
        "gini": round(gini(pop), 6),
        "top_1pct_share": round(top_share(pop, 0.01), 6),
        "top_20pct_share": round(top_share(pop, 0.20), 6),
        "max": int(pop.max()) if len(pop) else 0,
        "median": float(np.median(pop)) if len(pop) else 0.0,
        "items_without_interactions": int((pop == 0).sum()),
    }
    out["interactions_per_user"] = {
        "min": int(degree.min()), "median": float(np.median(degree)),
        "mean": round(float(degree.mean()), 4), "max": int(degree.max()),
    }
    if data.split is not None:
        out["cold_items"] = int(len(data.cold_items()))
        in_eval = np.bincount(data.user[data.split > 0], minlength=data.n_users) > 0
        out["users_wholly_in_train"] = int(((degree > 0) & ~in_eval).sum())
        out["users_with_test"] = int((np.bincount(data.user[data.split == 2], minlength=data.n_users) > 0).sum())
    out["removed"] = list(data.report)
    return out


def file_checksums(directory: Any) -> dict[str, str]:
    """sha256 of train/valid/test.txt in a pre-split directory, keyed like stats.json."""
    import hashlib
    from pathlib import Path

    out = {}
    for split in ("train", "valid", "test"):
        path = Path(directory) / f"{split}.txt"
        if path.exists():
            out[f"{split}_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
