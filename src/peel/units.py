"""Units, their importance order, budget selection and Eq. 10 ranking. numpy only.

A *unit* is block n of every item in item group g (|V_g| x d floats). One user group's bundle is
its units in a fixed order; a budget keeps a prefix of that order (DESIGN.md, pipeline).
The server evaluation and the device runtime both use these functions, so what the server
reports at a budget is what a device computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from peel.errors import BudgetError, ConfigError

BYTES_PER_FLOAT = 4
EQ10_READINGS = ("masked", "fold")
# Eq. 10 normalizer of an item group with |S_g| kept blocks: the paper's s_max/|S_g| equalizes the expected
# score; "sqrt" (sqrt(s_max/|S_g|)) equalizes its spread, so items with few kept blocks do not flood the
# top-K with amplified noise; "none" leaves partial dot products as they are. "sqrt" is the default because
# it measured best: benchmarks/results/pipeline_amazon-book-sub.md ("Device options"; README, peel evaluate;
# recorded in methods.md §11).
EQ10_SCALES = ("sqrt", "paper", "none")
# How a bundle stores a unit's values: "f32" (4 bytes a value) or "q8": the unit's |V_g| x d values as int8 times
# one float32 scale of the unit, absmax / 127 (|V_g| * d + 4 bytes: 4x the blocks of f32 in a budget). One scale per
# unit folds into the query, so a device scores int8 units with one matrix-vector product, as float32 ones. It cost
# at most 0.2% validation NDCG@50 (a scale per item and block: no better; benchmarks/results/quantization_probe_*.md).
UNIT_DTYPES = ("f32", "q8")
Q8_LEVELS = 127
Q8_SCALE_BYTES = 4  # a q8 unit's float32 scale


def unit_order(importance_weights: np.ndarray) -> np.ndarray:
    """The unit order of methods.md §9 as an array of (item group, block) rows.

    First the best block of every item group (item groups by that block's weight, descending),
    then every other unit by weight, descending; ties broken by (item group, block) index.
    """
    weights = np.asarray(importance_weights, dtype=np.float64)
    if weights.ndim != 2:
        raise ConfigError(f"importance weights must be (item groups, blocks), got shape {weights.shape}")
    n_groups, n_blocks = weights.shape
    group, block = np.divmod(np.arange(weights.size), n_blocks)
    flat = weights.ravel()
    # rank within each item group: by weight desc, then block index
    within = np.lexsort((block, -flat, group))
    is_best = np.zeros(weights.size, dtype=bool)
    is_best[within[::n_blocks]] = True
    index = group * n_blocks + block
    order = np.lexsort((index, -flat, ~is_best))
    return np.stack([group[order], block[order]], axis=1)


def random_unit_order(n_item_groups: int, n_blocks: int, seed: int) -> np.ndarray:
    """The 'no importance weight' ablation: one random block per item group first, the rest random."""
    rng = np.random.default_rng(seed)
    return unit_order(rng.random((n_item_groups, n_blocks)))


def unit_size(rows: np.ndarray | int, block_dim: int, unit_dtype: str = "f32") -> np.ndarray | int:
    """Bytes of a unit of ``rows`` items stored as ``unit_dtype``: rows * d * 4 (f32) or rows * d + 4 (q8)."""
    if unit_dtype not in UNIT_DTYPES:
        raise ConfigError(f"unit dtype must be one of {UNIT_DTYPES}, got {unit_dtype!r}")
    return rows * block_dim * BYTES_PER_FLOAT if unit_dtype == "f32" else rows * block_dim + Q8_SCALE_BYTES


def quantize_unit(values: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """q8: a unit's values as int8 in [-127, 127] times one float32 scale, absmax / 127 (0 for an all-zero unit).

    Round half to even, elementwise only (no BLAS): the same bits on every CPU. Non-finite values are refused.
    """
    values = np.asarray(values, dtype=np.float32)
    absmax = np.float32(np.abs(values).max()) if values.size else np.float32(0)
    if not np.isfinite(absmax):
        raise ConfigError("a unit holds non-finite values: q8 cannot store them")
    scale = absmax / np.float32(Q8_LEVELS)
    return _round_q8(values, scale), scale


def _round_q8(values: np.ndarray, scale: np.ndarray | np.float32) -> np.ndarray:
    """``values`` / ``scale`` rounded half to even into [-127, 127] as int8; 0 where the scale is 0."""
    ratio = np.divide(values, scale, out=np.zeros_like(values), where=scale > 0)
    return np.clip(np.rint(ratio), -Q8_LEVELS, Q8_LEVELS).astype(np.int8)


def dequantize_unit(q: np.ndarray, scale: np.floating | float) -> np.ndarray:
    """The float32 values of a q8 unit: int8 times the unit's scale."""
    return q.astype(np.float32) * np.float32(scale)


def stored_values(blocks: np.ndarray, item_group: np.ndarray, unit_dtype: str) -> np.ndarray:
    """``blocks`` (items, N, d) as bundles of ``unit_dtype`` store them, float32: for q8 every unit (item group g,
    block n) rounded on its own scale, exactly as :func:`quantize_unit` rounds it for the writer."""
    unit_size(0, 1, unit_dtype)  # refuses an unknown dtype
    blocks = np.asarray(blocks, dtype=np.float32)
    if unit_dtype == "f32":
        return blocks
    item_group = np.asarray(item_group)
    absmax = np.zeros((int(item_group.max()) + 1 if item_group.size else 0, blocks.shape[1]), dtype=np.float32)
    np.maximum.at(absmax, item_group, np.abs(blocks).max(axis=2))
    if not np.isfinite(absmax).all():
        raise ConfigError("a unit holds non-finite values: q8 cannot store them")
    scale = (absmax / np.float32(Q8_LEVELS))[item_group][:, :, None]  # (items, N, 1), the unit's scale
    return _round_q8(blocks, scale).astype(np.float32) * scale


@dataclass(frozen=True)
class UnitLayout:
    """Sizes needed for byte accounting: item-group sizes, blocks per item, block dim, unit dtype."""

    item_group_sizes: np.ndarray  # (G_v,)
    n_blocks: int
    block_dim: int
    unit_dtype: str = "f32"

    def __post_init__(self) -> None:
        unit_size(0, self.block_dim, self.unit_dtype)  # refuses an unknown dtype

    @property
    def embedding_dim(self) -> int:
        return self.n_blocks * self.block_dim

    @property
    def user_vector_bytes(self) -> int:
        return self.embedding_dim * BYTES_PER_FLOAT

    @property
    def group_unit_bytes(self) -> np.ndarray:
        """(G_v,) bytes of one unit of each item group."""
        return unit_size(np.asarray(self.item_group_sizes, dtype=np.int64), self.block_dim, self.unit_dtype)

    def unit_bytes(self, order: np.ndarray) -> np.ndarray:
        """Bytes of each unit of ``order``: |V_g| * d * 4 (f32) or |V_g| * d + 4 (q8)."""
        return self.group_unit_bytes[order[:, 0]]

    def minimum_bytes(self, order: np.ndarray) -> int:
        """The smallest budget: the first G_v units (one block per item group) + the user vector."""
        n_groups = len(self.item_group_sizes)
        return int(self.unit_bytes(order)[:n_groups].sum()) + self.user_vector_bytes

    def full_bytes(self) -> int:
        return int(self.group_unit_bytes.sum()) * self.n_blocks + self.user_vector_bytes


@dataclass(frozen=True)
class Selection:
    """The kept prefix of a unit order under a budget."""

    order: np.ndarray  # (units, 2) full order
    n_kept: int
    bytes_used: int  # kept units + user vector
    budget_bytes: int

    @property
    def kept(self) -> np.ndarray:
        return self.order[: self.n_kept]

    def kept_mask(self, n_item_groups: int, n_blocks: int) -> np.ndarray:
        mask = np.zeros((n_item_groups, n_blocks), dtype=bool)
        kept = self.kept
        mask[kept[:, 0], kept[:, 1]] = True
        return mask


def select(order: np.ndarray, layout: UnitLayout, budget_bytes: int) -> Selection:
    """Keep units in order while units + user vector fit ``budget_bytes``; stop at the first misfit.

    Raises BudgetError, stating the minimum, when one block per item group does not fit.
    """
    costs = layout.unit_bytes(order)
    running = np.cumsum(costs) + layout.user_vector_bytes
    n_kept = int(np.argmax(running > budget_bytes)) if running[-1] > budget_bytes else len(order)
    minimum = layout.minimum_bytes(order)
    if n_kept < len(layout.item_group_sizes):
        raise BudgetError(f"budget of {budget_bytes:,} bytes is below the minimum of {minimum:,} bytes "
                          f"({minimum / 1e6:.3f} MB: one block per item group + the user vector)")
    used = int(running[n_kept - 1])
    return Selection(order=order, n_kept=n_kept, bytes_used=used, budget_bytes=int(budget_bytes))


# ---------------------------------------------------------------------- Eq. 10
def block_scale(kept_mask: np.ndarray, scale: str = "paper") -> np.ndarray:
    """Eq. 10's normalizer per item group: s_max / |S_g| ('paper'), its square root ('sqrt') or 1
    ('none'); 0 for a group with no kept block."""
    return count_scale(kept_mask.sum(axis=1), scale)


def count_scale(kept_counts: np.ndarray, scale: str = "paper") -> np.ndarray:
    """:func:`block_scale` from |S_g|, the kept blocks of every item group (no G_v x N mask needed)."""
    if scale not in EQ10_SCALES:
        raise ConfigError(f"eq10 scale must be one of {EQ10_SCALES}, got {scale!r}")
    counts = np.asarray(kept_counts).astype(np.float64)
    ratio = np.divide(counts.max(), counts, out=np.zeros_like(counts), where=counts > 0)
    if scale == "sqrt":
        return np.sqrt(ratio)
    if scale == "none":
        return (counts > 0).astype(np.float64)
    return ratio


def effective_items(blocks: np.ndarray, item_group: np.ndarray, kept_mask: np.ndarray, reading: str,
                    scale: str = "paper") -> np.ndarray:
    """Item matrix such that Eq. 10 is ``query(user) @ effective.T``.

    ``blocks``: (items, N, d) block vectors; ``item_group``: item group of every item;
    ``kept_mask``: (G_v, N) kept units. 'masked' gives (items, N*d) with dropped blocks zeroed;
    'fold' gives (items, d), the sum of kept blocks; both scaled by :func:`block_scale` (``scale``).
    """
    if reading not in EQ10_READINGS:
        raise ConfigError(f"eq10 reading must be one of {EQ10_READINGS}, got {reading!r}")
    factor = block_scale(kept_mask, scale)[item_group].astype(blocks.dtype)
    mask = kept_mask[item_group].astype(blocks.dtype)  # (items, N)
    weighted = blocks * (mask * factor[:, None])[:, :, None]
    if reading == "masked":
        return weighted.reshape(len(blocks), -1)
    return weighted.sum(axis=1)


def user_query(user_vectors: np.ndarray, n_blocks: int, reading: str) -> np.ndarray:
    """The user side of Eq. 10: the full vector ('masked') or its N slices summed ('fold')."""
    if reading == "masked":
        return user_vectors
    return user_vectors.reshape(len(user_vectors), n_blocks, -1).sum(axis=1)
