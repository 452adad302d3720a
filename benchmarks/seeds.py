"""Seed repeats of compare.py's runs: is a difference between PEEL and a fitted model more than the spread
from the training seed? A paired per-user test of two single runs says whether *those two models* differ on
the test users; it cannot say whether a new seed of either would land on the same side.

    python benchmarks/compare.py --data ../shared/data/amazon-book-sub --runs runs/compare-amazon
    python benchmarks/seeds.py --data ../shared/data/amazon-book-sub --runs runs/compare-amazon \\
        --names peel-defaults,lightgcn-25MB-eq-l2=0.001 --seeds 2024

Every name of compare.py (a PEEL variant or a fitted run, e.g. the yardstick of a budget) is trained again
with each seed of ``--seeds`` into RUNS/seed<K>/<name> (resumable: rerun after a kill); the run in RUNS/<name>
is its repeat at the config's seed. Each PEEL variant named is compared with each fitted run named, at that
run's budget: per seed (seed k against seed k), and by the per-user metric averaged over the seeds (a paired
Wilcoxon test over test users). Results: benchmarks/results/seeds_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from peel.bench import write_result
from peel.data import load
from peel.evaluation.significance import paired_test
from peel.methods import load_run
from peel.run_layout import RunLayout

try:
    import compare
except ImportError:  # run from another directory
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import compare

METRICS = ("recall@50", "ndcg@50")


def seed_of(run: Path) -> int:
    return int(json.loads(RunLayout(run).config.read_text())["seed"])


def evaluations(data: Any, runs: dict[int, Path], budget: Any) -> dict[int, dict[str, Any]]:
    """seed -> test row with per-user metrics (and the validation NDCG@50) of one name at one budget."""
    out = {}
    for seed, path in runs.items():
        model = load_run(path)
        valid = model.evaluate(data, [budget], split="valid", ks=(50,))[0]
        test = model.evaluate(data, [budget], split="test", ks=(50,), per_user=True)[0]
        out[seed] = {**test, "valid_ndcg50": valid.get("ndcg@50")}
    return out


def seed_mean(rows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The per-user metrics averaged over seeds (the same users in the same order in every row)."""
    first = next(iter(rows.values()))["per_user"]
    return {"user": first["user"], **{m: np.mean([r["per_user"][m] for r in rows.values()], axis=0)
                                      for m in METRICS}}


