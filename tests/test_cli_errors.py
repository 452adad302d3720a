"""What escapes `peel`: one line and exit 2 for any error, --debug / PEEL_DEBUG=1 for the traceback,
exit 130 on Ctrl-C, and --json output that a strict JSON parser accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import peel.data
from peel.cli import _print_json, main


def run_main(monkeypatch: pytest.MonkeyPatch, raised: BaseException, *argv: str) -> int:
    """Run ``main()`` on ``peel [argv] data stats x`` with the loader raising ``raised``; returns the exit code."""

    def boom(*_: Any, **__: Any) -> None:
        raise raised

    monkeypatch.setattr(peel.data, "load", boom)
    monkeypatch.setattr(sys, "argv", ["peel", *argv, "data", "stats", "whatever"])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_os_error_is_one_line_naming_the_path(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PEEL_DEBUG", raising=False)
    code = run_main(monkeypatch, PermissionError(13, "Permission denied", "/data/secret.csv"))
    line = one_line(capsys.readouterr().err)
    assert code == 2
    assert "/data/secret.csv" in line and "Permission denied" in line and "Traceback" not in line


def test_is_a_directory_from_the_real_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PEEL_DEBUG", raising=False)
    folder = tmp_path / "graph.txt"
    folder.mkdir()
    monkeypatch.setattr(sys, "argv", ["peel", "data", "stats", str(folder), "--format", "adjacency"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert str(folder) in one_line(capsys.readouterr().err)


def test_unexpected_exception_is_an_internal_error_line(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PEEL_DEBUG", raising=False)
    code = run_main(monkeypatch, ZeroDivisionError("division by zero\nsecond line"))
    line = one_line(capsys.readouterr().err)
    assert code == 2
    assert "internal error" in line and "--debug" in line and "ZeroDivisionError" in line


@pytest.mark.parametrize("how", ["option", "environment"])
def test_debug_shows_the_traceback(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    argv: tuple[str, ...] = ("--debug",) if how == "option" else ()
    if how == "environment":
        monkeypatch.setenv("PEEL_DEBUG", "1")
    else:
        monkeypatch.delenv("PEEL_DEBUG", raising=False)
    with pytest.raises(ZeroDivisionError):
        run_main(monkeypatch, ZeroDivisionError("boom"), *argv)


def test_keyboard_interrupt_exits_130_quietly(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PEEL_DEBUG", raising=False)
    assert run_main(monkeypatch, KeyboardInterrupt()) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_console_script_internal_error_in_a_subprocess(tmp_path: Path) -> None:
    """The real entry point: a traceback never reaches the terminal without --debug."""
    code = ("import sys, peel.data, peel.cli\n"
            "def boom(*a, **k): raise RuntimeError('unexpected')\n"
            "peel.data.load = boom\n"
            "sys.argv = ['peel', *sys.argv[1:], 'data', 'stats', 'x']\n"
            "peel.cli.main()\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "PEEL_DEBUG"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert "internal error" in one_line(quiet.stderr)
    loud = subprocess.run([sys.executable, "-c", code, "--debug"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "RuntimeError: unexpected" in loud.stderr


def strict_loads(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_print_json_writes_null_for_non_finite(capsys: pytest.CaptureFixture[str]) -> None:
    _print_json({"scores": [1.5, float("nan"), float("inf")], "x": np.float32("nan"),
                 "arr": np.array([np.nan, 2.0, -np.inf], dtype=np.float32), "n": np.int64(3), "t": (1.0, None)})
    parsed = strict_loads(capsys.readouterr().out)
    assert parsed == {"scores": [1.5, None, None], "x": None, "arr": [None, 2.0, None], "n": 3, "t": [1.0, None]}
