"""An item bundle loaded up to a memory budget: only the header, the id arrays and a prefix of units are read.

The loaded units live in one preallocated float32 buffer, one row-major (|V_g|, L_g * d) matrix per item
group whose columns hold that group's units in the order they appear in the bundle. Any budget keeps a
prefix of the unit order, so within every item group it keeps the first columns: Eq. 10 for a group is
one matrix-vector product over a column prefix (a strided view, never a copy).
"""

from __future__ import annotations

import mmap
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from peel.budget import Budget, parse_budget
from peel.device.composed import composed_scores, unpack_codes
from peel.device.format import (
    DTYPES,
    Header,
    check_available,
    check_file_size,
    open_file,
    read_header,
    read_tensors,
    readinto_exact,
)
from peel.errors import BudgetError, BundleError
from peel.units import BYTES_PER_FLOAT, Selection, UnitLayout, dequantize_unit, select

if TYPE_CHECKING:
    from peel.device.recommender import Recommender

BudgetLike = Budget | int | str


@dataclass
class RawIds:
    """Raw item ids by stored position: an int64 array, or a UTF-8 blob with int64 offsets."""

    ints: np.ndarray | None
    offsets: np.ndarray | None = None
    blob: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._lookup: Any = None

    def at(self, positions: np.ndarray) -> np.ndarray:
        if self.ints is not None:
            return self.ints[positions]
        out = np.empty(len(positions), dtype=object)
        for i, p in enumerate(np.asarray(positions).tolist()):
            out[i] = self.decode(p)
        return out

    def decode(self, position: int) -> str:
        raw = self.blob[self.offsets[position]: self.offsets[position + 1]].tobytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError(f"raw id at position {position} is not valid UTF-8") from None

    def __len__(self) -> int:
        return len(self.ints) if self.ints is not None else len(self.offsets) - 1

    def positions(self, raw_ids: Any, what: str) -> np.ndarray:
        """Positions of ``raw_ids``; an id that is not stored raises BundleError naming it."""
        values = np.atleast_1d(np.asarray(raw_ids, dtype=object if self.ints is None else None))
        if self.ints is None:
            table = self._string_table()
            keys = [str(v) for v in values.tolist()]
            missing = [k for k in keys if k not in table]
            if missing:
                raise BundleError(f"unknown {what} id(s) {missing[:5]} ({len(missing)} not in this bundle)")
            return np.fromiter((table[k] for k in keys), dtype=np.int64, count=len(keys))
        values = _as_int64(values, what)
        order, sorted_ids = self._int_table()
        at = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
        found = sorted_ids[at] == values
        if not found.all():
            raise BundleError(f"unknown {what} id(s) {values[~found][:5].tolist()} "
                              f"({int((~found).sum())} not in this bundle)")
        return order[at]

    def _int_table(self) -> tuple[np.ndarray, np.ndarray]:
        if self._lookup is None:
            order = np.argsort(self.ints, kind="stable")
            sorted_ids = self.ints[order]
            if len(sorted_ids) > 1 and (sorted_ids[1:] == sorted_ids[:-1]).any():
                raise BundleError("the bundle repeats a raw id")
            self._lookup = (order, sorted_ids)
        return self._lookup

    def _string_table(self) -> dict[str, int]:
        if self._lookup is None:
            table = {self.decode(p): p for p in range(len(self))}
            if len(table) != len(self):
                raise BundleError("the bundle repeats a raw id")
            self._lookup = table
        return self._lookup


