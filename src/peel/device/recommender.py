"""Per-user Eq. 10 ranking over a loaded bundle, with an active unit prefix that shrinks and grows instantly."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from peel.budget import Budget
from peel.errors import BudgetError, BundleError
from peel.units import EQ10_READINGS, EQ10_SCALES, count_scale

if TYPE_CHECKING:
    from peel.device.bundle import BudgetLike, Bundle

Q8_CHUNK = 2**16  # int8 values of a q8 bundle widened to float32 at a time (256 KB of working memory)


class Recommender:
    """Top-K for one user under a budget. Made by :meth:`Bundle.for_user`.

    Working memory: the bundle's loaded units (shared, never copied), one float32 score array over
    items, a few D-sized query vectors and, for a q8 bundle, one buffer of Q8_CHUNK floats the int8
    units are widened into a chunk at a time. ``shrink`` only changes the active prefix length.

    Promise: after ``shrink(B)`` the scores equal those of ``Bundle.open(path, budget=B)`` up to float32
    rounding (each within 2·γ_D·Σ|terms| of the other, γ_n = n·2⁻²⁴/(1 − n·2⁻²⁴): at most 1.5e-5 of
    Σ|terms| at D = 128, in practice a float32 step or two), so the top-K is the same except that items
    tied within that bound may swap. Not bit for bit: a shrunk prefix is a column slice of the loaded
    matrices, and BLAS may sum a strided slice in another order than a contiguous matrix (OpenBLAS's
    SkylakeX sgemv does). The same prefix of the same opened bundle (e.g. shrunk and grown back) gives
    the same bits, in one process with one BLAS thread count.
    """

    def __init__(self, bundle: Bundle, vector: np.ndarray, history: np.ndarray, eq10: str,
                 eq10_scale: str | None = None) -> None:
        if eq10 not in EQ10_READINGS:
            raise BundleError(f"eq10 must be one of {EQ10_READINGS}, got {eq10!r}")
        eq10_scale = eq10_scale or bundle.header.eq10_scale
        if eq10_scale not in EQ10_SCALES:
            raise BundleError(f"eq10_scale must be one of {EQ10_SCALES}, got {eq10_scale!r}")
        self.bundle = bundle
        self.eq10, self.eq10_scale = eq10, eq10_scale
        self.user_vector = vector
        self.history = history                     # stored positions excluded from the ranking
        self._slices = vector.reshape(bundle.n_blocks, bundle.block_dim)  # u^(n), methods.md §11
        self._folded = self._slices.sum(axis=0)    # 'fold': the user vector summed to d dims
        self._scores = np.empty(bundle.n_items, dtype=np.float32)
        # q8: the working buffer int8 units are widened into, a chunk at a time (one item's kept blocks at least)
        self._work = np.empty(max(Q8_CHUNK, bundle.embedding_dim) if bundle._scales else 0, dtype=np.float32)
        self._bounds = bundle.item_group_bounds.tolist()
        self._set_prefix(bundle.n_units_loaded, bundle.budget)

    # ------------------------------------------------------------------ budget
    @property
    def n_units(self) -> int:
        """Length of the active prefix of the unit order."""
        return self._n_units

    @property
    def kept_units(self) -> np.ndarray:
        """(units, 2) rows (item group, block) of the active prefix."""
        return self.bundle.unit_order[: self._n_units]

    @property
    def blocks_per_item_group(self) -> np.ndarray:
        """|S_g|: active blocks of every item group (G_v,)."""
        return self._kept.copy()

    def shrink(self, budget: BudgetLike) -> Recommender:
        """Keep the prefix that fits ``budget`` at once (no unit data is copied).

        A budget larger than the current one grows back up to what :meth:`Bundle.open` loaded; one
        that needs more raises BudgetError (reopen the bundle with that budget).
        """
        parsed = self.bundle.parse_budget(budget)
        if self.bundle.composition is not None:  # a composed bundle is whole or nothing
            from peel.device.bundle import check_composed_budget

            check_composed_budget(parsed, self.bundle.bytes_loaded)
            self.budget = parsed
            return self
        selection = self.bundle.selection(parsed)  # BudgetError below the minimum
        if selection.n_kept > self.bundle.n_units_loaded:
            raise BudgetError(f"budget {parsed} keeps {selection.n_kept} units but only "
                              f"{self.bundle.n_units_loaded} were loaded (bundle opened at {self.bundle.budget}); "
                              "reopen the bundle with the larger budget")
        self._set_prefix(selection.n_kept, parsed)
        return self

    def _set_prefix(self, n_units: int, budget: Budget) -> None:
        b = self.bundle
        if b.composition is not None:
            self._n_units, self._kept, self._queries = 0, np.ones(1, dtype=np.int64), []
            self.budget, self.bytes_used = budget, b.bytes_loaded
            return
        order = b.unit_order[:n_units]
        kept = np.bincount(order[:, 0], minlength=b.n_item_groups)  # units are distinct: |S_g| per group
        scale = count_scale(kept, self.eq10_scale).astype(np.float32)  # Eq. 10's normalizer
        queries, empty = [], self._folded[:0]
        for g in range(b.n_item_groups):
            if self._bounds[g + 1] == self._bounds[g]:  # an empty item group scores nothing: no query
                queries.append(empty)
                continue
            if self.eq10 == "masked":  # concatenated user slices of the group's kept blocks, in column order
                q = self._slices[b._slots[g][: kept[g]]].reshape(-1)
            else:  # 'fold': the folded vector once per kept block
                q = np.tile(self._folded, int(kept[g]))
            if b._scales:  # q8: each unit's scale folds into its slice of the query
                q = q * np.repeat(b._scales[g][: kept[g]], b.block_dim)
            queries.append(q * scale[g])
        self._n_units, self._kept, self._queries = n_units, kept, queries
        self.budget = budget
        self.bytes_used = int(b.layout.unit_bytes(order).sum()) + b.layout.user_vector_bytes

    # ------------------------------------------------------------------ ranking
    def scores(self) -> np.ndarray:
        """Eq. 10 scores of every item, in stored order (history not masked); a fresh array."""
        return self._compute().copy()

    def _compute(self) -> np.ndarray:
        if self.bundle.composition is not None:
            self._scores[:] = self.bundle.composed_scores(self.user_vector)
            return self._scores
        out, d = self._scores, self.bundle.block_dim
        matrices, scales = self.bundle._matrices, self.bundle._scales
        for g, q in enumerate(self._queries):
            lo, hi = self._bounds[g], self._bounds[g + 1]
            if hi == lo:
                continue
            if not scales:  # one matrix-vector product over the group's active columns (a view, no copy)
                np.matmul(matrices[g][:, : int(self._kept[g]) * d], q, out=out[lo:hi])
            else:
                self._q8_scores(matrices[g][:, : int(self._kept[g]) * d], q, out[lo:hi])
        return out

    def _q8_scores(self, values: np.ndarray, query: np.ndarray, out: np.ndarray) -> None:
        """One item group's scores from its active int8 columns (the unit scales are in ``query``): widen
        Q8_CHUNK values at a time to float32 in one working buffer, then a matrix-vector product; the int8
        table is never widened whole."""
        width = values.shape[1]
        rows = max(1, Q8_CHUNK // width)
        for start in range(0, len(values), rows):
            stop = min(start + rows, len(values))
            chunk = self._work[: (stop - start) * width].reshape(stop - start, width)
            np.copyto(chunk, values[start:stop], casting="unsafe")  # int8 -> float32 is exact
            np.matmul(chunk, query, out=out[start:stop])

    def recommend(self, k: int = 50) -> tuple[np.ndarray, np.ndarray]:
        """Original ids and scores of the top ``k`` items, best first, excluding the history.

        Ties are broken by stored position. Fewer than ``k`` come back when fewer items are left.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise BundleError(f"k must be a positive integer, got {k!r}")
        scores = self._compute()
        scores[self.history] = -np.inf
        n = len(scores)
        k = min(int(k), n - len(self.history))
        if k <= 0:
            return self.bundle.item_ids.at(np.zeros(0, dtype=np.int64)), np.zeros(0, dtype=np.float32)
        top = np.argpartition(scores, n - k)[n - k:]
        top = top[np.lexsort((top, -scores[top]))]
        return self.bundle.item_ids.at(top), scores[top].copy()

    def __repr__(self) -> str:
        return (f"Recommender({self._n_units} units, {self.bytes_used:,} bytes used of {self.budget}, "
                f"eq10={self.eq10})")

    def describe(self) -> dict[str, Any]:
        return {"budget_bytes": self.budget.bytes, "budget": self.budget.label or str(self.budget.bytes),
                "bytes_used": self.bytes_used, "units": self._n_units,
                "blocks_per_item_group": self._kept.tolist(), "eq10": self.eq10, "eq10_scale": self.eq10_scale}
