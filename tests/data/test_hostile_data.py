"""Hostile data files: non-UTF-8 bytes, directories where files belong, sparse huge integer ids and Parquet
id columns of the wrong type get a DataError / ConfigError naming the file and what was expected."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from peel.config import PeelConfig
from peel.data import load, load_presplit
from peel.errors import ConfigError, DataError

ALLOCATION_CAP = 64 * 2**20


@pytest.fixture
def small_allocations(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """numpy's array constructors refuse a request above 64 MB: a test fails at once instead of swapping."""

    def guard(original: Any, size_of: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            nbytes = size_of(*args, **kwargs)
            assert nbytes <= ALLOCATION_CAP, f"{original.__name__} asked for {nbytes:,} bytes"
            return original(*args, **kwargs)
        return wrapped

    def shaped(shape: Any, *args: Any, dtype: Any = None, **kwargs: Any) -> int:
        count = math.prod(shape) if isinstance(shape, tuple | list) else int(shape)
        return count * np.dtype(dtype if dtype is not None else float).itemsize

    def ranged(*args: Any, **kwargs: Any) -> int:
        start, stop = (0, args[0]) if len(args) == 1 else args[:2]
        step = args[2] if len(args) > 2 else 1
        return max(0, math.ceil((stop - start) / step)) * 8

    for name in ("zeros", "empty", "ones"):
        monkeypatch.setattr(np, name, guard(getattr(np, name), shaped))
    monkeypatch.setattr(np, "arange", guard(np.arange, ranged))
    yield


# ---------------------------------------------------------------------- non-UTF-8 text
BAD = b"\xff\xfe"


@pytest.mark.parametrize(("name", "content", "kwargs", "line"), [
    ("events.csv", b"user,item\na,b\nc" + BAD + b",d\n", {"user_col": "user", "item_col": "item"}, 3),
    ("events.tsv", b"user\titem\n" + BAD + b"\tb\n", {"user_col": "user", "item_col": "item"}, 2),
    ("x.inter", b"user_id:token\titem_id:token\nu1\ti1\nu2\ti" + BAD + b"\n", {}, 3),
    ("ratings.csv", b"userId,movieId,rating,timestamp\n1,2,3,4\n" + BAD + b"\n", {}, 3),
    ("u.data", b"1\t2\t3\t4\n" + BAD + b"\t2\t3\t4\n", {}, 2),
])
def test_non_utf8_table_names_file_and_line(tmp_path: Path, name: str, content: bytes, kwargs: dict,
                                            line: int) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match="UTF-8") as info:
        load(path, **kwargs)
    assert str(path) in str(info.value) and f"line {line}" in str(info.value)


def presplit_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "split"
    folder.mkdir()
    (folder / "train.txt").write_text("0 0 1\n1 1 2\n")
    (folder / "valid.txt").write_text("0 2\n")
    (folder / "test.txt").write_text("1 0\n")
    return folder


def test_non_utf8_id_map_names_file_and_line(tmp_path: Path) -> None:
    folder = presplit_dir(tmp_path)
    (folder / "user_ids.txt").write_bytes(b"alice\nb" + BAD + b"b\n")
    with pytest.raises(DataError, match="UTF-8") as info:
        load_presplit(folder)
    assert str(folder / "user_ids.txt") in str(info.value) and "line 2" in str(info.value)


def test_non_utf8_toml_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[pretrain]\nlr = 0.01 # caf" + BAD + b"\n")
    with pytest.raises(ConfigError, match="UTF-8") as info:
        PeelConfig.from_toml(path)
    assert str(path) in str(info.value)


def test_toml_config_that_is_a_directory_or_deeply_nested(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match="dir.toml"):
        PeelConfig.from_toml(tmp_path / "dir.toml")
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="deep.toml"):
        PeelConfig.from_toml(deep)


# ---------------------------------------------------------------------- a directory where a file belongs
@pytest.mark.parametrize(("name", "fmt", "kwargs"), [
    ("graph.txt", "adjacency", {}), ("events.csv", "csv", {"user_col": "u", "item_col": "i"}),
    ("events.tsv", "tsv", {"user_col": "u", "item_col": "i"}), ("u.data", "movielens", {}),
    ("x.inter", "recbole", {}),
])
def test_directory_where_a_file_is_expected(tmp_path: Path, name: str, fmt: str, kwargs: dict) -> None:
    path = tmp_path / name
    path.mkdir()
    with pytest.raises(DataError, match="is a directory") as info:
        load(path, fmt, **kwargs)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("inside", ["train.txt", "test.txt", "item_ids.txt"])
