"""Writing item bundles and users files (numpy only, so reader and writer share format.py).

Any G_v >= 1, N >= 1, d >= 1: PEEL writes one bundle per user group, RULE one global bundle, and a
fixed-size baseline (PMF, LightGCN) G_v = 1, N = 1, d = k with the single unit [(0, 0)].
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from peel._io import _umask, atomic_path
from peel.device.composed import Composition
from peel.device.format import (
    CRC_FIELD_BYTES,
    CRC_KEY,
    DTYPES,
    EQ10_READINGS,
    EQ10_SCALES,
    FORMAT,
    VERSION,
    decode_header,
    validate_header,
)
from peel.errors import BundleError
from peel.units import UNIT_DTYPES, quantize_unit


def id_tensors(prefix: str, ids: Any, n: int) -> list[tuple[str, np.ndarray]]:
    """Raw ids as int64, or (anything else) as str() in a UTF-8 blob with int64 offsets."""
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise BundleError(f"{prefix} ids must have shape ({n},), got {ids.shape}")
    if ids.dtype.kind in "iu":
        if ids.size and ids.dtype.kind == "u" and ids.max() > np.iinfo(np.int64).max:
            raise BundleError(f"{prefix} ids exceed the int64 range")
        as_int = ids.astype(np.int64)
        if len(np.unique(as_int)) != n:
            raise BundleError(f"{prefix} ids repeat")
        return [(f"{prefix}_ids", as_int)]
    encoded = [str(x).encode("utf-8") for x in ids.tolist()]
    if len(set(encoded)) != n:
        raise BundleError(f"{prefix} ids repeat")
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return [(f"{prefix}_ids_offsets", offsets), (f"{prefix}_ids_utf8", blob)]


def _finite_f32(arr: Any, what: str, ndim: int) -> np.ndarray:
    out = np.asarray(arr, dtype=np.float32)
    if out.ndim != ndim:
        raise BundleError(f"{what} must be {ndim}-dimensional, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise BundleError(f"{what} hold non-finite values")
    return out


def _metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    created = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    return {"created": created, **(metadata or {})}


def write_items_bundle(path: str | os.PathLike[str], *, blocks: Any, item_group: Any, unit_order: Any,
                       item_ids: Any = None, eq10: str = "masked", eq10_scale: str = "sqrt",
                       n_item_groups: int | None = None, unit_dtype: str = "f32",
                       metadata: dict[str, Any] | None = None) -> int:
    """Write an item bundle; returns its size in bytes.

    ``blocks``: (items, N, d) block vectors by internal item id; ``item_group``: item group of every
    item; ``unit_order``: (units, 2) rows (item group, block), the whole order or a prefix of it whose
    first G_v rows name every item group once; ``item_ids``: raw ids by internal id (default 0..n-1);
    ``unit_dtype``: "f32", or "q8" (each unit as int8 times one float32 scale, peel.units.quantize_unit).
    Items are stored contiguous per item group, by internal id within a group.
    """
    if unit_dtype not in UNIT_DTYPES:
        raise BundleError(f"unit_dtype must be one of {UNIT_DTYPES}, got {unit_dtype!r}")
    blocks = _finite_f32(blocks, "blocks", 3)
    n_items, n_blocks, block_dim = blocks.shape
    if min(blocks.shape) == 0:
        raise BundleError(f"blocks must be (items, N, d) with all sizes >= 1, got {blocks.shape}")
    item_group = np.asarray(item_group)
    if item_group.shape != (n_items,) or item_group.dtype.kind not in "iu" or item_group.min() < 0:
        raise BundleError(f"item_group must be {n_items} non-negative integers")
    g_v = int(item_group.max()) + 1 if n_item_groups is None else int(n_item_groups)
    if item_group.max() >= g_v:
        raise BundleError(f"item_group values must lie in [0, {g_v})")
    if eq10 not in EQ10_READINGS:
        raise BundleError(f"eq10 must be one of {EQ10_READINGS}, got {eq10!r}")
    if eq10_scale not in EQ10_SCALES:
        raise BundleError(f"eq10_scale must be one of {EQ10_SCALES}, got {eq10_scale!r}")
    order = np.asarray(unit_order, dtype=np.int64).reshape(-1, 2)
    if order.size and (order.min() < 0 or order[:, 0].max() >= g_v or order[:, 1].max() >= n_blocks):
        raise BundleError(f"unit_order rows must be (item group < {g_v}, block < {n_blocks})")
    item_order = np.argsort(item_group, kind="stable").astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(item_group, minlength=g_v))]).astype(np.int64)
    units = [(g, n, _unit_payload(blocks[item_order[bounds[g]: bounds[g + 1]], n, :], unit_dtype))
             for g, n in order.tolist()]
    ids = np.arange(n_items) if item_ids is None else np.asarray(item_ids)
    if ids.shape != (n_items,):
        raise BundleError(f"item ids must have shape ({n_items},), got {ids.shape}")
    tensors = [("item_order", item_order), *id_tensors("item", ids[item_order], n_items)]
    dims = {"n_items": n_items, "n_item_groups": g_v, "n_blocks": n_blocks, "block_dim": block_dim,
            "embedding_dim": n_blocks * block_dim}
    extra = {"eq10": eq10, "eq10_scale": eq10_scale, "item_group_bounds": bounds.tolist(),
             **({"unit_dtype": unit_dtype} if unit_dtype != "f32" else {})}
    return write_container(path, kind="items", dims=dims, tensors=tensors, units=units, extra=extra,
                           metadata=_metadata(metadata))


def _unit_payload(values: np.ndarray, unit_dtype: str) -> np.ndarray:
    """A unit's bytes: |V_g| x d little-endian float32, or (q8) |V_g| x d int8 then the unit's float32 scale."""
    if unit_dtype == "f32":
        return _little_endian(np.asarray(values, dtype="<f4")).view(np.uint8).reshape(-1)
    q, scale = quantize_unit(values)  # finite: checked by write_items_bundle
    return np.concatenate([q.view(np.uint8).reshape(-1), np.array([scale], dtype="<f4").view(np.uint8)])


def write_composed_bundle(path: str | os.PathLike[str], *, composition: Composition, tensors: dict[str, Any],
                          n_items: int, item_ids: Any = None, metadata: dict[str, Any] | None = None) -> int:
    """Write a composed item bundle (DLRM-CE, LightRec); returns its size in bytes.

    ``tensors``: the composition's tensors by name (:meth:`Composition.tensor_shapes`), e.g. the
    quotient and remainder tables, or the codebooks and the packed codes. One item group, one block of
    D dims, no units: a device scores from these tensors (peel.device.composed).
    """
    arrays = []
    for name, dtype, shape in composition.tensor_shapes(n_items):
        if name not in tensors:
            raise BundleError(f"a {composition.type} bundle needs the tensor {name!r}")
        arr = _finite_f32(tensors[name], name, len(shape)) if dtype == "F32" else np.asarray(tensors[name])
        if arr.shape != shape or (dtype == "U8" and arr.dtype != np.uint8):
            raise BundleError(f"tensor {name!r} must be {dtype} of shape {list(shape)}, "
                              f"got {arr.dtype} {list(arr.shape)}")
        arrays.append((name, arr))
    if unknown := set(tensors) - {name for name, _ in arrays}:
        raise BundleError(f"unknown tensor(s) {sorted(unknown)} for a {composition.type} bundle")
    item_order = np.arange(n_items, dtype=np.int64)
    ids = np.arange(n_items) if item_ids is None else np.asarray(item_ids)
    dims = {"n_items": n_items, "n_item_groups": 1, "n_blocks": 1, "block_dim": composition.dim,
            "embedding_dim": composition.dim}
    extra = {"eq10": "masked", "eq10_scale": "none", "item_group_bounds": [0, n_items],
             "composition": composition.to_header()}
    return write_container(path, kind="items", dims=dims, metadata=_metadata(metadata), extra=extra,
                           tensors=[("item_order", item_order), *id_tensors("item", ids, n_items), *arrays])


def write_users_file(path: str | os.PathLike[str], *, user_vectors: Any, user_group: Any, n_items: int,
                     user_ids: Any = None, history: tuple[Any, Any] | None = None, n_user_groups: int | None = None,
                     metadata: dict[str, Any] | None = None) -> int:
    """Write a users file; returns its size. ``history`` = (indptr, internal item ids), CSR by user."""
    vectors = _finite_f32(user_vectors, "user vectors", 2)
    n_users, dim = vectors.shape
    groups = np.asarray(user_group)
    if n_users == 0 or dim == 0:
        raise BundleError(f"user vectors must be (users, D) with both >= 1, got {vectors.shape}")
    if groups.shape != (n_users,) or groups.dtype.kind not in "iu" or groups.min() < 0:
        raise BundleError(f"user_group must be {n_users} non-negative integers")
    g_u = int(groups.max()) + 1 if n_user_groups is None else int(n_user_groups)
    if groups.max() >= g_u:
        raise BundleError(f"user_group values must lie in [0, {g_u})")
    ids = np.arange(n_users) if user_ids is None else user_ids
    tensors = [("user_vectors", vectors), ("user_group", groups.astype(np.int64)), *id_tensors("user", ids, n_users)]
    if history is not None:
        indptr, items = (np.asarray(a, dtype=np.int64) for a in history)
        if indptr.shape != (n_users + 1,) or indptr[0] != 0 or indptr[-1] != len(items) or (np.diff(indptr) < 0).any():
            raise BundleError(f"history indptr must rise from 0 to {len(items)} over {n_users + 1} entries")
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise BundleError(f"history item ids must lie in [0, {n_items})")
        tensors += [("history_indptr", indptr), ("history_items", items)]
    dims = {"n_users": n_users, "n_user_groups": g_u, "embedding_dim": dim, "n_items": int(n_items)}
    return write_container(path, kind="users", dims=dims, tensors=tensors, metadata=_metadata(metadata))


# ---------------------------------------------------------------------- the container
def encode_header(fields: dict[str, Any]) -> bytes:
    """``{"header_crc32":"hhhhhhhh",`` + the rest, padded with spaces so 8 + N is a multiple of 8."""
    body = json.dumps(fields, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    rest = body[1:]
    rest += b" " * (-(8 + CRC_FIELD_BYTES + len(rest)) % 8)
    return CRC_KEY + f"{zlib.crc32(rest):08x}".encode() + b'",' + rest


def write_container(path: str | os.PathLike[str], *, kind: str, dims: dict[str, int],
                    tensors: Sequence[tuple[str, np.ndarray]], units: Sequence[tuple[int, int, np.ndarray]] = (),
                    extra: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None) -> int:
    """Write one bundle atomically; returns its size in bytes. Arrays must already have the spec's dtypes."""
    payloads: list[np.ndarray] = []
    tensor_entries, unit_entries, position = [], [], 0
    for name, arr in tensors:
        arr = _little_endian(arr)
        code = next(k for k, v in DTYPES.items() if v == arr.dtype)
        tensor_entries.append({"name": name, "dtype": code, "shape": list(arr.shape),
                               "data_offsets": [position, position + arr.nbytes], "crc32": _crc(arr)})
        position += arr.nbytes
        payloads.append(arr)
    for group, block, arr in units:  # each unit's payload as bytes (_unit_payload)
        unit_entries.append({"item_group": int(group), "block": int(block),
                             "data_offsets": [position, position + arr.nbytes], "crc32": _crc(arr)})
        position += arr.nbytes
        payloads.append(arr)
    fields: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kind": kind, "dims": dims, **(extra or {}),
                              "tensors": tensor_entries, "metadata": metadata or {}}
    if kind == "items":
        fields["units"] = unit_entries
    header = encode_header(fields)
    validate_header(decode_header(header, str(path)), str(path), data_start=8 + len(header))  # never write junk
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(len(header).to_bytes(8, "little"))
            fh.write(header)
            for arr in payloads:
                if arr.size:
                    fh.write(memoryview(arr).cast("B"))
        tmp.chmod(0o666 & ~_umask())  # a bundle is meant to be shipped: the usual file permissions
    return 8 + len(header) + position


def _little_endian(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))


def _crc(arr: np.ndarray) -> int:
    return zlib.crc32(memoryview(arr).cast("B")) if arr.size else 0
