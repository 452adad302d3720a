"""The full-ranking evaluator: exclusion, averaging, Ks, per-user output, chunking, scorer checks, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from peel.data.interactions import Interactions
from peel.errors import DataError
from peel.evaluation import evaluate, evaluation_users
from peel.evaluation.evaluator import default_chunk, excluded_splits, top_items

TRAIN, VALID, TEST = 0, 1, 2
LOG2_3 = math.log2(3)


def interactions(rows, n_users, n_items):
    """Interactions from (user, item, split code) triples."""
    user, item, split = (np.array(col) for col in zip(*rows, strict=True))
    return Interactions.from_internal(user, item, n_users=n_users, n_items=n_items, split=split)


def matrix_scorer(scores):
    """A scorer reading rows of a fixed (users x items) array; counts its calls."""

    def scorer(users):
        scorer.calls += 1
        scorer.batches.append(np.asarray(users).copy())
        return scores[np.asarray(users)]  # fancy indexing: a fresh array

    scorer.calls = 0
    scorer.batches = []
    return scorer


def random_case(seed, n_users=30, n_items=120, density=0.15):
    """Random split interactions and a scorer with distinct scores (no ties)."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    user, item = np.nonzero(mask)
    split = rng.choice([TRAIN, VALID, TEST], size=len(user), p=[0.6, 0.15, 0.25])
    data = Interactions.from_internal(user, item, n_users=n_users, n_items=n_items, split=split)
    scores = rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(np.float64)
    return data, scores


# ------------------------------------------------------------------ exclusion
@pytest.fixture
def leaky():
    """User 0: train item 0, valid item 1, test item 2; the scores rank 0 > 1 > 2 > the rest."""
    data = interactions([(0, 0, TRAIN), (0, 1, VALID), (0, 2, TEST)], n_users=1, n_items=6)
    scores = np.array([[10.0, 9.0, 8.0, 3.0, 2.0, 1.0]])
    return data, scores


def test_excluded_splits():
    assert excluded_splits("test") == ["train", "valid"]
    assert excluded_splits("valid") == ["train"]
    assert excluded_splits("train") == []


def test_train_and_valid_items_are_excluded_when_testing(leaky):
    data, scores = leaky
    out = evaluate(matrix_scorer(scores), data, "test", ks=[1], legacy_depth=None)
    # items 0 (train) and 1 (valid) would rank first and second; excluded, the test item 2 is first
    assert out["recall@1"] == 1.0
    assert out["ndcg@1"] == 1.0
    top = top_items(matrix_scorer(scores), np.array([0]), 6, 4, data.csr(["train", "valid"]))
    assert top[0, 0] == 2
    assert not np.isin(top, [0, 1]).any()


def test_only_train_items_are_excluded_when_validating(leaky):
    data, scores = leaky
    # validation target is item 1; train item 0 is excluded, so item 1 ranks first
    out = evaluate(matrix_scorer(scores), data, "valid", ks=[1], legacy_depth=None)
    assert out["recall@1"] == 1.0


def test_test_items_are_not_excluded_when_validating():
    # test item 2 scores highest; when validating it is an ordinary item, so it takes rank 0
    data = interactions([(0, 0, TRAIN), (0, 1, VALID), (0, 2, TEST)], n_users=1, n_items=6)
    scores = np.array([[10.0, 8.0, 9.0, 3.0, 2.0, 1.0]])
    out = evaluate(matrix_scorer(scores), data, "valid", ks=[1, 2], legacy_depth=None)
    assert out["recall@1"] == 0.0
    assert out["recall@2"] == 1.0
    assert out["ndcg@2"] == pytest.approx(1 / LOG2_3)


def test_nothing_is_excluded_for_the_train_split(leaky):
    data, scores = leaky
    out = evaluate(matrix_scorer(scores), data, "train", ks=[1], legacy_depth=None)
    assert out["recall@1"] == 1.0  # the train item itself ranks first


