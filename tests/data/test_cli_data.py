"""`peel data stats | prepare | synth` through the CLI, and the error path (exit code 2, one line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from peel.cli import app, main
from peel.data import load
from peel.errors import DataError

runner = CliRunner()
CHECKED_KEYS = {"users", "items", "interactions", "train_interactions", "valid_interactions", "test_interactions",
                "train_sha256", "valid_sha256", "test_sha256"}


def invoke_ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def peel_command() -> list[str]:
    script = Path(sys.executable).parent / "peel"
    return [str(script)] if script.exists() else [sys.executable, "-m", "peel.cli"]


@pytest.mark.parametrize(("name", "cold"), [("amazon-book-sub", 580), ("ml-100k", 63)])
def test_stats_json_agrees_with_stats_file(shared_data: Path, name: str, cold: int) -> None:
    folder = shared_data / name
    printed = json.loads(invoke_ok("data", "stats", str(folder), "--json"))
    shipped = json.loads((folder / "stats.json").read_text())
    common = printed.keys() & shipped.keys()
    assert CHECKED_KEYS <= common
    for key in sorted(common):
        assert printed[key] == shipped[key], key
    assert printed["cold_items"] == cold
    assert printed["name"] == name
    assert printed["popularity"]["split"] == "train"
    assert printed["popularity"]["items_without_interactions"] >= cold


def test_stats_of_a_raw_file(udata_path: Path) -> None:
    printed = json.loads(invoke_ok("data", "stats", str(udata_path), "--json"))
    assert (printed["users"], printed["items"], printed["interactions"]) == (943, 1682, 100000)
    assert not any(key.endswith("sha256") or key.endswith("_interactions") for key in printed)
    assert printed["popularity"]["split"] == "all"
    assert printed["interactions_per_user"]["min"] == 20


def test_stats_cold_items_drop(shared_data: Path) -> None:
    printed = json.loads(invoke_ok("data", "stats", str(shared_data / "ml-100k"), "--json", "--cold-items", "drop"))
    assert printed["items"] == 1682 - 63 and printed["cold_items"] == 0
    assert any(entry["step"] == "cold_items" and entry["removed_items"] == 63 for entry in printed["removed"])


def test_stats_table(shared_data: Path) -> None:
    out = invoke_ok("data", "stats", str(shared_data / "ml-100k"))
    assert "cold_items" in out and "1,682" in out and "70,012" in out


def test_prepare_udata_round_trip(tmp_path: Path, udata_path: Path) -> None:
    out = tmp_path / "ml"
    invoke_ok("data", "prepare", str(udata_path), "--out", str(out), "--seed", "5")
    data = load(out)
    assert (data.n_users, data.n_items, len(data)) == (943, 1682, 100000)
    assert (data.count("train"), data.count("valid"), data.count("test")) == (70012, 9988, 20000)
    assert data.user_ids.tolist() == list(range(1, 944))  # raw MovieLens ids survive
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
    assert stats["provenance"]["seed"] == 5 and stats["provenance"]["source"] == str(udata_path)
    assert stats["name"] == "ml"
    # the seed decides the split; the same seed gives the same files
    again = tmp_path / "again"
    invoke_ok("data", "prepare", str(udata_path), "--out", str(again), "--seed", "5")
    assert (out / "test.txt").read_bytes() == (again / "test.txt").read_bytes()
    other = tmp_path / "other"
    invoke_ok("data", "prepare", str(udata_path), "--out", str(other), "--seed", "6")
    assert (out / "test.txt").read_bytes() != (other / "test.txt").read_bytes()


def test_prepare_with_filters(tmp_path: Path, udata_path: Path, udata_rows: np.ndarray) -> None:
    out = tmp_path / "ml4"
    invoke_ok("data", "prepare", str(udata_path), "--out", str(out), "--min-rating", "4", "--k-core", "10")
    data = load(out)
    assert data.user_degree().min() >= 10 and data.popularity(None).min() >= 10
    assert len(data) < int((udata_rows[:, 2] >= 4).sum())
    steps = [entry["step"] for entry in json.loads((out / "stats.json").read_text())["removed"]]
    assert steps[0] == "read" and "min_rating" in steps and "10-core" in steps and steps[-1] == "split"


def test_prepare_csv_with_columns(tmp_path: Path) -> None:
    raw = tmp_path / "events.csv"
    rng = np.random.default_rng(0)
    lines = ["who,what,stars"] + [f"user{u},item{i},{rng.integers(1, 6)}"
                                  for u in range(30) for i in rng.choice(40, size=8, replace=False)]
    raw.write_text("\n".join(lines) + "\n")
    out = tmp_path / "prepared"
    invoke_ok("data", "prepare", str(raw), "--out", str(out), "--user-col", "who", "--item-col", "what")
    data = load(out)
    assert data.n_users == 30 and len(data) == 240
    assert all(str(u).startswith("user") for u in data.user_ids.tolist())
    assert (data.count("train"), data.count("valid"), data.count("test")) == (30 * 5, 30, 60)


def test_prepare_refuses_non_empty_out_without_force(tmp_path: Path, udata_path: Path) -> None:
    out = tmp_path / "ml"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["data", "prepare", str(udata_path), "--out", str(out)])
    assert result.exit_code != 0
    assert (out / "notes.txt").read_text() == "mine"
    invoke_ok("data", "prepare", str(udata_path), "--out", str(out), "--force")
    assert not (out / "notes.txt").exists() and load(out).n_users == 943


@pytest.mark.parametrize("where", ["same", "inside"])
def test_prepare_refuses_its_input_as_output_even_with_force(tmp_path: Path, where: str) -> None:
    from peel.data import save_presplit, synthetic_dataset

    source = tmp_path / "split"
    save_presplit(synthetic_dataset(n_users=100, n_items=80, seed=1), source)
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    out = source if where == "same" else source / "again"
    result = runner.invoke(app, ["data", "prepare", str(source), "--out", str(out), "--force"])
    assert result.exit_code != 0 and f"the input {source}" in str(result.exception)
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before


def test_synth(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    invoke_ok("data", "synth", "--out", str(out), "--users", "300", "--items", "200", "--seed", "4")
    data = load(out)
    assert data.n_users == 300 and data.n_items <= 200 and data.is_split
    assert data.count("test") >= 300  # every synthetic user has >= 3 interactions, so a test item
    assert json.loads((out / "stats.json").read_text())["provenance"] == {"source": "synthetic", "seed": 4}


def test_bad_file_in_process_raises_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "graph.txt"
    bad.write_text("0 1\n1 one\n")
    result = runner.invoke(app, ["data", "stats", str(bad)])
    assert result.exit_code != 0
    assert isinstance(result.exception, DataError)


def test_main_turns_errors_into_exit_code_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "u.data"
    bad.write_text("1\t2\t3\t4\n1\tx\t3\t4\n")
    monkeypatch.setattr(sys, "argv", ["peel", "data", "stats", str(bad)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert str(bad) in lines[0] and "line 2" in lines[0] and "'x'" in lines[0]


def test_main_refuses_non_empty_out(tmp_path: Path, udata_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "x").write_text("x")
    monkeypatch.setattr(sys, "argv", ["peel", "data", "prepare", str(udata_path), "--out", str(out)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert "--force" in capsys.readouterr().err


def test_console_script_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "a-rather-long-directory-name-so-the-message-exceeds-eighty-columns" / "ratings.csv"
    bad.parent.mkdir()
    bad.write_text("userId,movieId,rating,timestamp\n1,2,3,4\n1,2,3,4,5\n")
    env = {**os.environ, "COLUMNS": "60"}
    proc = subprocess.run([*peel_command(), "data", "stats", str(bad)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(bad) in lines[0] and "line 3" in lines[0] and "1,2,3,4,5" in lines[0]
