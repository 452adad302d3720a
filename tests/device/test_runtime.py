"""The numpy runtime: Eq. 10 as peel.units defines it, prefix reads, shrink/grow, top-k, users file."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import peel.device.bundle as bundle_module
from peel.budget import Budget
from peel.device import BudgetError, Bundle, BundleError, Users, write_users_file
from peel.units import effective_items, select, user_query


def server_scores(made: Any, user: np.ndarray, budget: int, reading: str, scale: str = "sqrt") -> np.ndarray:
    """Eq. 10 with peel.units (what the server evaluates), by stored position."""
    g_v, n_blocks = made.layout.item_group_sizes.size, made.blocks.shape[1]
    mask = select(made.order, made.layout, budget).kept_mask(g_v, n_blocks)
    items = effective_items(made.stored_blocks, made.item_group, mask, reading, scale)
    return (user_query(user[None], n_blocks, reading) @ items.T)[0][made.item_order]


@pytest.mark.parametrize("unit_dtype", ["f32", "q8"])
@pytest.mark.parametrize("scale", ["sqrt", "paper", "none"])
@pytest.mark.parametrize("reading", ["masked", "fold"])
def test_eq10_equals_peel_units_at_every_budget(make: Any, tmp_path: Path, reading: str, scale: str,
                                                unit_dtype: str) -> None:
    made = make(tmp_path / "b.peelb", n_items=41, g_v=4, n_blocks=5, d=3, seed=9, eq10=reading, eq10_scale=scale,
                unit_dtype=unit_dtype)
    layout = made.layout
    user = np.random.default_rng(0).standard_normal(15).astype(np.float32)
    costs = np.cumsum(layout.unit_bytes(made.order)) + layout.user_vector_bytes
    for budget in [*costs[3:].tolist(), costs[-1] + 100, int(costs[5]) + 7]:  # exact fits and in-between
        rec = Bundle.open(made.path, budget=int(budget)).for_user(user)
        assert rec.eq10 == reading and rec.eq10_scale == scale
        np.testing.assert_allclose(rec.scores(), server_scores(made, user, int(budget), reading, scale), rtol=1e-5,
                                   atol=1e-6)


def test_q8_scores_do_not_depend_on_the_chunk(make: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The int8 units are widened a chunk of rows at a time: any chunk gives the same scores (up to BLAS
    summing another matrix shape in another order: the bound of :func:`rounding_bound`)."""
    import peel.device.recommender as recommender

    made = make(tmp_path / "b.peelb", n_items=41, g_v=4, n_blocks=5, d=3, seed=9, unit_dtype="q8")
    user = np.random.default_rng(1).standard_normal(15).astype(np.float32)
    whole = Bundle.open(made.path).for_user(user).scores()
    for chunk in (1, 7, 16):  # below one item's kept blocks (one row a chunk), uneven, several rows
        monkeypatch.setattr(recommender, "Q8_CHUNK", chunk)
        rec = Bundle.open(made.path).for_user(user)
        assert len(rec._work) == max(chunk, 15)
        budget = int(made.layout.full_bytes())
        np.testing.assert_allclose(rec.scores(), whole, rtol=0, atol=rounding_bound(made, user, budget))


def test_recommend_is_the_top_k_of_the_scores_without_history(made: Any) -> None:
    bundle = Bundle.open(made.path)
    user = np.random.default_rng(3).standard_normal(8)
    history = made.item_ids[[0, 4, 9]]
    rec = bundle.for_user(user, history=history)
    scores = rec.scores()
    scores[bundle.positions_of(history)] = -np.inf
    best = np.lexsort((np.arange(30), -scores))[:7]
    ids, top = rec.recommend(k=7)  # the same recommender scores the same prefix: exact
    np.testing.assert_array_equal(ids, bundle.item_ids.at(best))
    np.testing.assert_array_equal(top, scores[best])
    assert not set(ids.tolist()) & set(history.tolist())
    assert len(rec.recommend(k=1000)[0]) == 27  # every item not in the history
    same = bundle.for_user(user, internal_history=[0, 4, 9])  # internal ids 0, 4, 9 = raw ids above
    np.testing.assert_array_equal(same.recommend(k=7)[0], ids)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(BundleError, match="k must be a positive integer"):
            rec.recommend(k=bad)
    with pytest.raises(BundleError, match="user vector must have shape"):
        bundle.for_user(np.ones(5))
    with pytest.raises(BundleError, match="non-finite"):
        bundle.for_user(np.full(8, np.nan))
    with pytest.raises(BundleError, match="unknown item"):
        bundle.for_user(user, history=[123456])
    with pytest.raises(BundleError, match="internal item ids"):
        bundle.for_user(user, internal_history=[30])


