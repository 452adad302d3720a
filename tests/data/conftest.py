"""Fixtures for the data-layer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def udata_path(shared_data: Path) -> Path:
    return shared_data / "ml-100k" / "u.data"


@pytest.fixture(scope="session")
def udata_rows(udata_path: Path) -> np.ndarray:
    """u.data parsed independently of peel: an (n, 4) int array of user, item, rating, timestamp."""
    return np.loadtxt(udata_path, dtype=np.int64, delimiter="\t")


@pytest.fixture(scope="session")
def ml100k_raw(udata_path: Path):
    """ml-100k u.data through the MovieLens loader (unsplit). Do not modify."""
    from peel.data import load_movielens

    return load_movielens(udata_path)


def _parse_adjacency(path: Path) -> set[tuple[int, int]]:
    pairs = set()
    for line in path.read_text().splitlines():
        fields = [int(x) for x in line.split()]
        pairs.update((fields[0], item) for item in fields[1:])
    return pairs


@pytest.fixture(scope="session")
def parse_adjacency():
    """A plain-Python reference parser of adjacency files: the set of (user, item) pairs."""
    return _parse_adjacency


def pairs_of(data, split: str | None = None) -> set[tuple[int, int]]:
    mask = data.rows(split)
    return set(zip(data.user[mask].tolist(), data.item[mask].tolist(), strict=True))


@pytest.fixture(scope="session")
def pairs():
    """(user, item) pairs of an Interactions (optionally one split) as a set of internal ids."""
    return pairs_of


def raw_pairs_of(data, split: str | None = None) -> set[tuple[object, object]]:
    mask = data.rows(split)
    return set(zip(data.user_ids[data.user[mask]].tolist(), data.item_ids[data.item[mask]].tolist(), strict=True))


@pytest.fixture(scope="session")
def raw_pairs():
    """(raw user id, raw item id) pairs of an Interactions, through its id maps."""
    return raw_pairs_of
