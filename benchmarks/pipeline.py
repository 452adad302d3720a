"""PEEL server pipeline on a real dataset: wall time per stage, seconds per pretraining epoch,
validation sweep of the device options (one factor at a time, every budget), and test Recall/NDCG@50
at the three paper-equivalent budgets for PEEL, its ablations and full-size LightGCN.

    python benchmarks/pipeline.py --run runs/amazon --config benchmarks/amazon.toml --train \
        --ablations lightgcn,single_user_group,random_selection,random_item_groups,no_diversity \
        --variants scorer_dot,second_order,lambda_div_1e-4,lambda_div_1e-2

Variants (``--variants``) are trained into RUN/variants/NAME (sharing the main run's stage a when it
is unchanged) and compared on validation NDCG@50 at every budget, beside the no-diversity ablation
(lambda_div = 0): together the lambda_div grid {0, 1e-4, 1e-3, 1e-2} of methods.md §2.
``--batch-check EPOCHS`` pretrains at batch 4096 with the default learning rate for EPOCHS epochs
(RUN/batch_check); ``--batch-compare RUNS`` adds other finished runs (e.g. one trained with
benchmarks/amazon-batch16384.toml and its batch_check). Their pretraining is compared at equal triples
on the same validation sample, and whole runs on stage times and validation NDCG@50.

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
from peel.config import DeviceConfig, config_from_sources
from peel.data import load
from peel.methods.peel import evaluate_run
from peel.methods.report import evaluate_runs
from peel.run import TrainedRun
from peel.run_layout import RunLayout
from peel.training.pipeline import ABLATIONS, train

BUDGETS = "5MB,10MB,25MB"
VARIANTS = {"scorer_dot": ["finetune.scorer=dot"], "first_order": ["finetune.bilevel=first_order"],
            "second_order": ["finetune.bilevel=second_order"],
            "lambda_div_1e-4": ["pretrain.lambda_div=0.0001"], "lambda_div_1e-2": ["pretrain.lambda_div=0.01"]}
BATCH_CHECK = ["pretrain.batch_size=4096", "pretrain.lr=0.001"]
SWEEP = {"device.eq10": ["masked", "fold"], "device.eq10_scale": ["sqrt", "paper", "none"],
         "device.blocks": ["transformed", "raw", "pretrained"],
         "device.user_vector": ["finetuned", "pretrained"]}


def device_sweep(run_dir: Path, data: Any, reference: str | None) -> list[dict[str, Any]]:
    """Validation NDCG@50 at every budget, changing one device option at a time from the run's."""
    base = TrainedRun.load(run_dir).config.device
    rows = []
    for key, values in SWEEP.items():
        field = key.split(".", 1)[1]
        for value in values:
            per_budget = validation_rows(run_dir, data, reference, device=dataclasses.replace(base, **{field: value}))
            rows.append({"option": key, "value": value, "default": getattr(base, field) == value,
                         "budgets": [m["budget"] for m in per_budget],
                         "valid_ndcg@50": [m["valid_ndcg@50"] for m in per_budget],
                         "valid_recall@50": [m["valid_recall@50"] for m in per_budget]})
            print(f"sweep {key}={value}: valid ndcg@50 " + " ".join(f"{m['valid_ndcg@50']:.5f}" for m in per_budget),
                  flush=True)
    return rows


_VALIDATION: dict[tuple[str, Any], list[dict[str, Any]]] = {}


def validation_rows(run_dir: Path, data: Any, reference: str | None, device: Any = None) -> list[dict[str, Any]]:
    """Validation Recall/NDCG@50 of a run at the three paper-equivalent budgets, with the run's device
    options or ``device``. Memoized per (run, device options): the sweep's default setting, the
    variants' and the speed comparison's main row are one evaluation."""
    from peel.methods.report import resolve_budgets

    run = TrainedRun.load(run_dir, device=device)
    key = (str(Path(run_dir).resolve()), run.config.device)
    if key not in _VALIDATION:
        budgets = resolve_budgets(BUDGETS, n_items=data.n_items, dim=run.config.model.dim, name=data.name,
                                  paper_equivalent=True, reference=reference)
        _VALIDATION[key] = [{"budget": m["budget"], "valid_ndcg@50": m["ndcg@50"], "valid_recall@50": m["recall@50"]}
                            for m in evaluate_run(run, data, budgets, split="valid", ks=(50,))]
    return _VALIDATION[key]


