"""Bad input is refused with a DataError that names the file, the line (or row) and the value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from peel.data import Interactions, detect_format, load, load_presplit
from peel.errors import DataError, PeelError

RECBOLE_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"

# (file name, content, load() keyword arguments, where, offending value as it must appear)
LINE_CASES = [
    pytest.param("u.data", "1\t2\t3\t4\n1\t3\t4\t5\t9\n2\t1\t1\t1\n", {}, "line 2", repr("1\t3\t4\t5\t9"),
                 id="udata-too-many-fields"),
    pytest.param("u.data", "1\t2\t3\t4\t5\n1\t3\t4\t5\t6\n", {}, "line 1", repr("1\t2\t3\t4\t5"),
                 id="udata-every-line-too-many-fields"),
    pytest.param("u.data", "1\t2\t3\t4\n2\t5\t3\n", {}, "line 2", "'2', '5', '3'", id="udata-too-few-fields"),
    pytest.param("u.data", "1\t2\t3\t4\nabc\t2\t3\t4\n", {}, "line 2", "'abc'", id="udata-non-integer-user"),
    pytest.param("u.data", "1\t2\t3\t4\n\n1\t3.5\t3\t4\n", {}, "line 3", "'3.5'", id="udata-float-item"),
    pytest.param("u.data", "1\t2\t3\t4\n1\t3\tfive\t4\n", {}, "line 2", "'five'", id="udata-bad-rating"),
    pytest.param("ratings.dat", "1::2::3::4\n1::x7::3::4\n", {}, "line 2", "'x7'", id="dat-non-integer-item"),
    pytest.param("ratings.dat", "1::2::3::4\n1::7::3::4::9\n", {}, "line 2", repr("1::7::3::4::9"),
                 id="dat-too-many-fields"),
    pytest.param("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\nu1,2,3,4\n", {}, "line 3", "'u1'",
                 id="mlcsv-non-integer-user"),
    pytest.param("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,-,4\n", {}, "line 3", "'-'",
                 id="mlcsv-bad-rating"),
    pytest.param("graph.txt", "0 1 2\n1 2\n2 x 3\n", {}, "line 3", "'x'", id="adjacency-letter"),
    pytest.param("graph.txt", "0 1 2\n1 2.5\n", {}, "line 2", "'2.5'", id="adjacency-float"),
    pytest.param("graph.txt", "0 1 2\n\n1 -4\n", {}, "line 3", "'-4'", id="adjacency-negative"),
    pytest.param("graph.txt", "0 1\n1 4294967295\n", {}, "line 2", "4294967295", id="adjacency-too-large"),
    pytest.param("graph.txt", "0 1\n12345678901 1\n", {}, "line 2", "'12345678901'", id="adjacency-too-long"),
    pytest.param("events.tsv", "user\titem\na\tb\nc\td\te\n", {"user_col": "user", "item_col": "item"},
                 "line 3", repr("c\td\te"), id="tsv-too-many-fields"),
    pytest.param("events.tsv", "user\titem\na\tb\tc\n", {"user_col": "user", "item_col": "item"},
                 "line 2", repr("a\tb\tc"), id="tsv-first-row-too-many-fields"),
    pytest.param("events.csv", "user,item\na,b\n\nc,\n", {"user_col": "user", "item_col": "item"},
                 "line 4", "missing value in column 'item'", id="csv-missing-value"),
    pytest.param("events.csv", "user,item\na,b\nc,d\ne,f,g,h\n", {"user_col": "user", "item_col": "item"},
                 "line 4", "'e,f,g,h'", id="csv-too-many-fields"),
    pytest.param("events.csv", "user,item,r\na,b,1\nc,d,lots\n",
                 {"user_col": "user", "item_col": "item", "rating_col": "r", "min_rating": 1}, "line 3", "'lots'",
                 id="csv-non-numeric-rating"),
    pytest.param("x.inter", RECBOLE_HEADER + "u1\ti1\t5\t1\nu2\ti2\t5\tyesterday\n", {}, "line 3", "'yesterday'",
                 id="recbole-bad-timestamp"),
    pytest.param("x.inter", "user_id\titem_id\nu1\ti1\n", {}, "line 1", "'user_id'", id="recbole-untyped-header"),
]


def assert_names(message: str, path: Path, where: str, value: str) -> None:
    assert str(path) in message, message
    assert where in message, message
    assert value in message, message


@pytest.mark.parametrize(("name", "content", "kwargs", "where", "value"), LINE_CASES)
def test_bad_line_names_file_line_and_value(tmp_path: Path, name: str, content: str, kwargs: dict,
                                            where: str, value: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load(path, **kwargs)
    assert_names(str(info.value), path, where, value)


def test_data_error_is_a_peel_error_and_value_error(tmp_path: Path) -> None:
    path = tmp_path / "graph.txt"
    path.write_text("0 a\n")
    with pytest.raises(PeelError):
        load(path)
    with pytest.raises(ValueError):
        load(path)


TABLE_KW = {"user_col": "user", "item_col": "item"}


@pytest.mark.parametrize(("name", "content", "kwargs"), [
    ("graph.txt", "", {}),
    ("graph.txt", " \n\n\t\n", {}),
    ("u.data", "", {}),
    ("u.data", "\n\n", {}),
    ("ratings.dat", "", {}),
    ("ratings.csv", "", {}),
    ("events.csv", "", TABLE_KW),
    ("events.tsv", "\n", TABLE_KW),
    ("x.inter", "", {}),
])
def test_empty_file(tmp_path: Path, name: str, content: str, kwargs: dict) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match="empty") as info:
        load(path, **kwargs)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("name", "content", "kwargs"), [
    ("ratings.csv", "userId,movieId,rating,timestamp\n", {}),
    ("events.csv", "user,item\n", TABLE_KW),
    ("events.tsv", "user\titem\n", TABLE_KW),
    ("x.inter", RECBOLE_HEADER, {}),
])
def test_header_only_file(tmp_path: Path, name: str, content: str, kwargs: dict) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match="no interactions after the header") as info:
        load(path, **kwargs)
    assert str(path) in str(info.value)


def test_adjacency_with_only_user_ids(tmp_path: Path) -> None:
    path = tmp_path / "graph.txt"
    path.write_text("0\n1\n")
    with pytest.raises(DataError, match="no interactions") as info:
        load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("name", "content", "kwargs", "missing", "columns"), [
    ("events.csv", "user,product\na,b\n", TABLE_KW, "'item'", "['user', 'product']"),
    ("events.tsv", "uid\titem\na\tb\n", TABLE_KW, "'user'", "['uid', 'item']"),
    ("events.csv", "user,item\na,b\n", {**TABLE_KW, "timestamp_col": "ts"}, "'ts'", "['user', 'item']"),
    ("events.csv", "user,item\na,b\n", {**TABLE_KW, "rating_col": "stars", "min_rating": 3}, "'stars'",
     "['user', 'item']"),
    ("ratings.csv", "userId,itemId,rating,timestamp\n1,2,3,4\n", {}, "'movieId'",
     "['userId', 'itemId', 'rating', 'timestamp']"),
    ("x.inter", "user_id:token\tbook:token\nu\tb\n", {}, "'item_id'", "['user_id', 'book']"),
])
def test_missing_column_lists_available(tmp_path: Path, name: str, content: str, kwargs: dict, missing: str,
                                        columns: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and missing in message and columns in message


def test_parquet_missing_column_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame({"u": ["a", "b"], "i": [1, 2]}).to_parquet(path)
    with pytest.raises(DataError) as info:
        load(path, user_col="u", item_col="item")
    assert str(path) in str(info.value) and "'item'" in str(info.value) and "['u', 'i']" in str(info.value)

    holes = tmp_path / "holes.parquet"
    pd.DataFrame({"u": ["a", None, "c"], "i": [1, 2, 3]}).to_parquet(holes)
    with pytest.raises(DataError) as info:
        load(holes, user_col="u", item_col="i")
    assert_names(str(info.value), holes, "row 2", "missing value in column 'u'")

    rated = tmp_path / "rated.parquet"
    pd.DataFrame({"u": ["a", "b", "c"], "i": [1, 2, 3], "r": ["5", "4", "meh"]}).to_parquet(rated)
    with pytest.raises(DataError) as info:
        load(rated, user_col="u", item_col="i", rating_col="r", min_rating=4)
    assert_names(str(info.value), rated, "row 3", "'meh'")

    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match="Parquet") as info:
        load(garbage, user_col="u", item_col="i")
    assert str(garbage) in str(info.value)


def test_table_needs_user_and_item_columns(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user,item\na,b\n")
    with pytest.raises(DataError, match="--user-col and --item-col"):
        load(path)


def test_min_rating_needs_a_rating_column(tmp_path: Path) -> None:
    csv = tmp_path / "events.csv"
    csv.write_text("user,item\na,b\n")
    with pytest.raises(DataError, match="rating"):
        load(csv, user_col="user", item_col="item", min_rating=3)
    inter = tmp_path / "x.inter"
    inter.write_text("user_id:token\titem_id:token\nu\ti\n")
    with pytest.raises(DataError, match="rating:float"):
        load(inter, min_rating=3)


def test_min_rating_that_removes_everything(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("1\t2\t3\t4\n2\t2\t1\t4\n")
    with pytest.raises(DataError, match="rating >= 5") as info:
        load(path, min_rating=5)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------- pre-split directories
def write_split(folder: Path, train: str, valid: str, test: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(train)
    (folder / "valid.txt").write_text(valid)
    (folder / "test.txt").write_text(test)
    return folder


def test_cold_items_error_names_file_line_and_item(tmp_path: Path) -> None:
    folder = write_split(tmp_path / "d", "0 0 1\n1 1 2\n", "0 2\n1 0\n", "0 3\n1 7 0\n")
    with pytest.raises(DataError) as info:
        load_presplit(folder, cold_items="error")
    assert_names(str(info.value), folder / "test.txt", "line 1", "item 3")
    clean_valid = write_split(tmp_path / "e", "0 0 1\n1 1 2\n", "0 2\n1 9\n", "0 1\n")
    with pytest.raises(DataError) as info:
        load(clean_valid, cold_items="error")
    assert_names(str(info.value), clean_valid / "valid.txt", "line 2", "item 9")


def test_cold_items_keep_and_drop(tmp_path: Path) -> None:
    folder = write_split(tmp_path / "d", "0 0 1\n1 1 2\n", "0 2\n1 4\n", "0 3 2\n1 0\n")
    kept = load_presplit(folder)  # default: keep
    assert kept.n_items == 5 and len(kept) == 8
    assert kept.cold_items().tolist() == [3, 4]
    assert kept.popularity()[[3, 4]].tolist() == [0, 0]
    assert load_presplit(folder, cold_items="keep").cold_items().tolist() == [3, 4]

    dropped = load_presplit(folder, cold_items="drop")
    assert len(dropped) == 6 and dropped.n_items == 3
    assert dropped.item_ids.tolist() == [0, 1, 2]
    assert dropped.cold_items().tolist() == []
    entry = next(e for e in dropped.report if e["step"] == "cold_items")
    assert entry == {"step": "cold_items", "policy": "drop", "removed_items": 2, "removed_interactions": 2}
    assert (dropped.count("train"), dropped.count("valid"), dropped.count("test")) == (4, 1, 1)

    with pytest.raises(DataError, match="cold_items"):
        load_presplit(folder, cold_items="ignore")


def test_cold_items_drop_on_ml100k(ml100k, shared_data: Path) -> None:
    cold = ml100k.cold_items()
    in_cold = np.isin(ml100k.item, cold)
    dropped = load(shared_data / "ml-100k", cold_items="drop")
    assert dropped.n_items == 1682 - 63
    assert len(dropped) == len(ml100k) - int(in_cold.sum())
    assert dropped.count("train") == ml100k.count("train")
    assert not np.isin(dropped.item_ids, ml100k.item_ids[cold]).any()
    entry = next(e for e in dropped.report if e["step"] == "cold_items")
    assert entry["removed_items"] == 63 and entry["removed_interactions"] == int(in_cold.sum())


def test_cold_items_error_on_ml100k(shared_data: Path) -> None:
    with pytest.raises(DataError, match="never occurs in train.txt"):
        load(shared_data / "ml-100k", cold_items="error")


@pytest.mark.parametrize("missing", ["valid", "test"])
def test_presplit_missing_file(tmp_path: Path, missing: str) -> None:
    folder = write_split(tmp_path / "d", "0 1\n", "0 2\n", "0 3\n")
    (folder / f"{missing}.txt").unlink()
    with pytest.raises(DataError, match=f"missing {missing}.txt") as info:
        load(folder)
    assert str(folder) in str(info.value)


def test_directory_without_train(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "valid.txt").write_text("0 1\n")
    with pytest.raises(DataError, match="train.txt"):
        load(folder)
    with pytest.raises(DataError, match="missing train.txt"):
        load_presplit(folder)


def test_presplit_bad_line_names_the_split_file(tmp_path: Path) -> None:
    folder = write_split(tmp_path / "d", "0 1\n1 2\n", "0 2\n", "0 3\n1 three\n")
    with pytest.raises(DataError) as info:
        load(folder)
    assert_names(str(info.value), folder / "test.txt", "line 2", "'three'")


def test_presplit_empty_train(tmp_path: Path) -> None:
    folder = write_split(tmp_path / "d", "", "0 2\n", "0 3\n")
    with pytest.raises(DataError, match="empty") as info:
        load(folder)
    assert str(folder / "train.txt") in str(info.value)


def test_presplit_id_map_too_short(tmp_path: Path) -> None:
    folder = write_split(tmp_path / "d", "0 1\n2 0\n", "0 0\n", "2 1\n")
    (folder / "user_ids.txt").write_text("alice\nbob\n")
    with pytest.raises(DataError, match="user id 2 has no entry in user_ids.txt"):
        load(folder)


# ---------------------------------------------------------------------- formats and paths
def test_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user,item\na,b\n")
    with pytest.raises(DataError, match="unknown format 'xml'"):
        load(path, format="xml")


def test_undetectable_format(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text("[]")
    with pytest.raises(DataError, match="cannot tell the format") as info:
        load(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="cannot tell the format"):
        detect_format(path)


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"
    with pytest.raises(DataError, match="no such file") as info:
        load(path)
    assert str(path) in str(info.value)


def test_no_interactions_from_raw() -> None:
    with pytest.raises(DataError, match="no interactions"):
        Interactions.from_raw(np.array([], dtype=np.int64), np.array([], dtype=np.int64))


def test_inconsistent_arrays_refused() -> None:
    with pytest.raises(DataError, match="differ in length"):
        Interactions.from_internal(np.array([0, 1]), np.array([0]), n_users=2, n_items=1)
    with pytest.raises(DataError, match="item ids must lie"):
        Interactions.from_internal(np.array([0, 1]), np.array([0, 3]), n_users=2, n_items=3)


def test_misaligned_side_arrays_refused() -> None:
    users, items = np.array(["a", "b", "a"]), np.array(["x", "x", "y"])
    with pytest.raises(DataError, match="timestamp"):
        Interactions.from_raw(users, items, timestamp=np.arange(4))
    with pytest.raises(DataError, match="split"):
        Interactions.from_raw(users, items, split=np.zeros(2, dtype=np.int8))
