"""PEEL against the models trained for each budget, on one dataset: PEEL (peel's defaults, and the paper's
config), LightGCN and PMF fitted to 5/10/25MB-eq with their tuned recipe (benchmarks/tuning.py), full-size
LightGCN and popularity. Test Recall/NDCG@20/50, each model's training seconds (its deployment time for
that budget; PEEL's one pipeline serves every budget), a paired per-user Wilcoxon test between PEEL and
the best fitted model of each budget (chosen on validation), a plot of test NDCG@50 / Recall@50
against the bytes a device holds (PEEL as a curve over many budgets, the fitted models as points), and the
paper's Fig. 3: the accumulated training seconds as a device's budget shrinks from 25 to 10 to 5MB-eq.

    python benchmarks/tuning.py  --data ../shared/data/amazon-book-sub --runs runs/tuning-amazon
    python benchmarks/compare.py --data ../shared/data/amazon-book-sub --runs runs/compare-amazon

Trains what is missing into RUNS (resumable: rerun after a kill). Results:
benchmarks/results/compare_<dataset>.{json,md,png}. With ``--unit-dtype q8`` every model stores its item
table as q8 units (int8 + one float32 scale per unit, peel.units) and is fitted, scored and charged so: PEEL
against the full-table fitted models (LightGCN, PMF) at the same precision, into RUNS of its own and
benchmarks/results/compare_<dataset>_q8.*. A table too costly for one machine's life grows by
``--carry``: train some runs with ``--only``, then evaluate those and carry every other row from the
committed results (marked †, with the date it was measured):

    python benchmarks/compare.py --data ../shared/data/yelp2018-sub --runs runs/compare-yelp \
        --fitted lightgcn,pmf,dlrm-ce --only dlrm-ce-5MB-eq,dlrm-ce-10MB-eq,...
    python benchmarks/compare.py --data ../shared/data/yelp2018-sub --runs runs/compare-yelp \
        --fitted lightgcn,pmf,dlrm-ce --carry
"""

from __future__ import annotations

import argparse
import functools
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from peel.bench import RESULTS_DIR, write_result
from peel.bench.cache import cached_rows
from peel.budget import Budget, device_bytes, full_table_bytes, parse_budgets
from peel.budget import paper_equivalent as scale
from peel.config import PeelConfig, config_from_sources
from peel.data import load
from peel.data.source import data_source
from peel.evaluation import PopularityScorer, evaluate
from peel.evaluation.significance import paired_test
from peel.methods import FIXED_METHODS, METHODS, load_run
from peel.methods.fixed import FIXED_SPECS, Q8_METHODS
from peel.run_layout import RunLayout
from peel.units import UNIT_DTYPES

try:
    from tuning import chosen_overrides
except ImportError:  # run from another directory
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from tuning import chosen_overrides

BUDGETS = "5MB,10MB,25MB"
KS = (20, 50)
CURVE_POINTS = 14
# name -> (label, preset, overrides, the variant whose stage a it reuses)
PEEL_VARIANTS: dict[str, tuple[str, str | None, list[str], str | None]] = {
    # the defaults race the full-prefix L2 1e-4 against 1e-3 on validation; each value alone is shown too, and
    # PEEL tuned by hand is the one of PEEL_TUNED best on mean validation NDCG@50 (one model for every budget)
    "peel-defaults": ("PEEL (defaults: full-prefix L2 raced, 1e-4 or 1e-3)", None, [], None),
    "peel-l2fp-1e-4": ("PEEL (full-prefix L2 1e-4, no race)", None,
                       ["pretrain.l2_full_prefix=0.0001", "pretrain.l2_full_prefix_race="], None),
    "peel-l2fp-1e-3": ("PEEL (full-prefix L2 1e-3, no race)", None,
                       ["pretrain.l2_full_prefix=0.001", "pretrain.l2_full_prefix_race="], None),
    "peel-paper": ("PEEL (paper preset)", "paper", [], None),
    # the stage-b ablation of the elastic stage a: its density order against the paper's trained stage b
    "peel-stage-b": ("PEEL (full-prefix L2 1e-3 + trained stage b)", None,
                     ["pretrain.l2_full_prefix=0.001", "pretrain.l2_full_prefix_race=",
                      "finetune.importance=controller"], "peel-l2fp-1e-3"),
}
# name -> (label, trained variant, device overrides): a trained model scored on the device another way, e.g.
# the stage-b ablation (stage-a blocks and user vectors instead of the fine-tuned ones); no training
DEVICE_VARIANTS: dict[str, tuple[str, str, list[str]]] = {
    "peel-paper-stage-a": ("PEEL (paper preset, device on stage-a blocks)", "peel-paper",
                           ["device.blocks=pretrained", "device.user_vector=pretrained"]),
}
PEEL_TUNED = ("peel-l2fp-1e-4", "peel-l2fp-1e-3")  # PEEL tuned by hand: the one of these best on validation
FULL_LIGHTGCN = ("lightgcn-full", "LightGCN (full size, D=128)")
FITTED_L2_FACTORS = (0.1, 0.01)  # fitted models also try the tuned L2 times these, at every budget
L2_SUFFIX = "-l2="  # a fitted run at another L2 than its tuned one: f"{method}-{budget}{L2_SUFFIX}{l2}"
LABELS = {**{name: variant[0] for name, variant in PEEL_VARIANTS.items()}, FULL_LIGHTGCN[0]: FULL_LIGHTGCN[1]}