def compare_pairs(data: Any, elastic: dict[str, dict[int, Path]], fitted: dict[str, tuple[Any, dict[int, Path]]]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-run rows (every seed) and per-pair tests (per seed, and over the seed-averaged per-user metric)."""
    rows, pairs = [], []
    for fitted_name, (budget, fitted_runs) in fitted.items():
        b = evaluations(data, fitted_runs, budget)
        rows += [{"run": fitted_name, "budget": budget.label, "seed": s, **_summary(r)} for s, r in b.items()]
        for elastic_name, elastic_runs in elastic.items():
            a = evaluations(data, elastic_runs, budget)
            rows += [{"run": elastic_name, "budget": budget.label, "seed": s, **_summary(r)} for s, r in a.items()]
            common = sorted(set(a) & set(b))
            for metric in METRICS:
                per_seed = {s: paired_test(a[s]["per_user"], b[s]["per_user"], metric) for s in common}
                averaged = paired_test(seed_mean({s: a[s] for s in common}), seed_mean({s: b[s] for s in common}),
                                       metric)
                pairs.append({"budget": budget.label, "a": elastic_name, "b": fitted_name, "metric": metric,
                              "seeds": common, "per_seed": {str(s): t for s, t in per_seed.items()},
                              "seed_mean": averaged})
    return rows, pairs


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {"valid_ndcg50": row["valid_ndcg50"], **{m: row.get(m) for m in METRICS},
            "bytes_used": row.get("bytes_used")}


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"## Seed repeats on {payload['dataset']}: PEEL against the fitted model, beyond one seed", "",
             "Each run trained with every seed (the first is compare.py's run). Test split; validation NDCG@50 "
             "for reference.", "",
             "| run | budget | seed | valid NDCG@50 | Recall@50 | NDCG@50 |", "|---|---|---|---|---|---|"]
    seen = set()
    for r in payload["rows"]:
        key = (r["run"], r["budget"], r["seed"])
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"| {r['run']} | {r['budget']} | {r['seed']} | {r['valid_ndcg50']:.5f} | {r['recall@50']:.5f} | "
                     f"{r['ndcg@50']:.5f} |")
    lines += ["", "Spread from the seed: the largest minus the smallest over seeds, relative to their mean.", "",
              "| run | budget | seeds | Recall@50 mean (spread) | NDCG@50 mean (spread) |", "|---|---|---|---|---|"]
    for (run, budget), group in _groups(payload["rows"]).items():
        cells = []
        for m in METRICS:
            values = np.array([r[m] for r in group])
            cells.append(f"{values.mean():.5f} ({(values.max() - values.min()) / values.mean():.1%})")
        lines.append(f"| {run} | {budget} | {len(group)} | {' | '.join(cells)} |")
    lines += ["", "PEEL minus fitted: per seed (seed k against seed k, paired Wilcoxon p in brackets), and the "
              "per-user metric averaged over the seeds on both sides (wins / losses of PEEL, p).", "",
              "| budget | PEEL | fitted | metric | per seed | seed mean | wins / losses | p |",
              "|---|---|---|---|---|---|---|---|"]
    for t in payload["pairs"]:
        per_seed = ", ".join(f"{s}: {v['relative']:+.1%} ({v['p_value']:.2g})" for s, v in t["per_seed"].items())
        m = t["seed_mean"]
        lines.append(f"| {t['budget']} | {t['a']} | {t['b']} | {t['metric']} | {per_seed} | {m['relative']:+.1%} | "
                     f"{m['wins']} / {m['losses']} | {m['p_value']:.2g} |")
    return "\n".join(lines)


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["run"], r["budget"]), {})[r["seed"]] = r
    return {k: list(v.values()) for k, v in groups.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--runs", type=Path, required=True, help="compare.py's runs directory")
    parser.add_argument("--reference", default=None, help="paper dataset for budgets (default: from the name)")
    parser.add_argument("--names", required=True,
                        help="compare.py runs to repeat (comma-separated): PEEL variants and fitted runs")
    parser.add_argument("--seeds", required=True, help="the other seeds (comma-separated integers)")
    parser.add_argument("--fitted", default="lightgcn", help="fitted methods whose runs may be named")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads (torch and numpy BLAS) per training (0: one a core)")
    parser.add_argument("--train-only", action="store_true", help="train what is missing and stop")
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    data = load(args.data)
    budgets = compare.budgets_for(data, args.reference)
    plan = compare.fitted_runs(data, budgets, tuple(m for m in args.fitted.split(",") if m))
    names = [n for n in args.names.split(",") if n]
    if unknown := set(names) - set(compare.PEEL_VARIANTS) - set(plan):
        parser.error(f"--names: unknown run(s) {', '.join(sorted(unknown))}; known: "
                     f"{', '.join([*compare.PEEL_VARIANTS, *plan])}")
    if not args.train_only:  # the repeats may train beside the seed's own runs
        for name in names:
            if not RunLayout(args.runs / name).summary.exists():
                parser.error(f"{args.runs / name} is not a finished run: train it with compare.py first")
    fitted = {n: plan[n] for n in names if n in plan}
    if not args.train_only and (len(fitted) == len(names) or not fitted):  # training may be split over processes
        parser.error("--names needs at least one PEEL variant and one fitted run to compare")
    for seed in seeds:
        compare.train_all(data, args.data, args.runs / f"seed{seed}", fitted, only=set(names),
                          threads=args.threads, seed=seed)
    if args.train_only:
        return
    paths = {n: {seed_of(args.runs / n): args.runs / n, **{s: args.runs / f"seed{s}" / n for s in seeds}}
             for n in names}
    rows, pairs = compare_pairs(data, {n: p for n, p in paths.items() if n not in fitted},
                                {n: (budget, paths[n]) for n, (_, budget, _) in fitted.items()})
    payload = {"dataset": data.name, "names": names, "seeds": seeds, "rows": rows, "pairs": pairs}
    write_result(f"seeds_{data.name}", payload, markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
