"""Reading input files and their id columns safely: files (not directories) of UTF-8 text, integer ids
that are dense enough to index arrays by (else remapped), and table id columns of integer or string type."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from peel.errors import DataError

SPARSE_SLACK = 1000  # integer ids are kept as they are while largest id + 1 <= 2 x distinct ids + this


def read_file(path: Path) -> bytes:
    """The bytes of a file; a directory or an unreadable path is a DataError naming it."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file: {exc.strerror or exc}") from None


def utf8_text(raw: bytes, path: Path) -> str:
    """``raw`` decoded as UTF-8; other bytes are a DataError naming the file, the line and the bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (bytes {raw[exc.start:exc.end]!r} at byte "
                        f"{exc.start:,}); save the file as UTF-8") from None


class IdSpace(NamedTuple):
    """Internal ids 0..n-1 of some raw integer ids, the raw id of each (None: raw = internal) and the report."""

    internal: np.ndarray
    n: int
    raw: np.ndarray | None
    report: list[dict[str, Any]]


def integer_id_space(ids: np.ndarray, label: str) -> IdSpace:
    """Dense ids (largest id + 1 <= 2 x distinct + SPARSE_SLACK) index arrays as they are, gaps becoming
    empty rows; sparse ones (e.g. 2147483646 among a few ids) are remapped to 0..distinct-1 in sorted order,
    the raw ids kept as the id map and the remapping recorded in the report. No array of size largest id."""
    top, n = int(ids.max()), len(ids)
    if top < 2 * n + SPARSE_SLACK:  # a presence table is no larger than the data itself
        present = np.zeros(top + 1, dtype=bool)
        present[ids] = True
        if top + 1 <= 2 * int(present.sum()) + SPARSE_SLACK:
            return IdSpace(ids, top + 1, None, [])
    raw = np.unique(ids)
    entry = {"step": "remap_ids", "ids": label, "largest_id": top, "distinct": len(raw),
             "reason": f"{label} ids are sparse (largest id + 1 > 2 x distinct + {SPARSE_SLACK})"}
    return IdSpace(np.searchsorted(raw, ids).astype(ids.dtype), len(raw), raw, [entry])


def int_ids(values: pd.Series, col: str, path: Path, first_line: int, unit: str) -> np.ndarray:
    """Non-negative integer ids of a text column (MovieLens), each at most 18 digits."""
    ok = values.astype(str).str.fullmatch(r"\s*\d{1,18}\s*").to_numpy()
    if not ok.all():
        i = int(np.argmax(~ok))
        raise DataError(f"{path}, {unit} {values.index[i] + first_line}: column {col!r} must be a "
                        f"non-negative integer id, got {values.iloc[i]!r}")
    return values.astype(np.int64).to_numpy()


def mapped_id_space(ids: np.ndarray, id_map: np.ndarray | None, label: str, directory: Path) -> IdSpace:
    """Ids through an id map (``<label>_ids.txt``) when there is one, else as :func:`integer_id_space` decides."""
    if id_map is None:
        return integer_id_space(ids, label)
    if ids.max() >= len(id_map):
        raise DataError(f"{directory}: {label} id {ids.max()} has no entry in {label}_ids.txt ({len(id_map)} entries)")
    return IdSpace(ids, len(id_map), id_map, [])


def table_ids(values: pd.Series, col: str, path: Path, first_row: int) -> np.ndarray:
    """Ids of a table column: integers, or strings (all-digit strings read as integers). Floats holding only
    whole numbers (below 2^53) are integers; other floats, booleans, lists and structs are refused."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        _refuse(values, col, path, "booleans are not ids")
    if pd.api.types.is_integer_dtype(dtype):
        if pd.api.types.is_unsigned_integer_dtype(dtype) and len(values) and values.max() > np.iinfo(np.int64).max:
            _refuse(values, col, path, "ids beyond the int64 range")
        return values.to_numpy(np.int64)
    if pd.api.types.is_float_dtype(dtype):
        return _whole_floats(values, col, path, first_row)
    if pd.api.types.is_string_dtype(values):
        text = values.astype(str).str.strip()
        if text.str.fullmatch(r"\d{1,18}").all():
            return text.astype(np.int64).to_numpy()
        return text.to_numpy(dtype=object)
    _refuse(values, col, path, "ids must be integers or strings")
    raise AssertionError("unreachable")


def _whole_floats(values: pd.Series, col: str, path: Path, first_row: int) -> np.ndarray:
    numbers = values.to_numpy(np.float64)
    whole = np.isfinite(numbers) & (np.abs(numbers) < 2**53)
    whole[whole] = numbers[whole] == np.round(numbers[whole])
    if not whole.all():
        i = int(np.argmin(whole))
        raise DataError(f"{path}, row {i + first_row}: column {col!r} (dtype {values.dtype}) holds {numbers[i]!r}, "
                        "not a whole number; ids must be integers or strings (floats only with whole values)")
    return numbers.astype(np.int64)


def _refuse(values: pd.Series, col: str, path: Path, why: str) -> None:
    example = values.iloc[0] if len(values) else None
    kind = type(example).__name__ if values.dtype == object else str(values.dtype)
    raise DataError(f"{path}: column {col!r} has dtype {values.dtype} (values like {example!r} of type {kind}): "
                    f"{why}; ids must be integers or strings (floats only with whole values)")
