"""The bundle container (docs/bundle-format.md), version 1: header parsing, validation and writing.

numpy + stdlib only. The layout follows safetensors: an 8-byte little-endian header length N, N bytes
of UTF-8 JSON, then raw little-endian row-major tensors with no holes and no trailing bytes. Every
check below raises :class:`BundleError` naming what is wrong; numpy sees bytes only after the header
passed every check (safetensors ``Metadata::validate``).
"""

from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from peel.device.composed import Composition
from peel.errors import BundleError
from peel.units import EQ10_READINGS, EQ10_SCALES, UNIT_DTYPES, unit_size

FORMAT = "peel-bundle"
VERSION = 1
KINDS = ("items", "users")
MAX_HEADER_BYTES = 16 * 2**20
MAX_INT = 2**53  # every JSON integer lies in [0, 2^53): exact in any JSON reader
MAX_NDIM = 2  # every tensor of the spec is 1-D or 2-D
MAX_TENSORS = 6  # the longest tensor list of the spec (users file with string ids and histories)
DTYPES = {"F32": np.dtype("<f4"), "I64": np.dtype("<i8"), "U8": np.dtype("u1")}

CRC_KEY = b'{"header_crc32":"'
CRC_FIELD_BYTES = len(CRC_KEY) + 8 + 2  # '{"header_crc32":"hhhhhhhh",' is 27 bytes
_HEX = frozenset(b"0123456789abcdef")
_DIM_KEYS = {
    "items": ("n_items", "n_item_groups", "n_blocks", "block_dim", "embedding_dim"),
    "users": ("n_users", "n_user_groups", "embedding_dim", "n_items"),
}
_TOP_KEYS = {
    "items": {"header_crc32", "format", "version", "kind", "dims", "eq10", "item_group_bounds", "tensors", "units",
              "metadata"},
    "users": {"header_crc32", "format", "version", "kind", "dims", "tensors", "metadata"},
}
# absent eq10_scale = "paper" (first v1 files); composition only in a composed item bundle (DLRM-CE, LightRec);
# absent unit_dtype = "f32"
_OPTIONAL_KEYS = {"items": {"eq10_scale", "composition", "unit_dtype"}, "users": set()}
_TENSOR_KEYS = {"name", "dtype", "shape", "data_offsets", "crc32"}
_UNIT_KEYS = {"item_group", "block", "data_offsets", "crc32"}


class _ByteRange:
    """A stretch ``[begin, end)`` of the data section."""

    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class TensorEntry(_ByteRange):
    """One named tensor of the data section; ``begin``/``end`` are relative to the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int
    crc32: int


@dataclass(frozen=True)
class UnitEntry(_ByteRange):
    """Block ``block`` of every item of item group ``item_group``: a |V_g| x d float32 payload, or (q8) |V_g| x d
    int8 values followed by the unit's float32 scale."""

    item_group: int
    block: int
    begin: int
    end: int
    crc32: int


