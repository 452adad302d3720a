"""Reference scorers: popularity, random, dot product and PureSVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peel.data.interactions import Interactions
from peel.evaluation import DotProductScorer, PopularityScorer, RandomScorer, evaluate
from peel.evaluation.scorers import pure_svd_scorer

TRAIN, VALID, TEST = 0, 1, 2


@pytest.fixture(scope="module")
def ml100k_reference(ml100k):
    """Popularity and PureSVD test metrics on ml-100k, computed once."""
    return {
        "popularity": evaluate(PopularityScorer(ml100k), ml100k, "test", ks=[20]),
        "svd": evaluate(pure_svd_scorer(ml100k), ml100k, "test", ks=[20]),
    }


# ------------------------------------------------------------------ popularity
@pytest.fixture
def skewed():
    """Train popularity 1, 3, 2, 0 for items 0..3; valid/test interactions are all on item 0 and 3."""
    rows = [
        (0, 0, TRAIN), (0, 1, TRAIN), (1, 1, TRAIN), (2, 1, TRAIN), (1, 2, TRAIN), (2, 2, TRAIN),
        (1, 0, VALID), (2, 0, TEST), (3, 0, TEST), (3, 3, TEST), (4, 0, VALID), (4, 3, TEST), (5, 3, VALID),
    ]
    user, item, split = (np.array(col) for col in zip(*rows, strict=True))
    return Interactions.from_internal(user, item, n_users=6, n_items=4, split=split)


def test_popularity_uses_training_interactions_only(skewed):
    scores = PopularityScorer(skewed)(np.array([0, 3, 5]))
    assert tuple(scores.shape) == (3, 4)
    assert scores.is_floating_point()
    expected = np.array([1.0, 3.0, 2.0, 0.0])  # all splits would give [5, 3, 2, 3]
    for row in scores.numpy():
        np.testing.assert_array_equal(row, expected)


def test_popularity_ranking(skewed):
    # user 3 has no train item; by training popularity the order is 1, 2, 0, 3, so its test items 0 and 3
    # rank 3rd and 4th (by popularity over all splits item 0 would rank first)
    out = evaluate(PopularityScorer(skewed), skewed, "test", ks=[1, 3], legacy_depth=None, users=np.array([3]))
    assert out["recall@1"] == 0.0
    assert out["recall@3"] == 0.5
    assert out["ndcg@3"] == pytest.approx(0.5 / (1 + 1 / np.log2(3)))


def test_popularity_of_unsplit_data_counts_every_interaction():
    data = Interactions.from_internal(np.array([0, 1, 1, 2]), np.array([2, 2, 0, 2]), n_users=3, n_items=3)
    np.testing.assert_array_equal(PopularityScorer(data)(np.array([0])).numpy(), [[1.0, 0.0, 3.0]])


def test_popularity_returns_a_fresh_tensor(skewed):
    scorer = PopularityScorer(skewed)
    first = scorer(np.array([0, 1]))
    first[:] = -1.0  # what the evaluator does to excluded items
    np.testing.assert_array_equal(scorer(np.array([0])).numpy(), [[1.0, 3.0, 2.0, 0.0]])


# ------------------------------------------------------------------ random
def test_random_scores_are_deterministic_and_in_unit_interval():
    users = np.array([0, 4, 7])
    a = RandomScorer(50, seed=3)(users)
    b = RandomScorer(50, seed=3)(users)
    assert tuple(a.shape) == (3, 50)
    assert a.is_floating_point()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert float(a.min()) >= 0.0 and float(a.max()) < 1.0
    assert not torch.equal(a, RandomScorer(50, seed=4)(users))  # the seed matters
    assert not torch.equal(a[0], a[1])  # users differ


def test_random_scores_do_not_depend_on_the_batch():
    scorer = RandomScorer(300, seed=1)
    batch = scorer(np.array([9, 2, 40, 7]))
    for row, user in enumerate([9, 2, 40, 7]):
        torch.testing.assert_close(scorer(np.array([user]))[0], batch[row], rtol=0, atol=0)


def test_random_scores_look_uniform():
    values = RandomScorer(1000, seed=0)(np.arange(200)).numpy().ravel()
    counts = np.histogram(values, bins=10, range=(0.0, 1.0))[0]
    assert counts.min() > 0.9 * len(values) / 10 and counts.max() < 1.1 * len(values) / 10
    assert len(np.unique(values)) > 0.98 * len(values)  # 24-bit values: few ties


def test_random_scorer_chunking_and_recall_on_ml100k(ml100k):
    scorer = RandomScorer(ml100k.n_items, seed=0)
    whole = evaluate(scorer, ml100k, "test", ks=[20], per_user=True)
    chunked = evaluate(scorer, ml100k, "test", ks=[20], per_user=True, chunk_size=7)
    np.testing.assert_array_equal(whole["per_user"]["recall@20"], chunked["per_user"]["recall@20"])
    chance = 20 / ml100k.n_items  # 20 / 1682: about 0.0119
    assert ml100k.n_items == 1682
    assert 0.6 * chance < whole["recall@20"] < 1.6 * chance
    assert whole["recall@20"] < 0.3 * evaluate(PopularityScorer(ml100k), ml100k, "test", ks=[20])["recall@20"]


# ------------------------------------------------------------------ dot product and PureSVD
@pytest.mark.parametrize("as_tensor", [False, True])
def test_dot_product_is_a_matmul(as_tensor):
    rng = np.random.default_rng(0)
    user_vectors = rng.normal(size=(6, 4)).astype(np.float32)
    item_vectors = rng.normal(size=(9, 4)).astype(np.float32)
    wrap = torch.from_numpy if as_tensor else (lambda a: a)
    scorer = DotProductScorer(wrap(user_vectors), wrap(item_vectors))
    users = np.array([5, 0, 3])
    scores = scorer(users)
    assert tuple(scores.shape) == (3, 9)
    expected = np.array([[sum(float(user_vectors[u, d]) * float(item_vectors[j, d]) for d in range(4))
                          for j in range(9)] for u in users])
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.numpy(), user_vectors[users] @ item_vectors.T, rtol=1e-6, atol=1e-6)


def test_dot_product_refuses_mismatched_dims():
    with pytest.raises(ValueError, match="4 dims"):
        DotProductScorer(np.zeros((2, 4)), np.zeros((3, 5)))


def test_pure_svd_shapes_and_determinism(ml100k):
    a = pure_svd_scorer(ml100k, dim=16, seed=0)
    b = pure_svd_scorer(ml100k, dim=16, seed=0)
    assert tuple(a.user_vectors.shape) == (943, 16)
    assert tuple(a.item_vectors.shape) == (1682, 16)
    users = np.array([0, 100, 942])
    torch.testing.assert_close(a(users), b(users), rtol=1e-5, atol=1e-5)


def test_pure_svd_reconstructs_a_low_rank_matrix():
    # a rank-2 binary matrix: PureSVD at dim 2 reproduces it
    rows = [(u, i, TRAIN) for u in range(6) for i in range(8) if (u < 3) == (i < 4)]
    user, item, split = (np.array(col) for col in zip(*rows, strict=True))
    data = Interactions.from_internal(user, item, n_users=6, n_items=8, split=split)
    scores = pure_svd_scorer(data, dim=2)(np.arange(6)).numpy()
    np.testing.assert_allclose(scores, data.csr("train").toarray(), atol=1e-5)


def test_pure_svd_beats_popularity_on_ml100k(ml100k_reference):
    popularity = ml100k_reference["popularity"]["recall@20"]
    svd = ml100k_reference["svd"]["recall@20"]
    assert popularity > 0.1  # popularity is a real floor on ml-100k (about 0.18)
    assert svd > popularity + 0.05  # about 0.29
    assert ml100k_reference["svd"]["ndcg@20"] > ml100k_reference["popularity"]["ndcg@20"]
