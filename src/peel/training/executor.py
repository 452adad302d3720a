"""Executors for stage b: user groups are independent tasks, run here or as Ray tasks; and the thread limit
a whole run keeps to."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from peel.errors import ConfigError

EXECUTORS = ("local", "ray")


@contextlib.contextmanager
def thread_limit(threads: int) -> Iterator[None]:
    """Run the block on at most ``threads`` compute threads: torch's intra-op pool and numpy's BLAS (0: the
    libraries' defaults, one thread a core). A job given one core of a shared machine must not start one
    thread a core: its threads and the other jobs' then take turns at every parallel region's barrier (beside
    one other such job on 2 cores, an epoch of LightRec at amazon-book-sub's 25MB-eq took 577 s at torch's
    default of two threads against 84 s at one, one of AutoEmb's retraining 24.5 s against 3.6 s). The
    previous limits come back after the block."""
    if threads <= 0:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def run_tasks(fn: Callable[[Any], Any], tasks: Sequence[Any], *, executor: str = "local",
              cpus_per_task: int = 1, on_result: Callable[[Any], None] | None = None,
              progress: bool = False, desc: str = "user groups") -> list[Any]:
    """Map ``fn`` over ``tasks`` in order; ``on_result`` sees each result as it arrives (e.g. to save it).

    'ray' connects to the cluster in RAY_ADDRESS if set, else starts a local one.
    """
    if executor == "local":
        results = []
        iterator: Any = tasks
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(tasks, desc=desc, unit="group")
        for task in iterator:
            result = fn(task)
            if on_result is not None:
                on_result(result)
            results.append(result)
        return results
    if executor == "ray":
        return _run_ray(fn, tasks, cpus_per_task=cpus_per_task, on_result=on_result)
    raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")


def _run_ray(fn: Callable[[Any], Any], tasks: Sequence[Any], *, cpus_per_task: int,
             on_result: Callable[[Any], None] | None) -> list[Any]:
    try:
        import ray
    except ImportError:
        raise ConfigError("executor 'ray' needs the ray extra: pip install -e '.[ray]'") from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 **({} if address else {"num_cpus": os.cpu_count()}))
    remote = ray.remote(num_cpus=cpus_per_task)(fn)
    pending = {remote.remote(task): i for i, task in enumerate(tasks)}
    results: list[Any] = [None] * len(tasks)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            index = pending.pop(ref)
            results[index] = ray.get(ref)
            if on_result is not None:
                on_result(results[index])
    return results
