"""RULE beside PEEL from the same stage a, on one dataset: RULE trained on the stage a of PEEL's defaults (and
of the paper preset), searched at 5/10/25MB-eq (compare.py's budgets), against those PEEL runs. Test
Recall/NDCG@20/50 under both Eq. 10 readings for RULE, a paired per-user Wilcoxon test of RULE against
PEEL at each budget, the estimator's held-out Spearman correlation (NFM and MLP, both readings), and
RULE's deployment time: the shared stage a, the labels and estimator once, then one search per budget.

    python benchmarks/compare.py --data ../shared/data/amazon-book-sub --runs runs/compare-amazon \\
        --only peel-defaults,peel-paper
    python benchmarks/rule.py --data ../shared/data/amazon-book-sub --runs runs/compare-amazon

Reuses the PEEL runs of benchmarks/compare.py in RUNS (their stage a is hard-linked, not retrained) and
trains what is missing (resumable: rerun after a kill). Results: benchmarks/results/rule_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peel.bench import RESULTS_DIR, write_result
from peel.config import config_from_sources
from peel.data import load
from peel.evaluation.significance import paired_test
from peel.methods import METHODS, load_run
from peel.run_layout import RunLayout
from peel.training.rule import read_estimator_meta
from peel.units import EQ10_READINGS

try:
    from compare import KS, PEEL_VARIANTS, budgets_for
except ImportError:  # run from another directory
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from compare import KS, PEEL_VARIANTS, budgets_for

# name -> (label, preset, overrides, the PEEL run of benchmarks/compare.py whose stage a it reuses)
RULE_VARIANTS: dict[str, tuple[str, str | None, list[str], str]] = {
    "rule": ("RULE (stage a of PEEL's defaults)", None, [], "peel-defaults"),
    "rule-paper": ("RULE (stage a of the paper preset)", "paper", [], "peel-paper"),
    # methods.md's literal search space on the nested stage a (the default searches prefixes there)
    "rule-subsets": ("RULE (stage a of PEEL's defaults, any subset of blocks)", None, ["rule.search_space=subsets"],
                     "peel-defaults"),
}


def train(data: Any, data_path: str, runs: Path, names: list[str], threads: int) -> None:
    for name in names:
        label, preset, overrides, peel_run = RULE_VARIANTS[name]
        if not RunLayout(runs / peel_run).embeddings.exists():
            raise SystemExit(f"{name} reuses the stage a of {peel_run}: train it first (benchmarks/compare.py "
                             f"--only {peel_run})")
        out = runs / name
        if not RunLayout(out).rule_estimator.exists():
            print(f"training {label}", flush=True)
            extra = [f"threads={threads}"] if threads else []
            config = config_from_sources(preset=preset, overrides=overrides + extra)
            METHODS["rule"].fit(data, out, config, data_path=data_path, resume=RunLayout(out).config.exists(),
                                progress=False, stage_a_from=runs / peel_run)


def evaluate(data: Any, runs: Path, names: list[str], budgets: list[Any]) -> list[dict[str, Any]]:
    """Test rows (per user) of every RULE run under each reading, and of the PEEL runs it reuses."""
    rows = []
    for name in names:
        label, _, _, peel_run = RULE_VARIANTS[name]
        for reading in EQ10_READINGS:
            model = load_run(runs / name, overrides=[f"device.eq10={reading}"])
            print(f"evaluating {label}, {reading}", flush=True)
            for row in model.evaluate(data, budgets, split="test", ks=KS, per_user=True,
                                      label=f"{label}, Eq. 10 {reading}"):
                rows.append({**row, "run": name, "reading": reading, "versus": peel_run})
        if any(r["run"] == peel_run for r in rows):  # two RULE variants on one stage a: its PEEL run once
            continue
        peel_label = PEEL_VARIANTS[peel_run][0]
        print(f"evaluating {peel_label}", flush=True)
        model = load_run(runs / peel_run)
        valid = {r["budget"]: r["ndcg@50"] for r in model.evaluate(data, budgets, split="valid", ks=(50,))}
        for row in model.evaluate(data, budgets, split="test", ks=KS, per_user=True, label=peel_label):
            rows.append({**row, "run": peel_run, "reading": model.run.config.device.eq10,
                         "valid_ndcg@50": valid[row["budget"]]})
    return rows


def deployment(runs: Path, name: str) -> dict[str, Any]:
    """RULE's costs: the stage a it shares, the labels and estimators (once), and each estimator's quality on
    the held-out structures: Spearman overall (recorded at training) and within bins of similar bytes
    (recomputed here: what the search relies on, without the easy ranking by size)."""
    from peel.training.rule import held_out_split, structure_bytes, within_budget_spearman

    layout = RunLayout(runs / name)
    peel_run = RULE_VARIANTS[name][3]
    seconds = layout.read_summary().get("seconds", {})
    meta = read_estimator_meta(layout.rule_estimator)
    with np.load(layout.rule_labels, allow_pickle=False) as z:
        structures, labels, users = z["structures"], z["labels"], z["users"]
    config = layout.read_config()
    held, _ = held_out_split(len(structures), config.rule, config.seed)
    for i, reading in enumerate(EQ10_READINGS):
        model = load_run(layout, overrides=[f"device.eq10={reading}"])
        sizes = np.array([structure_bytes(s, model.units) for s in structures[held]])
        meta["readings"][reading]["within_budget_spearman"] = within_budget_spearman(
            model.estimator.predict(structures[held]), labels[held, i], sizes)
    return {"run": name, "stage_a_seconds": RunLayout(runs / peel_run).stage_seconds("pretrain"),
            "labels_seconds": seconds.get("labels"), "estimator_seconds": seconds.get("estimator"),
            "structures": len(structures), "label_users": len(users), "search_space": meta["search_space"],
            "estimators": meta["readings"]}


def paired_rows(rows: list[dict[str, Any]], budgets: list[Any]) -> list[dict[str, Any]]:
    out = []
    for rule in (r for r in rows if r.get("versus") and "error" not in r):
        peel = next((r for r in rows if r["run"] == rule["versus"] and r["budget"] == rule["budget"]), None)
        if peel is None or "error" in peel:
            continue
        for metric in ("ndcg@50", "recall@50"):
            out.append({"budget": rule["budget"], "a": rule["method"], "b": peel["method"],
                        **paired_test(rule["per_user"], peel["per_user"], metric)})
    return sort_paired(out, rows, [b.label for b in budgets])


def sort_paired(tests: list[dict[str, Any]], rows: list[dict[str, Any]], budgets: list[str]) -> list[dict[str, Any]]:
    """Each RULE row's tests together, in the order of the rows (masked before fold), budgets ascending."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    return sorted(tests, key=lambda t: (methods.index(t["a"]), budgets.index(t["budget"])))