def rounding_bound(made: Any, user: np.ndarray, budget: int) -> float:
    """How far two float32 evaluations of the same Eq. 10 scores ('masked', 'sqrt') can be apart.

    A score is a dot product of at most D float32 terms. Summed in any order, with or without FMA, it is
    within gamma_D * sum|terms| of the exact value (Higham, Accuracy and Stability of Numerical Algorithms,
    §3.1; gamma_n = n u / (1 - n u), u = 2^-24), so two orders are within twice that: about 1e-6 * D / 8 of
    the largest sum|terms| (8 to 16 float32 steps of it), while a wrong block or normalizer moves scores by O(1).
    """
    magnitude = server_scores(dataclasses.replace(made, blocks=np.abs(made.blocks).astype(np.float64)),
                              np.abs(user), budget, "masked")
    n, u = made.blocks.shape[1] * made.blocks.shape[2], 2.0**-24
    return 2 * n * u / (1 - n * u) * float(magnitude.max())


def test_shrink_then_grow_back(made: Any, same_top_k: Any) -> None:
    layout = made.layout
    costs = np.cumsum(layout.unit_bytes(made.order)) + layout.user_vector_bytes
    loaded_at = int(costs[8])
    bundle = Bundle.open(made.path, budget=loaded_at)
    assert bundle.n_units_loaded == 9
    user = np.random.default_rng(4).standard_normal(8)
    rec = bundle.for_user(user)
    before = rec.recommend(k=10)
    for budget in (int(costs[2]), int(costs[5]) + 3, int(costs[3])):
        rec.shrink(budget)
        kept = select(made.order, layout, budget)
        assert rec.n_units == kept.n_kept and rec.bytes_used == kept.bytes_used <= budget
        np.testing.assert_array_equal(rec.blocks_per_item_group, kept.kept_mask(3, 4).sum(axis=1))
        assert rec.blocks_per_item_group.sum() == rec.n_units
        # The promise (Recommender): shrink(B) scores like Bundle.open(B) up to float32 rounding. Not bit for
        # bit: the shrunk matmuls run on a column slice of the loaded matrices (another row stride) and BLAS
        # may pick another kernel for it (OpenBLAS's SkylakeX sgemv does, for a contiguous matrix).
        fresh = Bundle.open(made.path, budget=budget).for_user(user).scores()
        tol = rounding_bound(made, user, budget)
        np.testing.assert_allclose(rec.scores(), fresh, rtol=0, atol=tol)
        ids, scores = rec.recommend(k=10)
        assert len(ids) == 10
        same_top_k(bundle.positions_of(ids), scores, fresh, tol)
    rec.shrink(loaded_at)
    assert rec.n_units == 9 and rec.budget == Budget(loaded_at)
    # grown back to the loaded prefix: the same matmuls on the same arrays as before the shrinks, bit for bit
    np.testing.assert_array_equal(rec.recommend(k=10)[0], before[0])
    np.testing.assert_array_equal(rec.recommend(k=10)[1], before[1])
    with pytest.raises(BudgetError, match="only 9 were loaded"):
        rec.shrink(int(costs[9]))
    with pytest.raises(BudgetError, match=f"below the minimum of {int(costs[2]):,} bytes"):
        rec.shrink(int(costs[2]) - 1)
    assert rec.n_units == 9  # a refused shrink changes nothing


def test_shrink_does_not_copy_unit_data(made: Any) -> None:
    bundle = Bundle.open(made.path)
    rec = bundle.for_user(np.ones(8))
    buffers = [m for m in bundle._matrices]
    rec.shrink(int(made.layout.minimum_bytes(made.order)))
    assert all(a is b for a, b in zip(bundle._matrices, buffers, strict=True))
    if made.unit_dtype == "f32":  # a q8 unit comes back dequantized, a fresh array
        assert np.shares_memory(bundle.unit(0), buffers[int(made.order[0, 0])])


def test_budget_below_minimum_and_budget_forms(made: Any) -> None:
    minimum = made.layout.minimum_bytes(made.order)
    with pytest.raises(BudgetError, match=f"below the minimum of {minimum:,} bytes"):
        Bundle.open(made.path, budget=minimum - 1)
    assert Bundle.open(made.path, budget=minimum).n_units_loaded == 3
    full = Bundle.open(made.path, budget="100%")  # of the full item table, n_items * D * 4
    # 100% of the float32 table: f32 units cannot also hold the user vector; q8 units take about a quarter
    assert full.n_units_loaded == (11 if made.unit_dtype == "f32" else 12)
    assert Bundle.open(made.path, budget="1GB").n_units_loaded == 12
    with pytest.raises(BudgetError, match="cannot read budget"):
        Bundle.open(made.path, budget="lots")


class CountingFile(io.FileIO):
    """Records every byte range read."""

    ranges: list[tuple[int, int]]

    def read(self, n: int = -1) -> bytes:
        start = self.tell()
        out = super().read(n)
        self.ranges.append((start, start + len(out)))
        return out

    def readinto(self, buffer: Any) -> int:
        start = self.tell()
        got = super().readinto(buffer)
        self.ranges.append((start, start + got))
        return got


