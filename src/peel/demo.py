"""The README's main job on the embedded default: train PEEL on synthetic data, print the budget table."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from peel.config import PeelConfig
from peel.data import synthetic_dataset
from peel.evaluation import PopularityScorer, evaluate

# Small enough for about a minute on 2 cores; the paper's defaults are PeelConfig().
DEMO_OVERRIDES = [
    "pretrain.lr=5e-3", "pretrain.max_epochs=40", "pretrain.eval_every=5", "pretrain.patience=2",
    "pretrain.race_epochs=20",  # the full-prefix L2 race, shortened like the rest
    "grouping.item_groups=10", "grouping.user_groups=4", "finetune.max_epochs=5",
]
DEMO_BUDGETS = "10%,20%,40%,100%"


def run_demo(seed: int = 0, *, out: Path | None = None, progress: bool = True,
             console: Console | None = None) -> dict[str, Any]:
    """Synthetic data -> PEEL pipeline -> test Recall/NDCG at several budgets, beside popularity."""
    from peel.methods.peel import evaluate_run
    from peel.methods.report import resolve_budgets
    from peel.run import TrainedRun
    from peel.training.pipeline import train

    console = console or Console()
    start = time.perf_counter()
    data = synthetic_dataset(seed=seed)
    if progress:
        console.print(f"synthetic data: {data}")
    config = PeelConfig().with_overrides(DEMO_OVERRIDES)
    with tempfile.TemporaryDirectory(prefix="peel-demo-") as tmp:
        run_dir = out or Path(tmp) / "run"
        summary = train(data, run_dir, config, progress=progress)
        run = TrainedRun.load(run_dir)
        budgets = resolve_budgets(DEMO_BUDGETS, n_items=data.n_items, dim=config.model.dim, name=data.name,
                                  paper_equivalent=False, reference=None)
        rows = evaluate_run(run, data, budgets, split="test")
    popularity = evaluate(PopularityScorer(data), data, split="test")
    if progress:
        table = Table("method", "budget", "bytes used", "recall@20", "ndcg@20", "recall@50", "ndcg@50",
                      title="PEEL on synthetic data (test split, full ranking)")
        for r in rows:
            table.add_row("PEEL", str(r["budget"]), f"{r['bytes_used']:,}",
                          *(f"{r[k]:.4f}" for k in ("recall@20", "ndcg@20", "recall@50", "ndcg@50")))
        table.add_row("popularity", "-", "-", *(f"{popularity[k]:.4f}" for k in ("recall@20", "ndcg@20",
                                                                                  "recall@50", "ndcg@50")))
        console.print(table)
        console.print(f"stage seconds: {summary['seconds']}; done in {time.perf_counter() - start:.1f} s")
    return {"data": data.stats(), "peel": rows, "popularity": popularity, "seconds": summary["seconds"]}
