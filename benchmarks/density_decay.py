"""The density order's decay (finetune.density_decay) on finished runs: validation NDCG@50 / Recall@50 at
5/10/25MB-eq for each decay, with no retraining. Under finetune.importance=density a user group's importance
weights are share_g x decay^b, so another decay is another unit order over the same stage-a table.

    python benchmarks/density_decay.py --data ../shared/data/amazon-book-sub \
        --run runs/compare-amazon/peel-defaults --decays 0.5,0.7,0.8,0.85,0.9,0.95,1

Results (one row per run and decay, added to earlier runs' rows): benchmarks/results/density_decay_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from peel.bench import added_rows, timestamp, write_result
from peel.budget import Budget
from peel.data import load
from peel.methods import load_run
from peel.training.allocation import density_weights

try:
    from compare import budgets_for
except ImportError:  # run from another directory
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from compare import budgets_for


def reorder(trained: Any, shares: list[np.ndarray], decay: float) -> None:
    """Give every user group of a loaded density run the importance weights of ``decay``."""
    for group, share in zip(trained.groups, shares, strict=True):
        group.importance_weights = density_weights(share, trained.config.model.n_blocks, decay)


def probe(data: Any, run: Path, decays: list[float], budgets: list[Budget]) -> list[dict[str, Any]]:
    """One row per decay: the run's validation metrics with every user group's order rebuilt at that decay."""
    model = load_run(run)
    trained = model.run
    if trained.config.finetune.importance != "density":
        raise SystemExit(f"{run}: finetune.importance is {trained.config.finetune.importance!r}; the decay "
                         "only orders a 'density' run's units")
    # column 0 of share_g * decay^0 is the smoothed share itself
    shares = [group.importance_weights[:, 0].copy() for group in trained.groups]
    rows = []
    for decay in decays:
        reorder(trained, shares, decay)
        evaluated = model.evaluate(data, budgets, split="valid", ks=(50,))
        rows.append({"run": run.name, "decay": decay, "trained_decay": trained.config.finetune.density_decay,
                     "valid": {r["budget"]: {"ndcg@50": r.get("ndcg@50"), "recall@50": r.get("recall@50")}
                               for r in evaluated}, "date": timestamp()})
        print(markdown_rows(rows[-1:])[-1], flush=True)
    return rows


def markdown_rows(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        cells = [f"{v['ndcg@50']:.5f} ({v['recall@50']:.4f})" if v["ndcg@50"] is not None else "below minimum"
                 for v in row["valid"].values()]
        lines.append(f"| {row['run']} | {row['decay']:g} | " + " | ".join(cells) + " |")
    return lines


def markdown(payload: dict[str, Any]) -> str:
    budgets = list(payload["rows"][0]["valid"]) if payload["rows"] else []
    lines = [f"## The density order's decay on {payload['dataset']} (validation NDCG@50, Recall@50 in brackets)", "",
             "Same stage a and user groups; only the unit order changes (no retraining).", "",
             "| run | decay | " + " | ".join(budgets) + " |", "|---|---|" + "---|" * len(budgets)]
    lines += markdown_rows(payload["rows"])
    lines += ["", "Commands:"] + [f"- `{c}`" for c in payload["commands"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", type=Path, required=True, help="a finished PEEL run with finetune.importance=density")
    parser.add_argument("--decays", default="0.5,0.7,0.8,0.85,0.9,0.95,1")
    parser.add_argument("--reference", default=None, help="paper dataset for budgets (default: from the name)")
    args = parser.parse_args()
    decays = [float(d) for d in args.decays.split(",") if d.strip()]
    if not decays or any(not 0 < d <= 1 for d in decays):
        raise SystemExit(f"--decays must be values in (0, 1], got {args.decays!r}")
    data = load(args.data)
    rows = probe(data, args.run, decays, budgets_for(data, args.reference))
    payload = {"dataset": data.name, **added_rows(f"density_decay_{data.name}", rows, lambda r: (r["run"], r["decay"]))}
    write_result(f"density_decay_{data.name}", payload, markdown(payload))


if __name__ == "__main__":
    main()
