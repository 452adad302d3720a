"""Budget tables for trained runs: PEEL, its ablations and full-size LightGCN."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from peel.budget import Budget, full_table_bytes, parse_budgets
from peel.budget import paper_equivalent as scale
from peel.config import PeelConfig
from peel.errors import ConfigError, PeelError
from peel.methods import evaluate_fixed, read_method

ABLATION_LABELS = {
    "random_item_groups": "PEEL w/o PopSeg (random item groups)",
    "no_diversity": "PEEL w/o diversity regularizer",
    "single_user_group": "PEEL w/o user clustering",
    "random_selection": "PEEL w/o importance weights (random order)",
}


def resolve_budgets(text: str, *, n_items: int, dim: int, name: str, paper_equivalent: bool,
                    reference: str | None) -> list[Budget]:
    budgets = parse_budgets(text, full_table_bytes=full_table_bytes(n_items, dim), n_items=n_items,
                            reference=reference or name)
    if paper_equivalent:
        budgets = [scale(b, n_items=n_items, reference=reference or name) for b in budgets]
    return budgets


def evaluate_runs(run: str | Path, budgets: str, *, paper_equivalent: bool = False, reference: str | None = None,
                  split: str = "test", ablations: bool = False, overrides: list[str] | None = None,
                  ks: tuple[int, ...] = (20, 50), progress: bool = False) -> list[dict[str, Any]]:
    """Rows of {method, budget, bytes_used, metrics...}; ablation runs that do not exist get an error row.
    ``progress`` shows a bar per (method, budget) on stderr."""
    from peel.run import TrainedRun, evaluate_pretrained, evaluate_run
    from peel.training.pipeline import load_data_source

    run = Path(run)
    if not (run / "data.json").exists():
        raise PeelError(f"{run} is not a run directory (no data.json); create one with peel train")
    data = load_data_source(json.loads((run / "data.json").read_text()))
    if read_method(run) is not None:  # a fixed-size baseline: evaluated at the budget it was fitted to
        if overrides or ablations:
            raise PeelError(f"{run} is a fixed-size run: --set device.* and --ablation apply to PEEL runs only")
        return evaluate_fixed(run, data, split=split, ks=ks, progress=progress)
    main = TrainedRun.load(run)
    if overrides:
        main.config = _with_device_overrides(main.config, overrides)
    parsed = resolve_budgets(budgets, n_items=data.n_items, dim=main.config.model.dim, name=data.name,
                             paper_equivalent=paper_equivalent, reference=reference)
    rows = [{"method": "PEEL", **r} for r in evaluate_run(main, data, parsed, split=split, ks=ks, progress=progress)]
    if not ablations:
        return rows
    for name, label in ABLATION_LABELS.items():
        path = run / "ablations" / name
        try:
            ablation_run = TrainedRun.load(path)
            if overrides:  # the same overrides as the main run, except for the ablated option
                selection = ablation_run.config.device.block_selection
                config = _with_device_overrides(ablation_run.config, overrides)
                ablation_run.config = dataclasses.replace(
                    config, device=dataclasses.replace(config.device, block_selection=selection))
        except (PeelError, FileNotFoundError):
            rows.append({"method": label, "error": f"not trained: peel train --ablation {name} --out {run}"})
            continue
        rows += [{"method": label, **r}
                 for r in evaluate_run(ablation_run, data, parsed, split=split, ks=ks, progress=progress, label=name)]
    lightgcn = run / "ablations" / "lightgcn"
    if (lightgcn / "pretrain" / "embeddings.npz").exists():
        metrics = evaluate_pretrained(lightgcn, data, split=split, ks=ks, progress=progress)
        dim = main.config.model.dim
        rows.append({"method": f"LightGCN (full size, D={dim})", "budget": "full",
                     "bytes_used": full_table_bytes(data.n_items, dim) + dim * 4, **metrics})
    else:
        rows.append({"method": "LightGCN (full size)",
                     "error": f"not trained: peel train --ablation lightgcn --out {run}"})
    return rows


def _with_device_overrides(config: PeelConfig, overrides: list[str]) -> PeelConfig:
    """The run's own config with ``device.*`` overrides applied (other sections would change training)."""
    other = [o for o in overrides if not o.strip().startswith("device.")]
    if other:
        raise ConfigError(f"evaluate --set takes only device options (device.eq10, device.blocks, ...), "
                          f"got {other[0]!r}")
    return config.with_overrides(overrides)
