"""atomic_directory: a directory that appears or changes during the build is never deleted, and an
output that overlaps an input is refused (the races are made deterministic inside the ``with`` block)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from peel._io import atomic_directory
from peel.errors import PeelError


def _build(tmp: Path, text: str = "new") -> None:
    (tmp / "a.txt").write_text(text)


def test_directory_created_meanwhile_is_kept_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(PeelError, match=f"{out}.*appeared"):
        with atomic_directory(out) as tmp:
            _build(tmp)
            out.mkdir()  # another process (a concurrent export) finished first
            (out / "theirs.txt").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


def test_file_created_meanwhile_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(PeelError, match="appeared"):
        with atomic_directory(out) as tmp:
            _build(tmp)
            out.write_text("theirs")
    assert out.read_text() == "theirs"


def test_empty_directory_created_meanwhile_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_directory(out) as tmp:
        _build(tmp)
        out.mkdir()
    assert (out / "a.txt").read_text() == "new"


def test_force_replaces_only_the_directory_that_was_checked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(PeelError, match="replaced meanwhile"):
        with atomic_directory(out, overwrite=True) as tmp:
            _build(tmp)
            shutil.rmtree(out)
            out.mkdir()
            (out / "theirs.txt").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_force_on_a_missing_directory_keeps_one_created_meanwhile(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(PeelError, match="appeared"):
        with atomic_directory(out, overwrite=True) as tmp:
            _build(tmp)
            out.mkdir()
            (out / "theirs.txt").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]


def test_force_replaces_the_checked_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_directory(out, overwrite=True) as tmp:
        _build(tmp)
        (out / "more.txt").write_text("written meanwhile into the same directory")
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("where", ["same", "inside", "containing", "symlink"])
def test_output_overlapping_an_input_is_refused_even_with_force(tmp_path: Path, where: str) -> None:
    source = tmp_path / "data" / "source"
    source.mkdir(parents=True)
    (source / "train.txt").write_text("0 1\n")
    os.symlink(source, tmp_path / "link")
    out = {"same": source, "inside": source / "sub", "containing": tmp_path / "data",
           "symlink": tmp_path / "link"}[where]
    with pytest.raises(PeelError, match=f"{source}"):
        with atomic_directory(out, overwrite=True, inputs=[source]) as tmp:
            _build(tmp)
    assert (source / "train.txt").read_text() == "0 1\n"
    assert not (source / "sub").exists()


def test_output_containing_the_working_directory_is_refused(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    for out in (Path("."), Path(".."), tmp_path):
        with pytest.raises(PeelError, match="current directory"):
            with atomic_directory(out, overwrite=True) as tmp:
                _build(tmp)
    assert (tmp_path / "work").is_dir()
