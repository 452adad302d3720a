"""Stage-a step time: the wall and CPU time of LightGCN training steps with the default config, on one dataset.

Each variant runs in a fresh child process (the allocator setting is process-wide), in turn A B C A B C ...
for ``--repeats`` rounds, so a drift in the machine's speed touches every variant alike; medians are reported.
A child loads the data, builds stage a's model and optimizer, runs one warm-up step, then times ``--steps``
steps (default: one epoch's worth) of the default loss (nested prefixes with their L2).

Variants:
- ``kept``: this checkout, with freed memory kept in the process (peel._allocator, what ``peel train`` does);
- ``glibc``: this checkout, glibc's default allocator settings (large arrays unmapped on free);
- with ``--baseline-src DIR``, ``baseline``: another checkout's ``src`` (e.g. a ``git worktree`` of an older
  commit), glibc's defaults, the same steps.

    python benchmarks/step_time.py --data ../shared/data/amazon-book-sub
    git worktree add /tmp/peel-old 5207293
    python benchmarks/step_time.py --data ../shared/data/amazon-book-sub --baseline-src /tmp/peel-old/src

Results: benchmarks/results/step_time_<dataset>.{json,md}.
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


def child(data_path: str, steps: int, threads: int, seed: int) -> dict[str, Any]:
    """Time ``steps`` stage-a steps in this process; the figures as a dict."""
    import numpy as np
    import torch

    from peel.config import PeelConfig
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
    config = PeelConfig(seed=seed)
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
            "peak_rss_mib": after.ru_maxrss / 1024, "freed_memory_kept": kept, "last_loss": losses[-1]}


def run_child(src: Path, extra_env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update(extra_env, PYTHONPATH=str(src), OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run([sys.executable, __file__, "--child", "--data", args.data, "--steps", str(args.steps),
                          "--threads", str(args.threads), "--seed", str(args.seed)],
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
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.data, args.steps, args.threads, args.seed)))
        return

    from peel.bench import write_result
    from peel.config import PeelConfig
    from peel.data import load

    data = load(args.data)
    if not args.steps:
        batch = PeelConfig().pretrain.resolved(data.count("train"), PeelConfig().model.n_blocks).batch_size
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
    table = (f"Stage-a training steps on {data.name} with the default config (batch {runs['kept'][0]['batch_size']}, "
             f"{args.steps} timed steps a run after one warm-up, {args.threads} torch threads, "
             f"{args.repeats} rounds in turn; medians; load average {load_before:.1f} at the start).\n\n"
             f"| variant | what | wall s / step | vs {reference} | user s / step | system s / step | peak RSS MiB |\n"
             "|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    payload = {"dataset": data.name, "steps": args.steps, "threads": args.threads, "repeats": args.repeats,
               "load_average_at_start": load_before,
               "variants": {name: {"label": label, "runs": runs[name], "median": median[name]}
                            for name, (label, _, _) in variants.items()}}
    path = write_result(f"step_time_{data.name}", payload, table, results_dir=args.results_dir)
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
