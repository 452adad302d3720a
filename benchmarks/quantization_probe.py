"""What storing a finished run's item blocks at fewer bits would cost: validation NDCG@50 / Recall@50 of
leading prefixes of stage a's item vectors, each block rounded to a signed integer of BITS bits with one
scale per (item, block) (absmax / (2^(BITS-1) - 1)). Scores are the plain dot product of a prefix, no unit
order: this measures the rounding alone. A probe for a smaller unit (8 dims as 8 + 2 bytes at 8 bits, with a
float16 scale, instead of 32 bytes), not a feature: the bundle format stores float32 units.

    python benchmarks/quantization_probe.py --data ../shared/data/yelp2018-sub --run runs/yelp-w/w05

Results (one row per run, prefix and bit width, added to earlier runs' rows):
benchmarks/results/quantization_probe_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from peel.bench import RESULTS_DIR, command_line, write_result
from peel.config import PeelConfig
from peel.data import load
from peel.evaluation.evaluator import evaluate
from peel.evaluation.scorers import DotProductScorer
from peel.run_layout import RunLayout


def rounded(items: np.ndarray, n_blocks: int, bits: int) -> np.ndarray:
    """``items`` with every (item, block) rounded to ``bits``-bit signed integers times its own absmax scale."""
    blocks = items.reshape(len(items), n_blocks, -1)
    scale = np.abs(blocks).max(axis=2, keepdims=True) / (2 ** (bits - 1) - 1)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float16).astype(np.float32)  # the scale stored as float16
    return (np.round(blocks / scale) * scale).reshape(items.shape).astype(np.float32)


def probe(data: Any, run: Path, prefixes: list[int], bits: list[int]) -> list[dict[str, Any]]:
    layout = RunLayout(run)
    config = PeelConfig.from_json(layout.config)
    n_blocks, block_dim = config.model.n_blocks, config.model.block_dim
    with np.load(layout.embeddings) as saved:
        users, items = saved["user_vectors"], saved["item_vectors"]
    rows = []
    for width in bits:
        stored = items if width == 32 else rounded(items, n_blocks, width)
        for blocks in prefixes:
            dims = blocks * block_dim
            metrics = evaluate(DotProductScorer(users[:, :dims], stored[:, :dims]), data, split="valid", ks=(50,),
                               legacy_depth=None)
            rows.append({"run": str(run), "blocks": blocks, "bits": width,
                         "bytes_per_unit": 4 * block_dim if width == 32 else block_dim * width / 8 + 2,
                         "ndcg@50": metrics["ndcg@50"], "recall@50": metrics["recall@50"]})
            print(rows[-1], flush=True)
    return rows


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"## Item blocks stored at fewer bits on {payload['dataset']} (validation, plain prefix dot product)", "",
             "| run | blocks | bits | bytes per unit | NDCG@50 | Recall@50 | NDCG@50 vs float32 |",
             "|---|---|---|---|---|---|---|"]
    full = {(r["run"], r["blocks"]): r["ndcg@50"] for r in payload["rows"] if r["bits"] == 32}
    for r in payload["rows"]:
        base = full.get((r["run"], r["blocks"]))
        change = f"{100 * (r['ndcg@50'] / base - 1):+.1f}%" if base else "-"
        lines.append(f"| {r['run']} | {r['blocks']} | {r['bits']} | {r['bytes_per_unit']:g} | {r['ndcg@50']:.5f} | "
                     f"{r['recall@50']:.4f} | {change} |")
    lines += ["", "Each (item, block) is rounded on its own scale, stored as float16 (2 bytes per unit beside "
              "block_dim * bits / 8). Commands:"] + [f"- `{c}`" for c in payload["commands"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", type=Path, required=True, help="a finished PEEL run (its pretrain/embeddings.npz)")
    parser.add_argument("--prefixes", default="1,2,4,16", help="leading block counts to score")
    parser.add_argument("--bits", default="32,8,6,4", help="bit widths (32: the float32 table as stored)")
    args = parser.parse_args()
    data = load(args.data)
    prefixes = [int(p) for p in args.prefixes.split(",")]
    bits = [int(b) for b in args.bits.split(",")]
    if any(not 2 <= b <= 16 and b != 32 for b in bits):
        parser.error(f"--bits must be in [2, 16] or 32, got {args.bits}")
    path = RESULTS_DIR / f"quantization_probe_{data.name}.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    rows = [r for r in previous.get("rows", []) if r["run"] != str(args.run)] + probe(data, args.run, prefixes, bits)
    payload = {"dataset": data.name, "rows": rows,
               "commands": list(dict.fromkeys([*previous.get("commands", []), command_line()]))}
    write_result(f"quantization_probe_{data.name}", payload, markdown(payload))


if __name__ == "__main__":
    main()
