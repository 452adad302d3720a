"""Plots of benchmark results (extra ``plot``): quality against memory budget, as in the paper's Figs. 3-4."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peel._io import atomic_path
from peel.errors import PeelError


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (extra ``plot``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PeelError("plots need matplotlib: pip install 'peel[plot]'") from None
    return plt


def _save(plt: Any, fig: Any, path: str | os.PathLike[str], title: str | None, bottom: float = 0.0) -> Path:
    """Title, lay out (above ``bottom``, the figure's share kept for a legend) and write ``fig`` atomically as
    PNG at ``path``; returns the path."""
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def budget_curves(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str], *,
                  metrics: Sequence[str] = ("recall@50", "ndcg@50"), title: str | None = None) -> Path:
    """One panel per metric: the metric against the bytes a device holds (MB) for every method.

    ``rows`` are the budget-table rows of :func:`peel.methods.report.evaluate_runs` (method, bytes_used or
    budget_bytes, metrics); rows with an ``error`` are left out. An elastic method is a curve over its
    budgets; a row with ``"elastic": False`` (a model fitted to one budget) is a point; a method measured
    only at full size (no bytes) is a dashed horizontal line. Written atomically as PNG; returns the path.
    """
    plt = _pyplot()
    usable = [r for r in rows if "error" not in r]
    if not usable:
        raise PeelError("no rows to plot: every row is an error or the table is empty")
    methods = list(dict.fromkeys(r["method"] for r in usable))
    rows_of_legend = -(-len(methods) // 3)
    height = 4 + 0.2 * rows_of_legend
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), height), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, method in enumerate(methods):
            mine = [r for r in usable if r["method"] == method and metric in r]
            sized = sorted((_megabytes(r), r[metric]) for r in mine if _megabytes(r) is not None)
            color, marker, line = _style(i)
            if sized:
                xs, ys = zip(*sized, strict=True)
                points = all(r.get("elastic") is False for r in mine)
                ax.plot(xs, ys, marker=marker if points else "o", linestyle="none" if points else line,
                        markersize=7 if points else 4, label=method, color=color)
            for r in mine:
                if _megabytes(r) is None:
                    ax.axhline(r[metric], linestyle="--", color=color, label=f"{method} ({r.get('budget', 'full')})")
        ax.set_xlabel("bytes a device holds (MB)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    bottom = (0.2 * rows_of_legend + 0.05) / height
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    return _save(plt, fig, path, title, bottom=bottom)


_MARKERS = ("s", "D", "^", "v", "P", "X", "*", "p", "h", "<")


def _style(i: int) -> tuple[str, str, str]:
    """The i-th method's colour, point marker and curve line style: ten colours, and past ten a new marker and
    line style, so no two methods of a plot look alike."""
    return f"C{i % 10}", _MARKERS[(i + i // 10) % len(_MARKERS)], ("-", "--", ":", "-.")[i // 10 % 4]


def deployment_steps(rows: Sequence[dict[str, Any]], budgets: Sequence[str], path: str | os.PathLike[str], *,
                     metric: str = "ndcg@50", title: str | None = None) -> Path:
    """The paper's Fig. 3: budgets arriving one after another (``budgets``, in that order), the accumulated
    training seconds each method has spent to serve them (log scale) and its ``metric`` at each.

    ``rows``: one per (method, budget) with ``method``, ``budget``, ``accumulated_seconds`` and ``metric``.
    Written atomically as PNG; returns the path."""
    plt = _pyplot()
    if not rows:
        raise PeelError("no rows to plot")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    rows_of_legend = -(-len(methods) // 3)
    height = 4 + 0.2 * rows_of_legend
    fig, axes = plt.subplots(1, 2, figsize=(11, height))
    steps = range(len(budgets))
    for i, method in enumerate(methods):
        mine = {r["budget"]: r for r in rows if r["method"] == method}
        xs = [s for s, b in zip(steps, budgets, strict=True) if b in mine]
        color, marker, line = _style(i)
        for ax, key in zip(axes, ("accumulated_seconds", metric), strict=True):
            ax.plot(xs, [mine[budgets[s]][key] for s in xs], marker=marker, linestyle=line, label=method,
                    color=color)
    for ax, label in zip(axes, ("accumulated training seconds", metric), strict=True):
        ax.set_xticks(list(steps), list(budgets))
        ax.set_xlabel("the device's budget, in the order it arrives")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    return _save(plt, fig, path, title, bottom=(0.2 * rows_of_legend + 0.05) / height)


def _megabytes(row: dict[str, Any]) -> float | None:
    """A row's x: the bytes a device holds, else its budget; None for a full-size reference."""
    size = row.get("bytes_used") if row.get("budget") != "full" else None
    size = size if size is not None else row.get("budget_bytes")
    return None if size is None else size / 1e6
