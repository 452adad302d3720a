"""Evaluation rows of a finished run, kept in its directory, so that a benchmark evaluating it again (e.g.
``compare.py --carry`` after one more run landed) scores only the runs that changed.

An entry's key hashes everything the rows depend on: the run's files (all but its log, summary, checkpoints
and this cache), the data's identity, every source file of the installed peel package and the evaluation's
arguments. Any change to one of them is a miss, so a cached row is always the row a fresh evaluation
gives on this machine. Rows are JSON, their per-user arrays one npz (never pickled).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from peel._io import atomic_path, write_json_atomic
from peel.errors import PeelError
from peel.run_layout import RunLayout

CACHE_VERSION = 1
_SKIPPED_NAMES = {"log.txt", "summary.json"}
_SKIPPED_SUFFIXES = {".pt", ".tmp"}


@functools.cache
def source_digest() -> str:
    """sha256 over every .py file of the installed peel package (path and content)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def run_digest(root: Path) -> str:
    """sha256 over the files of a run directory that a model is loaded from (path and content)."""
    cache = RunLayout(root).evaluation_cache
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if (path.name in _SKIPPED_NAMES or path.suffix in _SKIPPED_SUFFIXES or cache in path.parents):
            continue
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def cached_rows(root: str | Path, *, data_identity: Any, arguments: dict[str, Any],
                compute: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``compute()``'s rows for the run at ``root``, from its cache when nothing they depend on changed."""
    root = Path(root)
    key = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "run": run_digest(root), "source": source_digest(),
                                     "data": data_identity, "arguments": arguments},
                                    sort_keys=True, default=str).encode()).hexdigest()[:32]
    directory = RunLayout(root).evaluation_cache
    rows_path, arrays_path = directory / f"{key}.json", directory / f"{key}.npz"
    if rows_path.exists():
        return _load(rows_path, arrays_path)
    rows = compute()
    directory.mkdir(exist_ok=True)
    arrays = {f"{i}/{name}": np.asarray(values) for i, row in enumerate(rows)
              for name, values in (row.get("per_user") or {}).items()}
    with atomic_path(arrays_path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    # the rows last: an entry whose JSON exists is whole
    write_json_atomic(rows_path, [{k: _plain(v) for k, v in row.items() if k != "per_user"}
                                  | {"per_user": sorted(row["per_user"])} if "per_user" in row else
                                  {k: _plain(v) for k, v in row.items()} for row in rows])
    return rows


def _load(rows_path: Path, arrays_path: Path) -> list[dict[str, Any]]:
    try:
        rows = json.loads(rows_path.read_text())
        with np.load(arrays_path, allow_pickle=False) as z:
            for i, row in enumerate(rows):
                if "per_user" in row:
                    row["per_user"] = {name: z[f"{i}/{name}"] for name in row["per_user"]}
    except (OSError, ValueError, KeyError) as exc:
        raise PeelError(f"{rows_path}: a damaged evaluation cache entry ({exc}); delete "
                        f"{rows_path.parent} to evaluate again") from exc
    return rows


def _plain(value: Any) -> Any:
    """A JSON value for a row's value (numpy scalars and arrays become numbers and lists)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
