"""Where a run's data came from and its identity: written to the run's data.json, checked on resume, and
used by ``peel evaluate`` and ``peel export`` to load the same data again."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from peel.data.interactions import Interactions
from peel.errors import PeelError


def data_source(data: Interactions, path: str | Path | None) -> dict[str, Any]:
    """How ``peel evaluate`` finds the data again (a path, or the synthetic generator's parameters) and
    its identity, which a resumed run checks: the split files' sha256 or the generator's parameters."""
    split = next((e for e in data.report if e.get("step") == "split"), None)
    if path is not None:
        path = Path(path).resolve()
        source = {"source": str(path), "name": data.name, "identity": _file_identity(path)}
    else:
        synthetic = next((e for e in data.report if e.get("step") == "synthetic"), None)
        if synthetic is None:
            raise PeelError("in-memory data needs a path to be recorded in the run; save it with save_presplit")
        identity = {f"synthetic {k}": v for k, v in synthetic.items() if k != "step"}
        identity |= {f"split {k}": v for k, v in (split or {}).items() if k != "step"}
        source = {"source": "synthetic", "name": data.name, "synthetic": synthetic, "identity": identity}
    if split:
        source["split"] = split
    return source


def _file_identity(path: Path) -> dict[str, str]:
    from peel.data.stats import file_checksums

    if path.is_dir():
        return {f"{key.removesuffix('_sha256')}.txt sha256": v for key, v in file_checksums(path).items()}
    return {f"{path.name} sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def data_difference(recorded: dict[str, Any], source: dict[str, Any]) -> str | None:
    """What differs between a run's recorded data and ``source`` (None: the same data)."""
    if "identity" not in recorded:  # a run from before identities were recorded: compare where it came from
        same = all(recorded.get(k) == source.get(k) for k in ("source", "synthetic"))
        return None if same else f"source {recorded.get('source')} differs from {source['source']}"
    old, new = recorded["identity"], source["identity"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key} {old.get(key)} differs from {new.get(key)}"
    return None


def load_data_source(info: dict[str, Any]) -> Interactions:
    from peel.data import load, synthetic_dataset

    if info["source"] == "synthetic":
        params = {k: v for k, v in info["synthetic"].items() if k != "step"}
        split = next((e for e in [info.get("split", {})] if e), {"seed": 2023})
        return synthetic_dataset(split_seed=split.get("seed", 2023), **params)
    return load(info["source"])
