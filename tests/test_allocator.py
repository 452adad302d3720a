"""peel._allocator: large freed arrays stay in the process, so allocating one again faults no new pages.

Process-wide and irreversible, so every check runs in a child process.
"""

import json
import os
import subprocess
import sys

import pytest

CHILD = """
import json, resource, sys
import torch
from peel._allocator import keep_freed_memory
kept = keep_freed_memory()
again = keep_freed_memory()
a = torch.ones(16 * 2**20)  # 64 MiB, above glibc's largest mmap threshold (32 MiB)
faults = []
for _ in range(30):  # a training step's pattern: full-size temporaries made and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b = a * 2
    c = b + a
    del b, c
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "again": again, "faults": faults}))
"""


def _run(extra_env: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CHILD], env={**env, **extra_env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
def test_a_freed_large_array_is_reused_without_new_page_faults():
    kept = _run({})
    if not kept["kept"]:
        pytest.skip("no glibc mallopt in this process (e.g. musl)")
    assert kept["again"] is True  # once per process, the same answer
    # glibc's defaults (what a user's own MALLOC_ setting keeps): every step maps both arrays afresh
    default = _run({"MALLOC_MMAP_MAX_": "65536"})
    assert default["kept"] is False
    assert min(default["faults"][-10:]) > 0
    # kept: once the heap has settled (the first steps), a step reuses its pages. Compared with the default
    # run rather than a page count, since with transparent huge pages a fault maps 2 MiB, not 4 KiB
    assert sum(kept["faults"][-10:]) * 10 < sum(default["faults"][-10:])