def test_presplit_with_a_directory_inside(tmp_path: Path, inside: str) -> None:
    folder = presplit_dir(tmp_path)
    target = folder / inside
    if target.exists():
        target.unlink()
    target.mkdir()
    with pytest.raises(DataError, match="is a directory") as info:
        load_presplit(folder)
    assert str(target) in str(info.value)


# ---------------------------------------------------------------------- sparse integer ids
def test_adjacency_with_a_huge_id_is_remapped_not_allocated(tmp_path: Path, small_allocations: None) -> None:
    path = tmp_path / "graph.txt"
    path.write_bytes(b"0 2147483646\n2147483646 1\n")
    assert path.stat().st_size == 26
    data = load(path)
    assert (data.n_users, data.n_items) == (2, 2)
    assert data.user_ids.tolist() == [0, 2147483646] and data.item_ids.tolist() == [1, 2147483646]
    pairs = {(int(data.user_ids[u]), int(data.item_ids[i])) for u, i in zip(data.user, data.item, strict=True)}
    assert pairs == {(0, 2147483646), (2147483646, 1)}
    steps = [entry for entry in data.report if entry["step"] == "remap_ids"]
    assert {entry["ids"] for entry in steps} == {"user", "item"}  # recorded, not silent


def test_presplit_with_sparse_ids_is_remapped_across_the_three_files(tmp_path: Path,
                                                                    small_allocations: None) -> None:
    folder = tmp_path / "sparse"
    folder.mkdir()
    (folder / "train.txt").write_text("5 900000000 7\n2000000000 7 900000000\n")
    (folder / "valid.txt").write_text("5 3\n")
    (folder / "test.txt").write_text("2000000000 3\n")
    data = load_presplit(folder)
    assert data.user_ids.tolist() == [5, 2000000000]
    assert data.item_ids.tolist() == [3, 7, 900000000]
    raw = sorted((int(data.user_ids[u]), int(data.item_ids[i]), int(s))
                 for u, i, s in zip(data.user, data.item, data.split, strict=True))
    assert raw == [(5, 3, 1), (5, 7, 0), (5, 900000000, 0), (2000000000, 3, 2), (2000000000, 7, 0),
                   (2000000000, 900000000, 0)]


def test_dense_ids_with_gaps_are_kept_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "graph.txt"
    path.write_text("0 1 2\n3 50\n")  # largest id 50 <= 2 x 4 distinct + 1000: ids stay, gaps are empty rows
    data = load(path)
    assert (data.n_users, data.n_items) == (4, 51)
    assert not [entry for entry in data.report if entry["step"] == "remap_ids"]


# ---------------------------------------------------------------------- Parquet id types
def parquet(tmp_path: Path, user: Any, item: Any) -> Path:
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user": user, "item": item}).to_parquet(path)
    return path


TABLE = {"user_col": "user", "item_col": "item"}


def test_parquet_whole_float_ids_are_integers(tmp_path: Path) -> None:
    data = load(parquet(tmp_path, [1.0, 2.0, 2.0], [10.0, 10.0, 30.0]), **TABLE)
    assert data.user_ids.dtype.kind == "i" and data.user_ids.tolist() == [1, 2]
    assert data.item_ids.tolist() == [10, 30]


@pytest.mark.parametrize(("item", "dtype"), [
    ([1.5, 2.0, 3.0], "float64"), ([1.0, float("nan"), 3.0], "float64"), ([[1], [2], [3, 4]], "object"),
    ([True, False, True], "bool"), ([{"a": 1}, {"a": 2}, {"a": 3}], "object"), ([1e30, 2.0, 3.0], "float64"),
])
def test_parquet_ids_of_other_types_are_refused(tmp_path: Path, item: list, dtype: str) -> None:
    path = parquet(tmp_path, ["a", "b", "c"], item)
    with pytest.raises(DataError, match="'item'") as info:
        load(path, **TABLE)
    assert str(path) in str(info.value) and dtype in str(info.value)


def test_parquet_integer_and_string_ids_still_load(tmp_path: Path) -> None:
    data = load(parquet(tmp_path, np.array([3, 1, 3], dtype=np.int32), ["x", "y", "y"]), **TABLE)
    assert data.user_ids.tolist() == [1, 3] and data.item_ids.tolist() == ["x", "y"]
