"""Does a per-codebook learning rate let LightRec train past its untrained start? Trains a LightRec run's start
(residual k-means of its teacher) for a few epochs with Adam, one rate for all (``adam``, the training's) or codebook b
at the rate times its start RMS over the first codebook's (``adam-scaled``, see lightrec_code_flips.py), on the run's
own seed, batches and validation users, and records each epoch's mean loss and every third its validation Recall@50
(the early-stopping score).

    python benchmarks/lightrec_optimizer_epochs.py --data ../shared/data/amazon-book-sub \
        --run runs/compare-amazon/lightrec-5MB-eq --optimizer adam-scaled --epochs 18

Results (one row per run, optimizer and epoch, added to earlier rows):
benchmarks/results/lightrec_optimizer_epochs_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peel.bench import added_rows, write_result
from peel.config import PeelConfig
from peel.data import load
from peel.evaluation import DotProductScorer, evaluate, evaluation_users
from peel.run_layout import RunLayout
from peel.training.pretrain import build_model, load_pretrained
from peel.training.sampling import TripleSampler

try:
    from lightrec_code_flips import training_step
except ImportError:  # run from another directory
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from lightrec_code_flips import training_step


def probe(data: Any, run: Path, optimizer_name: str, epochs: int) -> list[dict[str, Any]]:
    method = json.loads((run / "method.json").read_text())
    if method.get("method") != "lightrec":
        raise SystemExit(f"{run}: method.json says {method.get('method')!r}, expected a lightrec run")
    config = PeelConfig.from_json(RunLayout(run).config)
    teacher = load_pretrained(RunLayout(Path(method["teacher"])).embeddings)
    model = build_model(data, config.model, config.seed, teacher)
    lr = config.pretrain.lr
    train_step = training_step(model, config, optimizer_name, lr)
    users = evaluation_users(data, "valid")
    if config.pretrain.eval_users and config.pretrain.eval_users < len(users):  # as pretrain samples them
        users = np.sort(np.random.default_rng([config.seed, 1]).choice(users, config.pretrain.eval_users,
                                                                        replace=False))

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            user_vectors, item_vectors = model.final_embeddings()
        model.train()
        scorer = DotProductScorer(user_vectors.detach().numpy(), item_vectors.detach().numpy())
        return float(evaluate(scorer, data, split="valid", ks=(50,), users=users, legacy_depth=None)["recall@50"])

    sampler = TripleSampler(data.csr("train"))
    base = {"run": str(run), "codebooks": int(method["codebooks"]), "optimizer": optimizer_name, "lr": lr}
    rows = [{**base, "epoch": 0, "loss": None, "valid recall@50": validate()}]
    model.train()
    for epoch in range(1, epochs + 1):
        batches = sampler.epoch(np.random.default_rng([config.seed, epoch]), config.pretrain.batch_size)
        losses = [train_step(batch) for batch in batches]
        rows.append({**base, "epoch": epoch, "loss": float(np.mean(losses)),
                     "valid recall@50": validate() if epoch % 3 == 0 else None})
        print(rows[-1], flush=True)
    return rows


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"## LightRec's first epochs from its start on {payload['dataset']}, by optimizer", "",
             "| run | B | optimizer | lr | epoch | mean loss | valid Recall@50 |", "|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        loss = "" if r["loss"] is None else f"{r['loss']:.4f}"
        score = "" if r["valid recall@50"] is None else f"{r['valid recall@50']:.5f}"
        lines.append(f"| {r['run']} | {r['codebooks']} | {r['optimizer']} | {r['lr']:g} | {r['epoch']} | {loss} | "
                     f"{score} |")
    lines += ["", "Epoch 0: the untrained start. Validation on the run's early-stopping users. Commands:"]
    lines += [f"- `{c}`" for c in payload["commands"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", type=Path, required=True, help="a LightRec run (its config, budget and teacher)")
    parser.add_argument("--optimizer", choices=("adam", "adam-scaled"), default="adam-scaled")
    parser.add_argument("--epochs", type=int, default=18)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load(args.data)
    fresh = probe(data, args.run, args.optimizer, args.epochs)
    name = f"lightrec_optimizer_epochs_{data.name}"
    key = lambda r: (r["run"], r["optimizer"], r["epoch"])  # noqa: E731
    payload = {"dataset": data.name, **added_rows(name, fresh, key)}
    write_result(name, payload, markdown(payload))


if __name__ == "__main__":
    main()
