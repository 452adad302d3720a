"""Shared fixtures: the real datasets in ../shared/data (beside the checkout, also in CI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared dataset folder (ml-100k, amazon-book-sub, yelp2018-sub), resolved."""
    path = SHARED_DATA.resolve()
    if not (path / "ml-100k" / "train.txt").is_file():
        pytest.fail(f"shared datasets not found at {path}; tests expect ../shared/data beside the checkout")
    return path


@pytest.fixture(scope="session")
def ml100k(shared_data: Path):
    """ml-100k as shipped (pre-split train/valid/test), loaded once per session. Do not modify."""
    from peel.data import load_presplit

    return load_presplit(shared_data / "ml-100k")


@pytest.fixture(scope="session")
def small_data():
    """300 users x 200 items of synthetic data: the training and export tests share it."""
    from peel.data import synthetic_dataset

    return synthetic_dataset(n_users=300, n_items=200, mean_interactions=20, seed=3)


def assert_same_top_k(positions: np.ndarray, scores: np.ndarray, reference: np.ndarray, tol: float) -> None:
    """A top-K computed one way (``positions`` on the item axis of ``reference``, ``scores`` best first) is the
    top-K of ``reference``, every item's score computed another way (-inf where excluded), when the two ways
    may differ by up to ``tol`` per score.

    Two different float computations (another BLAS kernel, summation order, CPU or library) round differently,
    so items whose scores lie within the tolerance of each other may come back in either order, and either
    may take the K-th place. The r-th largest scores of the two ways are themselves at most ``tol`` apart, so
    rank r may hold any item whose reference score is within 2 * tol of the reference's r-th best; where the
    reference scores are further apart than that, the items must be exactly the reference's.
    """
    positions, scores = np.asarray(positions), np.asarray(scores, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    k = len(positions)
    assert len(np.unique(positions)) == k, "an item came back twice"
    assert np.all(np.diff(scores) <= 0), "scores are not best first"
    assert np.isfinite(reference[positions]).all(), "an excluded item came back"
    np.testing.assert_allclose(scores, reference[positions], rtol=0, atol=tol, err_msg="an item's own score")
    best = -np.sort(-reference)[:k]
    np.testing.assert_allclose(reference[positions], best, rtol=0, atol=2 * tol,
                               err_msg="an item that is not the reference's at its rank, nor tied with it")


@pytest.fixture(scope="session")
def same_top_k():
    """:func:`assert_same_top_k`, for the tests of every folder."""
    return assert_same_top_k
