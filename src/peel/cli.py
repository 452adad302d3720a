"""The `peel` command line. Commands only parse arguments and call the library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from peel.errors import PeelError

app = typer.Typer(help="peel: personalized elastic embeddings for on-device recommendation.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Prepare and inspect interaction data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()


def _print_json(obj: Any) -> None:
    """Strict JSON: a non-finite number (NaN, +-inf) is written as null, never as bare ``NaN``."""
    typer.echo(json.dumps(_finite_json(obj), indent=2, allow_nan=False))


def _finite_json(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python values and non-finite floats as None."""
    import math

    import numpy as np

    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float):
        return value
    raise TypeError(f"cannot serialize {type(value).__name__}")


# ---------------------------------------------------------------------- data
@data_app.command("prepare")
def data_prepare(
    raw: Annotated[Path, typer.Argument(help="Interactions file or pre-split directory.")],
    out: Annotated[Path, typer.Option("--out", help="Output pre-split directory.")],
    format: Annotated[
        str, typer.Option(help="auto, adjacency, presplit, movielens, csv, tsv, parquet, recbole.")
    ] = "auto",
    user_col: Annotated[str | None, typer.Option(help="User column (csv/tsv/parquet).")] = None,
    item_col: Annotated[str | None, typer.Option(help="Item column (csv/tsv/parquet).")] = None,
    rating_col: Annotated[str | None, typer.Option(help="Rating column, for --min-rating.")] = None,
    timestamp_col: Annotated[str | None, typer.Option(help="Timestamp column, kept with the data.")] = None,
    min_rating: Annotated[float | None, typer.Option(help="Keep interactions with rating >= this.")] = None,
    k_core: Annotated[int, typer.Option(help="Iterative k-core filter (1 = none).")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the per-user 7:1:2 split.")] = 2023,
    force: Annotated[bool, typer.Option(help="Replace a non-empty output directory.")] = False,
) -> None:
    """Load raw interactions, dedupe, k-core filter, split 7:1:2 per user and write a pre-split directory."""
    from peel.data import load, save_presplit

    data = load(raw, format, user_col=user_col, item_col=item_col, rating_col=rating_col,
                min_rating=min_rating, timestamp_col=timestamp_col)
    if data.is_split:
        console.print(f"[yellow]{raw} is already split; re-splitting it with seed {seed}[/]")
    if k_core > 1:
        data = data.k_core(k_core)
    data = data.split_random(seed=seed).replace(name=out.name)
    save_presplit(data, out, overwrite=force, inputs=[raw],
                  provenance={"source": str(raw), "format": format, "k_core": k_core, "seed": seed,
                              "split": "per-user random 7:1:2", "min_rating": min_rating})
    _stats_table(data.stats())
    console.print(f"wrote {out}")


@data_app.command("stats")
def data_stats(
    path: Annotated[Path, typer.Argument(help="Pre-split directory or interactions file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    format: Annotated[str, typer.Option(help="Input format (auto guesses from the path).")] = "auto",
    cold_items: Annotated[str, typer.Option(help="keep, drop or error (pre-split directories).")] = "keep",
) -> None:
    """Users, items, interactions per split, density, popularity skew, cold items, removals."""
    from peel.data import load
    from peel.data.stats import file_checksums

    data = load(path, format, cold_items=cold_items)
    stats = data.stats()
    if path.is_dir():
        stats |= file_checksums(path)
    if as_json:
        _print_json(stats)
    else:
        _stats_table(stats)


def _stats_table(stats: dict[str, Any]) -> None:
    table = Table(title=f"dataset {stats.get('name') or ''}".strip(), show_header=False)
    for key, value in stats.items():
        if key in ("name", "removed") or key.endswith("sha256"):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, int):
            value = f"{value:,}"
        table.add_row(key, str(value))
    for entry in stats.get("removed", []):
        table.add_row(f"removed: {entry['step']}", ", ".join(f"{k}={v}" for k, v in entry.items() if k != "step"))
    console.print(table)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="Output pre-split directory.")],
    users: Annotated[int, typer.Option(help="Number of users.")] = 3000,
    items: Annotated[int, typer.Option(help="Number of items.")] = 2000,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace a non-empty output directory.")] = False,
) -> None:
    """Write the synthetic dataset (taste clusters, power-law popularity) as a pre-split directory."""
    from peel.data import save_presplit, synthetic_dataset

    data = synthetic_dataset(seed=seed, n_users=users, n_items=items).replace(name=out.name)
    save_presplit(data, out, overwrite=force, provenance={"source": "synthetic", "seed": seed})
    _stats_table(data.stats())
    console.print(f"wrote {out}")


