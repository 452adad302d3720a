"""Probes toward one elastic model at least as good as a model per budget (issue 10 in the docs): PEEL
variants by config overrides, validation NDCG@50 / Recall@50 at 5/10/25MB-eq. Decide on validation here;
the test comparison is benchmarks/compare.py.

    python benchmarks/elastic_probe.py --data ../shared/data/yelp2018-sub --runs runs/elastic-yelp \
        "nested=pretrain.nested=1,2,4,8,16;finetune.importance=density;device.eq10_scale=none" \
        "d05=from:nested;pretrain.nested=1,2,4,8,16;finetune.importance=density;finetune.density_decay=0.5"

A variant is NAME=OVERRIDE;OVERRIDE;...: ``section.key=value`` config overrides; ``device.*`` ones are
applied at evaluation (no retraining); ``from:OTHER`` reuses variant OTHER's stage a when the stage-a
config is the same. ``--recipe`` adds overrides to every variant (e.g. the fitted LightGCN's tuned
pretraining recipe from benchmarks/results/tuning_<dataset>.json: ``--recipe tuned``). Resumable; each
variant's row is added to benchmarks/results/elastic_probe_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from peel.bench import RESULTS_DIR, command_line, timestamp, write_result
from peel.config import PeelConfig
from peel.data import load
from peel.methods import METHODS, load_run
from peel.run_layout import RunLayout

try:
    from compare import budgets_for
    from tuning import chosen_overrides
except ImportError:  # run from another directory
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from compare import budgets_for
    from tuning import chosen_overrides


def parse_variant(text: str, runs: Path) -> tuple[str, list[str], list[str], Path | None]:
    name, _, spec = text.partition("=")
    parts = [p.strip() for p in spec.split(";") if p.strip()]
    stage_a = next((runs / p[5:] for p in parts if p.startswith("from:")), None)
    device = [p for p in parts if p.startswith("device.")]
    training = [p for p in parts if not p.startswith(("from:", "device."))]
    return name, training, device, stage_a


def probe(data: Any, data_path: str, runs: Path, text: str, recipe: list[str], reference: str) -> dict[str, Any]:
    name, training, device, stage_a = parse_variant(text, runs)
    out = runs / name
    layout = RunLayout(out)
    if layout.finished_groups() == 0 or not layout.summary.exists():
        print(f"training {name}: {' '.join(recipe + training)}", flush=True)
        METHODS["peel"].fit(data, out, PeelConfig().with_overrides(recipe + training), data_path=data_path,
                            progress=False, resume=layout.config.exists(), stage_a_from=stage_a)
    rows = load_run(out, overrides=device).evaluate(data, budgets_for(data, reference), split="valid", ks=(50,))
    pretrain = layout.read_json(layout.pretrain_result, missing={})
    return {"name": name, "overrides": recipe + training + device, "stage_a_from": stage_a and stage_a.name,
            "valid": {r["budget"]: {"ndcg@50": r.get("ndcg@50"), "recall@50": r.get("recall@50")} for r in rows},
            "seconds": layout.read_summary().get("seconds", {}),
            "pretrain_epochs": pretrain.get("epochs_run"), "pretrain_best_epoch": pretrain.get("best_epoch"),
            "command": command_line(), "date": timestamp()}


def markdown(payload: dict[str, Any]) -> str:
    budgets = list(next(iter(payload["variants"].values()))["valid"]) if payload["variants"] else []
    lines = [f"## Elastic-model probes on {payload['dataset']} (validation NDCG@50, Recall@50 in brackets)", "",
             "| variant | overrides | " + " | ".join(budgets) + " | stage a s (epochs) |",
             "|---|---|" + "---|" * len(budgets) + "---|"]
    for v in payload["variants"].values():
        cells = [f"{v['valid'][b]['ndcg@50']:.5f} ({v['valid'][b]['recall@50']:.4f})"
                 if v["valid"][b]["ndcg@50"] is not None else "below minimum" for b in budgets]
        shared = f" (stage a of {v['stage_a_from']})" if v["stage_a_from"] else ""
        seconds = v["seconds"].get("pretrain")
        lines.append(f"| {v['name']}{shared} | `{' '.join(v['overrides'])}` | " + " | ".join(cells) +
                     f" | {seconds or 0:.0f} ({v['pretrain_epochs']}) |")
    lines += [""] + [f"- {note}" for note in payload.get("notes", [])]
    lines += ["", "Each variant's command (the file's own command below is the last one run):"]
    lines += [f"- {v['name']}: `{v['command']}` ({v['date']})" for v in payload["variants"].values() if "command" in v]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--reference", default=None)
    parser.add_argument("--recipe", default="", help="'tuned' or overrides separated by ';' for every variant")
    parser.add_argument("--note", default=None,
                        help="append this note to the results (keeping their command, date and machine); no training")
    parser.add_argument("variants", nargs="*")
    args = parser.parse_args()
    if not args.variants and args.note is None:
        parser.error("give variants to train, or --note")
    data = load(args.data)
    recipe = [p for p in args.recipe.split(";") if p] if args.recipe != "tuned" else \
        [o for o in chosen_overrides(data.name, "lightgcn") if o.startswith("pretrain.")]
    path = RESULTS_DIR / f"elastic_probe_{data.name}.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    variants, notes = previous.get("variants", {}), previous.get("notes", [])
    if args.note is not None:
        if not previous:
            parser.error(f"--note: no results at {path} to add it to")
        payload = {"dataset": data.name, "variants": variants, "notes": [*notes, args.note]}
        write_result(f"elastic_probe_{data.name}", payload, markdown(payload), keep_meta=True)
        notes = payload["notes"]
    for text in args.variants:
        row = probe(data, args.data, args.runs, text, recipe, args.reference or data.name)
        variants[row["name"]] = row
        payload = {"dataset": data.name, "variants": variants, "notes": notes}
        write_result(f"elastic_probe_{data.name}", payload, markdown(payload))
        print(markdown({"dataset": data.name, "variants": {row["name"]: row}}).splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