# ------------------------------------------------------------------ averaging and Ks
@pytest.fixture
def four_users():
    """Three users with test items and known per-user recall@2; user 3 has no test item."""
    rows = [
        (0, 0, TEST),                          # item 0 ranks first: recall@2 = 1
        (1, 5, TEST),                          # item 5 ranks last: recall@2 = 0
        (2, 1, TEST), (2, 4, TEST),            # item 1 ranks second, item 4 fifth: recall@2 = 1/2
        (3, 0, TRAIN), (3, 1, VALID),          # no test item: not evaluated on test
    ]
    data = interactions(rows, n_users=4, n_items=6)
    scores = np.tile(np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0]), (4, 1))
    return data, scores


def test_averaged_over_users_with_a_target(four_users):
    data, scores = four_users
    out = evaluate(matrix_scorer(scores), data, "test", ks=[2], legacy_depth=None)
    assert out["users"] == 3
    assert out["recall@2"] == pytest.approx((1 + 0 + 0.5) / 3)  # 0.5; over all four users it would be 0.375
    assert out["ndcg@2"] == pytest.approx((1 + 0 + (1 / LOG2_3) / (1 + 1 / LOG2_3)) / 3)
    np.testing.assert_array_equal(evaluation_users(data, "test"), [0, 1, 2])
    np.testing.assert_array_equal(evaluation_users(data, "valid"), [3])


def test_several_ks_in_one_pass(four_users):
    data, scores = four_users
    scorer = matrix_scorer(scores)
    together = evaluate(scorer, data, "test", ks=[3, 1, 2, 3], legacy_depth=None)
    assert scorer.calls == 1  # one scoring pass serves every K
    assert list(together) == ["recall@1", "ndcg@1", "recall@2", "ndcg@2", "recall@3", "ndcg@3", "users"]
    for k in (1, 2, 3):
        alone = evaluate(matrix_scorer(scores), data, "test", ks=[k], legacy_depth=None)
        assert together[f"recall@{k}"] == alone[f"recall@{k}"]
        assert together[f"ndcg@{k}"] == alone[f"ndcg@{k}"]
    assert together["recall@1"] == pytest.approx(1 / 3)
    assert together["recall@3"] == pytest.approx(0.5)  # user 2 finds item 1 (rank 1) but not item 4 (rank 4)


def test_per_user_output(four_users):
    data, scores = four_users
    out = evaluate(matrix_scorer(scores), data, "test", ks=[1, 2], legacy_depth=3, per_user=True)
    per_user = out["per_user"]
    np.testing.assert_array_equal(per_user["user"], [0, 1, 2])
    np.testing.assert_allclose(per_user["recall@2"], [1.0, 0.0, 0.5])
    for key in ("recall@1", "ndcg@1", "ndcg_legacy@1", "recall@2", "ndcg@2", "ndcg_legacy@2"):
        assert per_user[key].shape == (3,)
        assert per_user[key].mean() == pytest.approx(out[key])
    assert "per_user" not in evaluate(matrix_scorer(scores), data, "test", ks=[1], legacy_depth=None)


def test_legacy_ndcg_through_the_evaluator(four_users):
    data, scores = four_users
    out = evaluate(matrix_scorer(scores), data, "test", ks=[2], legacy_depth=6, per_user=True)
    # user 2: hits at ranks 1 and 4, both within depth 6: legacy ideal = 2 ranks, like the standard one
    # user 1: hit at rank 5 only: no hit in the top 2, legacy 0
    expected = [1.0, 0.0, (1 / LOG2_3) / (1 + 1 / LOG2_3)]
    np.testing.assert_allclose(out["per_user"]["ndcg_legacy@2"], expected)
    shallow = evaluate(matrix_scorer(scores), data, "test", ks=[2], legacy_depth=2, per_user=True)
    # depth 2: user 2 has one hit in the top 2, so its legacy ideal is one rank
    np.testing.assert_allclose(shallow["per_user"]["ndcg_legacy@2"], [1.0, 0.0, 1 / LOG2_3])


