"""Loaders for interaction files; each returns one :class:`Interactions`.

Formats: LightGCN adjacency text, a pre-split directory (train/valid/test.txt), MovieLens
(u.data, ratings.dat, ratings.csv), generic CSV / TSV / Parquet with named columns, RecBole
atomic ``.inter``. Parsing is vectorized; a bad file gets a :class:`DataError` that names the file,
the line (or row) and the value.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peel.data.ids import int_ids, integer_id_space, mapped_id_space, read_file, table_ids, utf8_text
from peel.data.interactions import SPLIT_CODES, SPLITS, Interactions
from peel.errors import DataError

FORMATS = ("auto", "adjacency", "presplit", "movielens", "csv", "tsv", "parquet", "recbole")
COLD_ITEM_POLICIES = ("keep", "drop", "error")
_MAX_ID = 2**31 - 2
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True  # exactly what bytes.split() splits on


def detect_format(path: str | Path) -> str:
    """Guess the format from the path: a directory with train.txt, a MovieLens name or a suffix."""
    path = Path(path)
    if path.is_dir():
        if (path / "train.txt").exists():
            return "presplit"
        raise DataError(f"{path}: a directory must hold train.txt, valid.txt and test.txt")
    if path.name in ("u.data", "ratings.dat", "ratings.csv"):
        return "movielens"
    by_suffix = {".inter": "recbole", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv",
                 ".tsv": "tsv", ".tab": "tsv", ".txt": "adjacency"}
    if path.suffix.lower() in by_suffix:
        return by_suffix[path.suffix.lower()]
    raise DataError(f"{path}: cannot tell the format from the name; pass --format, one of {', '.join(FORMATS[1:])}")


def load(
    path: str | Path,
    format: str = "auto",
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    min_rating: float | None = None,
    timestamp_col: str | None = None,
    cold_items: str = "keep",
    name: str | None = None,
) -> Interactions:
    """Load interactions from any supported format (``format='auto'`` guesses from the path)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise DataError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    name = name or (path.name if path.is_dir() else "")
    if fmt == "presplit":
        return load_presplit(path, cold_items=cold_items, name=name)
    if fmt == "adjacency":
        return load_adjacency(path, name=name)
    if fmt == "movielens":
        return load_movielens(path, min_rating=min_rating, name=name)
    if fmt == "recbole":
        return load_recbole(path, min_rating=min_rating, user_col=user_col, item_col=item_col, name=name)
    if user_col is None or item_col is None:
        raise DataError(f"{path}: format {fmt} needs --user-col and --item-col")
    return load_table(path, user_col=user_col, item_col=item_col, rating_col=rating_col,
                      min_rating=min_rating, timestamp_col=timestamp_col, format=fmt, name=name)


