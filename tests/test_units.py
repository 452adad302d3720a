"""Unit order, budget selection and Eq. 10 (peel.units): the export contract."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peel.errors import BudgetError, ConfigError
from peel.units import (
    UnitLayout,
    block_scale,
    dequantize_unit,
    effective_items,
    quantize_unit,
    random_unit_order,
    select,
    stored_values,
    unit_order,
    unit_size,
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


# ---------------------------------------------------------------------- q8 units
def _blocks(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(items, N, d) blocks whose rows span four orders of magnitude, item groups with an all-zero unit."""
    rng = np.random.default_rng(seed)
    blocks = rng.standard_normal((60, 3, 8)) * 10.0 ** rng.uniform(-2, 2, (60, 3, 1))
    item_group = rng.integers(0, 4, 60)
    blocks[item_group == 2, 1] = 0.0
    return blocks.astype(np.float32), item_group


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_q8_rounds_every_value_within_half_its_units_step(seed):
    blocks, item_group = _blocks(seed)
    unit = blocks[item_group == 1, 2]
    q, scale = quantize_unit(unit)
    assert q.dtype == np.int8 and q.shape == unit.shape and scale.dtype == np.float32
    assert scale == np.abs(unit).max() / np.float32(127) and np.abs(q).max() == 127 and (q >= -127).all()
    back = dequantize_unit(q, scale)
    assert back.dtype == np.float32
    # round to nearest: at most half a step; the float32 product q * scale and quotient add a few 2^-24
    assert (np.abs(back - unit) <= scale / 2 * (1 + 2**-20) + np.abs(unit) * 2**-22).all()
    zeros, zero_scale = quantize_unit(blocks[item_group == 2, 1])
    assert zero_scale == 0 and not zeros.any()


def test_stored_values_are_what_the_writer_stores_bit_for_bit():
    """The server scores stored_values; the writer stores quantize_unit of each unit: the same float32 bits."""
    blocks, item_group = _blocks(5)
    stored = stored_values(blocks, item_group, "q8")
    for g in range(4):
        for n in range(3):
            q, scale = quantize_unit(blocks[item_group == g, n])
            np.testing.assert_array_equal(stored[item_group == g, n], dequantize_unit(q, scale))
    np.testing.assert_array_equal(stored_values(blocks, item_group, "f32"), blocks)
    assert not np.array_equal(stored, blocks)


def test_q8_refuses_non_finite_values_and_unknown_dtypes():
    blocks, item_group = _blocks(0)
    blocks[3, 0, 0] = np.inf
    with pytest.raises(ConfigError, match="non-finite"):
        stored_values(blocks, item_group, "q8")
    with pytest.raises(ConfigError, match="non-finite"):
        quantize_unit(np.array([[np.nan, 1.0]]))
    with pytest.raises(ConfigError, match="unit dtype"):
        unit_size(3, 8, "q4")
    with pytest.raises(ConfigError, match="unit dtype"):
        UnitLayout(np.array([3]), 2, 8, "float16")


def test_q8_accounting_charges_a_byte_a_value_and_four_a_unit():
    f32 = UnitLayout(np.array([10, 9]), n_blocks=3, block_dim=8)
    q8 = UnitLayout(np.array([10, 9]), n_blocks=3, block_dim=8, unit_dtype="q8")
    order = np.array([[0, 0], [1, 0], [0, 1]])
    np.testing.assert_array_equal(f32.unit_bytes(order), [320, 288, 320])
    np.testing.assert_array_equal(q8.unit_bytes(order), [84, 76, 84])
    assert q8.user_vector_bytes == f32.user_vector_bytes == 96  # the user vector stays float32
    assert q8.full_bytes() == (84 + 76) * 3 + 96 and f32.full_bytes() == 19 * 3 * 32 + 96
    assert q8.minimum_bytes(order) == 84 + 76 + 96
    # a budget keeps more units of the same order when they are q8
    assert select(order, q8, 340).n_kept == 3 and select(order, f32, 800).n_kept == 2