@dataclass(frozen=True)
class Header:
    """A validated header. ``data_start`` = 8 + N is where offset 0 of the data section lies."""

    kind: str
    dims: dict[str, int]
    tensors: tuple[TensorEntry, ...]
    units: tuple[UnitEntry, ...] = ()
    eq10: str = ""
    eq10_scale: str = "paper"
    item_group_bounds: tuple[int, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    data_start: int = 0
    composition: Composition | None = None  # item vectors composed from tensors (then no units)
    unit_dtype: str = "f32"                 # how units store values (peel.units.UNIT_DTYPES)

    @property
    def data_bytes(self) -> int:
        """Length of the data section the header declares."""
        last = self.units[-1] if self.units else self.tensors[-1]
        return last.end

    @property
    def file_bytes(self) -> int:
        return self.data_start + self.data_bytes

    def tensor(self, name: str) -> TensorEntry | None:
        return next((t for t in self.tensors if t.name == name), None)


# ---------------------------------------------------------------------- reading
def read_header(fh: BinaryIO, file_size: int, where: str) -> Header:
    """Read and validate the header of an open bundle file of ``file_size`` bytes."""
    if file_size < 8:
        raise BundleError(f"{where}: file is {file_size} bytes, shorter than the 8-byte header length")
    fh.seek(0)
    n = int.from_bytes(read_exact(fh, 8, where, "the header length"), "little")
    if n > MAX_HEADER_BYTES:
        raise BundleError(f"{where}: header length {n:,} bytes exceeds the cap of {MAX_HEADER_BYTES:,} bytes "
                          "(not a peel bundle, or corrupt)")
    if n < CRC_FIELD_BYTES + 1:
        raise BundleError(f"{where}: header length {n} bytes is too short for a peel bundle header")
    if 8 + n > file_size:
        raise BundleError(f"{where}: truncated inside the header (header declares {n:,} bytes, "
                          f"the file has {file_size - 8:,} after the length)")
    raw = read_exact(fh, n, where, "the header")
    obj = decode_header(raw, where)
    return validate_header(obj, where, data_start=8 + n)


def read_exact(fh: BinaryIO, n: int, where: str, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise BundleError(f"{where}: truncated while reading {what} ({len(data):,} of {n:,} bytes)")
    return data


def readinto_exact(fh: BinaryIO, view: memoryview, where: str, what: str) -> None:
    """Fill ``view`` (bytes) from ``fh``; a short read is a truncated file."""
    got = 0
    while got < len(view):
        k = fh.readinto(view[got:])
        if not k:
            raise BundleError(f"{where}: truncated while reading {what} ({got:,} of {len(view):,} bytes)")
        got += k


def decode_header(raw: bytes, where: str) -> dict[str, Any]:
    """Check the header checksum, then parse the JSON (no duplicate keys, no NaN/Infinity)."""
    if raw[: len(CRC_KEY)] != CRC_KEY or raw[CRC_FIELD_BYTES - 2: CRC_FIELD_BYTES] != b'",':
        raise BundleError(f"{where}: not a peel bundle (the header must begin with '{{\"header_crc32\":\"')")
    digits = raw[len(CRC_KEY): CRC_FIELD_BYTES - 2]
    if not set(digits) <= _HEX:
        raise BundleError(f"{where}: header_crc32 must be 8 lowercase hex digits, got {digits!r}")
    stored, actual = int(digits, 16), zlib.crc32(raw[CRC_FIELD_BYTES:])
    if stored != actual:
        raise BundleError(f"{where}: header checksum mismatch (stored {stored:08x}, computed {actual:08x}): "
                          "the file is corrupt")
    try:
        obj = strict_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{where}: header is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BundleError(f"{where}: header must be a JSON object")
    return obj


def strict_json(text: str) -> Any:
    """``json.loads`` refusing duplicate keys and NaN/Infinity (ValueError or RecursionError on bad input)."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        keys = [k for k, _ in pairs]
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def validate_header(obj: dict[str, Any], where: str, *, data_start: int) -> Header:
    """Check every field of a parsed header (docs/bundle-format.md, "Accepted JSON")."""
    if obj.get("format") != FORMAT:
        raise BundleError(f"{where}: format must be {FORMAT!r}, got {obj.get('format')!r}")
    version = obj.get("version")
    if type(version) is not int or version != VERSION:
        raise BundleError(f"{where}: unknown bundle version {version!r}; this reader supports version {VERSION}")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise BundleError(f"{where}: kind must be one of {KINDS}, got {kind!r}")
    _exact_keys(obj, _TOP_KEYS[kind], where, "header", optional=_OPTIONAL_KEYS[kind])
    dims = _dims(obj["dims"], kind, where)
    metadata = _metadata(obj["metadata"], where)
    composition = None
    if "composition" in obj:
        composition = Composition.from_header(obj["composition"], dims["embedding_dim"], where)
        if dims["n_item_groups"] != 1 or dims["n_blocks"] != 1:
            raise BundleError(f"{where}: a composed item bundle has one item group and one block "
                              f"(n_item_groups = n_blocks = 1), got {dims['n_item_groups']} and {dims['n_blocks']}")
    tensors = tuple(_tensor(t, where, i) for i, t in enumerate(_list(obj["tensors"], where, "tensors",
                                                                     most=MAX_TENSORS)))
    _check_tensor_names(tensors, kind, dims, where, composition)
    if kind == "users":
        header = Header(kind, dims, tensors, metadata=metadata, data_start=data_start)
    else:
        if obj["eq10"] not in EQ10_READINGS:
            raise BundleError(f"{where}: eq10 must be one of {EQ10_READINGS}, got {obj['eq10']!r}")
        scale = obj.get("eq10_scale", "paper")
        if scale not in EQ10_SCALES:
            raise BundleError(f"{where}: eq10_scale must be one of {EQ10_SCALES}, got {scale!r}")
        unit_dtype = obj.get("unit_dtype", "f32")
        if unit_dtype not in UNIT_DTYPES or (composition and unit_dtype != "f32"):
            raise BundleError(f"{where}: unit_dtype must be one of {UNIT_DTYPES} (f32 in a composed bundle), "
                              f"got {unit_dtype!r}")
        bounds = _bounds(obj["item_group_bounds"], dims, where)
        most = 0 if composition else dims["n_item_groups"] * dims["n_blocks"]
        units = tuple(_unit(u, where, i) for i, u in enumerate(_list(obj["units"], where, "units", most=most)))
        if composition is None:
            _check_units(units, bounds, dims, where, unit_dtype)
        header = Header(kind, dims, tensors, units, obj["eq10"], scale, bounds, metadata, data_start, composition,
                        unit_dtype)
    _check_offsets(header, where)
    return header


def _exact_keys(obj: Any, keys: set[str], where: str, what: str, optional: set[str] | None = None) -> None:
    if not isinstance(obj, dict):
        raise BundleError(f"{where}: {what} must be a JSON object, got {type(obj).__name__}")
    missing, extra = sorted(keys - obj.keys()), sorted(obj.keys() - keys - (optional or set()))
    if missing:
        raise BundleError(f"{where}: {what} lacks required key(s) {missing}")
    if extra:
        raise BundleError(f"{where}: {what} has unknown key(s) {extra}")


def _int(value: Any, where: str, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    if type(value) is not int or not lo <= value < hi:
        raise BundleError(f"{where}: {what} must be an integer in [{lo}, {hi}), got {value!r}")
    return value


def _list(value: Any, where: str, what: str, least: int = 0, most: int = MAX_INT) -> list[Any]:
    """A JSON array of ``least`` to ``most`` entries (its length is checked before any entry is)."""
    if not isinstance(value, list):
        raise BundleError(f"{where}: {what} must be a JSON array, got {type(value).__name__}")
    if not least <= len(value) <= most:
        expected = f"exactly {least:,}" if least == most else f"{least:,} to {most:,}"
        raise BundleError(f"{where}: {what} must have {expected} entries, got {len(value):,}")
    return value


def _dims(value: Any, kind: str, where: str) -> dict[str, int]:
    keys = _DIM_KEYS[kind]
    _exact_keys(value, set(keys), where, "dims")
    dims = {k: _int(value[k], where, f"dims.{k}", lo=1) for k in keys}
    if kind == "items":
        if dims["embedding_dim"] != dims["n_blocks"] * dims["block_dim"]:
            raise BundleError(f"{where}: dims.embedding_dim {dims['embedding_dim']} != n_blocks {dims['n_blocks']} "
                              f"x block_dim {dims['block_dim']}")
        if dims["n_item_groups"] * dims["n_blocks"] >= MAX_INT:
            raise BundleError(f"{where}: dims give too many units")
    return dims


def _metadata(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(f"{where}: metadata must be a JSON object")
    for key, item in value.items():
        if item is not None and not isinstance(item, str | int | float | bool):
            raise BundleError(f"{where}: metadata.{key} must be a string, number, boolean or null")
    return value


def _offsets(value: Any, where: str, what: str) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise BundleError(f"{where}: {what}.data_offsets must be [begin, end], got {value!r}")
    begin = _int(value[0], where, f"{what}.data_offsets[0]")
    end = _int(value[1], where, f"{what}.data_offsets[1]")
    if end < begin:
        raise BundleError(f"{where}: {what}.data_offsets [{begin}, {end}] end before they begin")
    return begin, end


def _tensor(value: Any, where: str, i: int) -> TensorEntry:
    what = f"tensors[{i}]"
    _exact_keys(value, _TENSOR_KEYS, where, what)
    name, dtype = value["name"], value["dtype"]
    if not isinstance(name, str):
        raise BundleError(f"{where}: {what}.name must be a string")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise BundleError(f"{where}: {what} ({name}) dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    sizes = _list(value["shape"], where, f"{what}.shape", least=1, most=MAX_NDIM)
    shape = tuple(_int(s, where, f"{what}.shape[{j}]") for j, s in enumerate(sizes))
    begin, end = _offsets(value["data_offsets"], where, what)
    if math.prod(shape) * DTYPES[dtype].itemsize != end - begin:  # < 2^108: exact, and quick to print
        raise BundleError(f"{where}: tensor {name!r} of shape {list(shape)} and dtype {dtype} needs "
                          f"{math.prod(shape) * DTYPES[dtype].itemsize:,} bytes, its offsets span {end - begin:,}")
    return TensorEntry(name, dtype, shape, begin, end, _int(value["crc32"], where, f"{what}.crc32", hi=2**32))


_Spec = list[tuple[str, str, "tuple[int, ...] | None"]]


def _id_tensors(prefix: str, n: int) -> tuple[_Spec, _Spec]:
    """Raw ids: one int64 array, or (string ids) int64 offsets into a UTF-8 blob."""
    return [(f"{prefix}_ids", "I64", (n,))], [(f"{prefix}_ids_offsets", "I64", (n + 1,)),
                                               (f"{prefix}_ids_utf8", "U8", None)]


def expected_tensors(kind: str, dims: dict[str, int], names: list[str],
                     composition: Composition | None = None) -> _Spec:
    """The tensor list a header of ``kind`` must have, choosing the id variant and options by ``names``;
    a composed item bundle's composition tensors follow the ids."""
    if kind == "items":
        n = dims["n_items"]
        ints, strings = _id_tensors("item", n)
        composed: _Spec = list(composition.tensor_shapes(n)) if composition else []
        return [("item_order", "I64", (n,))] + (ints if "item_ids" in names else strings) + composed
    n, d = dims["n_users"], dims["embedding_dim"]
    ints, strings = _id_tensors("user", n)
    spec = [("user_vectors", "F32", (n, d)), ("user_group", "I64", (n,))] + (ints if "user_ids" in names else strings)
    if "history_indptr" in names:
        spec += [("history_indptr", "I64", (n + 1,)), ("history_items", "I64", None)]
    return spec


def _check_tensor_names(tensors: tuple[TensorEntry, ...], kind: str, dims: dict[str, int], where: str,
                        composition: Composition | None = None) -> None:
    names = [t.name for t in tensors]
    spec = expected_tensors(kind, dims, names, composition)
    if names != [s[0] for s in spec]:
        raise BundleError(f"{where}: tensors must be {[s[0] for s in spec]} in this order, got {names}")
    for t, (name, dtype, shape) in zip(tensors, spec, strict=True):
        if t.dtype != dtype:
            raise BundleError(f"{where}: tensor {name!r} must have dtype {dtype}, got {t.dtype}")
        if (shape is None and len(t.shape) != 1) or (shape is not None and t.shape != shape):
            raise BundleError(f"{where}: tensor {name!r} must have shape {list(shape) if shape else '[n]'}, "
                              f"got {list(t.shape)}")


def _bounds(value: Any, dims: dict[str, int], where: str) -> tuple[int, ...]:
    g_v, n = dims["n_item_groups"], dims["n_items"]
    entries = _list(value, where, "item_group_bounds", least=g_v + 1, most=g_v + 1)
    bounds = tuple(_int(b, where, "item_group_bounds[]") for b in entries)
    if bounds[0] != 0 or bounds[-1] != n:
        raise BundleError(f"{where}: item_group_bounds must be {g_v + 1} integers from 0 to n_items {n}")
    if any(b > c for b, c in zip(bounds, bounds[1:], strict=False)):
        raise BundleError(f"{where}: item_group_bounds must not decrease, got {list(bounds)}")
    return bounds


def _unit(value: Any, where: str, i: int) -> UnitEntry:
    what = f"units[{i}]"
    _exact_keys(value, _UNIT_KEYS, where, what)
    begin, end = _offsets(value["data_offsets"], where, what)
    group = _int(value["item_group"], where, f"{what}.item_group")
    block = _int(value["block"], where, f"{what}.block")
    return UnitEntry(group, block, begin, end, _int(value["crc32"], where, f"{what}.crc32", hi=2**32))


def _check_units(units: tuple[UnitEntry, ...], bounds: tuple[int, ...], dims: dict[str, int], where: str,
                 unit_dtype: str) -> None:
    g_v, n_blocks, d = dims["n_item_groups"], dims["n_blocks"], dims["block_dim"]

    if not g_v <= len(units) <= g_v * n_blocks:
        raise BundleError(f"{where}: a bundle holds between {g_v} (one block per item group) and {g_v * n_blocks} "
                          f"units, got {len(units)}")
    seen: set[tuple[int, int]] = set()
    for i, u in enumerate(units):
        if u.item_group >= g_v or u.block >= n_blocks:
            raise BundleError(f"{where}: units[{i}] names (item group {u.item_group}, block {u.block}) outside "
                              f"{g_v} item groups x {n_blocks} blocks")
        if (u.item_group, u.block) in seen:
            raise BundleError(f"{where}: units[{i}] repeats (item group {u.item_group}, block {u.block})")
        seen.add((u.item_group, u.block))
        size = unit_size(bounds[u.item_group + 1] - bounds[u.item_group], d, unit_dtype)
        if u.nbytes != size:
            raise BundleError(f"{where}: units[{i}] spans {u.nbytes:,} bytes, a {unit_dtype} unit of "
                              f"{bounds[u.item_group + 1] - bounds[u.item_group]:,} items x {d} dims is {size:,}")
    if len({u.item_group for u in units[:g_v]}) != g_v:
        raise BundleError(f"{where}: the first {g_v} units must hold one block of every item group")


def _check_offsets(header: Header, where: str) -> None:
    """Entries tile the data section from 0 in order: no holes, no overlaps."""
    position = 0
    for entry in (*header.tensors, *header.units):
        name = getattr(entry, "name", None) or f"unit ({entry.item_group}, {entry.block})"
        if entry.begin != position:
            raise BundleError(f"{where}: {name} begins at {entry.begin:,}, expected {position:,} "
                              "(entries must be contiguous, in order, without holes or overlaps)")
        position = entry.end


def check_file_size(header: Header, file_size: int, where: str) -> None:
    """More bytes than declared is an error; fewer is a partial download, refused when a read needs them."""
    if file_size > header.file_bytes:
        raise BundleError(f"{where}: {file_size - header.file_bytes:,} trailing bytes after the last tensor "
                          f"(header declares {header.file_bytes:,} bytes)")


def check_available(header: Header, end: int, file_size: int, where: str, what: str) -> None:
    if header.data_start + end > file_size:
        raise BundleError(f"{where}: the file is truncated: {what} needs {header.data_start + end:,} bytes, "
                          f"the file has {file_size:,}")


def read_tensors(fh: BinaryIO, header: Header, file_size: int, where: str) -> dict[str, np.ndarray]:
    """Read every (budget-independent) tensor, checking each checksum."""
    if not header.tensors:
        return {}
    check_available(header, header.tensors[-1].end, file_size, where, "the id arrays")
    fh.seek(header.data_start)
    out: dict[str, np.ndarray] = {}
    for t in header.tensors:
        arr = np.empty(t.shape, dtype=DTYPES[t.dtype])
        view = memoryview(arr).cast("B") if arr.size else memoryview(b"")
        readinto_exact(fh, view, where, f"tensor {t.name!r}")
        if zlib.crc32(view) != t.crc32:
            raise BundleError(f"{where}: checksum mismatch in tensor {t.name!r}: the file is corrupt")
        out[t.name] = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    return out


def open_file(path: str | os.PathLike[str]) -> tuple[BinaryIO, int]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the caller
        return fh, os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise BundleError(f"cannot open bundle {path}: {exc.strerror or exc}") from None