def finished(path: Path) -> bool:
    """A run whose stage b has completed (summary.json and finetune/ written)."""
    return RunLayout(path).summary.exists() and RunLayout(path).finetune_dir.exists()


def variant_report(run_dir: Path, names: list[str], data: Any, reference: str | None) -> dict[str, Any]:
    """The main run, each variant and the no-diversity ablation (lambda_div = 0) on validation, with
    their stage-b seconds and pretraining validation Recall@50 (fixed user sample)."""
    out: dict[str, Any] = {}
    candidates = [("default", run_dir, []), *[(n, run_dir / "variants" / n, VARIANTS[n]) for n in names],
                  ("no_diversity", RunLayout(run_dir).ablation("no_diversity").root, ["pretrain.lambda_div=0"])]
    for name, path, overrides in candidates:
        if not finished(path):
            if name != "no_diversity":
                out[name] = {"error": "not trained"}
            continue
        seconds = RunLayout(path).read_summary().get("seconds", {})
        pretrain = RunLayout(path).pretrain_result
        recall = json.loads(pretrain.read_text())["valid_recall@50"] if pretrain.exists() else None
        out[name] = {"overrides": overrides, "finetune_seconds": seconds.get("finetune"),
                     "pretrain_valid_recall@50_sample": recall, "rows": validation_rows(path, data, reference)}
        print(f"variant {name}: " + ", ".join(f"{r['budget']} {r['valid_ndcg@50']:.5f}" for r in out[name]["rows"]),
              flush=True)
    return out


def batch_report(run_dir: Path, others: list[Path]) -> dict[str, Any] | None:
    """Validation Recall@50 (same fixed user sample) per evaluated epoch, at equal triples: the main run's
    pretraining against other pretraining runs (other batch sizes and learning rates)."""
    runs = [("main", run_dir), *[(str(p), p) for p in others]]
    runs = [(label, p) for label, p in runs if RunLayout(p).pretrain_result.exists()]
    if len(runs) < 2:
        return None
    columns = []
    for label, path in runs:
        history = json.loads(RunLayout(path).pretrain_result.read_text())["history"]
        config = json.loads(RunLayout(path).config.read_text())["pretrain"]
        columns.append({"label": label, "batch_size": config["batch_size"], "lr": config["lr"],
                        "eval_users": config["eval_users"], "seconds_per_epoch_median": median_epoch_seconds(history),
                        "scores": {h["epoch"]: h["score"] for h in history if h.get("score") is not None}})
    if len({c["eval_users"] for c in columns}) > 1:
        raise SystemExit("batch check: the runs evaluated different validation samples; not comparable")
    epochs = sorted(set.intersection(*(set(c["scores"]) for c in columns)))
    return {"columns": [{k: v for k, v in c.items() if k != "scores"} for c in columns],
            "rows": [{"epoch": e, "recall@50": [c["scores"][e] for c in columns]} for e in epochs]}


def speed_report(run_dir: Path, others: list[Path], data: Any, reference: str | None) -> list[dict[str, Any]]:
    """Whole-pipeline comparison of the main run with other finished runs (e.g. a slower config):
    seconds per stage and validation NDCG@50 at every budget, for the 2% rule of the 30-minute target."""
    out = []
    for label, path in [("main", run_dir), *[(str(p), p) for p in others]]:
        if not finished(path):
            continue
        config = json.loads(RunLayout(path).config.read_text())
        out.append({"run": label, "batch_size": config["pretrain"]["batch_size"], "lr": config["pretrain"]["lr"],
                    "bilevel": config["finetune"]["bilevel"], **stage_times(path),
                    "rows": validation_rows(path, data, reference)})
    return out


