"""Stage-a step time: the wall and CPU time of LightGCN training steps with the default config, on one dataset.

With ``--method NAME --budget B`` (and ``--set`` overrides), the steps of that fixed-size method fitted to B
instead (e.g. LightRec's composed codebooks; its item table starts untrained, which does not change a step's
work, and without a teacher, so without the distillation term).

Each variant runs in a fresh child process (the allocator setting is process-wide), in turn A B C A B C ...
for ``--repeats`` rounds, so a drift in the machine's speed touches every variant alike; medians are reported.
A child loads the data, builds stage a's model and optimizer, runs one warm-up step, then times ``--steps``
steps (default: one epoch's worth) of the default loss (nested prefixes with their L2).

Variants:
- ``kept``: this checkout, with freed memory kept in the process (peel._allocator, what ``peel train`` does);
- ``glibc``: this checkout, glibc's default allocator settings (large arrays unmapped on free);
- with ``--baseline-src DIR``, ``baseline``: another checkout's ``src`` (e.g. a ``git worktree`` of an older
  commit), glibc's defaults, the same steps; and ``baseline-kept``: the same with its own allocator setting
  (freed memory kept if that checkout has peel._allocator), to compare with ``kept``.

    python benchmarks/step_time.py --data ../shared/data/amazon-book-sub
    git worktree add /tmp/peel-old 5207293
    python benchmarks/step_time.py --data ../shared/data/amazon-book-sub --baseline-src /tmp/peel-old/src
    python benchmarks/step_time.py --data ../shared/data/yelp2018-sub --method lightrec --budget 5MB-eq \
        --set model.codewords=16 --baseline-src /tmp/peel-old/src

Results: benchmarks/results/step_time_<dataset>.{json,md} (step_time_<dataset>_<method> for a method; ``--tag T``
appends _T, to keep two settings' results side by side).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GLIBC_DEFAULT = {"MALLOC_MMAP_MAX_": "65536"}  # glibc's own default: peel._allocator then leaves it alone


def method_config(data: Any, seed: int, method: str, budget: str | None, overrides: list[str]) -> Any:
    """The config whose stage-a steps are timed: the defaults (+ ``overrides``), fitted to ``budget`` for a
    fixed-size ``method``."""
    from peel.budget import full_table_bytes, parse_budget
    from peel.config import PeelConfig

    config = PeelConfig(seed=seed).with_overrides(overrides)
    if method == "peel":
        return config
    from peel.methods.fixed import fitted_config, fitted_size

    parsed = parse_budget(budget, full_table_bytes=full_table_bytes(data.n_items, config.model.dim),
                          n_items=data.n_items, reference=data.name)
    return fitted_config(config, method, fitted_size(data.n_items, parsed, config, method))


def child(data_path: str, steps: int, threads: int, seed: int, method: str = "peel", budget: str | None = None,
          overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Time ``steps`` stage-a steps in this process; the figures as a dict."""
    import numpy as np
    import torch

    from peel.data import load
    from peel.training.pretrain import build_model
    from peel.training.sampling import TripleSampler

    kept = False
    try:
        from peel._allocator import keep_freed_memory
        kept = keep_freed_memory()
    except ImportError:  # a baseline checkout from before the allocator setting
        pass
    torch.set_num_threads(threads)
    data = load(data_path)
    config = method_config(data, seed, method, budget, list(overrides))
    pretrain = config.pretrain.resolved(data.count("train"), config.model.n_blocks)
    nested = pretrain.nested_blocks(config.model.n_blocks)
    l2 = pretrain.nested_l2(config.model.n_blocks) or pretrain.l2
    rng = np.random.default_rng(seed)
    sampler = TripleSampler(data.csr("train"))
    batches = []
    while len(batches) < steps + 1:
        batches += [[torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in b]
                    for b in sampler.epoch(rng, pretrain.batch_size)]
    model = build_model(data, config.model, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=pretrain.lr)

    def step(batch: list[Any]) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(*batch, l2=l2, lambda_div=0.0, nested=nested)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    step(batches[0])  # warm-up
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    losses = [step(b) for b in batches[1:steps + 1]]
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"steps": steps, "batch_size": pretrain.batch_size, "wall_per_step": wall / steps,
            "user_per_step": (after.ru_utime - before.ru_utime) / steps,
            "system_per_step": (after.ru_stime - before.ru_stime) / steps,
            "peak_rss_mib": after.ru_maxrss / 1024, "freed_memory_kept": kept, "last_loss": losses[-1],
            "model": {key: getattr(config.model, key) for key in ("item_table", "dim", "codebooks", "codewords")}}


