"""Nested blocks on a device: which leading blocks each item group keeps at a budget (the density order).

With a nested stage a every prefix of an item's blocks is a trained embedding, so a device's selection
is an allocation: how many leading blocks each item group keeps. The density order ranks block b of
item group g by its value per byte, share_g x decay^b (item groups have equal sizes); one user group's
unit order is that ranking with its own shares, and a budget keeps a prefix of it (peel.units.select).
"""

from __future__ import annotations

import numpy as np

from peel.units import UnitLayout, select, unit_order


def density_weights(share: np.ndarray, n_blocks: int, decay: float) -> np.ndarray:
    """(G_v, N) importance weights share_g * decay^b. With decay < 1 an item group's blocks come in order,
    and popular item groups get more of them."""
    smoothed = np.asarray(share, dtype=np.float64) + 1e-6  # an item group with no interaction still ranks
    smoothed /= smoothed.sum()
    return smoothed[:, None] * decay ** np.arange(n_blocks)[None, :]


def allocation_table(share: np.ndarray, layout: UnitLayout, decay: float, n_budgets: int) -> np.ndarray:
    """(n_budgets, G_v) blocks each item group keeps under the density order at ``n_budgets`` budgets spaced
    geometrically from the minimum (one block per item group) to the full table: the allocations a
    device may hold, which stage a can train on (pretrain.allocation_budgets)."""
    order = unit_order(density_weights(share, layout.n_blocks, decay))
    g_v = len(layout.item_group_sizes)
    budgets = np.geomspace(layout.minimum_bytes(order), layout.full_bytes(), n_budgets)
    return np.stack([select(order, layout, int(b)).kept_mask(g_v, layout.n_blocks).sum(axis=1) for b in budgets])