def _as_int64(values: np.ndarray, what: str) -> np.ndarray:
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    try:
        if any(isinstance(v, bool | float) for v in values.tolist()):
            raise TypeError
        return np.array([int(v) for v in values.tolist()], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise BundleError(f"{what} ids of this bundle are integers, got {values[:5].tolist()}") from None


def read_ids(tensors: dict[str, np.ndarray], prefix: str, n: int, where: str) -> RawIds:
    if f"{prefix}_ids" in tensors:
        return RawIds(tensors[f"{prefix}_ids"])
    offsets, blob = tensors[f"{prefix}_ids_offsets"], tensors[f"{prefix}_ids_utf8"]
    if offsets[0] != 0 or offsets[-1] != len(blob) or (np.diff(offsets) < 0).any():
        raise BundleError(f"{where}: {prefix}_ids_offsets must rise from 0 to the blob length {len(blob)}")
    return RawIds(None, offsets, blob)


class Bundle:
    """One user group's item bundle, loaded up to a budget. Open it with :meth:`Bundle.open`."""

    def __init__(self, *, path: Path, header: Header, item_order: np.ndarray, item_ids: RawIds,
                 units: LoadedUnits, n_loaded: int, budget: Budget,
                 bytes_read: int, composed: dict[str, np.ndarray] | None = None) -> None:
        self.path = path
        self.header = header
        self.item_order = item_order          # internal item id at each stored position
        self.item_ids = item_ids              # raw item ids by stored position
        self._matrices = units.matrices       # per item group: (|V_g|, L_g * d) loaded columns (int8 for q8)
        self._scales = units.scales           # per item group (q8): (L_g,) float32 scale of each loaded unit
        self._slots = units.slots             # per item group: block index of each loaded column group
        self.n_units_loaded = n_loaded
        self.budget = budget                  # the budget the bundle was opened at
        self.bytes_read = bytes_read          # bytes actually read from the file
        self._inverse: np.ndarray | None = None
        d = header.dims
        self.n_items, self.n_item_groups = d["n_items"], d["n_item_groups"]
        self.n_blocks, self.block_dim, self.embedding_dim = d["n_blocks"], d["block_dim"], d["embedding_dim"]
        self.eq10 = header.eq10
        self.metadata = header.metadata
        self.item_group_bounds = np.asarray(header.item_group_bounds, dtype=np.int64)
        self.unit_order = np.array([[u.item_group, u.block] for u in header.units], dtype=np.int64).reshape(-1, 2)
        self.unit_dtype = header.unit_dtype
        self.layout = UnitLayout(np.diff(self.item_group_bounds), self.n_blocks, self.block_dim, self.unit_dtype)
        # a composed bundle (DLRM-CE, LightRec): its item tensors (codes unpacked), scored by peel.device.composed
        self.composition = header.composition
        self.composed = composed

    def composed_scores(self, user_vector: np.ndarray) -> np.ndarray:
        """A composed bundle's scores of every item in stored order (a fresh array)."""
        scores = composed_scores(self.composition, self.composed, user_vector, self.n_items,
                                 codes=self.composed.get("codes_unpacked"))
        return scores[self.item_order]

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike[str], budget: BudgetLike | None = None) -> Bundle:
        """Read the header, the id arrays and the prefix of units that fits ``budget`` (None: every unit).

        Charged bytes = kept units + one user vector (D * 4). Units are kept in order up to the first
        that does not fit. Raises BudgetError below the minimum and BundleError on a bad file; either
        way nothing stays loaded.
        """
        path = Path(path)
        fh, size = open_file(path)
        try:
            with fh:
                return cls._read(fh, size, path, budget)
        except OSError as exc:
            raise BundleError(f"{path}: read failed: {exc.strerror or exc}") from None

    @classmethod
    def _read(cls, fh: BinaryIO, size: int, path: Path, budget: BudgetLike | None) -> Bundle:
        where = str(path)
        header = read_header(fh, size, where)
        if header.kind != "items":
            raise BundleError(f"{where}: this is a {header.kind} file, not an item bundle")
        check_file_size(header, size, where)
        layout = UnitLayout(np.diff(header.item_group_bounds), header.dims["n_blocks"], header.dims["block_dim"],
                            header.unit_dtype)
        order = np.array([[u.item_group, u.block] for u in header.units], dtype=np.int64)
        parsed, n_keep = _open_budget(budget, header, order, layout)
        if header.composition is not None:
            return cls._read_composed(fh, size, path, header, parsed)
        if n_keep:
            check_available(header, header.units[n_keep - 1].end, size, where, f"a budget of {parsed}")
        tensors = read_tensors(fh, header, size, where)
        item_order = _check_permutation(tensors["item_order"], header.dims["n_items"], where)
        ids = read_ids(tensors, "item", header.dims["n_items"], where)
        loaded = _read_units(fh, header, n_keep, where)
        read = header.data_start + header.tensors[-1].end + sum(u.nbytes for u in header.units[:n_keep])
        return cls(path=path, header=header, item_order=item_order, item_ids=ids, units=loaded,
                   n_loaded=n_keep, budget=parsed, bytes_read=read)

    @classmethod
    def _read_composed(cls, fh: BinaryIO, size: int, path: Path, header: Header, budget: Budget) -> Bundle:
        """A composed bundle is read whole (its tensors are its item vectors): the budget must hold it."""
        where = str(path)
        tensors = read_tensors(fh, header, size, where)
        item_order = _check_permutation(tensors["item_order"], header.dims["n_items"], where)
        ids = read_ids(tensors, "item", header.dims["n_items"], where)
        composition = header.composition
        composed = {name: tensors[name] for name, _, _ in composition.tensor_shapes(header.dims["n_items"])}
        if composition.type == "codebooks":
            n, b = header.dims["n_items"], composition.codebooks
            codes = unpack_codes(composed["codes"], n, b, composition.code_bits)
            if codes.size and int(codes.max()) >= composition.codewords:
                raise BundleError(f"{where}: a code is {int(codes.max())}, past the last of "
                                  f"{composition.codewords} codewords")
            composed["codes_unpacked"] = codes
        return cls(path=path, header=header, item_order=item_order, item_ids=ids, units=LoadedUnits([], [], []),
                   n_loaded=0, budget=budget, bytes_read=header.file_bytes, composed=composed)

    # ------------------------------------------------------------------ inspection
    @property
    def n_units_stored(self) -> int:
        return len(self.unit_order)

    @property
    def bytes_loaded(self) -> int:
        """Charged bytes of what was loaded: the loaded units (or a composed bundle's tensors) + one user vector."""
        if self.composition is not None:
            return self.composition.device_bytes(self.n_items)
        return int(self.layout.unit_bytes(self.unit_order[: self.n_units_loaded]).sum()) + self.layout.user_vector_bytes

    @property
    def minimum_bytes(self) -> int:
        if self.composition is not None:
            return self.composition.device_bytes(self.n_items)
        return self.layout.minimum_bytes(self.unit_order)

    @property
    def file_bytes(self) -> int:
        """Size of the whole bundle file as declared by its header (headers and id arrays included)."""
        return self.header.file_bytes

    @property
    def item_group_matrices(self) -> tuple[np.ndarray, ...]:
        """Per item group, the loaded columns as a read-only (|V_g|, L_g * d) view, blocks in unit order
        (int8 in a q8 bundle: see :attr:`item_group_scales`)."""
        return tuple(_read_only(m) for m in self._matrices)

    @property
    def item_group_scales(self) -> tuple[np.ndarray, ...]:
        """A q8 bundle's scales per item group, one float32 per loaded unit (read-only (L_g,) views); () for f32."""
        return tuple(_read_only(s) for s in self._scales)

    def unit(self, i: int) -> np.ndarray:
        """Loaded unit ``i`` (in unit order) as (|V_g|, d) float32: block n of group g's items, stored order.
        A view for f32 units, a fresh dequantized array for q8."""
        if not 0 <= i < self.n_units_loaded:
            raise IndexError(f"unit {i} is not loaded ({self.n_units_loaded} units loaded)")
        g, _ = self.unit_order[i]
        column = int(np.count_nonzero(self.unit_order[:i, 0] == g))
        d = self.block_dim
        values = self._matrices[g][:, column * d: (column + 1) * d]
        return dequantize_unit(values, self._scales[g][column]) if self._scales else values

    def parse_budget(self, budget: BudgetLike) -> Budget:
        return _parse(budget, self.header)

    def selection(self, budget: BudgetLike) -> Selection:
        """The kept prefix of the stored unit order under ``budget`` (peel.units.select)."""
        return select(self.unit_order, self.layout, self.parse_budget(budget).bytes)

    def positions_of_internal(self, internal_ids: Any) -> np.ndarray:
        ids = np.atleast_1d(np.asarray(internal_ids))
        if ids.size and (ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= self.n_items):
            raise BundleError(f"internal item ids must be integers in [0, {self.n_items})")
        if self._inverse is None:
            inverse = np.empty(self.n_items, dtype=np.int64)
            inverse[self.item_order] = np.arange(self.n_items)
            self._inverse = inverse
        return self._inverse[ids.astype(np.int64)]

    def positions_of(self, raw_ids: Any) -> np.ndarray:
        """Stored positions of raw (original) item ids."""
        return self.item_ids.positions(raw_ids, "item")

    def for_user(self, user_vector: Any, history: Any = None, *, internal_history: Any = None,
                 eq10: str | None = None, eq10_scale: str | None = None) -> Recommender:
        """A recommender for one user: ``history`` (original item ids) and ``internal_history`` are excluded."""
        from peel.device.recommender import Recommender

        vector = np.asarray(user_vector, dtype=np.float32)
        if vector.shape != (self.embedding_dim,):
            raise BundleError(f"user vector must have shape ({self.embedding_dim},), got {vector.shape}")
        if not np.isfinite(vector).all():
            raise BundleError("user vector holds non-finite values")
        positions = [np.zeros(0, dtype=np.int64)]
        if history is not None:
            positions.append(self.positions_of(history))
        if internal_history is not None:
            positions.append(self.positions_of_internal(internal_history))
        return Recommender(self, vector.copy(), np.unique(np.concatenate(positions)), eq10 or self.eq10,
                           eq10_scale)

    def __repr__(self) -> str:
        return (f"Bundle({self.path.name}: {self.n_items} items, G_v={self.n_item_groups}, N={self.n_blocks}, "
                f"d={self.block_dim}, {self.n_units_loaded}/{self.n_units_stored} units loaded, {self.budget})")


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def _parse(budget: BudgetLike, header: Header) -> Budget:
    dims = header.dims
    dataset = header.metadata.get("dataset")
    return parse_budget(budget, full_table_bytes=dims["n_items"] * dims["embedding_dim"] * BYTES_PER_FLOAT,
                        n_items=dims["n_items"], reference=dataset if isinstance(dataset, str) and dataset else None)


