import numpy as np
import pytest

from peel.errors import ConfigError
from peel.training.grouping import item_groups, user_groups


def test_item_groups_by_popularity_equal_size():
    popularity = np.array([5, 9, 1, 9, 0, 3, 7])
    groups = item_groups(popularity, 3)
    # order: 1 (9), 3 (9, tie by id), 6 (7), 0 (5), 5 (3), 2 (1), 4 (0) -> sizes 3, 2, 2
    assert groups.tolist() == [1, 0, 2, 0, 2, 1, 0]
    assert np.bincount(groups).tolist() == [3, 2, 2]


def test_random_item_groups_are_seeded_and_equal_size():
    pop = np.arange(100)
    a, b = item_groups(pop, 7, "random", seed=1), item_groups(pop, 7, "random", seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, item_groups(pop, 7, "random", seed=2))
    assert np.ptp(np.bincount(a)) <= 1


def test_item_groups_refuse_more_groups_than_items():
    with pytest.raises(ConfigError, match="item count"):
        item_groups(np.ones(5), 6)


def test_user_groups_kmeans_and_merge_of_small_groups():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]])
    vectors = np.concatenate([c + rng.normal(size=(30, 2)) for c in centres])
    has_valid = np.ones(90, dtype=bool)
    grouping = user_groups(vectors, 3, seed=0, valid_users=has_valid)
    assert len(np.unique(grouping.labels)) == 3 and not grouping.merged
    for block in range(3):  # each true cluster is one group
        assert len(np.unique(grouping.labels[block * 30:(block + 1) * 30])) == 1
    has_valid[30:] = False  # only the first cluster has validation users
    merged = user_groups(vectors, 3, seed=0, valid_users=has_valid, min_valid_users=2)
    assert len(merged.merged) == 2 and np.array_equal(np.unique(merged.labels), [0])


def test_single_user_group():
    assert np.all(user_groups(np.random.rand(10, 3), 4, mode="single").labels == 0)
