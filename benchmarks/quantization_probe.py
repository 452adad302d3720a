"""What storing a finished run's item blocks at fewer bits costs: validation NDCG@50 / Recall@50 of leading
prefixes of stage a's item vectors, each block rounded to a signed integer of BITS bits times a scale (absmax /
(2^(BITS-1) - 1)) shared by ``--scale``: ``row``, one float16 scale per (item, block) (d * BITS / 8 + 2 bytes
a row); ``unit``, one float32 scale per unit (item group, block), what a q8 bundle stores (device.unit_dtype=q8;
a fitted model's whole table is one unit). Scores are the plain dot product of a prefix, no unit order: this
measures the rounding alone.

    python benchmarks/quantization_probe.py --data ../shared/data/yelp2018-sub --run runs/yelp-w/w05
    python benchmarks/quantization_probe.py --data ../shared/data/yelp2018-sub --run runs/yelp-w/w05 \
        --scale unit --bits 32,8

Results (one row per run, prefix and bit width, added to earlier runs' rows):
benchmarks/results/quantization_probe_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from peel.bench import added_rows, write_result
from peel.config import PeelConfig
from peel.data import load
from peel.evaluation.evaluator import evaluate
from peel.evaluation.scorers import DotProductScorer
from peel.run_layout import RunLayout
from peel.units import stored_values


def rounded(items: np.ndarray, n_blocks: int, bits: int) -> np.ndarray:
    """``items`` with every (item, block) rounded to ``bits``-bit signed integers times its own absmax scale."""
    blocks = items.reshape(len(items), n_blocks, -1)
    scale = np.abs(blocks).max(axis=2, keepdims=True) / (2 ** (bits - 1) - 1)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float16).astype(np.float32)  # the scale stored as float16
    return (np.round(blocks / scale) * scale).reshape(items.shape).astype(np.float32)


def item_groups(layout: RunLayout, n_items: int) -> np.ndarray:
    """A PEEL run's item groups, or one group (the whole table is one unit) for a fitted model."""
    if layout.grouping.exists():
        with np.load(layout.grouping, allow_pickle=False) as z:
            return z["item_group"]
    return np.zeros(n_items, dtype=np.int64)


def probe(data: Any, run: Path, prefixes: list[int], bits: list[int], scale: str = "row") -> list[dict[str, Any]]:
    layout = RunLayout(run)
    config = PeelConfig.from_json(layout.config)
    n_blocks, block_dim = config.model.n_blocks, config.model.block_dim
    with np.load(layout.embeddings) as saved:
        users, items = saved["user_vectors"], saved["item_vectors"]
    groups = item_groups(layout, len(items))
    rows = []
    for width in bits:
        if width == 32:
            stored, per_row = items, 4 * block_dim
        elif scale == "unit":  # the q8 bundle's rounding itself
            stored = stored_values(items.reshape(len(items), n_blocks, -1), groups, "q8").reshape(items.shape)
            per_row = block_dim
        else:
            stored, per_row = rounded(items, n_blocks, width), block_dim * width / 8 + 2
        for blocks in prefixes:
            dims = blocks * block_dim
            metrics = evaluate(DotProductScorer(users[:, :dims], stored[:, :dims]), data, split="valid", ks=(50,),
                               legacy_depth=None)
            rows.append({"run": str(run), "blocks": blocks, "bits": width, "scale": scale if width != 32 else "-",
                         "bytes_per_unit": per_row, "ndcg@50": metrics["ndcg@50"], "recall@50": metrics["recall@50"]})
            print(rows[-1], flush=True)
    return rows


def row_key(row: dict[str, Any]) -> tuple[str, int, int, str]:
    """A row's run, prefix, bits and scale (rows before --scale existed are 'row'; float32 has none)."""
    return row["run"], row["blocks"], row["bits"], "-" if row["bits"] == 32 else row.get("scale", "row")


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"## Item blocks stored at fewer bits on {payload['dataset']} (validation, plain prefix dot product)", "",
             "| run | blocks | bits | scale | bytes per item and block | NDCG@50 | Recall@50 | NDCG@50 vs float32 |",
             "|---|---|---|---|---|---|---|---|"]
    full = {(r["run"], r["blocks"]): r["ndcg@50"] for r in payload["rows"] if r["bits"] == 32}
    for r in payload["rows"]:
        base = full.get((r["run"], r["blocks"]))
        change = f"{100 * (r['ndcg@50'] / base - 1):+.1f}%" if base else "-"
        lines.append(f"| {r['run']} | {r['blocks']} | {r['bits']} | {r.get('scale', 'row')} | "
                     f"{r['bytes_per_unit']:g} | {r['ndcg@50']:.5f} | "
                     f"{r['recall@50']:.4f} | {change} |")
    lines += ["", "Scale `row`: each (item, block) rounded on its own scale, stored as float16 (2 bytes beside "
              "block_dim * bits / 8). Scale `unit`: one float32 scale per unit (item group, block; a fitted model's "
              "table is one unit), what a q8 bundle stores (4 bytes a unit, not counted here). Commands:"]
    lines += [f"- `{c}`" for c in payload["commands"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", type=Path, required=True, help="a finished PEEL run (its pretrain/embeddings.npz)")
    parser.add_argument("--prefixes", default="1,2,4,16", help="leading block counts to score")
    parser.add_argument("--bits", default="32,8,6,4", help="bit widths (32: the float32 table as stored)")
    parser.add_argument("--scale", default="row", choices=("row", "unit"),
                        help="row: a float16 scale per (item, block); unit: a float32 scale per unit (q8 bundles, 8 "
                             "bits only)")
    args = parser.parse_args()
    data = load(args.data)
    prefixes = [int(p) for p in args.prefixes.split(",")]
    bits = [int(b) for b in args.bits.split(",")]
    if any(not 2 <= b <= 16 and b != 32 for b in bits):
        parser.error(f"--bits must be in [2, 16] or 32, got {args.bits}")
    if args.scale == "unit" and set(bits) - {8, 32}:
        parser.error(f"--scale unit is the q8 bundle's rounding: --bits 8 (and 32), got {args.bits}")
    fresh = probe(data, args.run, prefixes, bits, args.scale)
    payload = {"dataset": data.name, **added_rows(f"quantization_probe_{data.name}", fresh, row_key)}
    write_result(f"quantization_probe_{data.name}", payload, markdown(payload))


if __name__ == "__main__":
    main()
