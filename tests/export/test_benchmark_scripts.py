"""The device benchmark script runs end to end on a tiny export (its numbers are not checked here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peel.export import export_run

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device_latency.py"


@pytest.mark.skipif(shutil.which("taskset") is None, reason="the iot profile pins with taskset")
def test_device_latency_script_on_a_tiny_export(tiny_run, tiny_data, tmp_path) -> None:
    export = export_run(tiny_run, tmp_path / "bundles", data=tiny_data)
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, str(SCRIPT), "--export", str(export), "--users", "30",
                           "--budgets", "60%,100%", "--repeats", "1", "--results-dir", str(results)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    payload = json.loads((results / "device_latency.json").read_text())
    assert [p["profile"] for p in payload["profiles"]] == ["iot", "phone"]
    for profile in payload["profiles"]:
        assert not profile["torch_imported"]
        assert [r["budget"] for r in profile["rows"]] == ["60%", "100%"]
        assert sum(r["users"] for r in profile["rows"][:1]) == payload["sample"]["users"] == 30
        small, large = profile["rows"]
        assert 0 < small["bytes_loaded_mean"] < large["bytes_loaded_mean"]
        assert profile["peak_rss_mb"] > 0
    assert payload["profiles"][0]["affinity"] == [0]
    assert "| iot | 60% |" in (results / "device_latency.md").read_text()