def budgets_for(data: Any, reference: str | None) -> list[Budget]:
    return [scale(b, n_items=data.n_items, reference=reference or data.name)
            for b in parse_budgets(BUDGETS, full_table_bytes=full_table_bytes(data.n_items, 128))]


def results_name(dataset: str, unit_dtype: str = "f32") -> str:
    """compare_<dataset>, or compare_<dataset>_<unit dtype> for a comparison at another precision."""
    return f"compare_{dataset}" + ("" if unit_dtype == "f32" else f"_{unit_dtype}")


def fitted_runs(data: Any, budgets: list[Budget], fitted: tuple[str, ...],
                unit_dtype: str = "f32") -> dict[str, tuple[str, Budget, list[str]]]:
    """Every fitted run: name -> (method, budget, overrides). The tuned recipe at every budget, and also with
    its L2 / 10 and / 100: a larger model may want less L2 than the one the grid was run at (full-size
    LightGCN on amazon-book-sub: L2 1e-4 far above the tuned 1e-2), and the grid's L2 values are a decade
    apart, so even at the tuning budget L2 / 10 was not tried (on amazon-book-sub it wins at 10 and 25MB-eq).
    The yardstick at each budget is the best of them on validation, never a weakened one; so is the full-size
    LightGCN's row, and a distilled method's teacher (:func:`teacher_run`)."""
    full = full_budget(data, unit_dtype)
    runs: dict[str, tuple[str, Budget, list[str]]] = {}
    for method in fitted:
        tuned = chosen_overrides(data.name, method)
        l2 = float(next(o.split("=", 1)[1] for o in tuned if o.startswith("pretrain.l2=")))
        for budget in budgets + ([full] if method == "lightgcn" else []):
            name = FULL_LIGHTGCN[0] if budget is full else f"{method}-{budget.label}"
            runs[name] = (method, budget, tuned)
            for smaller in (f"{l2 * factor:g}" for factor in FITTED_L2_FACTORS):
                runs[f"{name}{L2_SUFFIX}{smaller}"] = (method, budget, [*tuned, f"pretrain.l2={smaller}"])
    return runs


def full_budget(data: Any, unit_dtype: str = "f32") -> Budget:
    """The bytes of the full-size LightGCN (D = 128): the budget of its runs."""
    return Budget(device_bytes(data.n_items, PeelConfig().model.dim, unit_dtype), "full")


def validation_ndcg50(data: Any, path: Path, budget: Budget) -> float:
    """A trained run's validation NDCG@50 at ``budget``: what every choice between runs is made on."""
    return load_run(path).evaluate(data, [budget], split="valid", ks=(50,), label=path.name)[0]["ndcg@50"]


