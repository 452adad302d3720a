"""The README's main command, `peel demo --json`: it trains, and the table it prints is a working model
(each budget's table fits in its budget, larger budgets hold more bytes, PEEL beats popularity)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_peel_demo_trains_and_reports_every_budget(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "peel", "demo", "--json", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    rows = result["peel"]
    assert [r["budget"] for r in rows] == ["10%", "20%", "40%", "100%"]
    used = [r["bytes_used"] for r in rows]
    assert used == sorted(used) and used[0] < used[-1]
    assert all(r["bytes_used"] <= r["budget_bytes"] for r in rows)
    # synthetic data has taste clusters: a trained model must rank far better than popularity
    assert rows[-1]["ndcg@50"] > 1.2 * result["popularity"]["ndcg@50"]
    assert (out / "summary.json").exists()  # --out keeps the run