def test_users_argument_restricts_the_evaluated_users(four_users):
    data, scores = four_users
    full = evaluate(matrix_scorer(scores), data, "test", ks=[2], legacy_depth=None, per_user=True)
    scorer = matrix_scorer(scores)
    some = evaluate(scorer, data, "test", ks=[2], legacy_depth=None, users=np.array([2, 0, 3]), per_user=True)
    assert some["users"] == 2  # user 3 has no test item
    np.testing.assert_array_equal(some["per_user"]["user"], [0, 2])
    assert some["recall@2"] == pytest.approx((1 + 0.5) / 2)
    np.testing.assert_array_equal(some["per_user"]["recall@2"], full["per_user"]["recall@2"][[0, 2]])
    assert sorted(np.concatenate(scorer.batches).tolist()) == [0, 2]  # nobody else was scored


def test_no_evaluated_user_gives_zeros(four_users):
    data, scores = four_users
    out = evaluate(matrix_scorer(scores), data, "test", ks=[1, 2], legacy_depth=2, users=np.array([3]))
    assert out == {"recall@1": 0.0, "ndcg@1": 0.0, "ndcg_legacy@1": 0.0,
                   "recall@2": 0.0, "ndcg@2": 0.0, "ndcg_legacy@2": 0.0, "users": 0}


# ------------------------------------------------------------------ chunking and scorer types
@pytest.mark.parametrize("seed", [0, 1])
def test_chunk_size_does_not_change_results(seed):
    data, scores = random_case(seed)
    runs = [evaluate(matrix_scorer(scores), data, "test", ks=[5, 20], per_user=True, chunk_size=c)
            for c in (1, 3, None)]
    assert default_chunk(data.n_items) > len(evaluation_users(data, "test"))  # default = one chunk here
    scorer = matrix_scorer(scores)
    evaluate(scorer, data, "test", ks=[5], chunk_size=3)
    assert max(len(b) for b in scorer.batches) == 3
    reference = runs[-1]
    assert reference["users"] > 20
    # exact on any CPU: each user's row is the same array whatever the chunk, metrics come from integer ranks,
    # and every mean is taken over the same per-user array
    for run in runs[:-1]:
        assert run.keys() == reference.keys()
        for key, value in reference.items():
            if key == "per_user":
                for name, values in value.items():
                    np.testing.assert_array_equal(run["per_user"][name], values)
            else:
                assert run[key] == value