def teacher_run(data: Any, runs: Path, unit_dtype: str = "f32", results_dir: Path = RESULTS_DIR) -> Path:
    """The full-size LightGCN a distilled method (LightRec) distils: of the comparison's full-size runs (the
    tuned L2 and its smaller ones, :func:`fitted_runs`), the best on validation NDCG@50, as the full-size row
    is chosen; a weaker teacher would weaken the student (amazon-book-sub: validation NDCG@50 .0380 at the
    tuned L2 1e-2 against .0532 at 1e-3). Every one of them is scored, so that the teacher does not depend on
    which happened to be there: a run trained in RUNS afresh, one that is not by its committed row (as
    ``--carry`` carries it), so a new machine trains only the teacher."""
    import json

    names = list(fitted_runs(data, [], ("lightgcn",), unit_dtype))
    path = results_dir / f"{results_name(data.name, unit_dtype)}.json"
    committed = {r["run"]: r["valid_ndcg50"] for r in json.loads(path.read_text())["rows"]
                 if r["run"] in names and r.get("valid_ndcg50") is not None} if path.exists() else {}
    trained = {name for name in names if RunLayout(runs / name).embeddings.exists()}
    if missing := [name for name in names if name not in trained and name not in committed]:
        raise SystemExit(f"a distilled method distils the best on validation of {', '.join(names)}: train "
                         f"{', '.join(missing)} first (--fitted lightgcn --only {','.join(missing)})")
    scores = {name: validation_ndcg50(data, runs / name, full_budget(data, unit_dtype)) if name in trained
              else committed[name] for name in names}
    best = max(names, key=scores.__getitem__)
    print(f"teacher: {best} (validation NDCG@50 " + ", ".join(
        f"{name} {score:.5f}" + ("" if name in trained else " committed") for name, score in scores.items()) + ")",
        flush=True)
    if best not in trained:
        raise SystemExit(f"the teacher is {best}, best on validation by its committed row: train it first "
                         f"(--fitted lightgcn --only {best})")
    return runs / best


def train_all(data: Any, data_path: str, runs: Path, fitted: dict[str, tuple[str, Budget, list[str]]],
              only: set[str] | None = None, threads: int = 0, skip: frozenset[str] = frozenset(),
              seed: int | None = None, unit_dtype: str = "f32") -> dict[str, Path]:
    """Every run of the comparison, PEEL's and the ``fitted`` ones (:func:`fitted_runs`), or those named in
    ``only``, trained if missing, except those in ``skip``; name -> run directory. ``seed`` overrides the
    config's seed (benchmarks/seeds.py's repeats); ``unit_dtype`` how every model stores its item table."""
    extra = ([f"threads={threads}"] if threads else []) + ([f"seed={seed}"] if seed is not None else []) + \
        ([f"device.unit_dtype={unit_dtype}"] if unit_dtype != "f32" else [])
    paths: dict[str, Path] = {}
    for name, (label, preset, overrides, stage_a) in PEEL_VARIANTS.items():
        if name in skip:
            continue
        out, layout = runs / name, RunLayout(runs / name)
        paths[name] = out
        if only is not None and name not in only:
            continue
        if not layout.summary.exists() or not layout.finetune_dir.exists() or layout.finished_groups() == 0:
            if stage_a and not RunLayout(runs / stage_a).pretrain_result.exists():
                raise SystemExit(f"{name} reuses the stage a of {stage_a}: train {stage_a} first")
            print(f"training {label}", flush=True)
            METHODS["peel"].fit(data, out, config_from_sources(preset=preset, overrides=overrides + extra),
                                data_path=data_path, resume=layout.config.exists(), progress=False,
                                stage_a_from=stage_a and runs / stage_a)
    teacher: Path | None = None
    for name, (method, budget, overrides) in fitted.items():
        if name in skip:
            continue
        out = runs / name
        paths[name] = out
        if (only is None or name in only) and not RunLayout(out).embeddings.exists():
            # a distilled method (LightRec) distils the comparison's full-size LightGCN, also when --fitted
            # leaves lightgcn out (else it would train a teacher of its own, with the student's L2 and rate)
            if FIXED_SPECS[method].teacher and teacher is None:
                teacher = teacher_run(data, runs, unit_dtype)
            print(f"training {method} at {budget} with {' '.join(overrides)}", flush=True)
            METHODS[method].fit(data, out, PeelConfig().with_overrides(overrides + extra), budget=budget,
                                data_path=data_path, resume=RunLayout(out).config.exists(), progress=False,
                                **({"teacher": teacher} if FIXED_SPECS[method].teacher else {}))
    return paths


def present_runs(runs: Path, names: list[str]) -> dict[str, Path]:
    """The runs of ``names`` trained to the end in ``runs`` (a PEEL run with its user groups, a fitted one with
    its embeddings): what ``--carry`` evaluates afresh."""
    def trained(layout: RunLayout) -> bool:
        return layout.embeddings.exists() or (layout.summary.exists() and layout.finetune_dir.exists()
                                              and layout.finished_groups() > 0)
    return {name: runs / name for name in names if trained(RunLayout(runs / name))}