def run_child(src: Path, extra_env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update(extra_env, PYTHONPATH=str(src), OMP_NUM_THREADS=str(args.threads))
    sets = [a for value in args.set for a in ("--set", value)]
    budget = ["--budget", args.budget] if args.budget else []
    out = subprocess.run([sys.executable, __file__, "--child", "--data", args.data, "--steps", str(args.steps),
                          "--threads", str(args.threads), "--seed", str(args.seed), "--method", args.method,
                          *budget, *sets],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the timing child ({src}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/amazon-book-sub"))
    parser.add_argument("--steps", type=int, default=0, help="timed steps per run (0 = one epoch's)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every variant, in turn")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each child")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--baseline-src", type=Path, default=None, help="another checkout's src to time too")
    parser.add_argument("--results-dir", type=Path, default=None, help="where to write (default benchmarks/results)")
    parser.add_argument("--method", default="peel", help="peel (stage a, the default) or a fixed-size method")
    parser.add_argument("--budget", default=None, help="the budget a fixed-size --method is fitted to, e.g. 5MB-eq")
    parser.add_argument("--set", action="append", default=[], help="config override section.key=value (repeatable)")
    parser.add_argument("--tag", default="", help="appended to the results' file name (e.g. the batch size)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if (args.method == "peel") != (args.budget is None):
        parser.error("--budget goes with a fixed-size --method (and only with one)")
    if args.child:
        print(json.dumps(child(args.data, args.steps, args.threads, args.seed, args.method, args.budget,
                               tuple(args.set))))
        return

    from peel.bench import write_result
    from peel.data import load

    data = load(args.data)
    config = method_config(data, args.seed, args.method, args.budget, args.set)  # refuses a bad budget or --set
    if not args.steps:
        batch = config.pretrain.resolved(data.count("train"), config.model.n_blocks).batch_size
        args.steps = -(-data.count("train") // batch)
    src = Path(__file__).resolve().parents[1] / "src"
    variants: dict[str, tuple[str, Path, dict[str, str]]] = {
        "kept": ("this checkout, freed memory kept (peel train's setting)", src, {}),
        "glibc": ("this checkout, glibc's default allocator settings", src, GLIBC_DEFAULT),
    }
    if args.baseline_src is not None:
        if not (args.baseline_src / "peel").is_dir():
            raise SystemExit(f"--baseline-src {args.baseline_src}: expected a checkout's src folder holding peel/")
        variants["baseline"] = (f"{args.baseline_src}, glibc's default allocator settings", args.baseline_src,
                                GLIBC_DEFAULT)
        # a baseline that already keeps freed memory: its peel train's setting, so code is compared with code
        variants["baseline-kept"] = (f"{args.baseline_src}, freed memory kept if it does so", args.baseline_src, {})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    load_before = os.getloadavg()[0]
    for round_ in range(args.repeats):
        for name, (_, path, env) in variants.items():
            runs[name].append(run_child(path, env, args))
            print(f"round {round_ + 1}/{args.repeats} {name}: {runs[name][-1]['wall_per_step']:.3f} s a step",
                  flush=True)
    median = {name: {key: statistics.median(r[key] for r in rs)
                     for key in ("wall_per_step", "user_per_step", "system_per_step", "peak_rss_mib")}
              for name, rs in runs.items()}
    reference = "baseline" if "baseline" in variants else "glibc"
    rows = []
    for name, (label, _, _) in variants.items():
        m = median[name]
        rows.append(f"| {name} | {label} | {m['wall_per_step']:.3f} | "
                    f"{m['wall_per_step'] / median[reference]['wall_per_step']:.2f} | {m['user_per_step']:.3f} | "
                    f"{m['system_per_step']:.3f} | {m['peak_rss_mib']:.0f} |")
    what = "the default config" if args.method == "peel" else \
        f"{args.method} fitted to {args.budget}" + "".join(f", {a}" for a in args.set)
    table = (f"Stage-a training steps on {data.name} with {what} (batch {runs['kept'][0]['batch_size']}, "
             f"{args.steps} timed steps a run after one warm-up, {args.threads} torch threads, "
             f"{args.repeats} rounds in turn; medians; load average {load_before:.1f} at the start).\n\n"
             f"| variant | what | wall s / step | vs {reference} | user s / step | system s / step | peak RSS MiB |\n"
             "|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    payload = {"dataset": data.name, "method": args.method, "budget": args.budget, "overrides": args.set,
               "steps": args.steps, "threads": args.threads, "repeats": args.repeats,
               "load_average_at_start": load_before,
               "variants": {name: {"label": label, "runs": runs[name], "median": median[name]}
                            for name, (label, _, _) in variants.items()}}
    parts = ["step_time", data.name, *([args.method] if args.method != "peel" else []), *filter(None, [args.tag])]
    name = "_".join(parts)
    path = write_result(name, payload, table, results_dir=args.results_dir)
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