def median_epoch_seconds(history: list[dict[str, Any]]) -> float | None:
    """Median wall time of the epochs of a training history (the upper one of an even count)."""
    seconds = sorted(h["seconds"] for h in history)
    return seconds[len(seconds) // 2] if seconds else None


def stage_times(run_dir: Path) -> dict[str, Any]:
    summary = RunLayout(run_dir).read_summary()
    pretrain = RunLayout(run_dir).pretrain_result
    out: dict[str, Any] = {"seconds": summary.get("seconds", {}), "groups": summary.get("groups", [])}
    if pretrain.exists():
        result = json.loads(pretrain.read_text())
        out["pretrain"] = {"epochs_run": result["epochs_run"], "best_epoch": result["best_epoch"],
                           "valid_recall@50_sample": result["valid_recall@50"],
                           "seconds_per_epoch_median": median_epoch_seconds(result["history"])}
    return out


def _sweep_label(row: dict[str, Any]) -> str:
    """A sweep row's ``default`` is the run's own setting; say so when today's default differs."""
    current = getattr(DeviceConfig(), row["option"].split(".", 1)[1])
    if not row["default"]:
        return ""
    return " (default)" if row["value"] == current else f" (the default at the time of this run; now {current})"


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
        budgets = payload["sweep"][0]["budgets"]
        lines += ["", "### Device options (validation NDCG@50 per budget, one factor at a time)", "",
                  "| option | value | " + " | ".join(budgets) + " | mean |", "|---|---|" + "---|" * (len(budgets) + 1)]
        for r in payload["sweep"]:
            mark = _sweep_label(r)
            cells = " | ".join(f"{v:.5f}" for v in r["valid_ndcg@50"])
            mean = sum(r["valid_ndcg@50"]) / len(r["valid_ndcg@50"])
            lines.append(f"| {r['option']} | {r['value']}{mark} | {cells} | {mean:.5f} |")
    if payload.get("plot"):
        lines += ["", f"![Recall and NDCG@50 against the budget]({payload['plot']})"]
    lines += ["", "### Test split, paper-equivalent budgets", "",
              "| method | budget | bytes used | Recall@50 | NDCG@50 | NDCG@50 (legacy) |", "|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        if "error" in r:
            lines.append(f"| {r['method']} | {r.get('budget', '-')} | - | {r['error']} | | |")
        else:
            lines.append(f"| {r['method']} | {r['budget']} | {r['bytes_used']:,} | {r['recall@50']:.5f} | "
                         f"{r['ndcg@50']:.5f} | {r['ndcg_legacy@50']:.5f} |")
    if payload.get("variants"):
        lines += ["", "### Stage-b variants (validation NDCG@50, one factor at a time)", "",
                  "| variant | overrides | pretraining valid Recall@50 (sample) | stage b (s) | "
                  + " | ".join(BUDGETS.split(",")) + " |", "|---|---|---|---|" + "---|" * len(BUDGETS.split(","))]
        for name, v in payload["variants"].items():
            if "error" in v:
                lines.append(f"| {name} | | {v['error']} |")
                continue
            cells = " | ".join(f"{r['valid_ndcg@50']:.5f}" for r in v["rows"])
            recall = v.get("pretrain_valid_recall@50_sample")
            recall_cell = "-" if recall is None else f"{recall:.4f}"
            lines.append(f"| {name} | {' '.join(v['overrides']) or '-'} | {recall_cell} | "
                         f"{v['finetune_seconds'] or 0:.0f} | {cells} |")
    if len(payload.get("speed") or []) > 1:
        lines += ["", "### Whole pipeline: this config against the slower one (validation NDCG@50)", "",
                  "| config | pretrain (s) | stage b (s) | total (s) | " + " | ".join(BUDGETS.split(",")) + " |",
                  "|---|---|---|---|" + "---|" * len(BUDGETS.split(","))]
        for r in payload["speed"]:
            sec = r["seconds"]
            cells = " | ".join(f"{x['valid_ndcg@50']:.5f}" for x in r["rows"])
            lines.append(f"| batch {r['batch_size']}, lr {r['lr']:g}, {r['bilevel']} | {sec.get('pretrain', 0):.0f} | "
                         f"{sec.get('finetune', 0):.0f} | {sec.get('total', 0):.0f} | {cells} |")
    batch = payload.get("batch_check")
    if batch:
        cols = batch["columns"]
        heads = [f"batch {c['batch_size']}, lr {c['lr']:g} ({c['seconds_per_epoch_median']:.1f} s/epoch)" for c in cols]
        lines += ["", "### Pretraining batch size at equal triples (validation Recall@50, fixed user sample)", "",
                  "| epoch | " + " | ".join(heads) + " |", "|---|" + "---|" * len(cols)]
        lines += [f"| {r['epoch']} | " + " | ".join(f"{v:.5f}" for v in r["recall@50"]) + " |" for r in batch["rows"]]
    return "\n".join(lines)


def plot_budget_curves(rows: list[dict[str, Any]], name: str) -> str | None:
    """Test Recall/NDCG@50 against the budget as a PNG beside the results (None without matplotlib)."""
    from peel.bench import RESULTS_DIR
    from peel.bench.plots import budget_curves
    from peel.errors import PeelError

    try:
        path = budget_curves(rows, RESULTS_DIR / f"pipeline_{name}.png", title=f"{name}: test split")
    except PeelError as exc:
        print(f"no plot: {exc}")
        return None
    return path.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/amazon-book-sub"))
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--train", action="store_true", help="train / resume the main run and the ablations first")
    parser.add_argument("--ablations", default="", help=f"comma-separated subset of {', '.join(ABLATIONS)}")
    parser.add_argument("--variants", default="", help=f"comma-separated subset of {', '.join(VARIANTS)}")
    parser.add_argument("--batch-check", type=int, default=0, metavar="EPOCHS",
                        help="pretrain at batch 4096 for EPOCHS epochs and compare at equal triples")
    parser.add_argument("--batch-compare", default="", metavar="RUNS",
                        help="comma-separated finished runs whose pretraining is compared at equal triples too")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--reference", default=None, help="paper dataset for budgets (default: from the name)")
    args = parser.parse_args()

    data = load(args.data)
    ablations = [a for a in args.ablations.split(",") if a]
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if args.train:
        config = config_from_sources(args.config)
        train(data, args.run, config, data_path=args.data, resume=True, progress=False)
        for name in ablations:
            train(data, args.run, config, data_path=args.data, resume=True, progress=False, ablation=name)
        for name in variants:
            train(data, args.run / "variants" / name, config.with_overrides(VARIANTS[name]), data_path=args.data,
                  resume=True, progress=False, stage_a_from=args.run)
        if args.batch_check:
            check = config.with_overrides([*BATCH_CHECK, f"pretrain.max_epochs={args.batch_check}",
                                           "pretrain.patience=1000"])
            train(data, args.run / "batch_check", check, data_path=args.data, resume=True, progress=False,
                  stop_after="pretrain")
    payload: dict[str, Any] = {"dataset": data.name, "run": str(args.run), "times": stage_times(args.run),
                               "ablation_times": {a: stage_times(RunLayout(args.run).ablation(a).root)
                                                  for a in ablations}}
    compare = [Path(p) for p in args.batch_compare.split(",") if p] + [args.run / "batch_check"]
    payload["batch_check"] = batch_report(args.run, compare)
    payload["speed"] = speed_report(args.run, compare, data, args.reference)
    if not args.no_sweep:
        payload["sweep"] = device_sweep(args.run, data, args.reference)
    payload["rows"] = evaluate_runs(args.run, BUDGETS, paper_equivalent=True, reference=args.reference,
                                    split="test", ablations=True, ks=(20, 50))
    paper = evaluate_runs(args.run, BUDGETS, paper_equivalent=True, reference=args.reference, split="test",
                          ks=(20, 50), overrides=["device.eq10_scale=paper"])
    payload["rows"][len(paper):len(paper)] = [{**r, "method": "PEEL, Eq. 10 normalizer as in the paper"} for r in paper]
    payload["plot"] = plot_budget_curves(payload["rows"], data.name)
    if variants:  # last: variants trained in parallel have the most time to finish
        payload["variants"] = variant_report(args.run, variants, data, args.reference)
    path = write_result(f"pipeline_{data.name}", payload, markdown(payload))
    print(markdown(payload))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
