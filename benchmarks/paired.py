"""Paired per-user test of one trained run against another at the same budgets (e.g. a probe's PEEL run
against compare.py's fitted yardstick): Recall/NDCG@20/50 of both and the Wilcoxon signed-rank p-value.

    python benchmarks/paired.py --data ../shared/data/amazon-book-sub --split test --budgets 25MB-eq \
        runs/amazon-ev6/ev6e400 "runs/compare-amazon/lightgcn-25MB-eq-l2=0.001"

A fitted run serves the budget it was fitted to: it is paired there only; a full-size run at every budget.
Prints a markdown table; nothing is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from peel.budget import Budget
from peel.evaluation.significance import paired_test
from peel.methods import load_run

try:
    from compare import budgets_for
except ImportError:  # run from another directory
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from compare import budgets_for

METRICS = ("recall@20", "ndcg@20", "recall@50", "ndcg@50")


def pair(data: Any, run_a: Path, run_b: Path, budgets: list[Budget], split: str) -> list[dict[str, Any]]:
    """One row per budget both runs serve and metric: both means, a - b and the paired p-value."""
    rows = {}
    for run in (run_a, run_b):
        evaluated = load_run(run).evaluate(data, budgets, split=split, ks=(20, 50), per_user=True)
        rows[run] = {r["budget"]: r for r in evaluated if "error" not in r}
    a, b = rows[run_a], rows[run_b]
    # a full-size run serves every budget with the same model: pair it at each budget of the other run
    names = [n for n in dict.fromkeys([*a, *b]) if n != "full" and _served(a, n) and _served(b, n)]
    names = names or (["full"] if "full" in a and "full" in b else [])
    if not names:  # e.g. a fitted run at 5MB-eq against one at 10MB-eq
        raise SystemExit(f"{run_a} serves {', '.join(a) or 'no budget'} and {run_b} "
                         f"{', '.join(b) or 'no budget'}: no budget to pair them at")
    return [{"budget": name, **paired_test(_served(a, name)["per_user"], _served(b, name)["per_user"], metric)}
            for name in names for metric in METRICS]


def _served(rows: dict[str, Any], budget: str) -> dict[str, Any] | None:
    """The run's row at ``budget``, or its full-size row (a reference at every budget, whatever its bytes)."""
    return rows.get(budget) or rows.get("full")


def markdown(rows: list[dict[str, Any]], run_a: Path, run_b: Path, split: str) -> str:
    lines = [f"A = {run_a}, B = {run_b}, {split} split, paired per user (Wilcoxon signed-rank)", "",
             "| budget | metric | A | B | A - B | wins / losses / ties of A | p |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['budget']} | {r['metric']} | {r['mean_a']:.5f} | {r['mean_b']:.5f} | "
              f"{100 * r['relative']:+.2f}% | {r['wins']} / {r['losses']} / {r['ties']} | {r['p_value']:.2g} |"
              for r in rows]
    return "\n".join(lines)


def main() -> None:
    from peel.data import load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    parser.add_argument("--budgets", default="5MB-eq,10MB-eq,25MB-eq",
                        help="paper-equivalent budgets to pair at (comma-separated; default: all three)")
    parser.add_argument("--reference", default=None, help="paper dataset for budgets (default: from the name)")
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args()
    data = load(args.data)
    wanted = [b for b in args.budgets.split(",") if b]
    budgets = {b.label: b for b in budgets_for(data, args.reference)}
    if unknown := [b for b in wanted if b not in budgets]:
        parser.error(f"--budgets: unknown {', '.join(unknown)}; known: {', '.join(budgets)}")
    rows = pair(data, args.run_a, args.run_b, [budgets[b] for b in wanted], args.split)
    print(markdown(rows, args.run_a, args.run_b, args.split))


if __name__ == "__main__":
    main()