def test_a_budget_reads_only_the_prefix(made: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    files: list[CountingFile] = []

    def counting_open(path: Any) -> tuple[CountingFile, int]:
        fh = CountingFile(path, "rb")
        fh.ranges = []
        files.append(fh)
        return fh, Path(path).stat().st_size

    monkeypatch.setattr(bundle_module, "open_file", counting_open)
    costs = np.cumsum(made.layout.unit_bytes(made.order)) + made.layout.user_vector_bytes
    bundle = Bundle.open(made.path, budget=int(costs[4]))
    end = bundle.header.data_start + bundle.header.units[4].end
    ranges = files[-1].ranges
    assert max(e for _, e in ranges) == end < made.path.stat().st_size
    assert sum(e - s for s, e in ranges) == end == bundle.bytes_read  # each byte read once


def test_a_prefix_download_opens_at_its_budget_only(made: Any) -> None:
    costs = np.cumsum(made.layout.unit_bytes(made.order)) + made.layout.user_vector_bytes
    full = Bundle.open(made.path)
    end = full.header.data_start + full.header.units[5].end
    made.path.write_bytes(made.path.read_bytes()[:end])  # header + ids + the first 6 units
    bundle = Bundle.open(made.path, budget=int(costs[5]))
    assert bundle.n_units_loaded == 6
    for i in range(6):
        np.testing.assert_array_equal(bundle.unit(i), full.unit(i))
    with pytest.raises(BundleError, match="the file is truncated"):
        Bundle.open(made.path, budget=int(costs[6]))
    with pytest.raises(BundleError, match="the file is truncated"):
        Bundle.open(made.path)


def test_users_file_round_trip_and_lookup(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 6)).astype(np.float32)
    ids = np.array(["ann", "bob", "cy", "dee", "éva"], dtype=object)
    history = (np.array([0, 2, 2, 3, 5, 5]), np.array([4, 1, 0, 7, 3]))
    write_users_file(tmp_path / "u.peelb", user_vectors=vectors, user_group=np.array([0, 1, 1, 0, 2]), n_items=8,
                     user_ids=ids, history=history)
    users = Users.open(tmp_path / "u.peelb")
    record = users.user("dee")
    assert (record.index, record.user_group, record.raw_id) == (3, 0, "dee")
    np.testing.assert_array_equal(record.vector, vectors[3])
    np.testing.assert_array_equal(record.history, [7, 3])
    assert users.user("bob").history.size == 0
    with pytest.raises(BundleError, match="unknown user 'zed'.*ids look like ann, bob, cy"):
        users.user("zed")
    write_users_file(tmp_path / "n.peelb", user_vectors=vectors, user_group=np.zeros(5, dtype=np.int64), n_items=8,
                     user_ids=np.array([10, 20, 30, 40, 50]))
    numeric = Users.open(tmp_path / "n.peelb")
    assert numeric.user("30").index == 2 and numeric.user(40).index == 3 and numeric.user("30").history is None
    for unknown in ("31", "x"):
        with pytest.raises(BundleError, match=f"unknown user '{unknown}'"):
            numeric.user(unknown)
    with pytest.raises(BundleError, match="history item ids must lie in"):
        write_users_file(tmp_path / "b.peelb", user_vectors=vectors, user_group=np.zeros(5, dtype=np.int64),
                         n_items=4, history=history)


def test_import_does_not_load_torch() -> None:
    code = "import sys, peel.device; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_bundle_without_eq10_scale_uses_the_papers_normalizer(make: Any, tmp_path: Path, monkeypatch) -> None:
    import peel.device.writer as writer

    original = writer.write_container

    def without_scale(*args: Any, extra: dict[str, Any], **kwargs: Any) -> int:
        return original(*args, extra={k: v for k, v in extra.items() if k != "eq10_scale"}, **kwargs)

    monkeypatch.setattr(writer, "write_container", without_scale)
    made = make(tmp_path / "old.peelb", n_items=20, g_v=2, n_blocks=3, d=2, seed=4)
    assert b"eq10_scale" not in made.path.read_bytes()
    layout = made.layout
    budget = int(layout.minimum_bytes(made.order)) + int(layout.unit_bytes(made.order[2:3]).sum())
    rec = Bundle.open(made.path, budget=budget).for_user(np.ones(6, dtype=np.float32))
    assert rec.eq10_scale == "paper"
    np.testing.assert_allclose(rec.scores(), server_scores(made, np.ones(6), budget, "masked", "paper"), rtol=1e-5)


def test_unknown_eq10_scale_is_refused(make: Any, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="eq10_scale must be one of"):
        make(tmp_path / "x.peelb", eq10_scale="cube")
    assert not (tmp_path / "x.peelb").exists()
