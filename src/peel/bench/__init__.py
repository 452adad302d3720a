"""Helpers for benchmark scripts: machine description and atomic result files (JSON + markdown)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from peel._io import write_json_atomic, write_text_atomic

RESULTS_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "results"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        import numpy
        import torch

        info["numpy"] = numpy.__version__
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # the device benchmarks run without torch
        pass
    try:
        with open("/proc/meminfo") as fh:
            info["memory_gib"] = round(int(fh.readline().split()[1]) / 2**20, 1)
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
            if names:
                info["cpu_model"] = names[0]
    except OSError:
        pass
    return info


def timestamp() -> str:
    """Now, to the second, as result files record it."""
    return _dt.datetime.now().isoformat(timespec="seconds")


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def added_rows(name: str, fresh: list[dict[str, Any]], key: Callable[[dict[str, Any]], Hashable],
               *, results_dir: Path | None = None) -> dict[str, Any]:
    """``rows`` and ``commands`` of the results ``name`` with ``fresh`` added: an earlier row of the same ``key``
    is replaced, the others kept, and this command added to the commands that measured them."""
    path = (results_dir or RESULTS_DIR) / f"{name}.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    keys = {key(row) for row in fresh}
    return {"rows": [row for row in previous.get("rows", []) if key(row) not in keys] + fresh,
            "commands": list(dict.fromkeys([*previous.get("commands", []), command_line()]))}


def write_result(name: str, payload: dict[str, Any], table: str, *, results_dir: Path | None = None,
                 keep_meta: bool = False) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` with the command, machine and date; ``keep_meta``: a rewrite of
    existing results (a note added, a table redrawn) keeps the command, machine and date they were measured by."""
    results_dir = results_dir or RESULTS_DIR
    meta = {"command": command_line(), "date": timestamp(),
            "machine": machine_info()}
    if keep_meta:
        measured = json.loads((results_dir / f"{name}.json").read_text())
        meta = {key: measured[key] for key in meta}
    write_json_atomic(results_dir / f"{name}.json", {**meta, **payload})
    machine = meta["machine"]
    md = (f"# {name}\n\n{table.strip()}\n\n"
          f"- command: `{meta['command']}`\n- date: {meta['date']}\n"
          f"- machine: {machine.get('cpu_model', machine['processor'])}, {machine['cpus']} CPUs, "
          f"{machine.get('memory_gib', '?')} GiB, Python {machine['python']}, torch {machine.get('torch', '-')}\n")
    write_text_atomic(results_dir / f"{name}.md", md)
    return results_dir / f"{name}.json"
