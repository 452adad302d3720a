"""PEEL server pipeline on a real dataset: wall time per stage, seconds per pretraining epoch,
validation sweep of the device options (one factor at a time), and test Recall/NDCG@50 at the three
paper-equivalent budgets for PEEL, its ablations and full-size LightGCN.

    python benchmarks/pipeline.py --run runs/amazon --config benchmarks/amazon.toml --train \
        --ablations lightgcn,single_user_group,random_selection,random_item_groups,no_diversity

Everything is resumable: rerun the same command after a kill. Results go to
benchmarks/results/pipeline_<dataset>.{json,md}; what is not trained yet is reported as missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from peel.bench import write_result
from peel.config import config_from_sources
from peel.data import load
from peel.evaluation.report import evaluate_runs
from peel.run import TrainedRun, evaluate_run
from peel.training.pipeline import ABLATIONS, train

BUDGETS = "5MB,10MB,25MB"
SWEEP = {"device.eq10": ["masked", "fold"], "device.blocks": ["transformed", "raw", "pretrained"],
         "device.user_vector": ["finetuned", "pretrained"]}


def device_sweep(run_dir: Path, data: Any, budget_text: str, reference: str | None) -> list[dict[str, Any]]:
    """Validation NDCG@50 at the largest budget, changing one device option at a time from the run's."""
    from peel.evaluation.report import resolve_budgets

    base = TrainedRun.load(run_dir)
    budget = resolve_budgets(budget_text, n_items=data.n_items, dim=base.config.model.dim, name=data.name,
                             paper_equivalent=True, reference=reference)[-1]
    rows = []
    for key, values in SWEEP.items():
        field = key.split(".", 1)[1]
        for value in values:
            run = TrainedRun.load(run_dir, device=dataclasses.replace(base.config.device, **{field: value}))
            metrics = evaluate_run(run, data, [budget], split="valid", ks=(50,))[0]
            rows.append({"option": key, "value": value, "default": getattr(base.config.device, field) == value,
                         "budget": metrics["budget"], "valid_ndcg@50": metrics["ndcg@50"],
                         "valid_recall@50": metrics["recall@50"]})
            print(f"sweep {key}={value}: valid ndcg@50 {metrics['ndcg@50']:.5f}", flush=True)
    return rows


def stage_times(run_dir: Path) -> dict[str, Any]:
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    pretrain = run_dir / "pretrain" / "result.json"
    out: dict[str, Any] = {"seconds": summary.get("seconds", {}), "groups": summary.get("groups", [])}
    if pretrain.exists():
        result = json.loads(pretrain.read_text())
        epochs = [h["seconds"] for h in result["history"]]
        out["pretrain"] = {"epochs_run": result["epochs_run"], "best_epoch": result["best_epoch"],
                           "valid_recall@50_sample": result["valid_recall@50"],
                           "seconds_per_epoch_median": sorted(epochs)[len(epochs) // 2] if epochs else None}
    return out


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"## PEEL pipeline on {payload['dataset']}", "", "### Wall time", "",
             "| stage | seconds |", "|---|---|"]
    for stage, seconds in payload["times"]["seconds"].items():
        lines.append(f"| {stage} | {seconds:.0f} |")
    pre = payload["times"].get("pretrain", {})
    if pre:
        lines += ["", f"Pretraining: {pre['epochs_run']} epochs (best {pre['best_epoch']}), median "
                      f"{pre['seconds_per_epoch_median']:.1f} s per epoch. Target for the whole pipeline: 1800 s."]
    if payload.get("sweep"):
        lines += ["", "### Device options (validation NDCG@50 at the largest budget, one factor at a time)", "",
                  "| option | value | valid NDCG@50 | valid Recall@50 |", "|---|---|---|---|"]
        for r in payload["sweep"]:
            mark = " (default)" if r["default"] else ""
            lines.append(f"| {r['option']} | {r['value']}{mark} | {r['valid_ndcg@50']:.5f} | "
                         f"{r['valid_recall@50']:.5f} |")
    lines += ["", "### Test split, paper-equivalent budgets", "",
              "| method | budget | bytes used | Recall@50 | NDCG@50 | NDCG@50 (legacy) |", "|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        if "error" in r:
            lines.append(f"| {r['method']} | {r.get('budget', '-')} | - | {r['error']} | | |")
        else:
            lines.append(f"| {r['method']} | {r['budget']} | {r['bytes_used']:,} | {r['recall@50']:.5f} | "
                         f"{r['ndcg@50']:.5f} | {r['ndcg_legacy@50']:.5f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/amazon-book-sub"))
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--train", action="store_true", help="train / resume the main run and the ablations first")
    parser.add_argument("--ablations", default="", help=f"comma-separated subset of {', '.join(ABLATIONS)}")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--reference", default=None, help="paper dataset for budgets (default: from the name)")
    args = parser.parse_args()

    data = load(args.data)
    ablations = [a for a in args.ablations.split(",") if a]
    if args.train:
        config = config_from_sources(args.config)
        train(data, args.run, config, data_path=args.data, resume=True, progress=False)
        for name in ablations:
            train(data, args.run, config, data_path=args.data, resume=True, progress=False, ablation=name)
    payload: dict[str, Any] = {"dataset": data.name, "run": str(args.run), "times": stage_times(args.run),
                               "ablation_times": {a: stage_times(args.run / "ablations" / a) for a in ablations}}
    if not args.no_sweep:
        payload["sweep"] = device_sweep(args.run, data, BUDGETS, args.reference)
    payload["rows"] = evaluate_runs(args.run, BUDGETS, paper_equivalent=True, reference=args.reference,
                                    split="test", ablations=True, ks=(20, 50))
    path = write_result(f"pipeline_{data.name}", payload, markdown(payload))
    print(markdown(payload))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
