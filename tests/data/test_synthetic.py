"""Synthetic generator: deterministic, honours its sizes, power-law popularity, learnable structure."""

from __future__ import annotations

import numpy as np
import pytest

from peel.data import SyntheticConfig, generate, synthetic_dataset
from peel.data.stats import gini
from peel.errors import DataError

SMALL = {"n_users": 400, "n_items": 300, "mean_interactions": 20.0}


@pytest.fixture(scope="module")
def default_data():
    return synthetic_dataset(seed=0)


def test_deterministic_for_a_seed() -> None:
    a, b = generate(seed=3, **SMALL), generate(seed=3, **SMALL)
    np.testing.assert_array_equal(a.user, b.user)
    np.testing.assert_array_equal(a.item, b.item)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    sa, sb = synthetic_dataset(seed=3, **SMALL), synthetic_dataset(seed=3, **SMALL)
    np.testing.assert_array_equal(sa.split, sb.split)


def test_different_for_another_seed() -> None:
    a, c = generate(seed=3, **SMALL), generate(seed=4, **SMALL)
    overlap = (a.csr().multiply(c.csr())).nnz
    assert overlap < 0.5 * min(len(a), len(c))
    split_a = synthetic_dataset(seed=3, split_seed=1, **SMALL)
    split_b = synthetic_dataset(seed=3, split_seed=2, **SMALL)
    np.testing.assert_array_equal(split_a.item, split_b.item)
    assert not np.array_equal(split_a.split, split_b.split)


@pytest.mark.parametrize(("n_users", "n_items", "mean"), [(250, 120, 10.0), (600, 900, 30.0), (50, 8, 3.0)])
def test_sizes_honour_parameters(n_users: int, n_items: int, mean: float) -> None:
    data = generate(n_users=n_users, n_items=n_items, mean_interactions=mean, seed=1)
    assert data.n_users == n_users  # every user gets at least 3 interactions
    assert data.n_items <= n_items
    assert data.item_ids.max() < n_items and data.user_ids.tolist() == list(range(n_users))
    degree = data.user_degree()
    assert degree.min() >= 3
    assert degree.max() <= max(3, n_items // 2 if n_items >= 6 else n_items)
    if n_items > 2 * mean:  # clipping at n_items / 2 barely bites: the mean is close to the target
        assert 0.7 * mean < degree.mean() < 1.3 * mean
    assert data.report[0]["step"] == "synthetic" and data.report[0]["n_users"] == n_users
    assert not any(entry["step"] == "duplicates" for entry in data.report)  # sampled without replacement


def test_config_validation() -> None:
    with pytest.raises(DataError, match="n_users"):
        SyntheticConfig(n_users=0)
    with pytest.raises(DataError, match="mean_interactions"):
        SyntheticConfig(n_items=10, mean_interactions=20)
    config = SyntheticConfig(n_users=100, n_items=80, seed=9)
    np.testing.assert_array_equal(generate(config).item, generate(n_users=100, n_items=80, seed=9).item)


def test_power_law_popularity(default_data) -> None:
    popularity = default_data.popularity(None)
    assert gini(popularity) > 0.3
    top = np.sort(popularity)[::-1]
    share_top_10pct = top[: len(top) // 10].sum() / top.sum()
    assert share_top_10pct > 0.25  # far above the 10% a uniform distribution would give
    flat = generate(n_users=3000, n_items=2000, popularity_weight=0.0, seed=0).popularity(None)
    assert gini(flat) < gini(popularity)


def test_default_dataset_is_split(default_data) -> None:
    assert default_data.is_split and default_data.n_users == 3000
    assert default_data.stats()["users_wholly_in_train"] == 0


def test_structure_beyond_popularity(default_data) -> None:
    from peel.evaluation import evaluate
    from peel.evaluation.scorers import PopularityScorer, pure_svd_scorer

    svd = evaluate(pure_svd_scorer(default_data, dim=16), default_data, ks=(50,))["recall@50"]
    pop = evaluate(PopularityScorer(default_data), default_data, ks=(50,))["recall@50"]
    assert pop > 0.05  # popularity is a real signal too
    assert svd >= 1.5 * pop, (svd, pop)


def test_without_taste_svd_has_no_edge() -> None:
    # the check above can fail: with no taste signal, SVD has nothing beyond popularity to find
    from peel.evaluation import evaluate
    from peel.evaluation.scorers import PopularityScorer, pure_svd_scorer

    data = synthetic_dataset(seed=0, affinity=0.0)
    svd = evaluate(pure_svd_scorer(data, dim=16), data, ks=(50,))["recall@50"]
    pop = evaluate(PopularityScorer(data), data, ks=(50,))["recall@50"]
    assert svd < 1.5 * pop, (svd, pop)
