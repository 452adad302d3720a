"""The per-user 7:1:2 split rule: the shipped files follow it and split_random reproduces it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peel.data import Interactions, load
from peel.data.interactions import SPLIT_CODES
from peel.errors import DataError


def expected_counts(n: int) -> tuple[int, int, int]:
    """(train, valid, test) for a user with n interactions: README rule, Python's round."""
    if n < 3:
        return n, 0, 0
    test, valid = max(1, round(0.2 * n)), max(1, round(0.1 * n))
    return n - valid - test, valid, test


def per_user_counts(data) -> np.ndarray:
    """(n_users, 3) array of train / valid / test counts per user."""
    return np.stack([data.user_degree(s) for s in ("train", "valid", "test")], axis=1)


def assert_split_rule(data) -> None:
    counts = per_user_counts(data)
    totals = counts.sum(axis=1)
    expected = np.array([expected_counts(n) for n in totals.tolist()]).reshape(-1, 3)
    bad = np.flatnonzero((counts != expected).any(axis=1))
    assert len(bad) == 0, f"users breaking the rule: {bad[:5]} counts {counts[bad[:5]]} expected {expected[bad[:5]]}"


@pytest.mark.parametrize("name", ["ml-100k", "amazon-book-sub", "yelp2018-sub"])
def test_shipped_split_follows_rule(shared_data: Path, name: str) -> None:
    data = load(shared_data / name)
    assert data.report == ()  # no pair occurs twice across the three files
    assert_split_rule(data)
    counts = per_user_counts(data)
    assert (counts.sum(axis=1) >= 3).all()  # every shipped user reaches valid and test
    assert (counts[:, 1] >= 1).all() and (counts[:, 2] >= 1).all()


def test_rule_uses_half_to_even() -> None:
    # 0.1 * 25 == 2.5 exactly: half-to-even gives 2, half-up would give 3
    assert expected_counts(25) == (18, 2, 5)
    assert expected_counts(45) == (32, 4, 9)
    users = np.repeat([0, 1, 2, 3], [25, 45, 3, 4])
    items = np.concatenate([np.arange(25), np.arange(45), np.arange(3), np.arange(4)])
    data = Interactions.from_internal(users, items, n_users=4, n_items=45).split_random(seed=5)
    np.testing.assert_array_equal(per_user_counts(data), [[18, 2, 5], [32, 4, 9], [1, 1, 1], [2, 1, 1]])


@pytest.fixture(scope="module")
def udata_split(ml100k_raw):
    return ml100k_raw.split_random(seed=2023)


def test_split_random_on_udata_follows_rule(ml100k_raw, udata_split) -> None:
    assert not ml100k_raw.is_split  # the original is untouched
    assert_split_rule(udata_split)
    totals = per_user_counts(udata_split).sum(axis=0)
    assert totals.sum() == 100000
    # the same per-user counts as the shipped ml-100k files
    assert totals.tolist() == [70012, 9988, 20000]
    entry = udata_split.report[-1]
    assert entry["step"] == "split" and entry["seed"] == 2023 and entry["users_wholly_in_train"] == 0
    assert udata_split.stats()["users_wholly_in_train"] == 0


def test_split_random_every_interaction_in_exactly_one_split(ml100k_raw, udata_split) -> None:
    np.testing.assert_array_equal(udata_split.user, ml100k_raw.user)
    np.testing.assert_array_equal(udata_split.item, ml100k_raw.item)
    assert set(np.unique(udata_split.split).tolist()) == {0, 1, 2}
    parts = [udata_split.csr(s) for s in ("train", "valid", "test")]
    union = parts[0] + parts[1] + parts[2]
    assert union.max() == 1  # no pair in two splits
    assert (union != ml100k_raw.csr()).nnz == 0  # and none lost


def test_split_random_deterministic_and_seed_dependent(ml100k_raw, udata_split) -> None:
    again = ml100k_raw.split_random(seed=2023)
    np.testing.assert_array_equal(again.split, udata_split.split)
    other = ml100k_raw.split_random(seed=7)
    assert_split_rule(other)
    assert not np.array_equal(other.split, udata_split.split)
    # different seeds choose different test items for most users
    differs = [(other.csr("test")[u] != udata_split.csr("test")[u]).nnz > 0 for u in range(ml100k_raw.n_users)]
    assert np.mean(differs) > 0.9


def test_split_random_items_are_random_within_user(udata_split) -> None:
    # the test items are not simply the first or last ones by id: their mean rank sits mid-range
    ranks = []
    for u in range(udata_split.n_users):
        rows = np.flatnonzero(udata_split.user == u)
        ranks.append(np.mean(np.flatnonzero(udata_split.split[rows] == SPLIT_CODES["test"])) / len(rows))
    assert 0.4 < np.mean(ranks) < 0.6


def test_small_users_go_wholly_to_train() -> None:
    users = np.array(["a", "b", "b", "c", "c", "c", "d", "d", "d", "d", "d"])
    items = np.array([1, 1, 2, 1, 2, 3, 1, 2, 3, 4, 5])
    data = Interactions.from_raw(users, items).split_random(seed=0)
    counts = {data.user_ids[u]: c for u, c in enumerate(per_user_counts(data).tolist())}
    assert counts == {"a": [1, 0, 0], "b": [2, 0, 0], "c": [1, 1, 1], "d": [3, 1, 1]}
    assert data.report[-1]["users_wholly_in_train"] == 2
    stats = data.stats()
    assert stats["users_wholly_in_train"] == 2
    assert stats["users_with_test"] == 2
    assert (stats["train_interactions"], stats["valid_interactions"], stats["test_interactions"]) == (7, 2, 2)


@settings(max_examples=40, deadline=None)
@given(
    degrees=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_split_random_rule_property(degrees: list[int], seed: int) -> None:
    n_items = max(degrees)
    users = np.repeat(np.arange(len(degrees)), degrees)
    items = np.concatenate([np.random.default_rng(u).permutation(n_items)[:d] for u, d in enumerate(degrees)])
    data = Interactions.from_internal(users, items, n_users=len(degrees), n_items=n_items).split_random(seed=seed)
    assert_split_rule(data)
    assert data.report[-1]["users_wholly_in_train"] == sum(d < 3 for d in degrees)
    assert data.stats()["users_wholly_in_train"] == sum(d < 3 for d in degrees)
    np.testing.assert_array_equal(data.split, data.split_random(seed=seed).split)


def test_split_random_refuses_bad_ratios(ml100k_raw) -> None:
    with pytest.raises(DataError, match="ratios"):
        ml100k_raw.split_random(ratios=(0.5, 0.5, 0.5))
    with pytest.raises(DataError, match="ratios"):
        ml100k_raw.split_random(ratios=(1.2, -0.1, -0.1))


def test_unsplit_data_has_no_split_rows(ml100k_raw) -> None:
    with pytest.raises(DataError, match="not split"):
        ml100k_raw.rows("test")
    with pytest.raises(DataError, match="unknown split"):
        ml100k_raw.split_random(seed=1).rows("validation")
