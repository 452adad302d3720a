"""Write device bundles: group_<g>.peelb per user group, users.peelb and index.json, for a PEEL run
(:func:`export_peel`) or a fixed-size model (:func:`export_fixed`); ``peel.methods.export_run`` picks
the one a run's method needs.

Each bundle holds its user group's units in importance order (methods.md §9) with the blocks the
device scores with (``device.blocks``, by default ``raw``: the fine-tuned table as is; ``transformed``
folds BatchNorm + tanh in). With ``max_budget`` only the prefix of units that fits it is written. The
directory is built aside and renamed into place.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

import numpy as np

import peel
from peel._io import atomic_directory, write_json_atomic
from peel.budget import BYTES_PER_FLOAT, Budget, device_bytes
from peel.data.interactions import Interactions
from peel.device.composed import Composition
from peel.device.directory import INDEX_FORMAT, INDEX_NAME, INDEX_VERSION, USERS_NAME, group_file
from peel.device.writer import write_composed_bundle, write_items_bundle, write_users_file
from peel.errors import PeelError
from peel.run import TrainedRun
from peel.run_layout import RunLayout
from peel.units import select, unit_size


def export_peel(run: TrainedRun, out_dir: str | os.PathLike[str], *, data: Interactions,
                max_budget: Budget | None = None, groups: list[int] | None = None, history: bool = True,
                overwrite: bool = False) -> Path:
    """PEEL's export: one bundle per user group, its units in importance order."""
    _check_data(run, data)
    n_groups = len(run.groups)
    chosen = list(range(n_groups)) if groups is None else _check_groups(groups, n_groups)
    out = Path(out_dir)
    with atomic_directory(out, overwrite=overwrite, inputs=_inputs(run.path)) as tmp:
        entries = [_write_group(run, data, g, tmp, max_budget) for g in chosen]
        train = data.csr("train")
        users_bytes = write_users_file(
            tmp / USERS_NAME, user_vectors=run.user_vectors(), user_group=run.user_group, n_items=data.n_items,
            user_ids=data.user_ids, n_user_groups=n_groups, history=(train.indptr, train.indices) if history else None,
            metadata=_metadata(run, data, None))
        d, m = run.config.device, run.config.model
        write_json_atomic(tmp / INDEX_NAME, _index(
            run.path, data, device={"eq10": d.eq10, "eq10_scale": d.eq10_scale, "blocks": d.blocks,
                                    "unit_dtype": d.unit_dtype},
            n_user_groups=n_groups, n_item_groups=len(run.layout.item_group_sizes), n_blocks=m.n_blocks,
            block_dim=m.block_dim, budget=max_budget, entries=entries, users_bytes=users_bytes, history=history))
    return out


def _inputs(path: Path) -> list[Path]:
    """The run directory and its dataset's path: an export must not replace or nest in either."""
    source = RunLayout(path).read_data_source().get("source")
    return [path] + ([Path(source)] if source and source != "synthetic" else [])


def _check_data(run: TrainedRun, data: Interactions) -> None:
    if (data.n_items, data.n_users) != (len(run.item_group), len(run.user_group)):
        raise PeelError(f"dataset {data.name!r} has {data.n_users} users and {data.n_items} items, the run "
                        f"{run.path} was trained on {len(run.user_group)} users and {len(run.item_group)} items")


def _check_groups(groups: list[int], n_groups: int) -> list[int]:
    bad = [g for g in groups if not isinstance(g, int | np.integer) or not 0 <= g < n_groups]
    if bad or not groups:
        raise PeelError(f"groups must be user groups in [0, {n_groups}), got {list(groups)}")
    return sorted({int(g) for g in groups})


def _metadata(run: TrainedRun, data: Interactions, group: int | None) -> dict[str, Any]:
    return {"run": str(run.path), "user_group": group, "dataset": data.name,
            "created": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
            "blocks": run.config.device.blocks, "user_vector": run.config.device.user_vector,
            "peel_version": peel.__version__}


def _write_group(run: TrainedRun, data: Interactions, group: int, out: Path, budget: Budget | None) -> dict[str, Any]:
    layout = run.layout
    order = run.unit_order(group)
    full = layout.full_bytes()
    stored = order if budget is None else order[: select(order, layout, budget.bytes).n_kept]
    size = write_items_bundle(out / group_file(group), blocks=run.blocks(group), item_group=run.item_group,
                              unit_order=stored, item_ids=data.item_ids, eq10=run.config.device.eq10,
                              eq10_scale=run.config.device.eq10_scale, unit_dtype=run.config.device.unit_dtype,
                              n_item_groups=len(layout.item_group_sizes), metadata=_metadata(run, data, group))
    units = int(layout.unit_bytes(stored).sum())
    return {"user_group": group, "file": group_file(group), "users": int(len(run.groups[group].users)),
            "units_stored": len(stored), "units_total": len(order),
            "minimum_bytes": layout.minimum_bytes(order), "charged_bytes_full": full,
            "charged_bytes_stored": units + layout.user_vector_bytes,
            "file_bytes": size, "overhead_bytes": size - units}


