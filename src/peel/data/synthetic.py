"""Synthetic interactions, the embedded default: taste clusters plus power-law item popularity.

Each user belongs to one of ``n_clusters`` taste clusters; user and item latent vectors are drawn
around cluster centres, and a user picks items with probability proportional to
``popularity_j ** popularity_weight * exp(affinity * <u, v_j>)``: popular items are popular for
everyone, but which long-tail items a user picks depends on taste. So a dot-product model beats
popularity ranking, as on real data. Deterministic for a given seed and sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from peel.data.interactions import Interactions
from peel.errors import DataError


@dataclass(frozen=True)
class SyntheticConfig:
    n_users: int = 3000
    n_items: int = 2000
    n_clusters: int = 12
    latent_dim: int = 16
    mean_interactions: float = 40.0
    popularity_exponent: float = 1.0  # Zipf exponent of the item popularity prior
    popularity_weight: float = 0.7    # how much popularity (vs taste) drives choices
    affinity: float = 1.0             # how sharply taste drives choices
    cluster_spread: float = 1.0       # user / item noise around their cluster centre
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("n_users", "n_items", "n_clusters", "latent_dim"):
            if getattr(self, key) < 1:
                raise DataError(f"synthetic {key} must be >= 1, got {getattr(self, key)}")
        if not 3 <= self.mean_interactions <= self.n_items:
            raise DataError(f"synthetic mean_interactions must lie in [3, n_items], got {self.mean_interactions}")


def generate(config: SyntheticConfig | None = None, *, chunk_users: int = 1024, **overrides: object) -> Interactions:
    """Generate interactions (unsplit). ``overrides`` set fields of the default config."""
    config = config or SyntheticConfig(**overrides)  # type: ignore[arg-type]
    rng = np.random.default_rng(config.seed)
    centres = rng.normal(size=(config.n_clusters, config.latent_dim)) / np.sqrt(config.latent_dim)
    user_cluster = rng.integers(config.n_clusters, size=config.n_users)
    item_cluster = rng.integers(config.n_clusters, size=config.n_items)
    noise = config.cluster_spread / np.sqrt(config.latent_dim)
    user_vec = centres[user_cluster] + rng.normal(scale=noise, size=(config.n_users, config.latent_dim))
    item_vec = centres[item_cluster] + rng.normal(scale=noise, size=(config.n_items, config.latent_dim))
    popularity = rng.permutation(1.0 / np.arange(1, config.n_items + 1) ** config.popularity_exponent)
    log_prior = config.popularity_weight * np.log(popularity)
    # per-user activity: geometric-like spread, at least 3 so every user can be split
    counts = np.clip(rng.lognormal(np.log(config.mean_interactions) - 0.5, 1.0, config.n_users).astype(np.int64),
                     3, config.n_items // 2 if config.n_items >= 6 else config.n_items)
    users, items = [], []
    for start in range(0, config.n_users, chunk_users):
        stop = min(start + chunk_users, config.n_users)
        logits = log_prior + config.affinity * np.sqrt(config.latent_dim) * (user_vec[start:stop] @ item_vec.T)
        keys = logits + rng.gumbel(size=logits.shape)  # Gumbel top-k = sampling without replacement
        k = int(counts[start:stop].max())
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
        top_keys = np.take_along_axis(keys, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_keys, axis=1), axis=1)
        take = np.arange(k)[None, :] < counts[start:stop, None]
        users.append(np.broadcast_to(np.arange(start, stop)[:, None], top.shape)[take])
        items.append(top[take])
    user, item = np.concatenate(users), np.concatenate(items)
    report = [{"step": "synthetic", **asdict(config)}]
    data = Interactions.from_raw(user, item, report=report, name=f"synthetic-{config.seed}")
    return data


def synthetic_dataset(seed: int = 0, split_seed: int = 2023, **overrides: object) -> Interactions:
    """The embedded default dataset: generated, then split 7:1:2 per user."""
    return generate(seed=seed, **overrides).split_random(seed=split_seed)