def _open_budget(budget: BudgetLike | None, header: Header, order: np.ndarray,
                 layout: UnitLayout) -> tuple[Budget, int]:
    if header.composition is not None:  # all or nothing: the composed tensors are the item vectors
        charged = header.composition.device_bytes(header.dims["n_items"])
        parsed = Budget(charged, label="all") if budget is None else _parse(budget, header)
        check_composed_budget(parsed, charged)
        return parsed, 0
    if budget is None:
        used = int(layout.unit_bytes(order).sum()) + layout.user_vector_bytes
        return Budget(used, label="all"), len(order)
    parsed = _parse(budget, header)
    return parsed, select(order, layout, parsed.bytes).n_kept


def check_composed_budget(budget: Budget, charged: int) -> None:
    if budget.bytes < charged:
        raise BudgetError(f"budget {budget} is below the minimum of {charged:,} bytes ({charged / 1e6:.3f} MB) of "
                          "this composed bundle: its tables or codebooks and codes + the user vector, all or nothing")


def _check_permutation(item_order: np.ndarray, n: int, where: str) -> np.ndarray:
    if item_order.min() < 0 or item_order.max() >= n or (np.bincount(item_order, minlength=n) != 1).any():
        raise BundleError(f"{where}: item_order must be a permutation of the {n} internal item ids")
    return item_order


