"""Budget tables for trained runs of any method, with PEEL's ablations and full-size LightGCN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peel.budget import Budget, full_table_bytes, parse_budgets
from peel.budget import paper_equivalent as scale
from peel.errors import PeelError
from peel.methods.registry import load_run
from peel.run_layout import RunLayout

ABLATION_LABELS = {
    "random_item_groups": "PEEL w/o PopSeg (random item groups)",
    "no_diversity": "PEEL w/o diversity regularizer",
    "single_user_group": "PEEL w/o user clustering",
    "random_selection": "PEEL w/o importance weights (random order)",
    "lightgcn": "LightGCN (full size)",
}
# An ablation's own option that the main run's --set overrides must not undo.
ABLATED_DEVICE_OPTION = {"random_selection": "device.block_selection"}


def resolve_budgets(text: str, *, n_items: int, dim: int, name: str, paper_equivalent: bool,
                    reference: str | None) -> list[Budget]:
    budgets = parse_budgets(text, full_table_bytes=full_table_bytes(n_items, dim), n_items=n_items,
                            reference=reference or name)
    if paper_equivalent:
        budgets = [scale(b, n_items=n_items, reference=reference or name) for b in budgets]
    return budgets


def evaluate_runs(run: str | Path, budgets: str, *, paper_equivalent: bool = False, reference: str | None = None,
                  split: str = "test", ablations: bool = False, overrides: list[str] | None = None,
                  ks: tuple[int, ...] = (20, 50), progress: bool = False,
                  per_user: bool = False) -> list[dict[str, Any]]:
    """Rows of {method, budget, bytes_used, metrics...} for any method's run: an elastic one at every
    budget, a fitted one at its own. With ``ablations``, PEEL's ablation runs and full-size LightGCN too
    (one that does not exist gets an error row). ``progress`` shows a bar per (method, budget) on stderr;
    ``per_user`` adds each row's per-user metrics (for paired tests)."""
    layout = RunLayout(run)
    layout.require_run()
    data = layout.load_data()
    model = load_run(layout, overrides=overrides)
    if ablations and model.method != "peel":
        raise PeelError(f"{run} is a {model.label} run: --ablation applies to PEEL runs only")
    dim = layout.read_config().model.dim  # a percentage budget is of this run's full table
    parsed = resolve_budgets(budgets, n_items=data.n_items, dim=dim, name=data.name,
                             paper_equivalent=paper_equivalent, reference=reference)
    options = {"split": split, "ks": ks, "progress": progress, "per_user": per_user}
    rows = model.evaluate(data, parsed, **options)
    if not ablations:
        return rows
    for name, label in ABLATION_LABELS.items():
        path = layout.ablation(name)
        kept = [o for o in overrides or [] if not o.strip().startswith(ABLATED_DEVICE_OPTION.get(name, "-"))]
        if name == "lightgcn":
            kept = []  # a fixed-size model has no device options
        try:
            ablation = load_run(path, overrides=kept)
        except (PeelError, FileNotFoundError):
            rows.append({"method": label, "error": f"not trained: peel train --ablation {name} --out {run}"})
            continue
        rows += ablation.evaluate(data, parsed, label=ablation.label if name == "lightgcn" else label, **options)
    return rows
