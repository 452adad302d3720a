"""Atomic writes: a crash never leaves a half-written file or directory that looks valid."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def refuse_overlap(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = (), *,
                   cwd: bool = True) -> None:
    """Refuse an output directory equal to, inside or containing an input (paths resolved, symlinks
    followed), or (``cwd``) containing the current directory: writing it would replace what is read."""
    from peel.errors import PeelError

    target = Path(out).resolve()
    for item in inputs:
        source = Path(item).resolve()
        if target.is_relative_to(source) or source.is_relative_to(target):
            relation = "is" if target == source else "is inside" if target.is_relative_to(source) else "contains"
            raise PeelError(f"output {target} {relation} the input {source}; choose an output outside it")
    here = Path.cwd().resolve()
    if cwd and here.is_relative_to(target):
        raise PeelError(f"output {target} is or contains the current directory {here}; choose another output")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = False,
                     inputs: Iterable[str | os.PathLike[str]] = ()) -> Iterator[Path]:
    """Build a directory in a temporary sibling and move it into place when the block succeeds.

    An existing non-empty ``path`` is refused unless ``overwrite``; then exactly the directory seen
    now is replaced once the new one is complete. Whatever else appears at ``path`` meanwhile is kept
    and the new output discarded (PeelError). An output overlapping one of ``inputs`` is refused.
    """
    from peel.errors import PeelError

    path = Path(path).resolve()
    refuse_overlap(path, inputs)
    if path.exists() and not path.is_dir():
        raise PeelError(f"output {path} exists and is not a directory")
    held = None  # an open handle keeps the checked directory's inode from being reused by another one
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise PeelError(f"output directory {path} is not empty; pass --force to replace it")
        held = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; a dataset directory gets the usual permissions
    try:
        yield tmp
        if held is None:
            _place(tmp, path)
        else:
            _replace(tmp, path, os.fstat(held))
    finally:
        if held is not None:
            os.close(held)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _place(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` onto ``path``, which must be missing or an empty directory (POSIX rename refuses
    a non-empty one, atomically)."""
    from peel.errors import PeelError

    try:
        os.rename(tmp, path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        raise PeelError(f"output {path} appeared while the new output was being written (another process?); "
                        "it is left as it is and the new output was discarded; choose another output or "
                        "pass --force to replace it") from None


def _replace(tmp: Path, path: Path, checked: os.stat_result) -> None:
    """Move the directory at ``path`` aside, check it is the one ``checked``, put ``tmp`` in its place."""
    from peel.errors import PeelError

    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    try:
        os.rename(path, aside)  # onto an empty directory: atomic
    except FileNotFoundError:  # removed meanwhile: nothing of anyone's is lost by placing ours
        aside.rmdir()
        _place(tmp, path)
        return
    except OSError:
        aside.rmdir()
        raise PeelError(f"output {path} was replaced meanwhile by something that is not a directory; it is "
                        "left as it is and the new output was discarded") from None
    moved = os.lstat(aside)
    if (moved.st_dev, moved.st_ino) != (checked.st_dev, checked.st_ino):
        raise PeelError(f"output {path} was replaced meanwhile by another directory (another process?); "
                        f"that directory {_restore(aside, path)}; the new output was discarded")
    try:
        _place(tmp, path)
    except PeelError:
        raise PeelError(f"output {path} appeared again while it was being replaced; the previous output "
                        f"{_restore(aside, path)}; the new output was discarded") from None
    shutil.rmtree(aside, ignore_errors=True)


def _restore(aside: Path, path: Path) -> str:
    try:
        os.rename(aside, path)
        return "is left in place"
    except OSError:
        return f"was moved aside to {aside}"