def unit_buffer(n: int, dtype: Any = np.float32) -> np.ndarray:
    """A buffer of ``n`` values in its own anonymous mapping, so closing a bundle returns its memory to the OS.

    A malloc'd buffer of this size can stay in the allocator's heap after it is freed (glibc raises its
    mmap threshold after the first large free): a device that reopens at a smaller budget would not
    get the memory back.
    """
    dtype = np.dtype(dtype)
    if n == 0:
        return np.empty(0, dtype=dtype)
    return np.frombuffer(mmap.mmap(-1, n * dtype.itemsize), dtype=dtype)


@dataclass
class LoadedUnits:
    """Units read from a bundle, laid out per item group: ``matrices[g]`` (|V_g|, L_g * d) holds group g's
    loaded blocks as columns in unit order (float32, or int8 for q8), ``scales[g]`` (L_g,) the float32 scale of
    each loaded unit of a q8 bundle (the list is empty for f32), ``slots[g]`` the block index of each."""

    matrices: list[np.ndarray]
    scales: list[np.ndarray]
    slots: list[np.ndarray]


def _read_units(fh: BinaryIO, header: Header, n_keep: int, where: str) -> LoadedUnits:
    """Read units 0..n_keep-1 sequentially into buffers laid out per item group (checksums verified)."""
    d, g_v = header.dims["block_dim"], header.dims["n_item_groups"]
    q8 = header.unit_dtype == "q8"
    sizes = np.diff(header.item_group_bounds)
    units = header.units[:n_keep]
    slots = [[] for _ in range(g_v)]
    for u in units:
        slots[u.item_group].append(u.block)
    counts = np.array([len(s) for s in slots], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes * counts)])  # in (item, block) rows
    values = unit_buffer(int(starts[-1]) * d, np.int8 if q8 else np.float32)
    matrices = [values[starts[g] * d: starts[g + 1] * d].reshape(sizes[g], counts[g] * d) for g in range(g_v)]
    scales = [np.zeros(counts[g], dtype=np.float32) for g in range(g_v)] if q8 else []
    staging = np.empty(max((u.nbytes for u in units), default=0), dtype=np.uint8)
    filled = np.zeros(g_v, dtype=np.int64)
    if units:
        fh.seek(header.data_start + units[0].begin)
    for i, u in enumerate(units):
        g, v = u.item_group, sizes[u.item_group]
        payload = staging[: u.nbytes]
        if payload.size:
            view = memoryview(payload)
            readinto_exact(fh, view, where, f"unit {i}")
            if zlib.crc32(view) != u.crc32:
                raise BundleError(f"{where}: checksum mismatch in unit {i} (item group {g}, block {u.block}): "
                                  "the file is corrupt")
        elif u.crc32 != 0:
            raise BundleError(f"{where}: checksum mismatch in unit {i} (an empty unit has crc32 0)")
        column = filled[g]
        if q8:
            matrices[g][:, column * d: (column + 1) * d] = payload[: v * d].view(np.int8).reshape(v, d)
            scale = payload[v * d:].view("<f4")[0]
            if not (np.isfinite(scale) and scale >= 0):
                raise BundleError(f"{where}: unit {i} (item group {g}, block {u.block}) has scale {scale}, "
                                  "expected a finite number >= 0")
            scales[g][column] = scale
        else:
            matrices[g][:, column * d: (column + 1) * d] = payload.view(DTYPES["F32"]).reshape(v, d)
        filled[g] += 1
    return LoadedUnits(matrices, scales, [np.asarray(s, dtype=np.int64) for s in slots])

