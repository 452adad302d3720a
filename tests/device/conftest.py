"""Bundles written directly with the writer API (no training): any G_v, N, d."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from peel.device.writer import write_items_bundle
from peel.units import UnitLayout, stored_values, unit_order


@dataclass
class Made:
    """A bundle on disk and the arrays it was written from."""

    path: Path
    blocks: np.ndarray        # (items, N, d) by internal id
    item_group: np.ndarray
    order: np.ndarray         # full unit order written
    item_ids: np.ndarray      # raw ids by internal id
    unit_dtype: str = "f32"

    @property
    def layout(self) -> UnitLayout:
        return UnitLayout(np.bincount(self.item_group), self.blocks.shape[1], self.blocks.shape[2], self.unit_dtype)

    @property
    def stored_blocks(self) -> np.ndarray:
        """The blocks as the bundle stores them (q8: rounded), float32."""
        return stored_values(self.blocks, self.item_group, self.unit_dtype)

    @property
    def item_order(self) -> np.ndarray:
        return np.argsort(self.item_group, kind="stable")

    def expected_unit(self, i: int) -> np.ndarray:
        g, n = self.order[i]
        stored = self.item_order[self.item_group[self.item_order] == g]
        return self.stored_blocks[stored, n, :]


def make_bundle(path: Path, *, n_items: int = 30, g_v: int = 3, n_blocks: int = 4, d: int = 2, seed: int = 0,
                string_ids: bool = False, eq10: str = "masked", prefix: int | None = None,
                eq10_scale: str = "sqrt", unit_dtype: str = "f32") -> Made:
    rng = np.random.default_rng(seed)
    blocks = rng.standard_normal((n_items, n_blocks, d)).astype(np.float32)
    item_group = np.sort(np.arange(n_items) % g_v)
    rng.shuffle(item_group)  # items of a group are not contiguous by internal id
    order = unit_order(rng.random((g_v, n_blocks)))
    if prefix is not None:
        order = order[:prefix]
    ids = np.array([f"item-{j}-é" for j in range(n_items)], dtype=object) if string_ids \
        else rng.permutation(n_items).astype(np.int64) * 7 + 1000
    write_items_bundle(path, blocks=blocks, item_group=item_group, unit_order=order, item_ids=ids, eq10=eq10,
                       eq10_scale=eq10_scale, n_item_groups=g_v, unit_dtype=unit_dtype,
                       metadata={"dataset": "unit-test"})
    return Made(path, blocks, item_group, order, ids, unit_dtype)


@pytest.fixture(params=["f32", "q8"])
def made(tmp_path: Path, request: pytest.FixtureRequest) -> Made:
    """One small bundle, once with float32 units and once with q8 units: every runtime promise holds for both."""
    return make_bundle(tmp_path / "b.peelb", unit_dtype=request.param)


@pytest.fixture(scope="session")
def made_session(tmp_path_factory: pytest.TempPathFactory) -> Made:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b.peelb", n_items=23, g_v=3, n_blocks=3, d=2, seed=5)


@pytest.fixture(scope="session")
def make():
    """The bundle factory, for tests that vary the shape."""
    return make_bundle