def markdown(payload: dict[str, Any]) -> str:
    name = payload["dataset"]
    lines = [f"## RULE beside PEEL from the same stage a on {name} (test split)", "",
             "RULE: one global structure per budget, searched on the estimator and chosen among its finalists by "
             "validation NDCG@50 (the best structure of any smaller searched budget included, so validation is "
             "monotone in the budget). Search s: that budget's search alone (RULE's deployment time per budget).", "",
             "| method | budget | bytes used | blocks | search s | valid NDCG@50 | Recall@20 | NDCG@20 | Recall@50 | "
             "NDCG@50 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['budget']} | {r['error']} | | | | | | | |")
            continue
        search = f"{r['search_seconds']:.0f}" if "search_seconds" in r else "-"
        blocks = r.get("blocks_kept", "-")
        lines.append(f"| {r['method']} | {r['budget']} | {r['bytes_used']:,} | {blocks} | {search} | "
                     f"{r['valid_ndcg@50']:.5f} | "
                     + " | ".join(f"{r[k]:.5f}" for k in ("recall@20", "ndcg@20", "recall@50", "ndcg@50")) + " |")
    lines += ["", "### Paired per-user test: RULE against PEEL from the same stage a", "",
              "Two-sided Wilcoxon signed-rank over test users.", "",
              "| budget | RULE | PEEL | metric | RULE | PEEL | RULE - PEEL | wins / losses / ties | p |",
              "|---|---|---|---|---|---|---|---|---|"]
    for t in payload["paired"]:
        lines.append(f"| {t['budget']} | {t['a']} | {t['b']} | {t['metric']} | {t['mean_a']:.5f} | {t['mean_b']:.5f} | "
                     f"{t['relative']:+.1%} | {t['wins']} / {t['losses']} / {t['ties']} | {t['p_value']:.2g} |")
    lines += ["", "### Estimator and deployment time", "",
              "Labels: standard validation NDCG@50 of random structures over the whole budget range, on one seeded "
              "sample of validation users, both Eq. 10 readings in one pass. Held-out Spearman on the structures "
              "held out (rule.held_out); the kind kept is the higher; within similar bytes: the mean over five "
              "quantile bins of structure bytes.", "",
              "| RULE run | search space | structures | label users | stage a s (shared) | labels s | estimator s | "
              "reading | kept | Spearman NFM | Spearman MLP | kept, within similar bytes |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in payload["deployment"]:
        for reading, e in d["estimators"].items():
            s = e["held_out_spearman"]
            lines.append(f"| {d['run']} | {d['search_space']} | {d['structures']} | {d['label_users']} | "
                         f"{d['stage_a_seconds'] or 0:.0f} | "
                         f"{d['labels_seconds'] or 0:.0f} | {d['estimator_seconds'] or 0:.0f} | {reading} | "
                         f"{e['kind']} | {s.get('nfm', float('nan')):.3f} | {s.get('mlp', float('nan')):.3f} | "
                         f"{e.get('within_budget_spearman', float('nan')):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--runs", type=Path, required=True, help="benchmarks/compare.py's run folder")
    parser.add_argument("--variants", default="rule,rule-paper", help=f"of {', '.join(RULE_VARIANTS)}")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--replot", action="store_true", help="rewrite the markdown from the JSON (keeps its footer)")
    args = parser.parse_args()
    if args.replot:
        name = f"rule_{Path(args.data).name}"
        payload = json.loads((RESULTS_DIR / f"{name}.json").read_text())
        payload["paired"] = sort_paired(payload["paired"], payload["rows"], payload["budgets"])
        text = (RESULTS_DIR / f"{name}.md").read_text()
        (RESULTS_DIR / f"{name}.md").write_text(f"# {name}\n\n{markdown(payload).strip()}\n"
                                                f"{text[text.index(chr(10) + '- command: '):]}")
        return
    names = [n for n in args.variants.split(",") if n]
    if unknown := set(names) - set(RULE_VARIANTS):
        parser.error(f"--variants: unknown {', '.join(sorted(unknown))}; known: {', '.join(RULE_VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load(args.data)
    budgets = budgets_for(data, None)
    train(data, args.data, args.runs, names, args.threads)
    rows = evaluate(data, args.runs, names, budgets)
    paired = paired_rows(rows, budgets)
    payload = {"dataset": data.name, "budgets": [b.label for b in budgets],
               "rows": [{k: v for k, v in r.items() if k != "per_user"} for r in rows], "paired": paired,
               "deployment": [deployment(args.runs, n) for n in names]}
    write_result(f"rule_{data.name}", payload, markdown(payload))
    print(markdown(payload))



if __name__ == "__main__":
    main()