def test_bad_chunk_size_is_refused():
    data, scores = random_case(0)
    with pytest.raises(DataError, match="chunk_size"):
        evaluate(matrix_scorer(scores), data, "test", ks=[5], chunk_size=-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_and_torch_scorers_agree(dtype):
    data, scores = random_case(2)
    scores = scores.astype(dtype)
    as_numpy = evaluate(lambda u: scores[u].copy(), data, "test", ks=[5, 20], per_user=True)
    as_torch = evaluate(lambda u: torch.from_numpy(scores[u].copy()), data, "test", ks=[5, 20], per_user=True)
    # exact: both become the same tensor before torch.topk, so this is one computation
    assert as_numpy["recall@20"] > 0
    for key in ("recall@5", "ndcg@5", "ndcg_legacy@5", "recall@20", "ndcg@20", "ndcg_legacy@20", "users"):
        assert as_numpy[key] == as_torch[key]
    for name, values in as_numpy["per_user"].items():
        np.testing.assert_array_equal(as_torch["per_user"][name], values)


def test_read_only_and_integer_scores_are_accepted():
    data, scores = random_case(3)
    ranks = scores.argsort(axis=1).argsort(axis=1)  # distinct integer scores per row
    expected = evaluate(lambda u: ranks[u].astype(np.float64), data, "test", ks=[10])
    read_only = evaluate(lambda u: np.broadcast_to(ranks[u], (len(u), data.n_items)), data, "test", ks=[10])
    assert read_only == expected
    assert expected["recall@10"] > 0


@pytest.mark.parametrize(
    "shape_of",
    [
        lambda n, m: (n, m - 1),
        lambda n, m: (n, m + 1),
        lambda n, m: (n + 1, m),
        lambda n, m: (m,),
        lambda n, m: (m, n),
    ],
)
def test_scorer_with_wrong_shape_is_refused(shape_of):
    data, _ = random_case(0, n_users=5, n_items=120)
    with pytest.raises(DataError, match="shape"):
        evaluate(lambda u: np.zeros(shape_of(len(u), data.n_items)), data, "test", ks=[5])


def test_ks_beyond_the_item_count_are_refused():
    data, scores = random_case(0, n_users=5, n_items=40)
    scorer = matrix_scorer(scores)
    with pytest.raises(DataError, match="40"):
        evaluate(scorer, data, "test", ks=[41], legacy_depth=None)
    with pytest.raises(DataError, match="legacy_depth"):
        evaluate(scorer, data, "test", ks=[5])  # the default legacy depth of 100 needs 100 items
    assert evaluate(scorer, data, "test", ks=[40], legacy_depth=None)["recall@40"] == 1.0


@pytest.mark.parametrize("ks", [[], [0], [5, -1]])
def test_non_positive_ks_are_refused(ks):
    data, scores = random_case(0)
    with pytest.raises(DataError):
        evaluate(matrix_scorer(scores), data, "test", ks=ks)


def test_unknown_split_is_refused():
    data, scores = random_case(0)
    with pytest.raises(DataError, match="tset"):
        evaluate(matrix_scorer(scores), data, "tset", ks=[5])


# ------------------------------------------------------------------ brute-force oracle
def brute_force(data, scores, split, k, depth):
    """Per-user metrics by sorting every user's scores in plain Python."""
    excluded = set(excluded_splits(split))
    codes = {"train": TRAIN, "valid": VALID, "test": TEST}
    out = {}
    for u in range(data.n_users):
        rows = data.user == u
        targets = {int(i) for i, s in zip(data.item[rows], data.split[rows], strict=True) if s == codes[split]}
        known = {int(i) for i, s in zip(data.item[rows], data.split[rows], strict=True)
                 if any(s == codes[e] for e in excluded)}
        if not targets:
            continue
        ranking = sorted((j for j in range(data.n_items) if j not in known), key=lambda j: -scores[u, j])
        hits = [1 if j in targets else 0 for j in ranking]
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits[:k]))
        ideal = sum(1 / math.log2(r + 2) for r in range(min(len(targets), k)))
        in_depth = sum(hits[:max(depth, k)])
        legacy_ideal = sum(1 / math.log2(r + 2) for r in range(min(in_depth, k)))
        out[u] = (sum(hits[:k]) / len(targets), dcg / ideal, dcg / legacy_ideal if legacy_ideal else 0.0)
    return out


@st.composite
def small_cases(draw):
    """A small split dataset and a seed for its scores."""
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(3, 25))
    rows = draw(st.lists(st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1), st.integers(0, 2)),
                         min_size=1, max_size=60))
    data = interactions(rows, n_users=n_users, n_items=n_items)
    return data, draw(st.integers(0, 2**32 - 1))


def distinct_scores(data, seed):
    rng = np.random.default_rng(seed)
    return rng.permutation(data.n_users * data.n_items).reshape(data.n_users, data.n_items).astype(np.float64)


@settings(max_examples=60, deadline=None)
@given(small_cases(), st.sampled_from(["valid", "test"]), st.data())
def test_matches_brute_force_ranking(case, split, draw):
    data, seed = case
    scores = distinct_scores(data, seed)
    k = draw.draw(st.integers(1, data.n_items), label="k")
    depth = draw.draw(st.integers(1, data.n_items), label="depth")
    out = evaluate(matrix_scorer(scores), data, split, ks=[k], legacy_depth=depth, per_user=True,
                   chunk_size=draw.draw(st.integers(1, 4), label="chunk"))
    expected = brute_force(data, scores, split, k, depth)
    assert out["users"] == len(expected)
    assert out["per_user"]["user"].tolist() == sorted(expected)
    for i, u in enumerate(out["per_user"]["user"]):
        got = (out["per_user"][f"recall@{k}"][i], out["per_user"][f"ndcg@{k}"][i],
               out["per_user"][f"ndcg_legacy@{k}"][i])
        assert got == pytest.approx(expected[int(u)], rel=1e-12)


