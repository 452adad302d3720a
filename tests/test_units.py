"""Unit order, budget selection and Eq. 10 (peel.units): the export contract."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peel.errors import BudgetError, ConfigError
from peel.units import (
    UnitLayout,
    block_scale,
    effective_items,
    random_unit_order,
    select,
    unit_order,
    user_query,
)

weights_strategy = st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1)).map(
    lambda t: np.random.default_rng(t[2]).random((t[0], t[1])).round(2)  # rounding creates ties
)


def test_order_known_case():
    w = np.array([[0.1, 0.5, 0.2], [0.3, 0.05, 0.01]])
    assert unit_order(w).tolist() == [[0, 1], [1, 0], [0, 2], [0, 0], [1, 1], [1, 2]]


def test_order_ties_broken_by_index():
    w = np.full((2, 2), 0.25)
    assert unit_order(w).tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]


@settings(max_examples=60, deadline=None)
@given(weights_strategy)
def test_order_puts_best_block_of_every_item_group_first(w):
    order = unit_order(w)
    n_groups, n_blocks = w.shape
    assert len(order) == w.size and len({tuple(u) for u in order}) == w.size
    head = order[:n_groups]
    assert sorted(head[:, 0].tolist()) == list(range(n_groups))
    for g, n in head:
        assert w[g, n] == w[g].max()
    head_w = w[head[:, 0], head[:, 1]]
    assert np.all(np.diff(head_w) <= 0)
    tail = order[n_groups:]
    assert np.all(np.diff(w[tail[:, 0], tail[:, 1]]) <= 0)


def test_random_order_is_seeded_and_has_one_block_per_group_first():
    a, b = random_unit_order(5, 4, seed=1), random_unit_order(5, 4, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, random_unit_order(5, 4, seed=2))
    assert sorted(a[:5, 0].tolist()) == list(range(5))


def test_selection_exact_bytes_and_minimum():
    layout = UnitLayout(np.array([10, 9]), n_blocks=3, block_dim=2)
    order = unit_order(np.array([[0.1, 0.5, 0.2], [0.3, 0.05, 0.01]]))
    # unit bytes in order: 80, 72, 80, 80, 72, 72; user vector 24
    assert layout.minimum_bytes(order) == 24 + 80 + 72
    s = select(order, layout, 24 + 80 + 72 + 80 + 79)  # the 4th unit (80) misses by one byte
    assert s.n_kept == 3 and s.bytes_used == 256
    assert select(order, layout, 256 + 80).n_kept == 4
    assert select(order, layout, 10**9).n_kept == 6
    with pytest.raises(BudgetError, match="minimum of 176 bytes"):
        select(order, layout, 175)


def test_selection_never_skips_ahead_to_a_smaller_unit():
    layout = UnitLayout(np.array([100, 1]), n_blocks=2, block_dim=1)
    order = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    s = select(order, layout, 4 * (1 + 100 + 1 + 2))  # room for [1,1] (4 bytes) but not [0,1] (400)
    assert s.n_kept == 2


@settings(max_examples=60, deadline=None)
@given(weights_strategy, st.lists(st.integers(1, 50), min_size=6, max_size=6), st.integers(0, 10**5),
       st.integers(0, 10**5))
def test_selection_respects_budget_and_is_monotone(w, sizes, b1, b2):
    layout = UnitLayout(np.array(sizes[: w.shape[0]]), n_blocks=w.shape[1], block_dim=3)
    order = unit_order(w)
    small, large = sorted((b1, b2))
    try:
        s_small = select(order, layout, small)
    except BudgetError:
        assert small < layout.minimum_bytes(order)
        return
    s_large = select(order, layout, large)
    for s, budget in ((s_small, small), (s_large, large)):
        assert s.bytes_used <= budget
        assert s.bytes_used == layout.unit_bytes(order)[: s.n_kept].sum() + layout.user_vector_bytes
        if s.n_kept < len(order):
            assert s.bytes_used + layout.unit_bytes(order)[s.n_kept] > budget
    assert s_large.n_kept >= s_small.n_kept  # more budget never removes a unit


def _eq10_loops(user, blocks, item_group, kept, reading):
    """Eq. 10 written out per item and block."""
    n_blocks = blocks.shape[1]
    s_max = kept.sum(axis=1).max()
    scores = []
    for j in range(len(blocks)):
        kept_blocks = np.flatnonzero(kept[item_group[j]])
        total = 0.0
        for n in kept_blocks:
            u = user[n * blocks.shape[2]:(n + 1) * blocks.shape[2]] if reading == "masked" else \
                user.reshape(n_blocks, -1).sum(axis=0)
            total += float(u @ blocks[j, n])
        scores.append(s_max / len(kept_blocks) * total)
    return np.array(scores)


@pytest.mark.parametrize("reading", ["masked", "fold"])
def test_eq10_matches_the_written_out_formula(reading):
    rng = np.random.default_rng(0)
    blocks = rng.normal(size=(7, 4, 3))
    item_group = np.array([0, 0, 1, 1, 2, 2, 2])
    kept = np.array([[1, 1, 0, 1], [0, 1, 0, 0], [1, 0, 1, 0]], dtype=bool)
    user = rng.normal(size=(2, 12))
    got = user_query(user, 4, reading) @ effective_items(blocks, item_group, kept, reading).T
    for i in range(2):
        np.testing.assert_allclose(got[i], _eq10_loops(user[i], blocks, item_group, kept, reading), rtol=1e-10)


def test_eq10_masked_with_every_block_is_the_dot_product():
    rng = np.random.default_rng(1)
    blocks = rng.normal(size=(5, 4, 2))
    kept = np.ones((2, 4), dtype=bool)
    user = rng.normal(size=(3, 8))
    got = user @ effective_items(blocks, np.array([0, 1, 0, 1, 1]), kept, "masked").T
    np.testing.assert_allclose(got, user @ blocks.reshape(5, 8).T)


def test_block_scale():
    kept = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=bool)
    np.testing.assert_allclose(block_scale(kept), [1.0, 3.0])
    np.testing.assert_allclose(block_scale(kept, "paper"), [1.0, 3.0])
    np.testing.assert_allclose(block_scale(kept, "sqrt"), [1.0, np.sqrt(3.0)])
    np.testing.assert_allclose(block_scale(kept, "none"), [1.0, 1.0])
    np.testing.assert_allclose(block_scale(np.array([[1, 1], [0, 0]], dtype=bool), "sqrt"), [1.0, 0.0])
    with pytest.raises(ConfigError, match="eq10 scale"):
        block_scale(kept, "cube")
