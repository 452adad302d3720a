"""Keep freed memory in the process: training re-allocates the same large arrays every step.

glibc serves an allocation above 32 MiB (a nodes x D embedding on amazon-book-sub is 55 MB) with a
fresh ``mmap`` and unmaps it on free, so every training step faults the same pages in again: on
amazon-book-sub stage a that was a third of its CPU time, as system time. Serving every allocation
from the heap and never trimming it removes those faults (a stage-a step in about 0.46x the wall time:
benchmarks/results/step_time_amazon-book-sub.md) at the price of a higher resident peak, since freed
memory is kept for reuse rather than returned to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc malloc.h
# a user's own glibc malloc settings win over ours
USER_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc to serve large allocations from the heap and keep freed memory; True when in effect.

    Process-wide and once per process. Does nothing (False) off Linux, without glibc's ``mallopt``,
    or when the environment sets glibc's malloc tunables (``USER_SETTINGS``): then those apply.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    log.debug("allocator: large allocations from the heap, freed memory kept: %s", _applied)
    return _applied
