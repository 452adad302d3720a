"""Fixed-size baselines fitted to one budget (methods.md, Baselines): LightGCN and PMF.

The dimension k is the largest with (|V| + 1) * k * 4 <= budget: the item table plus the user's own
vector, what a device holds to rank all items for one user. LightGCN is stage a's code with one block
of k dims and no diversity regularizer; PMF is the same with no propagation (layers = 0). Both train
with BPR through the one training loop, with early stopping on validation, into a run directory whose
``method.json`` records the method, the budget and the fitted dimension. Without a budget the model is
full size (the config's D): the full-size LightGCN of the paper's tables.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from peel.budget import Budget, device_bytes, format_bytes
from peel.config import PeelConfig
from peel.data.interactions import Interactions
from peel.errors import BudgetError, PeelError
from peel.evaluation import DotProductScorer, Scorer
from peel.methods.protocol import Method, TrainedModel
from peel.run_layout import RunLayout, method_record

FIXED_METHODS = {"lightgcn": "LightGCN", "pmf": "PMF"}  # method name -> label in tables


def fitted_dimension(n_items: int, budget: Budget) -> int:
    """The largest k with (|V| + 1) * k * 4 <= budget; a budget below k = 1 is refused with that minimum."""
    dim = budget.bytes // device_bytes(n_items, 1)
    if dim < 1:
        smallest = device_bytes(n_items, 1)
        raise BudgetError(f"budget {budget} is below the smallest a fixed-size model of {n_items:,} items can meet: "
                          f"{smallest:,} bytes ({format_bytes(smallest)}, one dimension: (|V| + 1) * 1 * 4)")
    return int(dim)


def fitted_config(config: PeelConfig, method: str, dim: int) -> PeelConfig:
    """``config`` with one block of ``dim`` dims, no regularizer or nesting, and no propagation for PMF."""
    if method not in FIXED_METHODS:
        raise PeelError(f"unknown fixed-size method {method!r}; known: {', '.join(FIXED_METHODS)}")
    r = dataclasses.replace
    layers = config.model.layers if method == "lightgcn" else 0
    return r(config, model=r(config.model, n_blocks=1, block_dim=dim, layers=layers, embedding_dim=0),
             pretrain=r(config.pretrain, lambda_div=0.0, nested="", allocation_budgets=0, l2_full_prefix=0.0,
                        l2_full_prefix_race=""))


class FixedSizeMethod(Method):
    """LightGCN or PMF with its dimension fitted to the budget it is trained for."""

    elastic = False

    def __init__(self, name: str) -> None:
        self.name, self.label = name, f"{FIXED_METHODS[name]} fitted"

    def fit(self, data: Interactions, out: str | Path, config: PeelConfig, *, budget: Budget | None = None,
            data_path: str | Path | None = None, resume: bool = False, progress: bool = True,
            **options: Any) -> dict[str, Any]:
        from peel.training.pipeline import train

        if any(options.values()):
            raise PeelError(f"{', '.join('--' + k.replace('_', '-') for k, v in options.items() if v)} "
                            "apply to --method peel only")
        if budget is None:
            raise PeelError(f"--method {self.name} is fitted to one budget: give --budget, e.g. 5MB-eq")
        dim = fitted_dimension(data.n_items, budget)
        return train(data, out, fitted_config(config, self.name, dim), data_path=data_path, resume=resume,
                     progress=progress, stop_after="pretrain",
                     method=method_record(self.name, data.n_items, budget, dim))

    def load(self, layout: RunLayout, *, overrides: list[str] | None = None) -> FixedSizeModel:
        if overrides:
            raise PeelError(f"{layout.root} is a {self.label} run: --set device.* applies to PEEL runs only")
        return FixedSizeModel(self.name, layout)


class FixedSizeModel(TrainedModel):
    """A fixed-size model: its final user and item vectors, scored by the dot product."""

    elastic = False

    def __init__(self, method: str, layout: RunLayout) -> None:
        from peel.training.pretrain import load_pretrained

        info = layout.read_method() or {}
        if not layout.embeddings.exists():
            raise PeelError(f"{layout.root}: training has not finished (no {layout.embeddings.name}); "
                            "finish it with peel train --resume")
        self.method, self.layout = method, layout
        self.user_vectors, self.item_vectors = load_pretrained(layout.embeddings)
        self.dim = int(self.item_vectors.shape[1])
        budget_bytes = info.get("budget_bytes")
        self.fitted_budget = None if budget_bytes is None else Budget(int(budget_bytes), info.get("budget") or "")
        size = f"D={self.dim}"
        self.label = (f"{FIXED_METHODS[method]} fitted ({size})" if self.fitted_budget is not None
                      else f"{FIXED_METHODS[method]} (full size, {size})")

    def device_bytes(self, budget: Budget | None) -> int:
        return device_bytes(len(self.item_vectors), self.dim)

    def scorer(self, budget: Budget | None) -> Scorer:
        return DotProductScorer(self.user_vectors, self.item_vectors)

    def export(self, out: str | os.PathLike[str], data: Interactions, *, max_budget: Budget | None = None,
               groups: list[int] | None = None, history: bool = True, overwrite: bool = False) -> Path:
        from peel.export.export import export_fixed

        if max_budget is not None or groups not in (None, [0]):
            raise PeelError(f"{self.layout.root} is a {self.label} run: one bundle at the budget it was fitted to "
                            "(--max-budget and --groups apply to PEEL runs)")
        return export_fixed(self.layout.root, self.user_vectors, self.item_vectors, out, data=data, method=self.method,
                            history=history, overwrite=overwrite)
