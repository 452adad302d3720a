"""BPR negative sampling: uniform over each user's non-interacted items, for any user that has one; a user
with none is refused up front, naming them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from peel.config import PeelConfig
from peel.data import Interactions
from peel.errors import DataError
from peel.training.sampling import TripleSampler


def matrix(rows: dict[int, list[int]], n_users: int, n_items: int) -> sp.csr_matrix:
    users = [u for u, items in rows.items() for _ in items]
    items = [i for row in rows.values() for i in row]
    return sp.csr_matrix((np.ones(len(items), dtype=np.float32), (users, items)), shape=(n_users, n_items))


def test_a_user_with_all_but_one_item_always_gets_that_item() -> None:
    n = 2000
    train = matrix({0: [i for i in range(n) if i != 1234], 1: [5, 9]}, 2, n)
    sampler = TripleSampler(train)
    users = np.zeros(50_000, dtype=np.int64)
    negatives = sampler.negatives(users, np.random.default_rng(0))
    assert (negatives == 1234).all()


def test_negatives_are_uniform_over_the_non_interacted_items() -> None:
    n = 400
    free = [3, 77, 150, 399]  # user 0 lacks only these: most rows reach the exact draw
    train = matrix({0: [i for i in range(n) if i not in free], 1: list(range(0, n, 2))}, 2, n)
    sampler = TripleSampler(train)
    rng = np.random.default_rng(1)
    users = np.repeat(np.array([0, 1], dtype=np.int64), 40_000)
    negatives = sampler.negatives(users, rng)
    heavy, light = negatives[:40_000], negatives[40_000:]
    counts = np.array([(heavy == f).sum() for f in free])
    assert counts.sum() == 40_000
    assert np.abs(counts / 10_000 - 1).max() < 0.05  # each of 4 items about 1/4 (5 sigma is 0.05)
    assert (light % 2 == 1).all()  # user 1 has every even item
    odd = np.bincount(light // 2, minlength=n // 2)
    assert odd.min() > 0 and np.abs(odd / (40_000 / (n // 2)) - 1).max() < 0.5


def test_exact_draw_maps_ranks_onto_the_non_interacted_items() -> None:
    n = 50
    positives = {0: [0, 1, 2, 10, 11, 49], 1: [], 2: list(range(1, 50))}
    sampler = TripleSampler(matrix({u: p or [0] for u, p in positives.items()}, 3, n),
                            exclude=matrix(positives, 3, n))
    for user, seen in positives.items():
        free = [i for i in range(n) if i not in seen]
        users = np.full(len(free), user, dtype=np.int64)
        np.testing.assert_array_equal(sampler.nth_negative(users, np.arange(len(free))), free)


def test_a_user_with_every_item_is_refused_when_the_sampler_is_built() -> None:
    train = matrix({0: [0, 1], 1: [0, 1, 2]}, 2, 3)
    with pytest.raises(DataError, match="user 1 .*every one of the 3 items"):
        TripleSampler(train)
    TripleSampler(matrix({0: [0, 1], 1: [0, 1]}, 2, 3))  # one item left for each: fine


def test_training_refuses_a_user_with_every_item_before_writing(tmp_path: Path) -> None:
    from peel.training.pipeline import train
    from peel.training.sampling import check_negatives

    users = np.array([0] * 4 + [1, 1, 2])
    items = np.array([0, 1, 2, 3, 0, 1, 2])
    split = np.array([0, 0, 1, 0, 0, 0, 0], dtype=np.int8)  # user 'alice' has all 4 items in train + valid
    data = Interactions.from_internal(users, items, n_users=3, n_items=4, split=split,
                                      user_ids=np.array(["alice", "bob", "carol"], dtype=object))
    with pytest.raises(DataError, match="user 'alice'"):
        check_negatives(data)
    out = tmp_path / "run"
    with pytest.raises(DataError, match="user 'alice'"):
        train(data, out, PeelConfig(), progress=False)
    assert not out.exists()
