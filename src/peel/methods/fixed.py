"""Fixed-size baselines fitted to one budget (methods.md, Baselines): LightGCN and PMF.

The dimension k is the largest with (|V| + 1) * k * 4 <= budget: the item table plus the user's own
vector, what a device holds to rank all items for one user. LightGCN is stage a's code with one block
of k dims and no diversity regularizer; PMF is the same with no propagation (layers = 0). Both train
with BPR through the one training loop, with early stopping on validation, into a run directory that
``peel evaluate`` reads; ``method.json`` records the method, the budget and the fitted dimension.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from peel._io import write_json_atomic
from peel.budget import BYTES_PER_FLOAT, Budget, format_bytes
from peel.config import PeelConfig
from peel.data.interactions import Interactions
from peel.errors import BudgetError, PeelError

FIXED_METHODS = {"lightgcn": "LightGCN", "pmf": "PMF"}  # method name -> label in tables


def device_bytes(n_items: int, dim: int) -> int:
    """Bytes a device holds to rank all items for one user: item table + the user's vector, fp32."""
    return (n_items + 1) * dim * BYTES_PER_FLOAT


def fitted_dimension(n_items: int, budget: Budget) -> int:
    """The largest k with (|V| + 1) * k * 4 <= budget; a budget below k = 1 is refused with that minimum."""
    dim = budget.bytes // device_bytes(n_items, 1)
    if dim < 1:
        smallest = device_bytes(n_items, 1)
        raise BudgetError(f"budget {budget} is below the smallest a fixed-size model of {n_items:,} items can meet: "
                          f"{smallest:,} bytes ({format_bytes(smallest)}, one dimension: (|V| + 1) * 1 * 4)")
    return int(dim)


def fitted_config(config: PeelConfig, method: str, dim: int) -> PeelConfig:
    """``config`` with one block of ``dim`` dims, no regularizer, and no propagation for PMF."""
    if method not in FIXED_METHODS:
        raise PeelError(f"unknown fixed-size method {method!r}; known: {', '.join(FIXED_METHODS)}")
    r = dataclasses.replace
    layers = config.model.layers if method == "lightgcn" else 0
    return r(config, model=r(config.model, n_blocks=1, block_dim=dim, layers=layers, embedding_dim=0),
             pretrain=r(config.pretrain, lambda_div=0.0))


def train_fixed(data: Interactions, out: str | Path, config: PeelConfig, *, method: str, budget: Budget,
                data_path: str | Path | None = None, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Fit ``method`` to ``budget`` and train it into the run directory ``out``; returns the summary."""
    from peel.training.pipeline import train

    dim = fitted_dimension(data.n_items, budget)
    out = Path(out)
    info = {"method": method, "budget": str(budget), "budget_bytes": budget.bytes, "dim": dim,
            "device_bytes": device_bytes(data.n_items, dim)}
    recorded = read_method(out)
    if recorded is not None and recorded != info:
        raise PeelError(f"{out / 'method.json'} records {recorded}, not {info}; choose another --out")
    summary = train(data, out, fitted_config(config, method, dim), data_path=data_path, resume=resume,
                    progress=progress, stop_after="pretrain")
    write_json_atomic(out / "method.json", info)
    return summary


def read_method(run: str | Path) -> dict[str, Any] | None:
    """The run's ``method.json`` (None for a PEEL run, which has none)."""
    path = Path(run) / "method.json"
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PeelError(f"{path}: cannot read the run's method ({exc})") from None
    if not isinstance(info, dict) or info.get("method") not in FIXED_METHODS:
        raise PeelError(f"{path}: expected a JSON object naming one of {', '.join(FIXED_METHODS)}")
    return info


def evaluate_fixed(run: str | Path, data: Interactions, *, split: str = "test", ks: tuple[int, ...] = (20, 50),
                   progress: bool = False) -> list[dict[str, Any]]:
    """One row: the fitted model at the budget it was fitted to, with the bytes a device holds."""
    from peel.run import evaluate_pretrained

    info = read_method(run)
    if info is None:
        raise PeelError(f"{run} is not a fixed-size run (no method.json); train one with peel train --method")
    metrics = evaluate_pretrained(run, data, split=split, ks=ks, progress=progress)
    return [{"method": f"{FIXED_METHODS[info['method']]} fitted (D={info['dim']})", "budget": info["budget"],
             "budget_bytes": info["budget_bytes"], "bytes_used": info["device_bytes"], **metrics}]
