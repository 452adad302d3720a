"""Recall@K, NDCG@K and the NGCF-code legacy NDCG@K: hand-worked cases, a loop reference, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peel.evaluation.metrics import LEGACY_DEPTH, discounts, ranking_metrics

LOG2_3 = math.log2(3)
LOG2_5 = math.log2(5)


def metrics(hits, n_targets, ks, legacy_depth=None):
    """ranking_metrics on a list of hit rows, returned as plain floats per key (one list per user)."""
    out = ranking_metrics(np.array(hits, dtype=bool), np.array(n_targets), ks, legacy_depth=legacy_depth)
    return {key: [float(v) for v in values] for key, values in out.items()}


def padded(positions, length=120):
    """A hit row of ``length`` ranks with hits at the given 0-based positions."""
    row = [0] * length
    for p in positions:
        row[p] = 1
    return row


# ------------------------------------------------------------------ hand-worked cases
def test_discounts_are_one_over_log2_rank_plus_two():
    np.testing.assert_allclose(discounts(4), [1.0, 1 / LOG2_3, 0.5, 1 / math.log2(5)])


def test_recall_and_ndcg_of_hits_1010_with_three_targets():
    out = metrics([[1, 0, 1, 0]], [3], ks=[1, 2, 3, 4])
    assert out["recall@1"] == pytest.approx([1 / 3])
    assert out["recall@2"] == pytest.approx([1 / 3])
    assert out["recall@3"] == pytest.approx([2 / 3])
    assert out["recall@4"] == pytest.approx([2 / 3])
    assert out["ndcg@1"] == pytest.approx([1.0])
    assert out["ndcg@2"] == pytest.approx([1 / (1 / math.log2(2) + 1 / LOG2_3)])
    # DCG@3 = 1 + 1/log2(4); ideal over min(3, 3) = 3 ranks
    assert out["ndcg@3"] == pytest.approx([(1 + 1 / 2) / (1 + 1 / LOG2_3 + 1 / 2)])
    # K = 4 > 3 targets: the ideal still stops at 3 ranks
    assert out["ndcg@4"] == pytest.approx([(1 + 1 / 2) / (1 + 1 / LOG2_3 + 1 / 2)])
    assert out["ndcg@4"][0] == pytest.approx(0.7039180890341347)


def test_recall_is_not_capped_at_k():
    # 5 targets, both top-2 slots hit: recall@2 = 2/5, not 2/min(5, 2) = 1
    out = metrics([[1, 1, 0, 0, 0]], [5], ks=[2])
    assert out["recall@2"] == pytest.approx([0.4])
    # NDCG *is* normalised over min(|targets|, K) = 2, so a perfect top 2 scores 1
    assert out["ndcg@2"] == pytest.approx([1.0])


def test_ndcg_ideal_uses_min_of_targets_and_k():
    # one target found at rank 1 (0-based): ideal = one hit at the top = 1
    one = metrics([[0, 1, 0]], [1], ks=[3])
    assert one["ndcg@3"] == pytest.approx([1 / LOG2_3])  # 0.6309..., not divided by the K=3 ideal
    assert one["ndcg@3"][0] == pytest.approx(0.6309297535714575)
    # five targets, one found at rank 0, K = 3: ideal over 3 ranks
    many = metrics([[1, 0, 0]], [5], ks=[3])
    assert many["ndcg@3"] == pytest.approx([1 / (1 + 1 / LOG2_3 + 1 / 2)])


def test_no_hit_gives_zero():
    out = metrics([[0, 0, 0, 0]], [2], ks=[4])
    assert out["recall@4"] == [0.0]
    assert out["ndcg@4"] == [0.0]


def test_users_are_independent_rows():
    rows = [[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]]
    together = metrics(rows, [3, 1, 4], ks=[2, 4])
    for u, (row, n) in enumerate(zip(rows, [3, 1, 4], strict=True)):
        alone = metrics([row], [n], ks=[2, 4])
        for key, values in alone.items():
            assert together[key][u] == pytest.approx(values[0])
    assert together["ndcg@4"][1] == pytest.approx(1 / LOG2_5)
    assert together["ndcg@4"][2] == pytest.approx(1.0)


# ------------------------------------------------------------------ legacy NDCG
def test_legacy_ndcg_ideal_from_hits_in_top_100():
    # 4 targets; hits at ranks 1 and 50 (0-based), so 2 hits in the top 100
    out = metrics([padded([1, 50])], [4], ks=[20], legacy_depth=100)
    dcg = 1 / LOG2_3
    assert out["ndcg@20"] == pytest.approx([dcg / (1 + 1 / LOG2_3 + 1 / 2 + 1 / LOG2_5)])
    assert out["ndcg_legacy@20"] == pytest.approx([dcg / (1 + 1 / LOG2_3)])
    assert out["ndcg_legacy@20"][0] == pytest.approx(0.38685280723454163)
    assert out["ndcg_legacy@20"][0] > out["ndcg@20"][0]


def test_legacy_ndcg_counts_hits_beyond_k_but_within_depth():
    # 3 targets; hit at rank 0 and rank 30: at K = 10 only the first counts in the DCG,
    # but the legacy ideal holds min(2 hits in top 100, 10) = 2 ranks
    out = metrics([padded([0, 30])], [3], ks=[10], legacy_depth=100)
    assert out["ndcg_legacy@10"] == pytest.approx([1 / (1 + 1 / LOG2_3)])
    assert out["ndcg@10"] == pytest.approx([1 / (1 + 1 / LOG2_3 + 1 / 2)])


def test_legacy_ndcg_is_zero_without_a_hit_in_top_100():
    # the only hit is at rank 100 (the 101st item), outside the legacy depth
    out = metrics([padded([100]), padded([])], [1, 2], ks=[5, 100], legacy_depth=100)
    assert out["ndcg_legacy@5"] == [0.0, 0.0]
    assert out["ndcg_legacy@100"] == [0.0, 0.0]
    assert not np.isnan(out["ndcg_legacy@100"]).any()


def test_legacy_equals_standard_when_every_target_is_in_top_100():
    out = metrics([padded([3, 7, 60])], [3], ks=[50], legacy_depth=100)
    # all 3 targets are found in the top 100: both ideals cover min(3, 50) = 3 ranks
    assert out["ndcg_legacy@50"] == pytest.approx(out["ndcg@50"])


def test_legacy_with_k_beyond_the_depth_stays_at_most_one():
    # depth 5, K = 8: the hit at rank 6 is in the top K; the NGCF list is K long, so its ideal counts it
    row = [1, 0, 0, 0, 0, 0, 1, 0]
    both = metrics([row], [2], ks=[3, 8], legacy_depth=5)
    assert both["ndcg_legacy@8"] == pytest.approx([(1 + 1 / math.log2(8)) / (1 + 1 / LOG2_3)])
    assert both["ndcg_legacy@8"][0] <= 1.0
    # and the value at K = 3 does not depend on which other Ks are asked for
    alone = metrics([row], [2], ks=[3], legacy_depth=5)
    assert both["ndcg_legacy@3"] == alone["ndcg_legacy@3"] == [1.0]


def test_default_legacy_depth_is_100():
    assert LEGACY_DEPTH == 100
    rows = np.array([padded([0, 99]), padded([0, 100])], dtype=bool)
    out = ranking_metrics(rows, np.array([5, 5]), [2])
    # default depth 100: a hit at rank 99 enters the legacy ideal (2 ranks), one at rank 100 does not (1 rank)
    assert out["ndcg_legacy@2"] == pytest.approx([1 / (1 + 1 / LOG2_3), 1.0])
    with pytest.raises(ValueError, match="100"):
        ranking_metrics(np.ones((1, 99), dtype=bool), np.array([1]), [20])  # too few ranks for the default


def test_no_legacy_key_without_legacy_depth():
    out = metrics([[1, 0]], [1], ks=[2])
    assert set(out) == {"recall@2", "ndcg@2"}


# ------------------------------------------------------------------ input checks
@pytest.mark.parametrize(
    ("hits", "n_targets", "ks"),
    [
        (np.ones(4, dtype=bool), np.array([1]), [2]),  # 1-D hits
        (np.ones((2, 4), dtype=bool), np.array([1]), [2]),  # counts for a different number of users
        (np.ones((1, 4), dtype=bool), np.array([0]), [2]),  # a user without targets
        (np.ones((1, 4), dtype=bool), np.array([4]), [5]),  # fewer ranks than K
    ],
)
def test_bad_input_is_refused(hits, n_targets, ks):
    with pytest.raises(ValueError):
        ranking_metrics(hits, n_targets, ks, legacy_depth=None)


# ------------------------------------------------------------------ independent reference
def reference(hit_row: list[int], n_targets: int, k: int, legacy_depth: int) -> dict[str, float]:
    """Plain loops after the NGCF code: ``r`` is the hit list of the top max(depth, K) items."""

    def dcg_at_k(r: list[int], k: int) -> float:
        total = 0.0
        for i in range(min(k, len(r))):
            total += r[i] / math.log2(i + 2)
        return total

    found = 0
    for i in range(k):
        found += hit_row[i]
    ideal = 0.0
    for i in range(min(n_targets, k)):
        ideal += 1 / math.log2(i + 2)
    dcg = dcg_at_k(hit_row, k)
    ranked = hit_row[: max(legacy_depth, k)]
    legacy_ideal = dcg_at_k(sorted(ranked, reverse=True), k)
    return {
        "recall": found / n_targets,
        "ndcg": dcg / ideal,
        "ndcg_legacy": dcg / legacy_ideal if legacy_ideal > 0 else 0.0,
    }


@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_reference_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    n_users, n_ranks, depth = 25, 130, 100
    density = rng.uniform(0.01, 0.3)
    hits = rng.random((n_users, n_ranks)) < density
    # a user has at least one target, and at least as many targets as hits
    n_targets = hits.sum(axis=1) + rng.integers(0, 40, size=n_users)
    n_targets = np.maximum(n_targets, 1)
    ks = [1, 3, 10, 20, 50, 100, 120]
    out = ranking_metrics(hits, n_targets, ks, legacy_depth=depth)
    for u in range(n_users):
        row = [int(h) for h in hits[u]]
        for k in ks:
            ref = reference(row, int(n_targets[u]), k, depth)
            for name, value in ref.items():
                assert out[f"{name}@{k}"][u] == pytest.approx(value, rel=1e-12, abs=1e-15), (u, k, name)


# ------------------------------------------------------------------ properties
@st.composite
def hit_cases(draw):
    n_ranks = draw(st.integers(1, 40))
    rows = draw(st.lists(st.lists(st.booleans(), min_size=n_ranks, max_size=n_ranks), min_size=1, max_size=6))
    hits = np.array(rows, dtype=bool)
    extra = draw(st.lists(st.integers(0, 50), min_size=len(rows), max_size=len(rows)))
    n_targets = np.maximum(hits.sum(axis=1) + np.array(extra), 1)
    ks = draw(st.lists(st.integers(1, n_ranks), min_size=1, max_size=4, unique=True))
    depth = draw(st.integers(1, n_ranks))
    return hits, n_targets, ks, depth


@settings(max_examples=150, deadline=None)
@given(hit_cases())
def test_metrics_in_unit_interval_and_legacy_at_least_standard(case):
    hits, n_targets, ks, depth = case
    out = ranking_metrics(hits, n_targets, ks, legacy_depth=depth)
    assert len(out) == 3 * len(ks)
    for values in out.values():
        assert values.shape == (len(hits),)
        assert np.all((values >= 0) & (values <= 1 + 1e-12))
    for k in ks:
        assert np.all(out[f"ndcg_legacy@{k}"] >= out[f"ndcg@{k}"] - 1e-12)
        # recall and ndcg are zero exactly when the top K holds no hit
        none = ~hits[:, :k].any(axis=1)
        assert np.array_equal(out[f"recall@{k}"] == 0, none)
        assert np.array_equal(out[f"ndcg@{k}"] == 0, none)


@settings(max_examples=60, deadline=None)
@given(hit_cases())
def test_metrics_grow_with_k(case):
    hits, n_targets, _, _ = case
    ks = list(range(1, hits.shape[1] + 1))
    out = ranking_metrics(hits, n_targets, ks, legacy_depth=None)
    recall = np.stack([out[f"recall@{k}"] for k in ks])
    assert np.all(np.diff(recall, axis=0) >= 0)
