"""PEEL behind the method protocol: the pipeline trains one elastic model, and a device of each user
group keeps the prefix of its unit order that fits its budget (Eq. 10 on the kept units)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from peel.budget import Budget
from peel.config import PeelConfig
from peel.data.interactions import Interactions
from peel.errors import BudgetError, ConfigError, PeelError
from peel.evaluation import Scorer
from peel.methods.protocol import Method, TrainedModel
from peel.run_layout import RunLayout


class PeelMethod(Method):
    name, label, elastic = "peel", "PEEL", True

    def fit(self, data: Interactions, out: str | Path, config: PeelConfig, *, budget: Budget | None = None,
            data_path: str | Path | None = None, resume: bool = False, progress: bool = True,
            **options: Any) -> dict[str, Any]:
        """PEEL's pipeline; ``options`` (ablation, stop_after, stage_a_from) go to
        :func:`peel.training.pipeline.train`."""
        from peel.training.pipeline import train

        if options.pop("teacher", None) is not None:
            raise PeelError("--teacher applies to --method lightrec, which distils a full-size model; PEEL has none")
        if budget is not None:
            raise PeelError("PEEL is elastic: it is trained once for every budget; give budgets to peel evaluate "
                            "(--budget is for a method fitted to one budget)")
        return train(data, out, config, data_path=data_path, resume=resume, progress=progress, **options)

    def load(self, layout: RunLayout, *, overrides: list[str] | None = None) -> PeelModel:
        from peel.run import TrainedRun

        run = TrainedRun.load(layout.root)
        if overrides:
            run.config = with_device_overrides(run.config, overrides)
        return PeelModel(run)


class PeelModel(TrainedModel):
    """A finished PEEL run: per user group, the prefix of its unit order that fits a budget."""

    method, label, elastic, fitted_budget = "peel", "PEEL", True, None

    def __init__(self, run: Any) -> None:  # a peel.run.TrainedRun
        self.run = run
        self.layout = RunLayout(run.path)
        self._last: tuple[int, Any] | None = None  # the last budget's scorer: it holds a table per user group

    def _scorer(self, budget: Budget | None) -> Any:
        if budget is None:
            raise BudgetError("PEEL is elastic: give it a budget")
        if self._last is None or self._last[0] != budget.bytes:
            self._last = (budget.bytes, self.run.scorer(budget))
        return self._last[1]

    def device_bytes(self, budget: Budget | None) -> int:
        return max(s.bytes_used for s in self._scorer(budget).selections)

    def scorer(self, budget: Budget | None) -> Scorer:
        return self._scorer(budget)

    def details(self, budget: Budget | None) -> dict[str, Any]:
        kept = [s.n_kept for s in self._scorer(budget).selections]
        return {"units_kept_min": min(kept), "units_kept_max": max(kept)}

    def export(self, out: str | os.PathLike[str], data: Interactions, *, max_budget: Budget | None = None,
               groups: list[int] | None = None, history: bool = True, overwrite: bool = False) -> Path:
        from peel.export.export import export_peel

        return export_peel(self.run, out, data=data, max_budget=max_budget, groups=groups, history=history,
                           overwrite=overwrite)


def with_device_overrides(config: PeelConfig, overrides: list[str]) -> PeelConfig:
    """The run's own config with ``device.*`` overrides applied (other sections would change training)."""
    other = [o for o in overrides if not o.strip().startswith("device.")]
    if other:
        raise ConfigError(f"evaluate --set takes only device options (device.eq10, device.blocks, ...), "
                          f"got {other[0]!r}")
    return config.with_overrides(overrides)


def evaluate_run(run: Any, data: Interactions, budgets: list[Budget], *, split: str = "test",
                 ks: tuple[int, ...] = (20, 50), progress: bool = False, label: str = "PEEL") -> list[dict[str, Any]]:
    """Metrics of a loaded :class:`peel.run.TrainedRun` per budget, with the bytes actually used (max over
    user groups): :meth:`PeelModel.evaluate`."""
    return PeelModel(run).evaluate(data, budgets, split=split, ks=ks, progress=progress, label=label)
