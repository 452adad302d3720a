"""Every loader: adjacency, pre-split directory, MovieLens, CSV / TSV / Parquet, RecBole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from peel.data import (
    detect_format,
    load,
    load_adjacency,
    load_movielens,
    load_presplit,
    load_recbole,
    load_table,
    read_adjacency,
)
from peel.errors import DataError


def check_id_maps(data, raw_user, raw_item) -> None:
    """Internal -> raw via user_ids/item_ids, and raw -> internal consistent with the rows."""
    assert len(set(data.user_ids.tolist())) == data.n_users
    assert len(set(data.item_ids.tolist())) == data.n_items
    user_index = {raw: i for i, raw in enumerate(data.user_ids.tolist())}
    item_index = {raw: j for j, raw in enumerate(data.item_ids.tolist())}
    matrix = data.csr()
    for u, i in zip(raw_user, raw_item, strict=True):
        assert matrix[user_index[u], item_index[i]] == 1, (u, i)
    assert set(user_index) == set(raw_user)
    assert set(item_index) == set(raw_item)


# ---------------------------------------------------------------------- adjacency
def test_adjacency_parses_users_items_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("0 3 1\n2 0\n\n5 4 4 1\r\n")
    user, item, line = read_adjacency(path)
    assert user.tolist() == [0, 0, 2, 5, 5, 5]
    assert item.tolist() == [3, 1, 0, 4, 4, 1]
    assert line.tolist() == [1, 1, 2, 4, 4, 4]


def test_load_adjacency_ids_csr_popularity_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "graph.txt"
    # tabs and repeated spaces are whitespace too; user 1 has no line; user 2 appears on two lines
    path.write_text("0 3 1\n2\t0  2\n3 1 1 1\n2 3\n")
    data = load_adjacency(path)
    assert (data.n_users, data.n_items) == (4, 4)  # largest id + 1
    assert data.user_ids.tolist() == [0, 1, 2, 3] and data.item_ids.tolist() == [0, 1, 2, 3]
    expected = np.array([[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 1, 1], [0, 1, 0, 0]])
    np.testing.assert_array_equal(data.csr().toarray(), expected)
    assert data.csr().shape == (4, 4)
    np.testing.assert_array_equal(data.popularity(), expected.sum(axis=0))
    np.testing.assert_array_equal(data.user_degree(), expected.sum(axis=1))
    assert len(data) == 6
    assert {"step": "duplicates", "removed_interactions": 2} in data.report
    assert not data.is_split
    # rows come out sorted by (user, item)
    keys = data.user.astype(np.int64) * data.n_items + data.item
    assert np.all(np.diff(keys) > 0)


def test_load_dispatches_txt_to_adjacency(tmp_path: Path) -> None:
    path = tmp_path / "some.txt"
    path.write_text("1 2\n")
    data = load(path)
    assert (data.n_users, data.n_items, len(data)) == (2, 3, 1)
    assert data.user.tolist() == [1] and data.item.tolist() == [2]


# ---------------------------------------------------------------------- pre-split directory
def test_presplit_ml100k_matches_stats_json(ml100k, shared_data: Path) -> None:
    stats = json.loads((shared_data / "ml-100k" / "stats.json").read_text())
    assert ml100k.is_split
    assert ml100k.n_users == stats["users"] == 943
    assert ml100k.n_items == stats["items"] == 1682
    assert len(ml100k) == stats["interactions"]
    for split in ("train", "valid", "test"):
        assert ml100k.count(split) == stats[f"{split}_interactions"]
    assert ml100k.report == ()  # nothing dropped: no duplicates in the shipped files
    assert ml100k.name == "ml-100k"


def test_presplit_ml100k_content_and_cold_items(ml100k, shared_data: Path, parse_adjacency, pairs) -> None:
    folder = shared_data / "ml-100k"
    files = {s: parse_adjacency(folder / f"{s}.txt") for s in ("train", "valid", "test")}
    for split, expected in files.items():
        assert pairs(ml100k, split) == expected
    everything = set().union(*files.values())
    assert ml100k.n_items == max(i for _, i in everything) + 1
    assert ml100k.n_users == max(u for u, _ in everything) + 1
    train_items = {i for _, i in files["train"]}
    eval_items = {i for _, i in files["valid"] | files["test"]}
    cold = sorted(eval_items - train_items)
    assert len(cold) == 63  # ERRATA, issue 2
    assert ml100k.cold_items().tolist() == cold
    assert ml100k.stats()["cold_items"] == 63
    popularity = ml100k.popularity()  # training popularity by default
    assert popularity[cold].sum() == 0
    assert popularity.sum() == ml100k.count("train") == len(files["train"])
    train_csr = ml100k.csr("train")
    assert train_csr.shape == (943, 1682) and train_csr.nnz == len(files["train"])
    np.testing.assert_array_equal(np.asarray(train_csr.sum(axis=0)).ravel(), popularity)


def test_load_auto_detects_presplit(shared_data: Path) -> None:
    assert detect_format(shared_data / "ml-100k") == "presplit"
    data = load(shared_data / "ml-100k")
    assert (data.n_users, data.n_items, data.count("test")) == (943, 1682, 20000)


# ---------------------------------------------------------------------- MovieLens
def test_movielens_udata(ml100k_raw, udata_rows: np.ndarray, raw_pairs) -> None:
    data = ml100k_raw
    assert (data.n_users, data.n_items, len(data)) == (943, 1682, 100000)
    assert not data.is_split
    # raw ids are 1-based; internal ids are contiguous from 0 in sorted raw order
    np.testing.assert_array_equal(data.user_ids, np.arange(1, 944))
    np.testing.assert_array_equal(data.item_ids, np.arange(1, 1683))
    assert raw_pairs(data) == set(zip(udata_rows[:, 0].tolist(), udata_rows[:, 1].tolist(), strict=True))
    np.testing.assert_array_equal(data.popularity(), np.bincount(udata_rows[:, 1] - 1, minlength=1682))
    np.testing.assert_array_equal(data.user_degree(), np.bincount(udata_rows[:, 0] - 1, minlength=943))
    assert data.report[0]["step"] == "read" and data.report[0]["rows"] == 100000
    # the timestamp column travels with its row
    order = np.lexsort((udata_rows[:, 1], udata_rows[:, 0]))
    np.testing.assert_array_equal(data.timestamp, udata_rows[order, 3])


def test_movielens_udata_min_rating(udata_path: Path, udata_rows: np.ndarray, raw_pairs) -> None:
    data = load(udata_path, min_rating=4)
    kept = udata_rows[udata_rows[:, 2] >= 4]
    assert len(data) == len(kept)
    entry = next(e for e in data.report if e["step"] == "min_rating")
    assert entry["removed_interactions"] == int((udata_rows[:, 2] < 4).sum())
    assert entry["threshold"] == 4
    assert raw_pairs(data) == set(zip(kept[:, 0].tolist(), kept[:, 1].tolist(), strict=True))


def test_movielens_ratings_dat(tmp_path: Path, raw_pairs) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text("10::7::5::978300760\n10::3::3::978302109\n4::7::4::978301968\n10::7::2::978300275\n")
    assert detect_format(path) == "movielens"
    data = load(path)
    assert (data.n_users, data.n_items, len(data)) == (2, 2, 3)
    assert data.user_ids.tolist() == [4, 10] and data.item_ids.tolist() == [3, 7]
    assert raw_pairs(data) == {(10, 7), (10, 3), (4, 7)}
    assert {"step": "duplicates", "removed_interactions": 1} in data.report
    # the first occurrence of a duplicated pair is kept (with its timestamp)
    row = np.flatnonzero((data.user_ids[data.user] == 10) & (data.item_ids[data.item] == 7))
    assert data.timestamp[row].tolist() == [978300760]
    strict = load(path, min_rating=4)
    assert raw_pairs(strict) == {(10, 7), (4, 7)}
    assert next(e for e in strict.report if e["step"] == "min_rating")["removed_interactions"] == 2


def test_movielens_ratings_csv(tmp_path: Path, raw_pairs) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n"
                    "7,31,4.5,1260759182\n")
    data = load(path)
    assert (data.n_users, data.n_items, len(data)) == (2, 2, 3)
    assert raw_pairs(data) == {(1, 31), (1, 1029), (7, 31)}
    check_id_maps(data, [1, 1, 7], [31, 1029, 31])
    assert sorted(data.timestamp.tolist()) == [1260759144, 1260759179, 1260759182]
    high = load_movielens(path, min_rating=3.0)
    assert raw_pairs(high) == {(1, 1029), (7, 31)}
    assert next(e for e in high.report if e["step"] == "min_rating")["removed_interactions"] == 1


# ---------------------------------------------------------------------- generic tables
CSV_TEXT = ("user,item,score,ts\n"
            "alice,book-a,5,10\n"
            "bob, book-b ,1,20\n"
            "alice,book-b,4,30\n"
            "carol,book-c,4.5,40\n"
            "alice,book-a,2,50\n")


def test_csv_string_ids_rating_threshold_timestamp(tmp_path: Path, raw_pairs) -> None:
    path = tmp_path / "events.csv"
    path.write_text(CSV_TEXT)
    data = load(path, user_col="user", item_col="item")
    assert data.user_ids.tolist() == ["alice", "bob", "carol"]
    assert data.item_ids.tolist() == ["book-a", "book-b", "book-c"]  # surrounding spaces stripped
    check_id_maps(data, ["alice", "bob", "alice", "carol"], ["book-a", "book-b", "book-b", "book-c"])
    assert len(data) == 4
    assert {"step": "duplicates", "removed_interactions": 1} in data.report
    assert data.timestamp is None

    rated = load(path, user_col="user", item_col="item", rating_col="score", min_rating=4, timestamp_col="ts")
    assert raw_pairs(rated) == {("alice", "book-a"), ("alice", "book-b"), ("carol", "book-c")}
    assert rated.user_ids.tolist() == ["alice", "carol"]  # bob's only interaction was filtered out
    entry = next(e for e in rated.report if e["step"] == "min_rating")
    assert entry["removed_interactions"] == 2 and entry["threshold"] == 4
    by_pair = {(rated.user_ids[u], rated.item_ids[i]): t
               for u, i, t in zip(rated.user, rated.item, rated.timestamp, strict=True)}
    assert by_pair == {("alice", "book-a"): 10, ("alice", "book-b"): 30, ("carol", "book-c"): 40}


def test_csv_integer_ids_are_integers(tmp_path: Path) -> None:
    path = tmp_path / "ints.csv"
    path.write_text("u,i\n30,7\n10,7\n10,5\n")
    data = load_table(path, user_col="u", item_col="i")
    assert np.issubdtype(data.user_ids.dtype, np.integer)
    assert data.user_ids.tolist() == [10, 30] and data.item_ids.tolist() == [5, 7]
    np.testing.assert_array_equal(data.csr().toarray(), [[1, 1], [0, 1]])


def test_tsv(tmp_path: Path, raw_pairs) -> None:
    path = tmp_path / "events.tsv"
    path.write_text("session\tproduct\tstars\n"
                    "s1\tp9\t3\n"
                    "s2\tp9\t5\n"
                    "\n"
                    "s1\tp1\t5\n")
    data = load(path, user_col="session", item_col="product", rating_col="stars", min_rating=4)
    assert raw_pairs(data) == {("s2", "p9"), ("s1", "p1")}
    assert {"step": "blank_lines", "removed_rows": 1} in data.report
    assert next(e for e in data.report if e["step"] == "min_rating")["removed_interactions"] == 1
    assert detect_format(path) == "tsv"


def test_parquet(tmp_path: Path, raw_pairs) -> None:
    path = tmp_path / "events.parquet"
    frame = pd.DataFrame({"uid": ["u2", "u1", "u2", "u1"], "iid": [100, 200, 200, 100],
                          "r": [1.0, 5.0, 4.0, 3.0], "when": [4, 3, 2, 1]})
    frame.to_parquet(path)
    data = load(path, user_col="uid", item_col="iid", rating_col="r", min_rating=3, timestamp_col="when")
    assert data.user_ids.tolist() == ["u1", "u2"]
    assert data.item_ids.tolist() == [100, 200]
    assert raw_pairs(data) == {("u1", 200), ("u2", 200), ("u1", 100)}
    assert next(e for e in data.report if e["step"] == "min_rating")["removed_interactions"] == 1
    assert sorted(data.timestamp.tolist()) == [1, 2, 3]
    everything = load(path, user_col="uid", item_col="iid")
    assert len(everything) == 4 and everything.csr().shape == (2, 2)
    check_id_maps(everything, frame["uid"].tolist(), frame["iid"].tolist())


# ---------------------------------------------------------------------- RecBole
def test_recbole_inter(tmp_path: Path, raw_pairs) -> None:
    path = tmp_path / "ml.inter"
    path.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                    "u1\ti1\t5\t100\n"
                    "u2\ti1\t2\t200\n"
                    "u1\ti2\t4\t300\n"
                    "u1\ti1\t3\t400\n")
    assert detect_format(path) == "recbole"
    data = load(path)
    assert (data.n_users, data.n_items, len(data)) == (2, 2, 3)
    check_id_maps(data, ["u1", "u2", "u1"], ["i1", "i1", "i2"])
    assert {"step": "duplicates", "removed_interactions": 1} in data.report
    assert sorted(data.timestamp.tolist()) == [100.0, 200.0, 300.0]
    rated = load_recbole(path, min_rating=4)
    assert raw_pairs(rated) == {("u1", "i1"), ("u1", "i2")}
    assert next(e for e in rated.report if e["step"] == "min_rating")["removed_interactions"] == 2


def test_recbole_custom_columns(tmp_path: Path, raw_pairs) -> None:
    path = tmp_path / "x.inter"
    path.write_text("session_id:token\tbusiness_id:token\n7\t1\n7\t2\n8\t2\n")
    data = load(path, user_col="session_id", item_col="business_id")
    assert raw_pairs(data) == {(7, 1), (7, 2), (8, 2)}
    with pytest.raises(DataError, match="business_id"):  # the default user_id / item_id are missing
        load(path)


# ---------------------------------------------------------------------- format detection
@pytest.mark.parametrize(("name", "expected"), [
    ("u.data", "movielens"), ("ratings.dat", "movielens"), ("ratings.csv", "movielens"),
    ("x.inter", "recbole"), ("x.parquet", "parquet"), ("x.pq", "parquet"), ("x.csv", "csv"),
    ("x.tsv", "tsv"), ("x.tab", "tsv"), ("x.txt", "adjacency"), ("X.CSV", "csv"),
])
def test_detect_format(tmp_path: Path, name: str, expected: str) -> None:
    assert detect_format(tmp_path / name) == expected


def test_presplit_explicit_format(shared_data: Path) -> None:
    data = load_presplit(shared_data / "ml-100k", name="custom")
    assert data.name == "custom"
    assert load(shared_data / "ml-100k", format="presplit").count("valid") == 9988
