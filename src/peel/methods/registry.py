"""The registry of methods, and loading any run directory as its method's trained model.

Registering a method here makes ``peel train --method NAME``, ``peel evaluate``, ``peel export`` and the
contract test (tests/methods/test_contract.py) cover it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from peel.budget import BYTES_PER_FLOAT, Budget, parse_budget
from peel.data.interactions import Interactions
from peel.errors import PeelError
from peel.methods.fixed import FIXED_METHODS, FixedSizeMethod
from peel.methods.peel import PeelMethod
from peel.methods.protocol import Method, TrainedModel
from peel.methods.rule import RuleMethod
from peel.run_layout import RunLayout

METHODS: dict[str, Method] = {"peel": PeelMethod(), "rule": RuleMethod(),
                              **{name: FixedSizeMethod(name) for name in FIXED_METHODS}}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise PeelError(f"unknown --method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def load_run(run: str | Path | RunLayout, *, overrides: list[str] | None = None) -> TrainedModel:
    """The trained model in a run directory, through the method recorded in its method.json (a run
    from before method.json was written is a PEEL run)."""
    layout = run if isinstance(run, RunLayout) else RunLayout(run)
    layout.require_run()
    info = layout.read_method()
    name = "peel" if info is None else info["method"]
    if name not in METHODS:
        raise PeelError(f"{layout.method}: unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name].load(layout, overrides=overrides)


def export_run(run: str | os.PathLike[str] | Any, out_dir: str | os.PathLike[str], *,
               max_budget: Budget | str | int | None = None, groups: list[int] | None = None,
               history: bool = True, data: Interactions | None = None, overwrite: bool = False,
               overrides: list[str] | None = None) -> Path:
    """Write the export directory ``out_dir`` of a finished run of any method and return its path.

    ``run``: a run directory or a loaded PEEL :class:`peel.run.TrainedRun` (e.g. with device options
    overridden); ``max_budget``: keep only the unit prefix that fits it (BudgetError below a group's
    minimum); ``groups``: user groups to write (default all; users.peelb always lists every user);
    ``history``: store every user's training items so a device can exclude them; ``data``: the run's
    dataset if already loaded (else reloaded from the run's data.json); ``overrides``: device options of a
    run directory, e.g. ``["device.unit_dtype=q8"]`` (a PEEL run's q8 bundles without retraining).
    """
    from peel.methods.peel import PeelModel
    from peel.run import TrainedRun

    if isinstance(run, TrainedRun) and overrides:
        raise PeelError("export_run: give device overrides with a run directory, or load the TrainedRun with them")
    model = PeelModel(run) if isinstance(run, TrainedRun) else load_run(run, overrides=overrides)
    data = data if data is not None else model.layout.load_data()
    parsed = None
    if max_budget is not None:  # a percentage is of this run's full table
        dim = model.layout.read_config().model.dim
        parsed = parse_budget(max_budget, full_table_bytes=data.n_items * dim * BYTES_PER_FLOAT,
                              n_items=data.n_items, reference=data.name or None)
    return model.export(out_dir, data, max_budget=parsed, groups=groups, history=history, overwrite=overwrite)
