"""Why does LightRec's training not beat its untrained start at small budgets? Its item vectors are hard residual
codes of a trainable encoder vector: codebook b quantizes what codebooks 0..b-1 left. This rebuilds a LightRec run's
start (residual k-means of its teacher), takes its first training steps at each learning rate, and records after
each step the share of all item codes that changed from the start, where an item's first change falls, and the
mean squared distance of all composed item vectors to the teacher's (the distillation term). ``--optimizers``:
``adam`` is the training's (one learning rate for every parameter); ``adam-scaled`` gives codebook b the learning rate
times its start RMS over the first codebook's (residual codebooks shrink with b; one step of Adam moves every entry by
about the learning rate, whatever its scale).

    python benchmarks/lightrec_code_flips.py --data ../shared/data/amazon-book-sub \
        --run runs/compare-amazon/lightrec-5MB-eq --lrs 2e-3 2e-4 --steps 6 --optimizers adam adam-scaled

Results (one row per run, learning rate and step, added to earlier rows):
benchmarks/results/lightrec_code_flips_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peel.bench import added_rows, write_result
from peel.config import PeelConfig
from peel.data import load
from peel.run_layout import RunLayout
from peel.training.pretrain import build_model, load_pretrained
from peel.training.sampling import TripleSampler


def _distillation(table: torch.nn.Module) -> float:
    """Mean squared distance of every item's composed vector (its hard codes) to the teacher's."""
    with torch.no_grad():
        table.eval()
        value = table.distillation(torch.arange(table.n_items), table(None)).item()
        table.train()
    return value


def training_step(model: torch.nn.Module, config: PeelConfig, optimizer_name: str,
                  lr: float) -> Callable[[tuple[np.ndarray, ...]], float]:
    """One training step of a LightRec model (stage a's loss) with Adam: ``adam`` one rate for all, ``adam-scaled``
    codebook b at ``lr`` times its start RMS over the first codebook's. Returns the step, which gives the loss."""
    table = model.item_table
    optimizer = torch.optim.Adam([p for n, p in model.named_parameters() if not n.endswith("codebooks")], lr=lr)
    book_optimizer = torch.optim.Adam([table.codebooks], lr=lr)
    rms = table.codebooks.detach().pow(2).mean(dim=(1, 2)).sqrt()
    scale = rms / rms[0] if optimizer_name == "adam-scaled" else torch.ones_like(rms)

    def step(batch: tuple[np.ndarray, ...]) -> float:
        tensors = [torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in batch]
        loss = model.loss(*tensors, l2=config.pretrain.l2, lambda_div=0.0, distillation=config.pretrain.distillation)
        optimizer.zero_grad()
        book_optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        before = table.codebooks.detach().clone()
        book_optimizer.step()  # Adam's step is linear in its lr: scaling it is a per-codebook lr
        with torch.no_grad():
            table.codebooks.copy_(before + (table.codebooks - before) * scale[:, None, None])
        return float(loss.item())

    return step


def probe(data: Any, run: Path, lrs: list[float], steps: int, optimizers: list[str]) -> list[dict[str, Any]]:
    method = json.loads((run / "method.json").read_text())
    if method.get("method") != "lightrec":
        raise SystemExit(f"{run}: method.json says {method.get('method')!r}, expected a lightrec run")
    config = PeelConfig.from_json(RunLayout(run).config)
    teacher = load_pretrained(RunLayout(Path(method["teacher"])).embeddings)
    rows = []
    for optimizer_name, lr in itertools.product(optimizers, lrs):
        torch.manual_seed(config.seed)
        model = build_model(data, config.model, config.seed, teacher)
        table = model.item_table
        start_codes, start_distillation = table.codes(), _distillation(table)
        train_step = training_step(model, config, optimizer_name, lr)
        batches = TripleSampler(data.csr("train")).epoch(np.random.default_rng([config.seed, 1]),
                                                         config.pretrain.batch_size)
        model.train()
        for step, batch in zip(range(1, steps + 1), batches, strict=False):
            loss = train_step(batch)
            changed = table.codes() != start_codes
            moved = changed.any(axis=1)
            rows.append({"run": str(run), "codebooks": int(method["codebooks"]), "optimizer": optimizer_name, "lr": lr,
                         "step": step,
                         "loss": loss, "distillation start": start_distillation,
                         "distillation": _distillation(table), "codes changed": float(changed.mean()),
                         "items changed": float(moved.mean()),
                         "median first changed codebook": float(np.median(changed[moved].argmax(axis=1)))
                         if moved.any() else None})
            print(rows[-1], flush=True)
    return rows


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"## LightRec's codes in its first training steps on {payload['dataset']}", "",
             "| run | B | optimizer | lr | step | loss of the step | distillation, start → after | codes changed "
             "| items changed | median first changed codebook |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        first = "" if r["median first changed codebook"] is None else f"{r['median first changed codebook']:.0f}"
        lines.append(f"| {r['run']} | {r['codebooks']} | {r['optimizer']} | {r['lr']:g} | {r['step']} | "
                     f"{r['loss']:.4g} | {r['distillation start']:.3g} → {r['distillation']:.3g} | "
                     f"{100 * r['codes changed']:.1f}% | "
                     f"{100 * r['items changed']:.1f}% | {first} |")
    lines += ["", "Changed: against the start's codes (residual k-means of the teacher). Distillation: mean squared "
              "distance of all items' composed vectors to the teacher's. Adam from the run's own start, seed and "
              "batches; only the optimizer and learning rate differ. Commands:"]
    lines += [f"- `{c}`" for c in payload["commands"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", type=Path, required=True, help="a LightRec run (its config, budget and teacher)")
    parser.add_argument("--lrs", type=float, nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--optimizers", nargs="+", choices=("adam", "adam-scaled"), default=["adam"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load(args.data)
    fresh = probe(data, args.run, args.lrs, args.steps, args.optimizers)
    name = f"lightrec_code_flips_{data.name}"
    key = lambda r: (r["run"], r["optimizer"], r["lr"], r["step"])  # noqa: E731
    payload = {"dataset": data.name, **added_rows(name, fresh, key)}
    write_result(name, payload, markdown(payload))


if __name__ == "__main__":
    main()
