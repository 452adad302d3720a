"""Fixed-size baselines fitted to each paper-equivalent budget (PMF, LightGCN) beside PEEL's defaults run:
validation and test Recall/NDCG@20/50 and each fitted model's training time (its deployment time for
that budget, paper Fig. 3).

    python benchmarks/fitted.py --data ../shared/data/amazon-book-sub --runs runs/fitted-amazon \
        --peel runs/defaults-amazon/defaults

Every model trains with peel's default recipe (the one PEEL's stage a gets: batch, learning rate and
validation schedule derived from the data, early stopping on validation), into RUNS/<method>-<budget>.
Resumable: rerun after a kill. Results: benchmarks/results/fitted_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from peel.bench import write_result
from peel.budget import full_table_bytes, parse_budgets
from peel.budget import paper_equivalent as scale
from peel.config import PeelConfig
from peel.data import load
from peel.evaluation import PopularityScorer, evaluate
from peel.evaluation.report import evaluate_runs
from peel.methods import FIXED_METHODS, train_fixed
from peel.run import read_summary

BUDGETS = "5MB,10MB,25MB"
KS = (20, 50)


def fitted_rows(data: Any, data_path: str, runs: Path, reference: str | None) -> list[dict[str, Any]]:
    rows = []
    budgets = [scale(b, n_items=data.n_items, reference=reference or data.name)
               for b in parse_budgets(BUDGETS, full_table_bytes=full_table_bytes(data.n_items, 128))]
    for method in FIXED_METHODS:
        for budget in budgets:
            out = runs / f"{method}-{budget.label}"
            print(f"{method} at {budget}", flush=True)
            done = (out / "method.json").exists()
            train_fixed(data, out, PeelConfig(), method=method, budget=budget, data_path=data_path,
                        resume=(out / "config.json").exists(), progress=False)
            seconds = read_summary(out).get("seconds", {}).get("pretrain")
            [valid] = evaluate_runs(out, BUDGETS, split="valid", ks=(50,))
            [test] = evaluate_runs(out, BUDGETS, split="test", ks=KS)
            rows.append({**test, "budget": budget.label, "valid_ndcg@50": valid["ndcg@50"],
                         "valid_recall@50": valid["recall@50"], "train_seconds": seconds,
                         "resumed": done})
    return rows


def peel_rows(run: Path, reference: str | None) -> list[dict[str, Any]]:
    test = evaluate_runs(run, BUDGETS, paper_equivalent=True, reference=reference, split="test", ks=KS)
    valid = evaluate_runs(run, BUDGETS, paper_equivalent=True, reference=reference, split="valid", ks=(50,))
    seconds = read_summary(run).get("seconds", {}).get("total")
    return [{**t, "method": "PEEL (defaults, one model)", "valid_ndcg@50": v["ndcg@50"],
             "valid_recall@50": v["recall@50"], "train_seconds": seconds} for t, v in zip(test, valid, strict=True)]


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"## Fitted baselines on {payload['dataset']} (test split; valid NDCG@50 for choices)", "",
             "| method | budget | bytes used | train s | valid NDCG@50 | Recall@20 | NDCG@20 | Recall@50 | NDCG@50 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        seconds = f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "-"
        lines.append(f"| {r['method']} | {r['budget']} | {r.get('bytes_used') or 'full':,} | {seconds} | "
                     f"{r['valid_ndcg@50']:.5f} | " + " | ".join(f"{r[k]:.5f}" for k in
                                                               ("recall@20", "ndcg@20", "recall@50", "ndcg@50")) + " |")
    p = payload["popularity"]
    lines.append("| popularity | - | - | - | - | " + " | ".join(f"{p[k]:.5f}" for k in
                                                             ("recall@20", "ndcg@20", "recall@50", "ndcg@50")) + " |")
    lines += ["", "PEEL is one model for every budget; each fitted row is a model trained for that budget only "
              "(its train seconds are its deployment time for that budget). Every model uses peel's default "
              "recipe, untuned: the per-method tuning grid of issue 15 is not run yet. PMF in particular is far "
              "below its published behaviour (barely above popularity) and is not a fair comparator until tuned."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--peel", type=Path, default=None, help="a finished PEEL run on the same data")
    parser.add_argument("--reference", default=None, help="paper dataset for budgets (default: from the name)")
    args = parser.parse_args()

    data = load(args.data)
    rows = fitted_rows(data, args.data, args.runs, args.reference)
    if args.peel is not None:
        rows = peel_rows(args.peel, args.reference) + rows
    payload = {"dataset": data.name, "rows": rows,
               "popularity": evaluate(PopularityScorer(data), data, split="test", ks=KS)}
    path = write_result(f"fitted_{data.name}", payload, markdown(payload))
    print(markdown(payload))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
