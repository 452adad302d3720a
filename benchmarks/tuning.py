"""The tuning grid every fitted baseline gets, on validation at one budget (5MB-eq): the L2 weight
first, then learning rate x batch at the best L2, then the method's own structure (STRUCTURE_GRID: e.g.
DLRM-CE's m, LightRec's W) at the best of those. Every configuration has the same epoch cap and early
stopping (so the same cap on training triples); the winner (best validation NDCG@50) is what
benchmarks/compare.py trains at every budget. ``--methods`` tunes some methods and keeps the committed
results of the others.

    python benchmarks/tuning.py --data ../shared/data/yelp2018-sub --runs runs/tuning-yelp
    python benchmarks/tuning.py --data ../shared/data/yelp2018-sub --runs runs/tuning-yelp --methods lightrec \
        --teacher runs/compare-yelp/lightgcn-full

(the teacher: ``compare.py --data ../shared/data/yelp2018-sub --runs runs/compare-yelp --teacher`` prints it)

Resumable: rerun after a kill. Results: benchmarks/results/tuning_<dataset>.{json,md}, which record
each configuration's validation score and training seconds, and the grid's total time per method. They are
written after every configuration (an unfinished grid is marked so and never chosen by compare.py), and a
rerun takes a configuration already in them instead of training it again: commit them as they grow, and a
grid longer than one machine's life resumes on a fresh clone (``--retrain`` trains every configuration anew;
use it, or drop the method's committed entry, when the method's code has changed).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peel.bench import RESULTS_DIR, command_line, write_result
from peel.budget import full_table_bytes, parse_budget
from peel.budget import paper_equivalent as scale
from peel.config import PeelConfig
from peel.data import load
from peel.methods import FIXED_METHODS, METHODS, load_run
from peel.methods.fixed import FIXED_SPECS
from peel.run_layout import RunLayout

TUNING_BUDGET = "5MB"        # paper-equivalent; the cheapest budget, where the ranking of configs matters most
L2_GRID = (1e-4, 1e-2, 1e-1, 1.0)   # the paper's LightGCN value first; PMF needs far more (measured)
# The batch and learning rate the committed grids were centred on (the auto rule before the elastic defaults:
# lr 2e-2 at batch 65536, scaled with the square root of the batch), so that a rerun trains the same
# configurations; its early stopping is today's (about 50 epochs of patience; the committed grids had a
# patience of 10 validations).
GRID_CENTRE = ["pretrain.lr_at_65536=0.02", "pretrain.lr_batch_power=0.5"]
# (batch multiplier, lr multiplier) at the best L2, around the data-derived default (PretrainConfig.resolved):
# half and twice the learning rate, and a quarter of the batch with the sqrt rule's half learning rate
LR_BATCH_GRID = ((1, 0.5), (1, 2.0), (0.25, 0.5))
# A method that starts trained (LightRec: its teacher's residual quantization) is fine-tuned, so it also gets a
# tenth of the default rate: on yelp2018-sub at 5MB-eq the tuned rate (half the default) only lowered validation
# Recall@50 from the start (0.1081 to 0.1075 / 0.1051 after 2 / 4 epochs), a tenth of it raised it to 0.1095
# after 6
FINE_TUNE_GRID = ((1, 0.1),)


def lr_batch_grid(method: str) -> tuple[tuple[float, float], ...]:
    """The (batch, lr) multipliers tried at the best L2 for ``method``."""
    return LR_BATCH_GRID + (FINE_TUNE_GRID if FIXED_SPECS[method].teacher else ())
# The method's own structure, tried at the best L2, batch and lr (the first setting is the config's default,
# which the grids above use): methods.md's (k, m) grid of DLRM-CE (k follows from m and the budget), the
# codewords of LightRec (B follows), the search length of the per-item dims searches. DLRM-CE's m = ⌈√|V|⌉
# (model.qr_buckets=0) is left out: on yelp2018-sub at 5MB-eq it buys k = 979 dims, 45 s an epoch
# single-threaded (2.4 s at m = 2, k = 23), validation Recall@50 0.0044 after 12 epochs; m = 8 (k about 90)
# stands in for the few-rows end of the grid
STRUCTURE_GRID: dict[str, tuple[str, ...]] = {
    "dlrm-ce": ("model.qr_buckets=4", "model.qr_buckets=8", "model.qr_op=add"),
    "lightrec": ("model.codewords=16", "model.codewords=64"),
    "esapn": ("pretrain.search_epochs=60",),
    "autoemb": ("pretrain.search_epochs=60",),
}


def overrides_for(config: PeelConfig, n_train: int, l2: float, batch_factor: float, lr_factor: float) -> list[str]:
    auto = config.pretrain.resolved(n_train, config.model.n_blocks)
    batch = max(256, int(auto.batch_size * batch_factor))
    return [f"pretrain.l2={l2:g}", f"pretrain.batch_size={batch}", f"pretrain.lr={auto.lr * lr_factor:.6g}"]


def config_name(overrides: list[str]) -> str:
    return "_".join(o.split(".", 1)[1].replace("=", "") for o in overrides)


def run_one(data: Any, data_path: str, runs: Path, method: str, overrides: list[str],
            teacher: Path | None = None) -> dict[str, Any]:
    budget = scale(parse_budget(TUNING_BUDGET, full_table_bytes=full_table_bytes(data.n_items, 128)),
                   n_items=data.n_items, reference=data.name)
    out = runs / f"{method}-{config_name(overrides)}"
    if not RunLayout(out).embeddings.exists():
        print(f"{method} {' '.join(overrides)}", flush=True)
        METHODS[method].fit(data, out, PeelConfig().with_overrides(overrides), budget=budget, data_path=data_path,
                            resume=RunLayout(out).config.exists(), progress=False,
                            **({"teacher": teacher} if FIXED_SPECS[method].teacher else {}))
    [row] = load_run(out).evaluate(data, [budget], split="valid", ks=(50,))
    result = RunLayout(out).read_json(RunLayout(out).pretrain_result)
    return {"method": method, "overrides": overrides, "run": str(out), "valid_ndcg@50": row["ndcg@50"],
            "valid_recall@50": row["recall@50"], "seconds": RunLayout(out).stage_seconds("pretrain"),
            "best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"]}


def committed_rows(dataset: str, method: str, results_dir: Path = RESULTS_DIR) -> dict[tuple[str, ...], dict[str, Any]]:
    """The configurations of ``method`` already in the committed results, by their overrides."""
    path = results_dir / f"tuning_{dataset}.json"
    methods = json.loads(path.read_text())["methods"] if path.exists() else []
    return {tuple(r["overrides"]): r for t in methods if t["method"] == method for r in t["rows"]}


def tune(data: Any, data_path: str, runs: Path, method: str, teacher: Path | None = None,
         done: dict[tuple[str, ...], dict[str, Any]] | None = None,
         on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The grid of one method; a distilled method distils ``teacher`` in every configuration. A configuration
    in ``done`` (by its overrides) is taken from there, not trained; ``on_row`` gets the grid so far after
    every configuration."""
    n_train = data.count("train")
    config = PeelConfig().with_overrides(GRID_CENTRE)
    rows: list[dict[str, Any]] = []

    def run_config(overrides: list[str]) -> dict[str, Any]:
        row = (done or {}).get(tuple(overrides)) or run_one(data, data_path, runs, method, overrides, teacher)
        if on_row is not None:
            on_row({"method": method, "rows": [*rows, row], "best": None, "unfinished": True,
                    "grid_seconds": sum(r["seconds"] or 0 for r in [*rows, row])})
        return row

    for l2 in L2_GRID:
        rows.append(run_config(overrides_for(config, n_train, l2, 1, 1)))
    best_l2 = max(zip(L2_GRID, rows, strict=True), key=lambda p: p[1]["valid_ndcg@50"])[0]
    for b, lr in lr_batch_grid(method):
        rows.append(run_config(overrides_for(config, n_train, best_l2, b, lr)))
    best = max(rows, key=lambda r: r["valid_ndcg@50"])
    for extra in STRUCTURE_GRID.get(method, ()):
        rows.append(run_config(best["overrides"] + [extra]))
    best = max(rows, key=lambda r: r["valid_ndcg@50"])
    return {"method": method, "rows": rows, "best": best["overrides"],
            "grid_seconds": sum(r["seconds"] or 0 for r in rows)}


