"""Budget-curve plots from budget-table rows."""

from __future__ import annotations

import pytest

from peel.errors import PeelError

pytest.importorskip("matplotlib")

from peel.bench.plots import budget_curves  # noqa: E402

ROWS = [
    {"method": "PEEL", "budget": "5MB", "budget_bytes": 5_000_000, "recall@50": 0.1, "ndcg@50": 0.05},
    {"method": "PEEL", "budget": "25MB", "budget_bytes": 25_000_000, "recall@50": 0.2, "ndcg@50": 0.09},
    {"method": "random order", "budget": "5MB", "error": "below the minimum"},
    {"method": "LightGCN", "budget": "full", "recall@50": 0.21, "ndcg@50": 0.1},
]


def test_budget_curves_writes_a_png(tmp_path) -> None:
    path = budget_curves(ROWS, tmp_path / "out" / "curves.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]  # no temp file left behind


def test_budget_curves_refuses_an_all_error_table(tmp_path) -> None:
    with pytest.raises(PeelError, match="no rows to plot"):
        budget_curves([ROWS[2]], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_no_two_methods_of_a_plot_look_alike() -> None:
    """Past ten methods colours repeat: the marker and line style must then tell them apart."""
    from peel.bench.plots import _style

    styles = [_style(i) for i in range(40)]
    assert len({(color, marker) for color, marker, _ in styles}) == 40
    assert len({(color, line) for color, _, line in styles}) == 40