def carried_results(dataset: str, known: set[str], results_dir: Path = RESULTS_DIR,
                    unit_dtype: str = "f32") -> dict[str, Any]:
    """The committed rows, paired tests and curves of ``known`` runs, with the date they were measured (a row
    carried before keeps its first date)."""
    import json

    path = results_dir / f"{results_name(dataset, unit_dtype)}.json"
    if not path.exists():
        raise SystemExit(f"--carry: no committed results at {path}")
    committed = json.loads(path.read_text())
    rows = [{**r, "carried": r.get("carried") or committed["date"]} for r in committed["rows"] if r["run"] in known]
    labels = {r["method"] for r in rows}
    return {"rows": rows, "paired": committed["paired"], "date": committed["date"],
            "curves": [c for c in committed["curves"] if c["method"] in labels]}


def seconds_of(path: Path) -> float | None:
    return RunLayout(path).stage_seconds("total")


def evaluate_all(data: Any, data_identity: Any, paths: dict[str, Path], budgets: list[Budget]) -> list[dict[str, Any]]:
    """Test rows with per-user NDCG@50 (for the paired tests) and validation NDCG@50 (for choices); a run
    evaluated before with nothing changed is read from its evaluation cache (peel.bench.cache)."""
    rows = []
    scored = [(name, path, None, []) for name, path in paths.items()] + \
        [(name, paths[trained], label, overrides) for name, (label, trained, overrides) in DEVICE_VARIANTS.items()
         if trained in paths]
    for name, path, label, overrides in scored:
        arguments = {"table": name, "label": label, "overrides": overrides, "ks": KS,
                     "budgets": [(b.label, b.bytes) for b in budgets], "labels": LABELS}
        compute = functools.partial(evaluate_run, data, budgets, name, path, label, overrides)
        for row in cached_rows(path, data_identity=data_identity, arguments=arguments, compute=compute):
            rows.append({**{k: v for k, v in row.items() if k != "valid_ndcg50"}, "run": name,
                         "family": name.partition(L2_SUFFIX)[0], "train_seconds": seconds_of(path),
                         "valid_ndcg50": row["valid_ndcg50"]})
    return mark_chosen(rows)


def evaluate_run(data: Any, budgets: list[Budget], name: str, path: Path, label: str | None,
                 overrides: list[str]) -> list[dict[str, Any]]:
    """One run's test rows at ``budgets``, each with its validation NDCG@50."""
    model = load_run(path, overrides=overrides)
    family, _, l2 = name.partition(L2_SUFFIX)
    label = label or LABELS.get(name, LABELS.get(family, model.label) + (f", L2 {l2}" if l2 else ""))
    print(f"evaluating {label}", flush=True)
    valid = {r["budget"]: r for r in model.evaluate(data, budgets, split="valid", ks=(50,), label=label)}
    return [{**row, "valid_ndcg50": valid[row["budget"]].get("ndcg@50")}
            for row in model.evaluate(data, budgets, split="test", ks=KS, per_user=True, label=label)]


