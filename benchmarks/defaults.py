"""peel's defaults on a dataset: whole-pipeline wall time with no config file, and validation NDCG@50 at
the paper-equivalent budgets against a small grid of alternatives (the defaults are chosen from it).

    python benchmarks/defaults.py --data ../shared/data/ml-100k --runs runs/defaults-ml100k \
        --reference amazon-book --grid all
    python benchmarks/defaults.py --data ../shared/data/amazon-book-sub --runs runs/defaults-amazon \
        --recorded benchmarks/results/pipeline_amazon-book-sub.json

The defaults run is ``peel train --data DATA --out RUNS/defaults`` in a fresh process, timed end to end
(start-up and data loading included): that is what a new user waits for. Grid entries (``--grid``) are
trained into RUNS/<name>, sharing the defaults' stage a when they leave it unchanged, and timed by their
stages. ``--recorded`` adds the validation NDCG@50 of every configuration in an earlier benchmark result
(e.g. the pipeline benchmark's runs) to the "best measured" column. Targets: the whole pipeline within
``--target-seconds``; the defaults' validation NDCG@50 within 2% of the best measured at every budget.
Everything is resumable: rerun after a kill. Results: benchmarks/results/defaults_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from peel.bench import write_result
from peel.config import PeelConfig
from peel.data import load
from peel.methods.peel import evaluate_run
from peel.methods.report import resolve_budgets
from peel.run import TrainedRun
from peel.run_layout import RunLayout
from peel.training.pipeline import train

BUDGETS = "5MB,10MB,25MB"
TOLERANCE = 0.02
PREVIOUS_DEFAULTS = ["pretrain.batch_size=4096", "pretrain.lr=0.001", "pretrain.eval_every=1", "pretrain.patience=10",
                     "pretrain.eval_users=0", "finetune.bilevel=second_order", "finetune.max_epochs=50",
                     "finetune.patience=5"]
SQRT_RULE = ["pretrain.lr_batch_power=0.5"]  # the auto lr before 2026-12-02: scaled with the square root of the batch
GRID = {
    "pretrain_batch4096_lr5e-3": ["pretrain.batch_size=4096", "pretrain.lr=0.005"],
    "pretrain_batch16384_lr1e-2": ["pretrain.batch_size=16384", "pretrain.lr=0.01"],
    "pretrain_batch4096_lr1e-2": ["pretrain.batch_size=4096", "pretrain.lr=0.01"],
    "pretrain_sqrt_rule": SQRT_RULE,
    "pretrain_lr_at_65536_2e-2": ["pretrain.lr_at_65536=0.02", *SQRT_RULE],
    "stage_b_20_epochs": ["finetune.max_epochs=20"],
    "stage_b_40_epochs": ["finetune.max_epochs=40", "finetune.patience=5"],
    "stage_b_second_order": ["finetune.bilevel=second_order"],
    "previous_defaults": PREVIOUS_DEFAULTS,
    "pretrain_self_distillation_1": ["pretrain.self_distillation=1"],
    "pretrain_self_distillation_0.3": ["pretrain.self_distillation=0.3"],
    "pretrain_self_distillation_3": ["pretrain.self_distillation=3"],
    # seed repeats: how much of a difference between single runs is noise
    "defaults@seed1": ["seed=1"],
    "defaults@seed2": ["seed=2"],
    "pretrain_batch4096_lr5e-3@seed1": ["pretrain.batch_size=4096", "pretrain.lr=0.005", "seed=1"],
    "pretrain_batch4096_lr5e-3@seed2": ["pretrain.batch_size=4096", "pretrain.lr=0.005", "seed=2"],
    "pretrain_sqrt_rule@seed1": [*SQRT_RULE, "seed=1"],
    "pretrain_sqrt_rule@seed2": [*SQRT_RULE, "seed=2"],
    "pretrain_lr_at_65536_2e-2@seed1": ["pretrain.lr_at_65536=0.02", *SQRT_RULE, "seed=1"],
    "pretrain_self_distillation_1@seed1": ["pretrain.self_distillation=1", "seed=1"],
    "pretrain_self_distillation_1@seed2": ["pretrain.self_distillation=1", "seed=2"],
}


def train_defaults(data_path: str, run: Path) -> float | None:
    """``peel train`` with no config in a fresh process; its wall seconds (None if it was already done)."""
    if RunLayout(run).summary.exists() and RunLayout(run).finetune_dir.exists() and \
            (run / "wall_seconds.json").exists():
        return json.loads((run / "wall_seconds.json").read_text())["seconds"]
    peel = Path(sys.executable).with_name("peel")
    command = [str(peel), "train", "--data", data_path, "--out", str(run), "--quiet"]
    if RunLayout(run).config.exists():
        command.append("--resume")  # a killed run: its wall time is no longer one uninterrupted figure
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    if "--resume" in command:
        return None
    (run / "wall_seconds.json").write_text(json.dumps({"seconds": round(seconds, 2), "command": command}) + "\n")
    return seconds


def validation(run_dir: Path, data: Any, reference: str | None, split: str = "valid") -> list[dict[str, Any]]:
    run = TrainedRun.load(run_dir)
    budgets = resolve_budgets(BUDGETS, n_items=data.n_items, dim=run.config.model.dim, name=data.name,
                              paper_equivalent=True, reference=reference)
    return [{"budget": m["budget"], "ndcg@50": m.get("ndcg@50"), "recall@50": m.get("recall@50")}
            for m in evaluate_run(run, data, budgets, split=split, ks=(50,))]


def run_row(name: str, path: Path, overrides: list[str], data: Any, reference: str | None) -> dict[str, Any]:
    summary = RunLayout(path).read_summary()
    pretrain = json.loads(RunLayout(path).pretrain_result.read_text())
    config = json.loads(RunLayout(path).config.read_text())
    return {"name": name, "overrides": overrides, "seconds": summary.get("seconds", {}),
            "pretrain": {"batch_size": config["pretrain"]["batch_size"], "lr": config["pretrain"]["lr"],
                         "epochs_run": pretrain["epochs_run"], "best_epoch": pretrain["best_epoch"]},
            "finetune_epochs_max": max((g["epochs_run"] for g in summary.get("groups", [])), default=0),
            "valid": validation(path, data, reference)}


def recorded_rows(path: Path) -> list[dict[str, Any]]:
    """Validation NDCG@50 per budget of every configuration in a pipeline benchmark result."""
    payload = json.loads(path.read_text())
    rows = []
    for row in payload.get("sweep", []):
        rows.append({"name": f"{path.name}: {row['option']}={row['value']}", "ndcg@50": row["valid_ndcg@50"]})
    entries = [(f"variant {name}", e) for name, e in (payload.get("variants") or {}).items()]
    entries += [(f"batch {e['batch_size']}, lr {e['lr']:g}, {e['bilevel']}", e) for e in payload.get("speed") or []]
    for name, entry in entries:
        if "rows" in entry:
            rows.append({"name": f"{path.name}: {name}", "ndcg@50": [r["valid_ndcg@50"] for r in entry["rows"]]})
    return rows


def markdown(payload: dict[str, Any]) -> str:
    budgets = [r["budget"] for r in payload["defaults"]["valid"]]
    lines = [f"## peel's defaults on {payload['dataset']} (no config file)", "",
             "Whole pipeline, `peel train` in a fresh process: "
             + (f"**{payload['wall_seconds']:.0f} s** " if payload["wall_seconds"] else "(resumed: no wall time) ")
             + f"(target {payload['target_seconds']:.0f} s: {'met' if payload['time_met'] else 'MISSED'}); "
             f"stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in payload["defaults"]["seconds"].items()), "",
             "Validation NDCG@50 (Recall@50) at the paper-equivalent budgets; decide on validation. The defaults' "
             "wall time above is the timed figure (trained first, in a fresh process); a grid row's seconds are its "
             "stage sum (stage a shared with the defaults counts 0) and may include other work on the machine.", "",
             "| configuration | pretrain batch / lr | epochs (best) | stage-b max epochs | seconds | "
             + " | ".join(budgets) + " |", "|---|---|---|---|---|" + "---|" * len(budgets)]
    for row in [payload["defaults"], *payload["grid"]]:
        p = row["pretrain"]
        cells = [f"{v['ndcg@50']:.5f} ({v['recall@50']:.4f})" if v.get("ndcg@50") is not None else "-"
                 for v in row["valid"]]
        lines.append(f"| {row['name']} | {p['batch_size']} / {p['lr']:g} | {p['epochs_run']} ({p['best_epoch']}) | "
                     f"{row['finetune_epochs_max']} | {row['seconds'].get('total', 0):.0f} | "
                     + " | ".join(cells) + " |")
    for row in payload["recorded"]:
        lines.append(f"| {row['name']} (recorded) | | | | | " + " | ".join(f"{v:.5f}" for v in row["ndcg@50"]) + " |")
    lines += ["", "Configurations with seed repeats (`NAME@seedK`) count by their mean over seeds.", "",
              "| budget | defaults (mean of seeds; range) | best measured | by (seeds) | gap | within 2% |",
              "|---|---|---|---|---|---|"]
    for gap in payload["gaps"]:
        low, high = gap["defaults_range"]
        lines.append(f"| {gap['budget']} | {gap['defaults']:.5f} ({gap['defaults_seeds']}; {low:.5f}-{high:.5f}) | "
                     f"{gap['best']:.5f} | {gap['best_by']} ({gap['best_seeds']}) | {100 * gap['gap']:+.1f}% | "
                     f"{'yes' if gap['within'] else 'NO'} |")
    test = payload["defaults_test"]
    lines += ["", "Test split, defaults: " + ", ".join(
        f"{r['budget']} NDCG@50 {r['ndcg@50']:.5f} / Recall@50 {r['recall@50']:.4f}" for r in test)]
    return "\n".join(lines)


def gaps(defaults: dict[str, Any], grid: list[dict[str, Any]], recorded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per budget, the defaults against the best configuration measured. Runs named ``CONFIG@seedK`` are
    seed repeats of CONFIG: a configuration's figure is the mean over its seeds, so a lucky seed of
    one configuration is not compared with one unlucky run of another."""
    by_config: dict[str, list[dict[str, Any]]] = {}
    for row in [defaults, *grid]:
        by_config.setdefault(row["name"].split("@", 1)[0], []).append(row)
    out = []
    for i, budget in enumerate(r["budget"] for r in defaults["valid"]):
        means = {name: sum(r["valid"][i]["ndcg@50"] for r in rows) / len(rows) for name, rows in by_config.items()
                 if all(r["valid"][i].get("ndcg@50") is not None for r in rows)}
        candidates = [*means.items(), *[(r["name"], r["ndcg@50"][i]) for r in recorded]]
        best_by, best = max(candidates, key=lambda c: c[1])
        seeds = [r["valid"][i]["ndcg@50"] for r in by_config["defaults"]]
        gap = means["defaults"] / best - 1.0
        out.append({"budget": budget, "defaults": means["defaults"], "defaults_seeds": len(seeds),
                    "defaults_range": [min(seeds), max(seeds)], "best": best, "best_by": best_by,
                    "best_seeds": len(by_config.get(best_by, [None])), "gap": gap, "within": gap >= -TOLERANCE})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--reference", default=None, help="paper dataset for budgets (default: from the name)")
    parser.add_argument("--grid", default="", help=f"'all' or a comma-separated subset of {', '.join(GRID)}")
    parser.add_argument("--recorded", type=Path, action="append", default=[],
                        help="an earlier benchmark result whose validation NDCG@50 counts as measured")
    parser.add_argument("--target-seconds", type=float, default=None,
                        help="wall-time target (default: 60 s below 100k training interactions, else 1200 s)")
    args = parser.parse_args()

    data = load(args.data)
    defaults_dir = args.runs / "defaults"
    wall = train_defaults(args.data, defaults_dir)
    names = list(GRID) if args.grid == "all" else [g for g in args.grid.split(",") if g]
    unknown = sorted(set(names) - set(GRID))
    if unknown:
        parser.error(f"unknown grid entries {unknown}; known: {', '.join(GRID)}")
    for name in names:
        print(f"grid {name}", flush=True)
        train(data, args.runs / name, PeelConfig().with_overrides(GRID[name]), data_path=args.data, resume=True,
              progress=False, stage_a_from=defaults_dir)
    defaults = run_row("defaults", defaults_dir, [], data, args.reference)
    grid = [run_row(n, args.runs / n, GRID[n], data, args.reference) for n in names]
    recorded = [r for path in args.recorded for r in recorded_rows(path)]
    target = args.target_seconds or (60.0 if data.count("train") < 100_000 else 1200.0)
    payload = {"dataset": data.name, "runs": str(args.runs), "wall_seconds": wall, "target_seconds": target,
               "time_met": wall is not None and wall <= target, "defaults": defaults, "grid": grid,
               "recorded": recorded, "gaps": gaps(defaults, grid, recorded),
               "defaults_test": validation(defaults_dir, data, args.reference, split="test")}
    path = write_result(f"defaults_{data.name}", payload, markdown(payload))
    print(markdown(payload))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