# ---------------------------------------------------------------------- adjacency text
def read_adjacency(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse ``user item item ...`` lines into (user, item, line) arrays, line numbers 1-based."""
    path = Path(path)
    raw = read_file(path)
    if not raw.strip():
        raise DataError(f"{path}: file is empty; expected lines of 'user_id item_id item_id ...'")
    buf = np.frombuffer(raw, dtype=np.uint8)
    space = _WHITESPACE[buf]
    token_start = np.flatnonzero(~space & np.r_[True, space[:-1]])
    line = np.cumsum(buf == 10)[token_start] + 1
    tokens = np.array(raw.split())
    digits = np.char.isdigit(tokens) & (np.char.str_len(tokens) <= 10)
    if not digits.all():
        bad = int(np.argmin(digits))
        raise DataError(f"{path}, line {line[bad]}: expected a non-negative integer id, "
                        f"got {tokens[bad].decode(errors='replace')!r}")
    values = tokens.astype(np.int64)
    if values.max() > _MAX_ID:
        bad = int(np.argmax(values))
        raise DataError(f"{path}, line {line[bad]}: id {values[bad]} is too large (at most {_MAX_ID})")
    first = np.r_[True, line[1:] != line[:-1]]
    owner = np.maximum.accumulate(np.where(first, np.arange(len(values)), 0))
    is_item = ~first
    return values[owner][is_item], values[is_item], line[is_item]


def load_adjacency(path: str | Path, *, name: str = "") -> Interactions:
    """One adjacency file; dense ids are kept as they are (item count = largest id + 1), sparse ones are
    remapped (ids.integer_id_space)."""
    user, item, _ = read_adjacency(path)
    if len(user) == 0:
        raise DataError(f"{path}: no interactions (every line holds only a user id)")
    users, items = integer_id_space(user, "user"), integer_id_space(item, "item")
    return Interactions.from_internal(users.internal, items.internal, n_users=users.n, n_items=items.n,
                                      user_ids=users.raw, item_ids=items.raw, report=users.report + items.report,
                                      name=name or Path(path).stem)


# ---------------------------------------------------------------------- pre-split directory
def load_presplit(directory: str | Path, *, cold_items: str = "keep", name: str = "") -> Interactions:
    """A directory with train.txt, valid.txt, test.txt (and optional user_ids.txt / item_ids.txt).

    Without an id map, users and items count up to the largest id + 1 over all three files (sparse ids are
    remapped: ids.integer_id_space). Items seen only in
    valid/test (cold items) are handled by ``cold_items``: keep (default), drop (reported) or error.
    """
    directory = Path(directory)
    if cold_items not in COLD_ITEM_POLICIES:
        raise DataError(f"cold_items must be one of {', '.join(COLD_ITEM_POLICIES)}, got {cold_items!r}")
    parts = []
    for split in SPLITS:
        path = directory / f"{split}.txt"
        if not path.exists():
            raise DataError(f"{directory}: missing {split}.txt (a pre-split directory needs train, valid and test)")
        parts.append((path, *read_adjacency(path)))
    user = np.concatenate([p[1] for p in parts])
    item = np.concatenate([p[2] for p in parts])
    split = np.concatenate([np.full(len(p[1]), SPLIT_CODES[s], np.int8) for p, s in zip(parts, SPLITS, strict=True)])
    if cold_items == "error":
        _refuse_cold_items(parts)
    users, items = (mapped_id_space(ids, _read_id_map(directory / f"{label}_ids.txt"), label, directory)
                    for label, ids in (("user", user), ("item", item)))
    data = Interactions.from_internal(users.internal, items.internal, n_users=users.n, n_items=items.n,
                                      user_ids=users.raw, item_ids=items.raw, split=split,
                                      report=users.report + items.report, name=name or directory.name)
    return data.drop_cold_items() if cold_items == "drop" else data


def _refuse_cold_items(parts: list[tuple[Path, np.ndarray, np.ndarray, np.ndarray]]) -> None:
    train_items = np.unique(parts[0][2])
    for path, _, item, line in parts[1:]:
        cold = ~np.isin(item, train_items)
        if cold.any():
            i = int(np.argmax(cold))
            raise DataError(f"{path}, line {line[i]}: item {item[i]} never occurs in train.txt "
                            f"({int(cold.sum())} such interactions in this file); "
                            "use cold_items='keep' or 'drop' to accept them")


def _read_id_map(path: Path) -> np.ndarray | None:
    if not path.exists():
        return None
    ids = np.array(utf8_text(read_file(path), path).splitlines())
    if len(ids) == 0:
        raise DataError(f"{path}: id map is empty")
    if np.char.isdigit(ids).all():
        return ids.astype(np.int64)
    return ids.astype(object)


def _adjacency_text(user: np.ndarray, item: np.ndarray) -> str:
    """Lines of 'user item item ...' for rows sorted by user (vectorized)."""
    if len(user) == 0:
        return ""
    starts = np.r_[True, user[1:] != user[:-1]]
    item_pos = np.arange(len(user)) + np.cumsum(starts)
    tokens = np.empty(len(user) + int(starts.sum()), dtype=np.int64)
    tokens[item_pos] = item
    tokens[item_pos[starts] - 1] = user[starts]
    seps = np.full(len(tokens), " ", dtype="<U1")
    seps[np.r_[item_pos[starts][1:] - 2, len(tokens) - 1]] = "\n"
    return "".join(np.char.add(tokens.astype(str), seps).tolist())


def save_presplit(data: Interactions, directory: str | Path, *, overwrite: bool = False,
                  provenance: dict[str, Any] | None = None, inputs: Sequence[str | Path] = ()) -> Path:
    """Write a split dataset as a pre-split directory, atomically, with stats.json and id maps.

    ``inputs``: paths the data was read from; an output equal to, inside or containing one is refused."""
    from peel._io import atomic_directory, write_json_atomic
    from peel.data.stats import file_checksums

    if data.split is None:
        raise DataError("only split interactions can be saved as a pre-split directory; call .split_random()")
    for split in SPLITS:
        if not data.count(split):
            # load_presplit refuses an empty file, so never write one
            raise DataError(f"{data.name or 'data'}: the {split} split is empty; nothing to save as {split}.txt "
                            "(users with fewer than 3 interactions go wholly to train)")
    directory = Path(directory)
    with atomic_directory(directory, overwrite=overwrite, inputs=inputs) as tmp:
        for split in SPLITS:
            mask = data.rows(split)
            (tmp / f"{split}.txt").write_text(_adjacency_text(data.user[mask], data.item[mask]))
        for label, ids in (("user", data.user_ids), ("item", data.item_ids)):
            if not (np.issubdtype(ids.dtype, np.integer) and np.array_equal(ids, np.arange(len(ids)))):
                (tmp / f"{label}_ids.txt").write_text("\n".join(map(str, ids.tolist())) + "\n")
        stats = data.stats() | file_checksums(tmp)
        if provenance:
            stats["provenance"] = provenance
        write_json_atomic(tmp / "stats.json", stats)
    return directory


# ---------------------------------------------------------------------- delimited tables
def _read_delimited(path: Path, *, sep: str, header: bool, names: list[str] | None = None,
                    text: bytes | None = None) -> tuple[pd.DataFrame, int]:
    """Read a delimited file with every field as a string. Returns (frame, line of row 0)."""
    source = text if text is not None else read_file(path)
    if not source.strip():
        raise DataError(f"{path}: file is empty")
    try:
        frame = pd.read_csv(io.BytesIO(source), sep=sep, header=0 if header else None, names=names,
                            dtype=str, keep_default_na=False, na_values=[], skip_blank_lines=False,
                            engine="c")
    except pd.errors.ParserError as exc:
        message = _pandas_message(exc)
        bad_line = re.search(r"line (\d+)", message)
        if bad_line:
            n = int(bad_line.group(1))
            raise DataError(f"{path}, line {n}: malformed line ({message}): {_line_text(path, n)!r}") from None
        raise DataError(f"{path}: malformed line: {message}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except UnicodeDecodeError:
        utf8_text(source, path)  # a DataError naming the line
        raise
    first_line = 2 if header else 1
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas silently turns the first field into an index when the first data line has one field too many
        raise DataError(f"{path}, line {first_line}: malformed line (expected {len(frame.columns)} fields, "
                        f"saw {len(frame.columns) + 1}): {_line_text(path, first_line)!r}")
    if frame.empty:
        raise DataError(f"{path}: no interactions after the header")
    return frame, first_line


def _line_text(path: Path, line: int) -> str:
    """Line ``line`` (1-based) of the file as text, for error messages."""
    lines = read_file(path).split(b"\n")
    return lines[line - 1].rstrip(b"\r").decode(errors="replace") if 0 < line <= len(lines) else ""


def _pandas_message(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[-1]
    return re.sub(r"^Error tokenizing data\. C error: ", "", msg)


def _drop_blank_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    blank = frame.isna().all(axis=1) | (frame.fillna("") == "").all(axis=1)
    return frame[~blank.to_numpy()], int(blank.sum())


def _require_columns(frame: pd.DataFrame, columns: dict[str, str | None], path: Path) -> None:
    for role, col in columns.items():
        if col is not None and col not in frame.columns:
            raise DataError(f"{path}: no {role} column {col!r}; the file has columns {list(frame.columns)}")


def _require_present(frame: pd.DataFrame, cols: list[str], path: Path, first_line: int, unit: str) -> None:
    """Every listed column has a non-empty value in every row."""
    for col in cols:
        values = frame[col]
        missing = values.isna().to_numpy()
        if pd.api.types.is_string_dtype(values.dtype) or values.dtype == object:
            missing = missing | (values.fillna("").astype(str).str.strip() == "").to_numpy()
        if missing.any():
            i = int(np.argmax(missing))
            raise DataError(f"{path}, {unit} {frame.index[i] + first_line}: missing value in column {col!r} "
                            f"(row: {frame.iloc[i].tolist()})")


def _numbers(values: pd.Series, col: str, path: Path, first_line: int, unit: str) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}, {unit} {values.index[i] + first_line}: column {col!r} must be a number, "
                        f"got {values.iloc[i]!r}")
    return numbers.to_numpy(np.float64)


def _build(path: Path, frame: pd.DataFrame, *, users: np.ndarray, items: np.ndarray,
           ratings: np.ndarray | None, min_rating: float | None, timestamp: np.ndarray | None,
           blank_lines: int, name: str) -> Interactions:
    report: list[dict[str, Any]] = [{"step": "read", "file": str(path), "rows": int(len(frame) + blank_lines)}]
    if blank_lines:
        report.append({"step": "blank_lines", "removed_rows": blank_lines})
    if min_rating is not None:
        if ratings is None:
            raise DataError(f"{path}: min_rating={min_rating} needs a rating column")
        keep = ratings >= min_rating
        report.append({"step": "min_rating", "threshold": min_rating, "removed_interactions": int((~keep).sum())})
        users, items = users[keep], items[keep]
        timestamp = None if timestamp is None else timestamp[keep]
        if not keep.any():
            raise DataError(f"{path}: no interaction has rating >= {min_rating}")
    return Interactions.from_raw(users, items, timestamp=timestamp, report=report, name=name)


def load_movielens(path: str | Path, *, min_rating: float | None = None, name: str = "") -> Interactions:
    """MovieLens ``u.data`` (tab), ``ratings.dat`` (``::``) or ``ratings.csv`` (with header)."""
    path = Path(path)
    names = ["user", "item", "rating", "timestamp"]
    if path.name.endswith(".csv"):
        frame, first = _read_delimited(path, sep=",", header=True)
        _require_columns(frame, {"user": "userId", "item": "movieId", "rating": "rating"}, path)
        frame = frame.rename(columns={"userId": "user", "movieId": "item"})
    elif path.name.endswith(".dat"):
        frame, first = _read_delimited(path, sep="\t", header=False, names=names,
                                       text=read_file(path).replace(b"::", b"\t"))
    else:
        frame, first = _read_delimited(path, sep="\t", header=False, names=names)
    frame, blanks = _drop_blank_rows(frame)
    required = [c for c in names if c in frame.columns]
    _require_present(frame, required, path, first, "line")
    return _build(
        path, frame,
        users=int_ids(frame["user"], "user", path, first, "line"),
        items=int_ids(frame["item"], "item", path, first, "line"),
        ratings=_numbers(frame["rating"], "rating", path, first, "line"),
        timestamp=int_ids(frame["timestamp"], "timestamp", path, first, "line") if "timestamp" in frame else None,
        min_rating=min_rating, blank_lines=blanks, name=name or path.parent.name,
    )


def load_table(path: str | Path, *, user_col: str, item_col: str, rating_col: str | None = None,
               min_rating: float | None = None, timestamp_col: str | None = None, format: str = "csv",
               sep: str | None = None, name: str = "") -> Interactions:
    """CSV / TSV (with a header) or Parquet with named user and item columns; string ids allowed."""
    path = Path(path)
    if min_rating is not None and rating_col is None:
        raise DataError(f"{path}: min_rating={min_rating} needs --rating-col")
    columns = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": timestamp_col}
    if format == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        if frame.empty:
            raise DataError(f"{path}: no rows")
        frame = frame.reset_index(drop=True)
        first, unit, blanks = 1, "row", 0
    else:
        frame, first = _read_delimited(path, sep=sep or ("\t" if format == "tsv" else ","), header=True)
        frame, blanks = _drop_blank_rows(frame)
        unit = "line"
    _require_columns(frame, columns, path)
    used = [c for c in columns.values() if c is not None]
    _require_present(frame, used, path, first, unit)
    return _build(
        path, frame,
        users=table_ids(frame[user_col], user_col, path, first),
        items=table_ids(frame[item_col], item_col, path, first),
        ratings=None if rating_col is None else _numbers(frame[rating_col], rating_col, path, first, unit),
        timestamp=None if timestamp_col is None else _numbers(frame[timestamp_col], timestamp_col, path, first, unit),
        min_rating=min_rating, blank_lines=blanks, name=name or path.stem,
    )


def load_recbole(path: str | Path, *, min_rating: float | None = None, user_col: str | None = None,
                 item_col: str | None = None, name: str = "") -> Interactions:
    """RecBole atomic ``.inter`` file: tab-separated with typed header fields such as ``user_id:token``."""
    path = Path(path)
    frame, first = _read_delimited(path, sep="\t", header=True)
    typed = list(frame.columns)
    bare = [c.split(":", 1)[0] for c in typed]
    if any(":" not in c for c in typed):
        raise DataError(f"{path}, line 1: RecBole headers look like 'user_id:token'; got {typed}")
    frame.columns = bare
    user_col, item_col = user_col or "user_id", item_col or "item_id"
    rating_col = "rating" if "rating" in bare else None
    timestamp_col = "timestamp" if "timestamp" in bare else None
    frame, blanks = _drop_blank_rows(frame)
    _require_columns(frame, {"user": user_col, "item": item_col}, path)
    _require_present(frame, [user_col, item_col], path, first, "line")
    if min_rating is not None and rating_col is None:
        raise DataError(f"{path}: min_rating={min_rating} needs a 'rating:float' column")
    return _build(
        path, frame,
        users=table_ids(frame[user_col], user_col, path, first),
        items=table_ids(frame[item_col], item_col, path, first),
        ratings=None if rating_col is None else _numbers(frame[rating_col], rating_col, path, first, "line"),
        timestamp=None if timestamp_col is None else _numbers(frame[timestamp_col], timestamp_col, path, first, "line"),
        min_rating=min_rating, blank_lines=blanks, name=name or path.stem,
    )