# ---------------------------------------------------------------------- budgets
@app.command("budget")
def budget(
    budgets: Annotated[str, typer.Argument(help="Comma-separated budgets, e.g. 5MB,10MB,25MB or 20%.")],
    items: Annotated[int | None, typer.Option(help="Item count (or give --data).")] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset directory, for its item count and name.")] = None,
    dim: Annotated[int, typer.Option(help="Full embedding size D, for percentages.")] = 128,
    paper_equivalent: Annotated[bool, typer.Option(help="Scale paper budgets to this dataset.")] = False,
    reference: Annotated[
        str | None, typer.Option(help="amazon-book or yelp2020 (default: from the dataset name).")
    ] = None,
) -> None:
    """Show budgets in bytes, as paper-equivalents and as a share of the full item table."""
    from peel.budget import full_table_bytes, parse_budgets
    from peel.budget import paper_equivalent as scale

    name = ""
    if data is not None:
        from peel.data import load

        loaded = load(data)
        items, name = loaded.n_items, loaded.name
    full = full_table_bytes(items, dim) if items else None
    parsed = parse_budgets(budgets, full_table_bytes=full, n_items=items, reference=reference or name or None)
    table = Table("budget", "bytes", "MB", "share of full table")
    for b in parsed:
        if paper_equivalent:
            if items is None:
                raise PeelError("--paper-equivalent needs --items or --data")
            b = scale(b, n_items=items, reference=reference or name)
        share = f"{100 * b.bytes / full:.1f}%" if full else "-"
        table.add_row(b.label or str(b.bytes), f"{b.bytes:,}", f"{b.megabytes:.3f}", share)
    console.print(table)


# ---------------------------------------------------------------------- train / evaluate
def _load_data(data: str) -> tuple[Any, Path | None]:
    from peel.data import load, synthetic_dataset

    if data == "synthetic":
        return synthetic_dataset(), None
    return load(data), Path(data)


