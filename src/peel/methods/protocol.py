"""The one door every recommender enters through: a :class:`Method` fits into a run directory, and
loads from it as a :class:`TrainedModel` that the evaluator, the report and the export use alike.

A method is elastic (one model serves every budget: PEEL) or fitted to the budget it was trained for
(the baselines). A trained model reports the bytes a device holds for one user to rank all items at a
budget, gives the evaluator a scorer, and writes a device bundle where the method can. Registering a
method in :mod:`peel.methods.registry` makes ``peel train --method``, ``peel evaluate``, ``peel
export`` and the contract test (tests/methods/test_contract.py) cover it.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from peel.budget import Budget
from peel.config import PeelConfig
from peel.data.interactions import Interactions
from peel.errors import BudgetError
from peel.evaluation import Scorer, evaluate
from peel.run_layout import RunLayout


class TrainedModel(ABC):
    """A method's trained model, loaded from its run directory."""

    method: str           # the registry name that trained it
    label: str            # its name in tables
    layout: RunLayout
    elastic: bool         # True: serves any budget; False: only the one it was fitted to (``fitted_budget``)
    fitted_budget: Budget | None  # the budget a fitted model was trained for (None: elastic, or full size)

    def budgets(self, requested: list[Budget]) -> list[Budget | None]:
        """The budgets this model is evaluated at: every requested one if elastic, else its own."""
        return list(requested) if self.elastic else [self.fitted_budget]

    @abstractmethod
    def device_bytes(self, budget: Budget | None) -> int:
        """Bytes a device holds to rank all items for one user at ``budget`` (the most over user groups);
        a BudgetError naming the smallest budget the model can meet if it cannot."""

    @abstractmethod
    def scorer(self, budget: Budget | None) -> Scorer:
        """Scores of every item for a batch of users, as the device computes them at ``budget``."""

    @abstractmethod
    def export(self, out: str | os.PathLike[str], data: Interactions, *, max_budget: Budget | None = None,
               groups: list[int] | None = None, history: bool = True, overwrite: bool = False) -> Path:
        """Write device bundles (index.json, users.peelb, group_<g>.peelb) that the numpy runtime serves."""

    def details(self, budget: Budget | None) -> dict[str, Any]:
        """Extra columns for a budget's row (e.g. units kept per user group)."""
        return {}

    def evaluate(self, data: Interactions, budgets: list[Budget], *, split: str = "test",
                 ks: tuple[int, ...] = (20, 50), progress: bool = False, per_user: bool = False,
                 label: str | None = None) -> list[dict[str, Any]]:
        """One row per budget this model serves: {method, budget, budget_bytes, bytes_used, metrics...}.
        A budget the model cannot meet gives a row with ``error`` instead of aborting the others."""
        label = label or self.label
        rows: list[dict[str, Any]] = []
        for budget in self.budgets(budgets):
            name = "full" if budget is None else budget.label or str(budget.bytes)
            row: dict[str, Any] = {"method": label, "budget": name, "elastic": self.elastic,
                                   "budget_bytes": None if budget is None else budget.bytes}
            try:
                used = self.device_bytes(budget)
                scorer = self.scorer(budget)
            except BudgetError as exc:
                rows.append({**row, "error": str(exc)})
                continue
            metrics = evaluate(scorer, data, split=split, ks=ks, per_user=per_user, progress=progress,
                               desc=f"{label} at {name} ({split})")
            rows.append({**row, "bytes_used": used, **self.details(budget), **metrics})
        return rows


class Method(ABC):
    """How one recommender is trained into a run directory and loaded back."""

    name: str
    label: str
    elastic: bool

    @abstractmethod
    def fit(self, data: Interactions, out: str | Path, config: PeelConfig, *, budget: Budget | None = None,
            data_path: str | Path | None = None, resume: bool = False, progress: bool = True,
            **options: Any) -> dict[str, Any]:
        """Train into ``out`` (resumable) and return the run's summary. A fitted method needs ``budget`` and
        refuses one below its minimum with that minimum; an elastic one refuses a budget. ``options`` are
        method-specific (PEEL: ablation, stop_after); a method refuses those it does not take."""

    @abstractmethod
    def load(self, layout: RunLayout, *, overrides: list[str] | None = None) -> TrainedModel:
        """The trained model of a finished run; ``overrides`` are ``device.*`` options where the method has them."""
