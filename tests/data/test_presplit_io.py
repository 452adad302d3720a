"""save_presplit / load_presplit: round trips, id maps, stats.json, atomic writes, duplicates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from peel.data import Interactions, load, load_presplit, save_presplit
from peel.errors import DataError, PeelError

SPLITS = ("train", "valid", "test")


def raw_split_pairs(data, split: str) -> set[tuple[object, object]]:
    mask = data.rows(split)
    return set(zip(data.user_ids[data.user[mask]].tolist(), data.item_ids[data.item[mask]].tolist(), strict=True))


def assert_same_dataset(a, b) -> None:
    assert (a.n_users, a.n_items, len(a)) == (b.n_users, b.n_items, len(b))
    assert a.user_ids.tolist() == b.user_ids.tolist()
    assert a.item_ids.tolist() == b.item_ids.tolist()
    for split in SPLITS:
        assert raw_split_pairs(a, split) == raw_split_pairs(b, split)
        assert (a.csr(split) != b.csr(split)).nnz == 0


def test_round_trip_udata(tmp_path: Path, ml100k_raw, parse_adjacency) -> None:
    data = ml100k_raw.split_random(seed=11)
    out = save_presplit(data, tmp_path / "ml", provenance={"source": "u.data"})
    assert out == tmp_path / "ml"
    back = load_presplit(out)
    assert_same_dataset(data, back)
    # raw MovieLens ids are 1-based, so the maps are written and read back as integers
    assert (out / "user_ids.txt").read_text().split() == [str(i) for i in range(1, 944)]
    assert np.issubdtype(back.user_ids.dtype, np.integer) and back.item_ids[0] == 1
    # the files are plain adjacency text over internal ids
    for split in SPLITS:
        mask = data.rows(split)
        assert parse_adjacency(out / f"{split}.txt") == set(zip(data.user[mask].tolist(), data.item[mask].tolist(),
                                                                    strict=True))
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
    for split in SPLITS:
        assert stats[f"{split}_interactions"] == data.count(split)
        assert stats[f"{split}_sha256"] == hashlib.sha256((out / f"{split}.txt").read_bytes()).hexdigest()
    assert stats["provenance"] == {"source": "u.data"}
    assert [e["step"] for e in stats["removed"]] == ["read", "split"]


def test_round_trip_shipped_files_byte_for_byte(tmp_path: Path, ml100k, shared_data: Path) -> None:
    out = save_presplit(ml100k, tmp_path / "copy")
    assert not (out / "user_ids.txt").exists() and not (out / "item_ids.txt").exists()  # ids are 0..n-1
    back = load_presplit(out)
    assert_same_dataset(ml100k, back)
    assert back.cold_items().tolist() == ml100k.cold_items().tolist()
    shipped = json.loads((shared_data / "ml-100k" / "stats.json").read_text())
    written = json.loads((out / "stats.json").read_text())
    for split in SPLITS:  # same pairs and the same canonical line layout -> the same checksum
        assert written[f"{split}_sha256"] == shipped[f"{split}_sha256"]


def test_round_trip_string_ids(tmp_path: Path) -> None:
    users = np.array(["zoe", "al", "al", "bo", "bo", "bo", "zoe", "zoe", "al", "bo", "cy", "cy", "cy"])
    items = np.array(["B", "A", "B", "C", "A", "B", "C", "A", "C", "D", "D", "a b", "A"])
    data = Interactions.from_raw(users, items, name="str").split_random(seed=3)
    out = save_presplit(data, tmp_path / "str")
    assert (out / "user_ids.txt").read_text().splitlines() == ["al", "bo", "cy", "zoe"]
    assert (out / "item_ids.txt").read_text().splitlines() == ["A", "B", "C", "D", "a b"]
    back = load(out)
    assert_same_dataset(data, back)
    assert back.name == "str"
    assert back.user_ids.dtype == object


def test_refuses_non_empty_directory(tmp_path: Path, ml100k) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.me").write_text("precious")
    with pytest.raises(PeelError, match="not empty"):
        save_presplit(ml100k, out)
    assert [p.name for p in out.iterdir()] == ["keep.me"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temporary left behind

    save_presplit(ml100k, out, overwrite=True)
    assert not (out / "keep.me").exists()
    assert load(out).count("test") == 20000
    empty = tmp_path / "empty"
    empty.mkdir()
    save_presplit(ml100k, empty)  # an existing empty directory is fine
    assert (empty / "train.txt").exists()


def test_refuses_a_file_as_directory(tmp_path: Path, ml100k) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(PeelError, match="not a directory"):
        save_presplit(ml100k, target)


def test_failure_leaves_nothing(tmp_path: Path, ml100k, monkeypatch: pytest.MonkeyPatch) -> None:
    import peel.data.stats

    def broken(directory):
        raise RuntimeError("disk full")

    monkeypatch.setattr(peel.data.stats, "file_checksums", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_presplit(ml100k, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "train.txt").write_text("0 1\n")
    with pytest.raises(RuntimeError, match="disk full"):
        save_presplit(ml100k, existing, overwrite=True)
    assert [p.name for p in existing.iterdir()] == ["train.txt"]  # the old content survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_refuses_unsplit_data(tmp_path: Path, ml100k_raw) -> None:
    with pytest.raises(DataError, match="split_random"):
        save_presplit(ml100k_raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_an_empty_split(tmp_path: Path) -> None:
    # every user has fewer than 3 interactions: valid and test are empty, which load_presplit would refuse
    data = Interactions.from_raw(np.array(["a", "a", "b"]), np.array(["x", "y", "x"])).split_random(seed=0)
    assert data.count("valid") == 0
    with pytest.raises(DataError, match="valid split is empty"):
        save_presplit(data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_round_trip_after_dropping_cold_items(tmp_path: Path, ml100k) -> None:
    dropped = ml100k.drop_cold_items()
    out = save_presplit(dropped, tmp_path / "warm")
    assert (out / "item_ids.txt").exists()  # original item ids are no longer 0..n-1
    back = load_presplit(out, cold_items="error")  # no cold item left
    assert_same_dataset(dropped, back)


def test_duplicates_across_splits_earliest_wins(tmp_path: Path) -> None:
    folder = tmp_path / "dup"
    folder.mkdir()
    (folder / "train.txt").write_text("0 0 1\n1 1 2\n")
    (folder / "valid.txt").write_text("0 1 3\n1 2\n")  # (0, 1) and (1, 2) are in train already
    (folder / "test.txt").write_text("0 3 4\n1 0 0\n")  # (0, 3) is in valid; (1, 0) twice
    data = load_presplit(folder)
    assert {"step": "duplicates", "removed_interactions": 4} in data.report
    assert raw_split_pairs(data, "train") == {(0, 0), (0, 1), (1, 1), (1, 2)}
    assert raw_split_pairs(data, "valid") == {(0, 3)}
    assert raw_split_pairs(data, "test") == {(0, 4), (1, 0)}
    assert len(data) == 7


def test_duplicates_within_a_file_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("1\t2\t5\t10\n1\t2\t3\t11\n1\t3\t5\t12\n1\t2\t1\t13\n2\t2\t4\t14\n")
    data = load(path)
    assert len(data) == 3
    assert {"step": "duplicates", "removed_interactions": 2} in data.report
    assert data.stats()["removed"] == list(data.report)