# ------------------------------------------------------------------ properties
@settings(max_examples=60, deadline=None)
@given(small_cases(), st.sampled_from(["valid", "test"]), st.data())
def test_metrics_lie_in_unit_interval(case, split, draw):
    data, seed = case
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(data.n_users, data.n_items)).round(1)  # ties allowed here
    ks = draw.draw(st.lists(st.integers(1, data.n_items), min_size=1, max_size=3), label="ks")
    depth = draw.draw(st.integers(1, data.n_items), label="depth")
    out = evaluate(matrix_scorer(scores), data, split, ks=ks, legacy_depth=depth, per_user=True)
    for key, value in out.items():
        if key == "users":
            continue
        if key == "per_user":
            for name, values in value.items():
                if name != "user":
                    assert np.all((values >= 0) & (values <= 1 + 1e-12)), name
        else:
            assert 0.0 <= value <= 1.0 + 1e-12, key


@settings(max_examples=60, deadline=None)
@given(small_cases(), st.sampled_from(["valid", "test"]), st.data())
def test_perfect_scorer_scores_one(case, split, draw):
    data, _ = case
    targets = data.csr(split).toarray()
    if targets.sum() == 0:
        return  # nobody to evaluate
    most = int(targets.sum(axis=1).max())
    k = draw.draw(st.integers(most, data.n_items), label="k")  # every user has at most K targets
    out = evaluate(lambda u: targets[u].astype(np.float32), data, split, ks=[k], legacy_depth=k)
    assert out["users"] == int((targets.sum(axis=1) > 0).sum())
    assert out[f"recall@{k}"] == pytest.approx(1.0)
    assert out[f"ndcg@{k}"] == pytest.approx(1.0)
    assert out[f"ndcg_legacy@{k}"] == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(small_cases(), st.sampled_from(["valid", "test"]), st.data())
def test_consistent_item_permutation_changes_nothing(case, split, draw):
    data, seed = case
    scores = distinct_scores(data, seed)
    perm = np.array(draw.draw(st.permutations(range(data.n_items)), label="perm"))
    moved = Interactions.from_internal(data.user, perm[data.item], n_users=data.n_users, n_items=data.n_items,
                                       split=data.split)
    moved_scores = np.empty_like(scores)
    moved_scores[:, perm] = scores  # item j is now called perm[j] and keeps its score
    k = draw.draw(st.integers(1, data.n_items), label="k")
    depth = draw.draw(st.integers(1, data.n_items), label="depth")
    before = evaluate(matrix_scorer(scores), data, split, ks=[k], legacy_depth=depth, per_user=True)
    after = evaluate(matrix_scorer(moved_scores), moved, split, ks=[k], legacy_depth=depth, per_user=True)
    assert before.keys() == after.keys()
    for key, value in before.items():
        if key == "per_user":
            for name, values in value.items():
                np.testing.assert_array_equal(after["per_user"][name], values)
        else:
            assert after[key] == value


def test_perfect_scorer_on_ml100k(ml100k):
    targets = ml100k.csr("test")
    out = evaluate(lambda u: targets[u].toarray(), ml100k, "test", ks=[50, 300])
    # some users have more than 50 test items: recall@50 < 1, but ndcg@50 (ideal over min(|T|, 50)) is 1
    assert int(np.diff(targets.indptr).max()) > 50
    assert out["users"] == int((np.diff(targets.indptr) > 0).sum()) == 943
    assert out["ndcg@50"] == pytest.approx(1.0)
    assert out["ndcg_legacy@50"] == pytest.approx(1.0)
    assert 0.9 < out["recall@50"] < 1.0
    assert out["recall@300"] == pytest.approx(1.0)
