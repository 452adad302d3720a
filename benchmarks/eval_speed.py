"""Evaluation speed: full ranking of every amazon-book-sub test user with a random 128-dim
dot-product scorer (target: <= 60 s on a 2-core machine).

    python benchmarks/eval_speed.py [--data ../shared/data/amazon-book-sub] [--dim 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from peel.bench import write_result
from peel.data import load
from peel.evaluation import DotProductScorer, evaluate
from peel.evaluation.evaluator import default_chunk

TARGET_SECONDS = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(__file__).resolve().parents[2] / "shared/data/amazon-book-sub"
    parser.add_argument("--data", default=str(default_data))
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=None)
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = load(args.data)
    load_seconds = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    scorer = DotProductScorer(rng.normal(size=(data.n_users, args.dim)).astype(np.float32),
                              rng.normal(size=(data.n_items, args.dim)).astype(np.float32))
    chunk = args.chunk_size or default_chunk(data.n_items)
    times, result = [], {}
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = evaluate(scorer, data, split="test", ks=(20, 50), chunk_size=chunk)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    payload = {
        "dataset": data.name, "users": result["users"], "items": data.n_items, "dim": args.dim,
        "chunk_size": chunk, "load_seconds": round(load_seconds, 3),
        "evaluate_seconds": [round(t, 3) for t in times], "median_seconds": round(median, 3),
        "target_seconds": TARGET_SECONDS, "met": median <= TARGET_SECONDS,
        "metrics": {k: v for k, v in result.items() if k != "users"},
    }
    table = (
        "| dataset | users | items | dim | chunk | load (s) | evaluate median (s) | target (s) | met |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"| {data.name} | {result['users']:,} | {data.n_items:,} | {args.dim} | {chunk} | {load_seconds:.2f} | "
        f"{median:.2f} | {TARGET_SECONDS:.0f} | {'yes' if payload['met'] else 'no'} |\n\n"
        f"Random scorer metrics (a sanity floor): recall@50 = {result['recall@50']:.5f}, "
        f"ndcg@50 = {result['ndcg@50']:.5f}."
    )
    path = write_result("eval_speed", payload, table)
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
