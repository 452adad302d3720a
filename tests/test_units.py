"""Unit order, budget selection and Eq. 10 (peel.units): the export contract."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peel.errors import BudgetError, ConfigError
from peel.units import (
    UnitLayout,
    block_scale,
    dequantize_rows,
    effective_items,
    quantize_rows,
    random_unit_order,
    row_bytes,
    select,
    stored_values,
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


# ---------------------------------------------------------------------- q8 units
def _rows(seed: int) -> np.ndarray:
    """Rows (items, blocks, 8) spanning four orders of magnitude, with a zero row and one exact zero value.
    Their scales lie in float16's normal range (absmax >= 127 * 2^-14); smaller rows: the next test."""
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((60, 3, 8)) * 10.0 ** rng.uniform(-1, 3, (60, 3, 1))
    rows[0, 0] = 0.0
    rows[1, 1, 2] = 0.0
    return rows.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_q8_rounds_each_row_within_half_its_scale(seed):
    rows = _rows(seed)
    q, scale = quantize_rows(rows)
    assert q.dtype == np.int8 and scale.dtype == np.float16 and q.shape == rows.shape and scale.shape == (60, 3)
    assert np.abs(q).max() == 127 and (q >= -127).all()  # the symmetric range: -128 never occurs
    wide = scale.astype(np.float32)
    np.testing.assert_allclose(wide, np.abs(rows).max(axis=2) / 127, rtol=2**-11)  # float16's half step
    back = dequantize_rows(q, scale)
    assert back.dtype == np.float32
    # round to nearest: at most half a step per value; float32's product q * scale adds a relative 2^-24
    assert (np.abs(back - rows) <= wide[..., None] / 2 * (1 + 2**-20) + np.abs(rows) * 2**-23).all()
    assert (back[0, 0] == 0).all() and back[1, 1, 2] == 0 and scale[0, 0] == 0


def test_q8_rows_with_a_subnormal_scale_lose_relative_precision_only():
    """absmax below 127 * 2^-14 (about 7.8e-3): the float16 scale is subnormal, a step of 2^-24 at most off."""
    rows = _rows(3) * np.float32(1e-4)
    q, scale = quantize_rows(rows)
    wide = scale.astype(np.float32)[..., None]
    assert (np.abs(dequantize_rows(q, scale) - rows) <= wide / 2 + 127 * 2.0**-25 + np.abs(rows) * 2**-23).all()


def test_q8_is_idempotent_so_the_export_stores_what_the_server_scored():
    """TrainedRun.blocks gives the q8-rounded values; export rounds them again: the same int8s and scales."""
    rows = _rows(5)
    q, scale = quantize_rows(rows)
    q2, scale2 = quantize_rows(dequantize_rows(q, scale))
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_array_equal(scale2, scale)
    np.testing.assert_array_equal(stored_values(rows, "q8"), dequantize_rows(q, scale))
    np.testing.assert_array_equal(stored_values(rows, "f32"), rows)


def test_q8_refuses_a_value_past_float16_and_unknown_dtypes():
    with pytest.raises(ConfigError, match="float16"):
        quantize_rows(np.full((1, 8), 1e7, dtype=np.float32))
    with pytest.raises(ConfigError, match="unit dtype"):
        row_bytes(8, "q4")
    with pytest.raises(ConfigError, match="unit dtype"):
        UnitLayout(np.array([3]), 2, 8, "float16")


def test_q8_accounting_charges_d_plus_2_bytes_a_row():
    f32 = UnitLayout(np.array([10, 9]), n_blocks=3, block_dim=8)
    q8 = UnitLayout(np.array([10, 9]), n_blocks=3, block_dim=8, unit_dtype="q8")
    order = np.array([[0, 0], [1, 0], [0, 1]])
    np.testing.assert_array_equal(f32.unit_bytes(order), [320, 288, 320])
    np.testing.assert_array_equal(q8.unit_bytes(order), [100, 90, 100])
    assert q8.user_vector_bytes == f32.user_vector_bytes == 96  # the user vector stays float32
    assert q8.full_bytes() == 19 * 3 * 10 + 96 and f32.full_bytes() == 19 * 3 * 32 + 96
    assert q8.minimum_bytes(order) == 190 + 96
    # a budget keeps more units of the same order when they are q8
    assert select(order, q8, 390).n_kept == 3 and select(order, f32, 800).n_kept == 2
