"""The README's main job on the embedded default: synthetic data -> split -> evaluation table."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from peel.data import synthetic_dataset
from peel.evaluation import PopularityScorer, RandomScorer, evaluate
from peel.evaluation.scorers import pure_svd_scorer


def run_demo(seed: int = 0, *, progress: bool = True, console: Console | None = None) -> dict[str, Any]:
    """Generate the synthetic dataset and report test Recall/NDCG@20/50 of the reference scorers."""
    console = console or Console()
    start = time.perf_counter()
    data = synthetic_dataset(seed=seed)
    if progress:
        console.print(f"synthetic data: {data}")
    scorers = {
        "random": RandomScorer(data.n_items, seed=seed),
        "popularity": PopularityScorer(data),
        "pure-svd (dot product, 64 dims)": pure_svd_scorer(data, dim=64, seed=seed),
    }
    results = {name: evaluate(scorer, data, split="test", ks=(20, 50)) for name, scorer in scorers.items()}
    if progress:
        table = Table("scorer", "recall@20", "ndcg@20", "recall@50", "ndcg@50", "users",
                      title="test split, full ranking")
        for name, r in results.items():
            table.add_row(name, *(f"{r[k]:.4f}" for k in ("recall@20", "ndcg@20", "recall@50", "ndcg@50")),
                          str(r["users"]))
        console.print(table)
        console.print(f"done in {time.perf_counter() - start:.1f} s")
    return {"data": data.stats(), "results": results}
