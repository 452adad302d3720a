"""The registry of methods, and loading any run directory as its method's trained model.

Registering a method here makes ``peel train --method NAME``, ``peel evaluate``, ``peel export`` and the
contract test (tests/methods/test_contract.py) cover it.
"""

from __future__ import annotations

from pathlib import Path

from peel.errors import PeelError
from peel.methods.fixed import FIXED_METHODS, FixedSizeMethod
from peel.methods.peel import PeelMethod
from peel.methods.protocol import Method, TrainedModel
from peel.run_layout import RunLayout

METHODS: dict[str, Method] = {"peel": PeelMethod(), **{name: FixedSizeMethod(name) for name in FIXED_METHODS}}


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