def mark_chosen(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fitted yardstick of a budget: per method, its run with the best validation NDCG@50."""
    for row in rows:
        rivals = [r for r in rows if not r["elastic"] and r["budget"] == row["budget"] and r["family"] == row["family"]]
        row["chosen"] = row["elastic"] or row["run"] == max(rivals, key=lambda r: r["valid_ndcg50"] or -1)["run"]
    return rows


def curve(data: Any, data_identity: Any, path: Path, label: str) -> list[dict[str, Any]]:
    """An elastic model's test NDCG/Recall@50 at CURVE_POINTS budgets from its minimum to full size."""
    def points() -> list[dict[str, Any]]:
        model = load_run(path)
        run = model.run
        low = max(run.layout.minimum_bytes(run.unit_order(g)) for g in range(len(run.groups)))
        high = run.layout.full_bytes()
        budgets = [Budget(int(b), f"{b / 1e6:.2f}MB") for b in np.geomspace(low, high, CURVE_POINTS)]
        print(f"budget curve of {label}", flush=True)
        return model.evaluate(data, budgets, split="test", ks=(50,), label=label)

    arguments = {"curve": label, "points": CURVE_POINTS}
    return cached_rows(path, data_identity=data_identity, arguments=arguments, compute=points)


def tuned_peel(rows: list[dict[str, Any]]) -> str | None:
    """The run of PEEL_TUNED with the best mean validation NDCG@50 over the budgets (one choice per dataset,
    since one elastic model serves every budget); None when none of them ran."""
    def mean_valid(name: str) -> float:
        return float(np.mean([r["valid_ndcg50"] for r in rows if r["run"] == name]))
    return max((name for name in PEEL_TUNED if any(r["run"] == name for r in rows)), key=mean_valid, default=None)


def paired_rows(rows: list[dict[str, Any]], budgets: list[Budget],
                carried: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Per budget: PEEL (defaults), and PEEL tuned by hand if run, against the fitted model with the best
    validation NDCG@50, and against the fitted LightGCN's best run when that is another method's (issue
    10's yardstick is the LightGCN fitted to the budget). A pair with a side carried from committed results
    (no per-user scores here) takes the committed test of the same pair from ``carried`` if its means are these
    rows' (a side retrained since then was not in that test), or is left out."""
    def yardsticks(label: str) -> list[dict[str, Any]]:
        fitted = [r for r in rows if r["budget"] == label and not r["elastic"] and r["family"] != FULL_LIGHTGCN[0]]
        lightgcn = [r for r in fitted if r["family"] == f"lightgcn-{label}"]
        best = [max(group, key=lambda r: r["valid_ndcg50"]) for group in (fitted, lightgcn) if group]
        return list({r["run"]: r for r in best}.values())
    out = []
    ran = {r["run"] for r in rows}
    for name in dict.fromkeys(n for n in ("peel-defaults", tuned_peel(rows)) if n in ran):
        for budget, best in ((b, y) for b in budgets for y in yardsticks(b.label)):
            peel = next(r for r in rows if r["run"] == name and r["budget"] == budget.label)
            for metric in ("ndcg@50", "recall@50"):
                pair = {"budget": budget.label, "a": peel["method"], "b": best["method"]}
                if "per_user" in peel and "per_user" in best:
                    out.append({**pair, **paired_test(peel["per_user"], best["per_user"], metric)})
                else:  # only a test of these very rows: a side retrained since gives other means
                    out += [t for t in carried if t["metric"] == metric and pair == {k: t[k] for k in pair}
                            and math.isclose(t["mean_a"], peel[metric], rel_tol=1e-9)
                            and math.isclose(t["mean_b"], best[metric], rel_tol=1e-9)]
    return out


# the elastic runs of the deployment table: those trained from scratch as they are (the others are variants,
# some reusing another run's stage a, so their seconds are not a deployment's)
DEPLOYED_ELASTIC = ("peel-defaults", "peel-paper")


def deployment(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's Fig. 3 from the table: budgets arriving largest first (25, 10, then 5MB-eq), each method's
    accumulated training seconds to serve them and its test NDCG@50 at each. A fitted method trains again
    for every new budget (the run chosen on validation; its L2 variants are tuning, not counted); an elastic
    one trains once and serves a smaller budget with a prefix of what the device holds."""
    budgets = [b.split(" ")[0] for b in payload["budgets"]][::-1]
    out: list[dict[str, Any]] = []
    spent: dict[str, float] = {}
    for budget in budgets:
        for r in payload["rows"]:
            if (r["budget"] != budget or not r.get("chosen", True) or "error" in r
                    or (r["elastic"] and r["run"] not in DEPLOYED_ELASTIC)):
                continue
            # a fitted run is named f"{method}-{budget}": its family without the budget is the method
            method = r["method"] if r["elastic"] else FIXED_METHODS[r["family"].removesuffix(f"-{budget}")] + " fitted"
            trains = method not in spent or not r["elastic"]
            spent[method] = spent.get(method, 0.0) + ((r["train_seconds"] or 0.0) if trains else 0.0)
            out.append({"method": method, "budget": budget, "accumulated_seconds": spent[method],
                        "ndcg@50": r["ndcg@50"], "recall@50": r["recall@50"]})
    return out


def plot(payload: dict[str, Any]) -> Path:
    """NDCG@50 and Recall@50 against bytes: elastic models as curves, each fitted family as points of one colour."""
    from peel.bench.plots import budget_curves, deployment_steps

    pop = {"method": "popularity", "budget": "full", **payload["popularity"]}
    fitted = [{**r, "method": re.sub(r" \(D[=<].*", "", r["method"])} for r in payload["rows"]
              if not r["elastic"] and r.get("chosen", True)]
    steps = deployment(payload)
    name, units = payload_name(payload), precision(payload)
    deployment_steps(steps, list(dict.fromkeys(r["budget"] for r in steps)), RESULTS_DIR / f"{name}_deployment.png",
                     title=f"{payload['dataset']}{units}: budgets arriving 25, 10, then 5MB-eq (test split)")
    return budget_curves(payload["curves"] + fitted + [pop], RESULTS_DIR / f"{name}.png",
                         title=f"{payload['dataset']}{units}: test split, one elastic model vs a model per budget")


def payload_name(payload: dict[str, Any]) -> str:
    return results_name(payload["dataset"], payload.get("unit_dtype", "f32"))


def precision(payload: dict[str, Any]) -> str:
    """'' for float32 tables, else ' (q8 units)' for titles."""
    unit_dtype = payload.get("unit_dtype", "f32")
    return "" if unit_dtype == "f32" else f" ({unit_dtype} units)"


def verdicts(payload: dict[str, Any]) -> list[str]:
    """Markdown lines: where each paired PEEL loses and wins against a budget's best fitted model (NDCG@50,
    significant at 5%), where it was not paired with that model, and budgets no PEEL was paired at."""
    lines: list[str] = []
    best: dict[str, dict[str, Any]] = {}
    for r in payload["rows"]:
        if not r["elastic"] and r.get("family") != FULL_LIGHTGCN[0] and r.get("valid_ndcg50") is not None \
                and r["valid_ndcg50"] > best.get(r["budget"], {}).get("valid_ndcg50", -1):
            best[r["budget"]] = r
    paired_peels = list(dict.fromkeys(t["a"] for t in payload["paired"]))
    for label in paired_peels:
        ndcg = [t for t in payload["paired"] if t["a"] == label and t["metric"] == "ndcg@50"]
        per_budget = Counter(t["budget"] for t in ndcg)  # a budget with two yardsticks names the fitted model

        def where(t: dict[str, Any], per_budget: Counter = per_budget) -> str:
            return t["budget"] if per_budget[t["budget"]] == 1 else f"{t['budget']} against {t['b']}"

        losses = [f"{where(t)} ({t['relative']:+.0%}, p = {t['p_value']:.1g})" for t in ndcg
                  if t["difference"] < 0 and t["p_value"] < 0.05]
        wins = [where(t) for t in ndcg if t["difference"] > 0 and t["p_value"] < 0.05]
        unpaired = [budget for budget, r in best.items()
                    if not any(t["budget"] == budget and t["b"] == r["method"] for t in ndcg)]
        lines += ["", f"**Where {label} loses** (NDCG@50, significant at 5%): {', '.join(losses) or 'nowhere'}; "
                  f"where it wins: {', '.join(wins) or 'nowhere'}"
                  + (f"; not paired with the best fitted model at {', '.join(unpaired)}." if unpaired else ".")]
    if untested := [f"{budget} ({r['method']})" for budget, r in best.items()
                    if payload["paired"] and not any(t["budget"] == budget and t["b"] == r["method"]
                                                     for t in payload["paired"])]:
        lines += ["", "**Not paired** (the best fitted model on validation, whose run and PEEL's were not on one "
                  f"machine for a `--carry`): {', '.join(untested)}."]
    return lines


def markdown(payload: dict[str, Any]) -> str:
    name, file = payload["dataset"], payload_name(payload)
    lines = [f"## PEEL against models trained for each budget on {name}{precision(payload)} (test split)", "",
             *([f"Every model stores its item table as {payload['unit_dtype']} units (int8 values times one float32 "
                "scale per unit, a byte a value): PEEL's units, and the fitted models' whole table as one unit, "
                "fitted, scored and charged as stored.", ""]
               if payload.get("unit_dtype", "f32") != "f32" else []),
             "Budgets are paper-equivalent (MB-eq). Fitted models use their tuned recipe "
             f"(benchmarks/results/tuning_{name}.md) and also with its L2 / 10 and / 100; the "
             "yardstick of a budget is the fitted model best on validation NDCG@50. Train seconds: a fitted model's "
             "is its deployment time for "
             "that budget alone; PEEL's is one pipeline that serves every budget. A run killed and resumed counts "
             "every invocation (a † row dated before 2026-12-04T17:30 counted only the last one of a resumed "
             "stage, so it may under-count). Before 2026-12-05T12:45 (8b24068) `--threads` did not reach stage a or "
             "the dim searches: a run trained beside another on 2 cores then ran torch's default two threads "
             "against the other's, so seconds measured so may overstate its time at one thread by up to about 7x "
             "(LightRec's 25MB-eq epoch on amazon-book-sub: 577 s against 84 s).", "",
             "| method | budget | bytes used | train s | valid NDCG@50 | Recall@20 | NDCG@20 | Recall@50 | NDCG@50 |",
             "|---|---|---|---|---|---|---|---|---|"]
    yardsticks = {(t["budget"], t["b"]) for t in payload["paired"]}
    dates = sorted({r["carried"] for r in payload["rows"] if r.get("carried")})
    numbered = len(dates) > 1
    marks = {d: "†" + (str(i) if numbered else "") for i, d in enumerate(dates, 1)}
    for r in payload["rows"]:
        seconds = f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "-"
        method = r["method"] + (" **(yardstick)**" if (r["budget"], r["method"]) in yardsticks else "") + \
            (f" {marks[r['carried']]}" if r.get("carried") else "")
        lines.append(f"| {method} | {r['budget']} | {r['bytes_used']:,} | {seconds} | {r['valid_ndcg50']:.5f} | "
                     + " | ".join(f"{r[k]:.5f}" for k in ("recall@20", "ndcg@20", "recall@50", "ndcg@50")) + " |")
    p = payload["popularity"]
    lines.append("| popularity | - | - | - | - | " + " | ".join(
        f"{p[k]:.5f}" for k in ("recall@20", "ndcg@20", "recall@50", "ndcg@50")) + " |")
    if dates:
        lines += ["", f"† Carried from the committed results of "
                  f"{', '.join(f'{marks[d]} {d}' if numbered else d for d in dates)} "
                  "(`--carry`: the run is not on the "
                  "machine that wrote this file; its row, curve and paired tests are those measured then, by the "
                  "command recorded in that version of this file)."]
    tuned = payload.get("peel_tuned") or "peel-defaults"
    lines += ["", "### Paired per-user test: PEEL against the best fitted model of each budget", "",
              f"PEEL (defaults), and PEEL tuned by hand: of {', '.join(LABELS[n] for n in PEEL_TUNED)}, "
              "the one with the "
              f"best mean validation NDCG@50 over the budgets (here {LABELS[tuned]}). Fitted model: the best by "
              "validation NDCG@50. Two-sided Wilcoxon signed-rank over test users (users where both score the same "
              "are ties).", "",
              "| budget | PEEL | fitted model | metric | PEEL | fitted | PEEL - fitted | wins / losses / ties | p |",
              "|---|---|---|---|---|---|---|---|---|"]
    for t in payload["paired"]:
        lines.append(f"| {t['budget']} | {t['a']} | {t['b']} | {t['metric']} | {t['mean_a']:.5f} | {t['mean_b']:.5f} | "
                     f"{t['relative']:+.1%} | {t['wins']} / {t['losses']} / {t['ties']} | {t['p_value']:.2g} |")
    lines += verdicts(payload)
    if payload.get("not_run"):
        lines += ["", f"**Not run** (`--skip`, or with `--carry` not trained yet): {', '.join(payload['not_run'])}."]
    lines += ["", f"![NDCG@50 and Recall@50 against bytes]({file}.png)"]
    steps = deployment(payload)
    order = list(dict.fromkeys(r["budget"] for r in steps))
    lines += ["", "### Deployment under shrinking budgets (the paper's Fig. 3)", "",
              "The device's budget arrives as " + ", then ".join(order) + ": the training seconds each method has "
              "spent so far to serve it (a fitted method trains again for each budget; an elastic one trains once), "
              "and test NDCG@50 there.", "",
              "| method | " + " | ".join(order) + " |", "|---|" + "---|" * len(order)]
    for method in dict.fromkeys(r["method"] for r in steps):
        mine = {r["budget"]: r for r in steps if r["method"] == method}
        lines.append(f"| {method} | " + " | ".join(
            f"{mine[b]['accumulated_seconds']:,.0f} s, {mine[b]['ndcg@50']:.4f}" if b in mine else "-"
            for b in order) + " |")
    lines += ["", f"![Accumulated training seconds and NDCG@50 as the budget shrinks]({file}_deployment.png)"]
    for label in dict.fromkeys(t["a"] for t in payload["paired"]):
        lines += ["", f"Curve of {label}: " + ", ".join(f"{r['bytes_used'] / 1e6:.2f} MB → {r['ndcg@50']:.4f}"
                                                       for r in payload["curves"] if r["method"] == label
                                                       and "error" not in r)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--reference", default=None, help="paper dataset for budgets (default: from the name)")
    parser.add_argument("--replot", action="store_true", help="redraw the PNG and markdown from the JSON")
    parser.add_argument("--fitted", default=",".join(FIXED_METHODS),
                        help=f"fitted methods to train, comma-separated (default: {','.join(FIXED_METHODS)})")
    parser.add_argument("--only", default=None,
                        help="train only these runs (comma-separated names, e.g. peel-paper,lightgcn-5MB-eq) and stop: "
                             "start several such processes to train in parallel, then rerun without --only")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads (torch and numpy BLAS) of each training and evaluation (0: one a core)")
    parser.add_argument("--carry", action="store_true",
                        help="train nothing: evaluate the runs present in RUNS and carry every other run's rows, curve "
                             "and paired tests from the committed results (marked †), e.g. to add one method's "
                             "runs to a table whose other runs were trained on another machine")
    parser.add_argument("--unit-dtype", default="f32", choices=UNIT_DTYPES,
                        help="how every model stores its item table: f32, or q8 (PEEL against the fitted "
                             f"{'/'.join(Q8_METHODS)} at 8 bits; use RUNS of its own)")
    parser.add_argument("--teacher", action="store_true",
                        help="train nothing: print the full-size LightGCN run of RUNS a distilled method (LightRec) "
                             "distils, the best on validation, for benchmarks/tuning.py --teacher")
    parser.add_argument("--skip", default="",
                        help="runs to leave out (comma-separated names; listed as not run in the results), e.g. "
                             "lightgcn-full when there is no time to train it")
    args = parser.parse_args()
    from peel.training.executor import thread_limit

    with thread_limit(args.threads):
        compare(parser, args)


def compare(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What main does with its parsed arguments (``parser``: to refuse a bad combination of them)."""
    fitted = tuple(m for m in args.fitted.split(",") if m)
    if unknown := set(fitted) - set(FIXED_METHODS):
        parser.error(f"--fitted: unknown method(s) {', '.join(sorted(unknown))}; known: {', '.join(FIXED_METHODS)}")
    if args.unit_dtype != "f32" and (float32 := set(fitted) - set(Q8_METHODS)):
        parser.error(f"--unit-dtype {args.unit_dtype}: {', '.join(sorted(float32))} store float32 tables; "
                     f"give --fitted from {', '.join(Q8_METHODS)}")
    if args.replot:  # redraw the PNG and rewrite the markdown from the JSON, keeping its command, date, machine
        import json

        name = results_name(Path(args.data).name, args.unit_dtype)
        payload = json.loads((RESULTS_DIR / f"{name}.json").read_text())
        print(plot(payload))
        write_result(name, payload, markdown(payload), keep_meta=True)
        return

    data = load(args.data)
    if args.teacher:
        teacher_run(data, args.runs, args.unit_dtype)
        return
    budgets = budgets_for(data, args.reference)
    only = set(args.only.split(",")) if args.only is not None else None
    fitted_plan = fitted_runs(data, budgets, fitted, args.unit_dtype)
    known = [*PEEL_VARIANTS, *fitted_plan]
    if only is not None and (unknown := only - set(known)):
        parser.error(f"--only: unknown run(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    skip = frozenset(n for n in args.skip.split(",") if n)
    if unknown := skip - set(known):
        parser.error(f"--skip: unknown run(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    if "peel-defaults" in skip:
        parser.error("--skip: peel-defaults is what the comparison is about")
    if args.carry:
        if only is not None:
            parser.error("--carry trains nothing: train with --only first, then evaluate with --carry")
        committed = carried_results(data.name, set(known) | set(DEVICE_VARIANTS), unit_dtype=args.unit_dtype)
        paths = present_runs(args.runs, [n for n in known if n not in skip])
    else:
        committed = {"rows": [], "paired": [], "curves": [], "date": None}
        paths = train_all(data, args.data, args.runs, fitted_plan, only, args.threads, skip,
                          unit_dtype=args.unit_dtype)
    if only is not None:
        return
    data_identity = data_source(data, args.data)["identity"]
    rows = evaluate_all(data, data_identity, paths, budgets)
    fresh = {r["run"] for r in rows}
    place = {name: i for i, name in enumerate([*PEEL_VARIANTS, *fitted_plan, *DEVICE_VARIANTS])}
    rows = mark_chosen(sorted(rows + [r for r in committed["rows"] if r["run"] not in fresh],
                              key=lambda r: place.get(r["run"], len(place))))  # stable: budgets stay in order
    paired = paired_rows(rows, budgets, committed["paired"])
    tuned = tuned_peel(rows)
    curves = [point for name, (label, *_) in PEEL_VARIANTS.items() if name in paths
              for point in curve(data, data_identity, paths[name], label)]
    curves += [c for c in committed["curves"] if c["method"] not in {c["method"] for c in curves}]
    table = [{k: v for k, v in r.items() if k != "per_user"} for r in rows]
    payload = {"dataset": data.name, "unit_dtype": args.unit_dtype, "budgets": [str(b) for b in budgets],
               "rows": table, "paired": paired,
               "peel_tuned": tuned, "not_run": sorted(skip | {n for n in known if n not in {r["run"] for r in rows}}),
               "curves": curves, "popularity": evaluate(PopularityScorer(data), data, split="test", ks=KS)}
    plot(payload)
    write_result(payload_name(payload), payload, markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
