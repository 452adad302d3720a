"""Shared fixtures: the real datasets in ../shared/data (beside the checkout, also in CI)."""

from __future__ import annotations

from pathlib import Path

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