def chosen_overrides(dataset: str, method: str, results_dir: Path = RESULTS_DIR) -> list[str]:
    """The winning overrides of a finished tuning run (benchmarks/results/tuning_<dataset>.json)."""
    path = results_dir / f"tuning_{dataset}.json"
    tuned = {t["method"]: t for t in json.loads(path.read_text())["methods"]} if path.exists() else {}
    if method not in tuned or tuned[method].get("unfinished"):
        raise SystemExit(f"no tuning result for {method} on {dataset} in {path}: run benchmarks/tuning.py --data "
                         f"DATA --runs RUNS --methods {method} first (or let its unfinished grid finish)")
    return tuned[method]["best"]


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"## Tuning grid of the fitted baselines on {payload['dataset']} (validation, {TUNING_BUDGET}-eq)", "",
             f"L2 in {list(L2_GRID)} at the data-derived batch and learning rate, then (batch, lr) x "
             f"{[list(p) for p in LR_BATCH_GRID]} of the defaults at the best L2 (and "
             f"{[list(p) for p in FINE_TUNE_GRID]} for a method that starts from its teacher, LightRec, whose "
             "untrained start is validated too); same epoch cap and early stopping "
             "for all. **Bold**: the winner, trained at every budget by benchmarks/compare.py.", "",
             "| method | l2 | batch | lr | structure | valid NDCG@50 | valid Recall@50 | best epoch (run) | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for tuned in payload["methods"]:
        for r in tuned["rows"]:
            values = dict(o.split("=", 1) for o in r["overrides"])
            mark = "**" if r["overrides"] == tuned["best"] else ""
            structure = ", ".join(o for o in r["overrides"][3:])
            lines.append(f"| {mark}{FIXED_METHODS[r['method']]}{mark} | {values['pretrain.l2']} | "
                         f"{values['pretrain.batch_size']} | {values['pretrain.lr']} | {structure} | "
                         f"{mark}{r['valid_ndcg@50']:.5f}{mark} | {r['valid_recall@50']:.5f} | "
                         f"{r['best_epoch']} ({r['epochs_run']}) | {r['seconds'] or math.nan:.0f} |")
        state = f" (unfinished: {len(tuned['rows'])} configurations so far)" if tuned.get("unfinished") else ""
        lines.append(f"| {FIXED_METHODS[tuned['method']]}: grid time{state} | | | | | | | | "
                     f"{tuned['grid_seconds']:.0f} |")
    notes = [f"- {FIXED_METHODS[t['method']]}: `{t['command']}`" + (f"; {t['note']}" if t.get("note") else "")
             for t in payload["methods"] if t.get("command")]
    return "\n".join(lines + (["", "Each method's grid was run by:", *notes] if notes else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--methods", default=",".join(FIXED_METHODS))
    parser.add_argument("--retrain", action="store_true",
                        help="train every configuration, also those already in the committed results")
    parser.add_argument("--teacher", type=Path, help="the full-size LightGCN run a distilled method (LightRec) "
                        "distils in every configuration: the one benchmarks/compare.py distils, the best of its "
                        "full-size runs on validation (`compare.py --data DATA --runs RUNS --teacher` prints "
                        "it), so that the tuned and compared runs distil the same model")
    parser.add_argument("--note", help="a note recorded with each tuned method's results (default: keep the "
                        "committed one)")
    args = parser.parse_args()
    data = load(args.data)
    methods = [m for m in args.methods.split(",") if m]
    if unknown := set(methods) - set(FIXED_METHODS):
        parser.error(f"--methods: unknown method(s) {', '.join(sorted(unknown))}; known: {', '.join(FIXED_METHODS)}")
    if (distilled := [m for m in methods if FIXED_SPECS[m].teacher]) and args.teacher is None:
        parser.error(f"--teacher RUN is required to tune {', '.join(distilled)} (benchmarks/compare.py --teacher names "
                     "it, once the full-size runs lightgcn-full* are trained)")
    if args.teacher is not None and not RunLayout(args.teacher).embeddings.exists():
        parser.error(f"--teacher {args.teacher}: no trained run there ({RunLayout(args.teacher).embeddings} missing)")
    path = RESULTS_DIR / f"tuning_{data.name}.json"
    results: dict[str, dict[str, Any]] = {}

    def save(tuned: dict[str, Any]) -> None:  # read again: another process may be tuning another method
        results.clear()
        results.update({t["method"]: t for t in json.loads(path.read_text())["methods"]} if path.exists() else {})
        results[tuned["method"]] = {**tuned, "command": command_line(),
                                    "note": args.note if args.note is not None else
                                    results.get(tuned["method"], {}).get("note", "")}
        payload = {"dataset": data.name, "budget": f"{TUNING_BUDGET}-eq", "methods": list(results.values())}
        write_result(f"tuning_{data.name}", payload, markdown(payload))

    for method in methods:
        done = {} if args.retrain else committed_rows(data.name, method)
        save(tune(data, args.data, args.runs, method, args.teacher, done, on_row=save))
    print(markdown({"dataset": data.name, "methods": list(results.values())}))


if __name__ == "__main__":
    main()
