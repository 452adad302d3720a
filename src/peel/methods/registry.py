"""The registry of methods: each trains into a run directory that ``peel evaluate`` and ``peel export`` read.

A method is elastic (one model for every budget: PEEL) or fitted to one budget (the baselines). Registering
a method here makes ``peel train --method NAME`` and the contract test (tests/methods/test_contract.py)
cover it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peel.budget import Budget
from peel.config import PeelConfig
from peel.data.interactions import Interactions
from peel.errors import PeelError
from peel.methods.fixed import FIXED_METHODS, train_fixed

TrainFunction = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    elastic: bool           # True: trained once for every budget; False: fitted to the budget given to train
    train: TrainFunction    # (data, out, config, *, budget, data_path, resume, progress, **pipeline options)


def _train_peel(data: Interactions, out: str | Path, config: PeelConfig, *, budget: Budget | None = None,
                data_path: str | Path | None = None, resume: bool = False, progress: bool = True,
                **pipeline_options: Any) -> dict[str, Any]:
    """PEEL's pipeline; ``pipeline_options`` (ablation, stop_after) go to :func:`peel.training.pipeline.train`."""
    from peel.training.pipeline import train

    if budget is not None:
        raise PeelError("PEEL is elastic: it is trained once for every budget; give budgets to peel evaluate "
                        "(--budget is for a method fitted to one budget)")
    return train(data, out, config, data_path=data_path, resume=resume, progress=progress, **pipeline_options)


def _fixed(name: str) -> TrainFunction:
    def fit(data: Interactions, out: str | Path, config: PeelConfig, *, budget: Budget | None = None,
            data_path: str | Path | None = None, resume: bool = False, progress: bool = True,
            **pipeline_options: Any) -> dict[str, Any]:
        if any(pipeline_options.values()):
            raise PeelError("--ablation and --stop-after apply to --method peel only")
        if budget is None:
            raise PeelError(f"--method {name} is fitted to one budget: give --budget, e.g. 5MB-eq")
        return train_fixed(data, out, config, method=name, budget=budget, data_path=data_path, resume=resume,
                           progress=progress)
    return fit


METHODS: dict[str, Method] = {
    "peel": Method("peel", "PEEL", elastic=True, train=_train_peel),
    **{name: Method(name, f"{label} fitted", elastic=False, train=_fixed(name))
       for name, label in FIXED_METHODS.items()},
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise PeelError(f"unknown --method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]