@app.command("train")
def train_command(
    data: Annotated[str, typer.Option("--data", help="Dataset directory or file, or 'synthetic'.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory.")],
    config: Annotated[Path | None, typer.Option("--config", help="TOML file with config sections.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: section.key=value (repeatable).")] = None,
    preset: Annotated[str | None, typer.Option(help="A named configuration under --config and --set: paper "
                                                    "(PEEL as the paper describes it).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a killed or unfinished run.")] = False,
    ablation: Annotated[str | None, typer.Option(help="Train one ablation into RUN/ablations/NAME: "
                                                      "random_item_groups, no_diversity, single_user_group, "
                                                      "random_selection, lightgcn.")] = None,
    executor: Annotated[str | None, typer.Option(help="local (default) or ray.")] = None,
    stop_after: Annotated[str | None, typer.Option(help="Stop after a stage: pretrain or grouping.")] = None,
    method: Annotated[str, typer.Option(help="peel (elastic, the default), rule (elastic, searched per "
                                             "budget), or a baseline fitted to --budget: lightgcn, pmf, dlrm-ce, "
                                             "lightrec, esapn, autoemb.")] = "peel",
    teacher: Annotated[Path | None, typer.Option(help="--method lightrec: a finished full-size LightGCN run of the "
                                                      "config's D to distil (default: train one into OUT/teacher).")]
    = None,
    budget: Annotated[str | None, typer.Option(help="The budget a fixed-size method is fitted to, e.g. 5MB-eq.")]
    = None,
    reference: Annotated[str | None, typer.Option(help="amazon-book or yelp2020, for an -eq budget (default: "
                                                       "from the dataset name).")] = None,
    stage_a_from: Annotated[Path | None, typer.Option(help="peel or rule: reuse the stage a of this finished run "
                                                           "when its model, pretrain config, seed and data match.")]
    = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train PEEL (pretraining, item and user groups, group-level fine-tuning with the controller), or a
    fixed-size baseline fitted to one budget."""
    import dataclasses

    from peel.config import config_from_sources

    cfg = config_from_sources(config, set_ or [], preset=preset)
    if executor:
        cfg = dataclasses.replace(cfg, executor=executor)
    summary = _train_method(data, out, cfg, method=method, budget=budget, reference=reference, resume=resume,
                            quiet=quiet, ablation=ablation, stop_after=stop_after, teacher=teacher,
                            stage_a_from=stage_a_from)
    table = Table("stage", "seconds", title=f"run {out}" + (f" / ablation {ablation}" if ablation else ""))
    for stage, seconds in summary["seconds"].items():
        table.add_row(stage, f"{seconds:.1f}")
    console.print(table)


def _train_method(data: str, out: Path, cfg: Any, *, method: str, budget: str | None, reference: str | None,
                  resume: bool, quiet: bool, ablation: str | None, stop_after: str | None,
                  teacher: Path | None = None, stage_a_from: Path | None = None) -> dict[str, Any]:
    """Any registered method; the method refuses options it does not take, before anything is written."""
    from peel.budget import full_table_bytes, parse_budget
    from peel.methods import get_method

    chosen = get_method(method)
    loaded, path = _load_data(data)
    parsed = None if budget is None else parse_budget(
        budget, full_table_bytes=full_table_bytes(loaded.n_items, cfg.model.dim), n_items=loaded.n_items,
        reference=reference or loaded.name)
    extra = {k: v for k, v in {"teacher": teacher, "stage_a_from": stage_a_from}.items() if v is not None}
    return chosen.fit(loaded, out, cfg, budget=parsed, data_path=path, resume=resume, progress=not quiet,
                        ablation=ablation, stop_after=stop_after, **extra)


@app.command("evaluate")
def evaluate_command(
    run: Annotated[Path, typer.Argument(help="Run directory of peel train.")],
    budgets: Annotated[str, typer.Option(help="Comma-separated budgets, e.g. 5MB,10MB,25MB.")] = "5MB,10MB,25MB",
    paper_equivalent: Annotated[bool, typer.Option(help="Scale paper budgets to this dataset.")] = False,
    reference: Annotated[str | None, typer.Option(help="amazon-book or yelp2020 (default: from the dataset name).")]
    = None,
    split: Annotated[str, typer.Option(help="valid or test.")] = "test",
    ablation: Annotated[bool, typer.Option("--ablation", help="Add the ablation runs and full-size LightGCN.")]
    = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Device overrides, e.g. device.eq10=fold.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars (they go to stderr).")] = False,
) -> None:
    """Recall and NDCG at 20 and 50 per budget for PEEL (Eq. 10 on the exported blocks)."""
    from peel.methods.report import evaluate_runs

    rows = evaluate_runs(run, budgets, paper_equivalent=paper_equivalent, reference=reference, split=split,
                         ablations=ablation, overrides=set_ or [], progress=not quiet)
    if as_json:
        _print_json(rows)
        return
    table = Table("method", "budget", "bytes used", "recall@20", "ndcg@20", "recall@50", "ndcg@50",
                  title=f"{run} ({split} split)")
    for r in rows:
        if "error" in r:
            table.add_row(r["method"], r.get("budget", "-"), "-", r["error"], "", "", "")
            continue
        table.add_row(r["method"], r["budget"], f"{r['bytes_used']:,}" if r.get("bytes_used") else "full",
                      *(f"{r[k]:.5f}" for k in ("recall@20", "ndcg@20", "recall@50", "ndcg@50")))
    console.print(table)


# ---------------------------------------------------------------------- device bundles
@app.command("export")
def export_command(
    run: Annotated[Path, typer.Argument(help="Run directory of peel train.")],
    out: Annotated[Path, typer.Option("--out", help="Export directory to write.")],
    groups: Annotated[str | None, typer.Option(help="Comma-separated user groups (default: all).")] = None,
    max_budget: Annotated[str | None, typer.Option(help="Write only the units that fit, e.g. 25MB or 25MB-eq.")]
    = None,
    history: Annotated[bool, typer.Option(help="Store users' training items so devices can exclude them.")] = True,
    force: Annotated[bool, typer.Option(help="Replace a non-empty output directory.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Device overrides of a PEEL run, e.g. "
                                                   "device.unit_dtype=q8 (int8 units).")] = None,
) -> None:
    """Write device bundles: group_<g>.peelb per user group, users.peelb and index.json."""
    from peel.budget import format_bytes
    from peel.methods import export_run

    chosen = None
    if groups is not None:
        try:
            chosen = [int(g) for g in groups.split(",") if g.strip()]
        except ValueError:
            raise PeelError(f"--groups must be comma-separated integers such as 0,2, got {groups!r}") from None
    path = export_run(run, out, max_budget=max_budget, groups=chosen, history=history, overwrite=force,
                      overrides=set_ or None)
    index = json.loads((path / "index.json").read_text())
    table = Table("file", "user group", "users", "units", "charged (stored)", "charged (full)", "file size",
                  title=f"export {path}")
    for e in index["groups"]:
        table.add_row(e["file"], str(e["user_group"]), f"{e['users']:,}", f"{e['units_stored']}/{e['units_total']}",
                      format_bytes(e["charged_bytes_stored"]), format_bytes(e["charged_bytes_full"]),
                      format_bytes(e["file_bytes"]))
    table.add_row(index["users"]["file"], "all", f"{index['n_users']:,}", "-", "-", "-",
                  format_bytes(index["users"]["file_bytes"]))
    console.print(table)


@app.command("recommend")
def recommend_command(
    bundle_dir: Annotated[Path, typer.Argument(help="Export directory of peel export.")],
    user: Annotated[str, typer.Option("--user", help="Raw user id, as in the dataset.")],
    budget: Annotated[str | None, typer.Option(help="Memory budget, e.g. 5MB (default: everything stored).")]
    = None,
    k: Annotated[int, typer.Option("-k", help="How many items.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-k for one user with the numpy device runtime, excluding the user's training items."""
    from peel.budget import format_bytes
    from peel.device import recommend_for_user

    result = recommend_for_user(bundle_dir, user, budget=budget, k=k)
    if as_json:
        _print_json(result)
        return
    console.print(f"user {result['user']} (user group {result['user_group']}): {format_bytes(result['bytes_used'])} "
                  f"used of budget {result['budget']}, {result['units']} units, blocks per item group "
                  f"{result['blocks_per_item_group']}, {result['history_excluded']} training items excluded",
                  highlight=False)
    table = Table("rank", "item", "score")
    for rank, (item, score) in enumerate(zip(result["items"], result["scores"], strict=True), start=1):
        table.add_row(str(rank), str(item), f"{score:.5f}")
    console.print(table)


# ---------------------------------------------------------------------- demo
@app.command("demo")
def demo(
    out: Annotated[Path | None, typer.Option(help="Run directory to keep (default: a temporary one).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Train PEEL on the synthetic default and print the budget table (about a minute on 2 cores)."""
    from peel.demo import run_demo

    result = run_demo(seed=seed, out=out, progress=not as_json, console=console)
    if as_json:
        _print_json(result)


_STATE = {"debug": False}


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (or set PEEL_DEBUG=1).")]
    = False,
) -> None:
    _STATE["debug"] = debug


def _debugging() -> bool:
    return _STATE["debug"] or os.environ.get("PEEL_DEBUG", "").strip() not in ("", "0")


def _error_line(exc: Exception) -> str:
    """One line for any error: the message of a project error, the path of an OS error, else an internal error."""
    if isinstance(exc, PeelError):
        text = str(exc)
    elif isinstance(exc, OSError):
        detail = exc.strerror or str(exc)
        text = f"{exc.filename}: {detail}" if exc.filename is not None else detail
    else:
        text = f"internal error ({type(exc).__name__}: {exc}); rerun with --debug for the traceback"
    return " ".join(text.split("\n"))


def main() -> None:
    """Entry point: every error becomes one line on stderr and exit code 2; Ctrl-C exits 130 quietly.

    ``peel --debug ...`` or PEEL_DEBUG=1 re-raises instead, with the traceback.
    """
    _STATE["debug"] = False
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if _debugging():
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {escape(_error_line(exc))}", highlight=False,
                                   soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