def _index(run_path: Path, data: Interactions, *, device: dict[str, str], n_user_groups: int, n_item_groups: int,
           n_blocks: int, block_dim: int, budget: Budget | None, entries: list[dict[str, Any]], users_bytes: int,
           history: bool) -> dict[str, Any]:
    """index.json of an export; ``device``: its eq10, eq10_scale and blocks."""
    return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "run": str(run_path), "dataset": data.name,
            "created": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(), **device,
            "n_users": data.n_users, "n_items": data.n_items, "n_user_groups": n_user_groups,
            "n_item_groups": n_item_groups, "n_blocks": n_blocks, "block_dim": block_dim,
            "max_budget": None if budget is None else {"bytes": budget.bytes, "label": budget.label},
            "users": {"file": USERS_NAME, "file_bytes": users_bytes, "history": history},
            "groups": entries,
            "total_file_bytes": users_bytes + sum(e["file_bytes"] for e in entries)}


def export_fixed(run: Path, user_vectors: np.ndarray, item_vectors: np.ndarray, out_dir: str | os.PathLike[str], *,
                 data: Interactions, method: str, history: bool = True, overwrite: bool = False,
                 composition: Composition | None = None, item_tensors: dict[str, np.ndarray] | None = None,
                 item_dims: np.ndarray | None = None, block_dim: int = 0, unit_dtype: str = "f32") -> Path:
    """A fitted model's export (``peel train --method``): one bundle, every user in user group 0.

    A full table: G_v = N = 1, d = k, charged (|V| + 1) * k * 4. With a ``composition`` (DLRM-CE,
    LightRec) the bundle holds ``item_tensors`` instead of the item vectors, and charges them. With
    ``item_dims`` (ESAPN, AutoEmb) the items of one dim form an item group holding that many dims as
    blocks of ``block_dim``, scored by Eq. 10's masked dot product with no normalizer, and every kept float
    is charged, + the user's vector. A full table with ``unit_dtype`` "q8" is stored and charged as one q8
    unit (|V| * k int8 + a float32 scale)."""
    users, items = user_vectors, item_vectors  # short names for the lines below
    if (len(users), len(items)) != (data.n_users, data.n_items):
        raise PeelError(f"dataset {data.name!r} has {data.n_users} users and {data.n_items} items, the run {run} "
                        f"was trained on {len(users)} users and {len(items)} items")
    meta = {"run": str(run), "dataset": data.name, "method": method, "peel_version": peel.__version__,
            "created": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(), "user_group": 0}
    dim = items.shape[1]
    shape = {"n_item_groups": 1, "n_blocks": 1, "block_dim": dim}
    device = {"eq10": "masked", "eq10_scale": "sqrt", "blocks": "raw", "unit_dtype": unit_dtype}
    out = Path(out_dir)
    with atomic_directory(out, overwrite=overwrite, inputs=_inputs(run)) as tmp:
        path = tmp / group_file(0)
        if composition is not None:
            size = write_composed_bundle(path, composition=composition, tensors=item_tensors or {},
                                         n_items=len(items), item_ids=data.item_ids, metadata=meta)
            unit, charged, n_units = composition.item_bytes(len(items)), composition.device_bytes(len(items)), 0
        elif item_dims is not None:
            classes = np.unique(item_dims)
            group = np.searchsorted(classes, item_dims)
            kept = classes // block_dim
            order = [(g, 0) for g in range(len(classes))] + [(g, b) for g in range(len(classes))
                                                             for b in range(1, int(kept[g]))]
            shape = {"n_item_groups": len(classes), "n_blocks": dim // block_dim, "block_dim": block_dim}
            device["eq10_scale"] = "none"
            size = write_items_bundle(path, blocks=items.reshape(len(items), dim // block_dim, block_dim),
                                      item_group=group, unit_order=order, item_ids=data.item_ids, eq10_scale="none",
                                      n_item_groups=len(classes), metadata=meta)
            unit = int(np.sum(item_dims)) * BYTES_PER_FLOAT
            charged, n_units = unit + dim * BYTES_PER_FLOAT, len(order)
        else:
            size = write_items_bundle(path, blocks=items.reshape(len(items), 1, dim),
                                      item_group=np.zeros(len(items), dtype=np.int64), unit_order=[[0, 0]],
                                      item_ids=data.item_ids, unit_dtype=unit_dtype, metadata=meta)
            unit, n_units = int(unit_size(len(items), dim, unit_dtype)), 1
            charged = device_bytes(len(items), dim, unit_dtype)
        train = data.csr("train")
        users_bytes = write_users_file(
            tmp / USERS_NAME, user_vectors=users, user_group=np.zeros(len(users), dtype=np.int64),
            n_items=data.n_items, user_ids=data.user_ids, n_user_groups=1,
            history=(train.indptr, train.indices) if history else None, metadata={**meta, "user_group": None})
        entry = {"user_group": 0, "file": group_file(0), "users": data.n_users, "units_stored": n_units,
                 "units_total": n_units, "minimum_bytes": charged, "charged_bytes_full": charged,
                 "charged_bytes_stored": charged, "file_bytes": size, "overhead_bytes": size - unit}
        write_json_atomic(tmp / INDEX_NAME, _index(run, data, device=device, **shape, n_user_groups=1, budget=None,
                                                   entries=[entry],
                                                   users_bytes=users_bytes, history=history))
    return out
