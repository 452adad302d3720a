"""Is a LightRec model elastic for free? Its item vectors are sums over B residual codebooks, so dropping the
last codebooks (and their codes) is a smaller model a device could shrink to without the server. This scores a
trained LightRec run's first k codebooks at the codebook counts of smaller fitted LightRec runs (the same bytes)
and pairs each prefix with that run per user (Wilcoxon signed-rank), on validation and test.

    python benchmarks/codebook_prefix.py --data ../shared/data/yelp2018-sub \
        --run "runs/compare-yelp/lightrec-25MB-eq-l2=0.01" \
        --against runs/compare-yelp/lightrec-5MB-eq "runs/compare-yelp/lightrec-10MB-eq-l2=0.01"

Results (one row per prefix run, codebook count and split, added to earlier rows):
benchmarks/results/codebook_prefix_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from peel.bench import added_rows, write_result
from peel.config import PeelConfig
from peel.data import load
from peel.device.composed import Composition, unpack_codes
from peel.evaluation.evaluator import evaluate
from peel.evaluation.scorers import DotProductScorer
from peel.evaluation.significance import paired_test
from peel.run_layout import RunLayout

METRICS = ("ndcg@50", "recall@50")


def lightrec_run(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, Composition]:
    """A finished LightRec run's user vectors, (items, B) codes, (B, W, D) codebooks and composition."""
    layout = RunLayout(run)
    method = json.loads((run / "method.json").read_text())
    if method.get("method") != "lightrec":
        raise SystemExit(f"{run}: method.json says {method.get('method')!r}, expected a lightrec run")
    config = PeelConfig.from_json(layout.config)
    composition = Composition("codebooks", int(method["dim"]), codebooks=int(method["codebooks"]),
                              codewords=config.model.codewords)
    with np.load(layout.embeddings, allow_pickle=False) as saved:
        users, items = saved["user_vectors"], saved["item_vectors"]
        books, packed = saved["composed.codebooks"], saved["composed.codes"]
    codes = unpack_codes(packed, len(items), composition.codebooks, composition.code_bits)
    books = books.reshape(composition.codebooks, composition.codewords, composition.dim)
    # the stored item vectors are the sum of all codebooks: a check that the codes are read as trained
    rebuilt = _prefix_vectors(books, codes, composition.codebooks)
    scale = float(np.abs(items).max())
    if not np.allclose(rebuilt, items, rtol=0, atol=1e-4 * scale):  # float32 sums of B terms in another order
        raise SystemExit(f"{run}: its codes and codebooks do not rebuild its item vectors")
    return users, codes, books, composition


def _prefix_vectors(books: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Item vectors from the first ``k`` codebooks."""
    vectors = np.zeros((len(codes), books.shape[2]), dtype=np.float32)
    for b in range(k):  # k codebooks, each one vectorized gather over all items
        vectors += books[b][codes[:, b]]
    return vectors


def probe(data: Any, run: Path, against: list[Path]) -> list[dict[str, Any]]:
    users, codes, books, composition = lightrec_run(run)
    rows = []
    for other in against:
        other_users, other_codes, other_books, other_composition = lightrec_run(other)
        k = other_composition.codebooks
        if k > composition.codebooks or other_composition.codewords != composition.codewords:
            raise SystemExit(f"{other}: B={k}, W={other_composition.codewords} is not a prefix of {run} "
                             f"(B={composition.codebooks}, W={composition.codewords})")
        prefix = DotProductScorer(users, _prefix_vectors(books, codes, k))
        fitted = DotProductScorer(other_users, _prefix_vectors(other_books, other_codes, k))
        for split in ("valid", "test"):
            a = evaluate(prefix, data, split=split, ks=(50,), legacy_depth=None, per_user=True)
            b = evaluate(fitted, data, split=split, ks=(50,), legacy_depth=None, per_user=True)
            row = {"run": str(run), "against": str(other), "codebooks": k, "of": composition.codebooks,
                   "bytes": Composition("codebooks", composition.dim, codebooks=k,
                                        codewords=composition.codewords).device_bytes(data.n_items),
                   "split": split}
            for metric in METRICS:
                test = paired_test(a["per_user"], b["per_user"], metric)
                row[metric] = test["mean_a"]
                row[f"{metric} fitted"] = test["mean_b"]
                row[f"{metric} p"] = test["p_value"]
            rows.append(row)
            print(row, flush=True)
    return rows


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"## A LightRec run's first k codebooks against a LightRec fitted with k on {payload['dataset']}", "",
             "| prefix of | fitted run | k of B | device bytes | split | NDCG@50 prefix / fitted | change | p "
             "| Recall@50 prefix / fitted | change | p |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        cells = [f"{r[m]:.5f} / {r[m + ' fitted']:.5f} | {100 * (r[m] / r[m + ' fitted'] - 1):+.1f}% | "
                 f"{r[m + ' p']:.2g}" for m in METRICS]
        lines.append(f"| {r['run']} | {r['against']} | {r['codebooks']} of {r['of']} | {r['bytes']:,} | "
                     f"{r['split']} | {' | '.join(cells)} |")
    lines += ["", "The prefix's item vectors sum its run's first k codebooks; its user vectors are the run's own. "
              "p: paired per user, Wilcoxon signed-rank. Commands:"]
    lines += [f"- `{c}`" for c in payload["commands"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", type=Path, required=True, help="a finished LightRec run to take prefixes of")
    parser.add_argument("--against", type=Path, nargs="+", required=True,
                        help="finished LightRec runs with fewer codebooks (their B is the prefix scored)")
    args = parser.parse_args()
    data = load(args.data)
    fresh = probe(data, args.run, args.against)
    payload = {"dataset": data.name,
               **added_rows(f"codebook_prefix_{data.name}", fresh, lambda r: (r["run"], r["against"], r["split"]))}
    write_result(f"codebook_prefix_{data.name}", payload, markdown(payload))


if __name__ == "__main__":
    main()
