"""On-device latency and memory of the numpy runtime (the paper's Table IV), on exported bundles.

    python benchmarks/device_latency.py --run runs/amazon            # exports to runs/amazon/export first
    python benchmarks/device_latency.py --export runs/amazon/export  # an existing export

For each profile a fresh child process (numpy only; it checks that torch is never imported) opens
every sampled user group's bundle at each paper-equivalent budget and measures, per user, the time of
``bundle.for_user(vector, history)`` + ``recommend(k=50)`` (median and p95), the time of ``shrink`` to
the smallest budget and back, the bundle open time, and the time numpy needs to stream the same loaded
bytes once (a float32 sum over them), with the ratio latency / streaming. Peak RSS is VmHWM of the child.

Profiles (ERRATA issue 4): ``iot`` = 1 thread pinned to one core (taskset), peak RSS checked <= 64 MB
after the run (no address-space limit: numpy cannot import under one); ``phone`` = 2 threads, 512 MB.
A device holds only its own user's vector and history: the parent samples the users and hands the
child just their records, so the child's memory is the runtime's, not the users file's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BUDGETS = ("5MB-eq", "10MB-eq", "25MB-eq")
PROFILES = {
    "iot": {"threads": 1, "pin": "0", "memory_mb": 64},
    "phone": {"threads": 2, "pin": None, "memory_mb": 512},
}
TARGETS = {"median_ms_at_largest": 3.0, "ratio_to_streaming": 1.5, "shrink_ms": 1.0}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1e3, q))


# ---------------------------------------------------------------------------------------------- child
def stream_once(matrices: tuple[np.ndarray, ...]) -> float:
    """Seconds for one pass of float32 reads over the loaded units: the floor any scorer must pay."""
    t0 = time.perf_counter()
    for matrix in matrices:
        matrix.sum(dtype=np.float32)
    return time.perf_counter() - t0


def child(export: Path, sample: Path, k: int, repeats: int, budgets: list[str]) -> dict[str, Any]:
    """Runs in the profile's process: numpy + peel.device only."""
    from peel.device import Bundle, ExportIndex

    if "torch" in sys.modules:
        raise RuntimeError("the device benchmark imported torch")
    rss_after_import = status_kib("VmRSS")
    index = ExportIndex.open(export)
    with np.load(sample, allow_pickle=False) as z:
        groups, vectors = z["user_group"], z["vectors"]
        indptr, items = z["history_indptr"], z["history_items"]
    rows = []
    for budget in budgets:
        latency: list[float] = []
        shrink: list[float] = []
        grow: list[float] = []
        opens: list[float] = []
        streaming: list[float] = []
        per_user_streaming: list[float] = []
        loaded: list[int] = []
        read: list[int] = []
        for g in np.unique(groups):
            members = np.flatnonzero(groups == g)
            t0 = time.perf_counter()
            bundle = Bundle.open(export / index.group_files[int(g)], budget=budget)
            opens.append(time.perf_counter() - t0)
            loaded.append(bundle.bytes_loaded)
            read.append(bundle.bytes_read)
            best = min(stream_once(bundle.item_group_matrices) for _ in range(repeats))
            streaming.append(best)
            first = members[0]
            warm = bundle.for_user(vectors[first], internal_history=items[indptr[first]: indptr[first + 1]])
            warm.recommend(k)
            for i in members:
                history = items[indptr[i]: indptr[i + 1]]
                t0 = time.perf_counter()
                rec = bundle.for_user(vectors[i], internal_history=history)
                rec.recommend(k)
                latency.append(time.perf_counter() - t0)
                per_user_streaming.append(best)
                t0 = time.perf_counter()
                rec.shrink(budgets[0])
                t1 = time.perf_counter()
                rec.shrink(budget)
                t2 = time.perf_counter()
                shrink.append(t1 - t0)
                grow.append(t2 - t1)
            del bundle, warm, rec  # a device holds one bundle: free it before the next
        ratios = np.asarray(latency) / np.asarray(per_user_streaming)
        rows.append({
            "budget": budget, "users": len(latency), "bundles": len(opens),
            "bytes_loaded_mean": int(np.mean(loaded)), "bytes_read_mean": int(np.mean(read)),
            "median_ms": percentile_ms(latency, 50), "p95_ms": percentile_ms(latency, 95),
            "max_ms": percentile_ms(latency, 100),
            "streaming_ms_median": percentile_ms(streaming, 50),
            "ratio_median": float(np.median(ratios)),
            "streaming_gb_per_s": float(np.mean(loaded) / np.median(streaming) / 1e9),
            "shrink_ms_median": percentile_ms(shrink, 50), "shrink_ms_p95": percentile_ms(shrink, 95),
            "grow_ms_median": percentile_ms(grow, 50), "grow_ms_p95": percentile_ms(grow, 95),
            "open_ms_median": percentile_ms(opens, 50),
        })
    return {"rows": rows, "rss_after_import_mb": rss_after_import / 1024, "peak_rss_mb": status_kib("VmHWM") / 1024,
            "torch_imported": "torch" in sys.modules, "affinity": sorted(os.sched_getaffinity(0)),
            "numpy": np.__version__}


# --------------------------------------------------------------------------------------------- parent
def ensure_export(run: Path | None, export: Path | None) -> Path:
    if export is not None:
        if not (export / "index.json").exists():
            raise SystemExit(f"{export} is not an export directory (no index.json); make one with peel export")
        return export
    if run is None:
        raise SystemExit("give --run RUN or --export DIR")
    export = run / "export"
    if not (export / "index.json").exists():
        from peel.methods import export_run

        print(f"exporting {run} to {export} (max budget {BUDGETS[-1]})", flush=True)
        export_run(run, export, max_budget=BUDGETS[-1])
    return export


def sample_users(export: Path, n: int, seed: int, out: Path) -> dict[str, Any]:
    """Pick ``n`` users at random and store only their group, vector and history for the child."""
    from peel.device import ExportIndex

    users = ExportIndex.open(export).users()
    if users.history_indptr is None:
        raise SystemExit(f"{export} was exported without histories; re-export with them")
    chosen = np.sort(np.random.default_rng(seed).choice(users.n_users, size=min(n, users.n_users), replace=False))
    starts, stops = users.history_indptr[chosen], users.history_indptr[chosen + 1]
    lengths = stops - starts
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    positions = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
    np.savez(out, user_group=users.user_group[chosen], vectors=users.user_vectors[chosen],
             history_indptr=indptr, history_items=users.history_items[positions])
    return {"users": len(chosen), "user_groups": int(len(np.unique(users.user_group[chosen]))),
            "mean_history": float(lengths.mean()), "n_items": users.n_items, "dataset": users.metadata.get("dataset")}


def run_profile(name: str, export: Path, sample: Path, k: int, repeats: int, budgets: list[str]) -> dict[str, Any]:
    profile = PROFILES[name]
    env = {**os.environ, **{v: str(profile["threads"]) for v in THREAD_VARIABLES}}
    command = [sys.executable, __file__, "--child", "--export", str(export), "--sample", str(sample),
               "-k", str(k), "--repeats", str(repeats), "--budgets", ",".join(budgets)]
    if profile["pin"] is not None:
        if shutil.which("taskset") is None:
            raise SystemExit("the iot profile needs taskset (util-linux) to pin to one core")
        command = ["taskset", "-c", profile["pin"], *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"profile {name} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    largest = result["rows"][-1]
    result.update(profile=name, threads=profile["threads"], pinned=profile["pin"], memory_mb=profile["memory_mb"],
                  checks={"peak_rss_within_memory": result["peak_rss_mb"] <= profile["memory_mb"],
                          "median_ms_at_largest": largest["median_ms"] <= TARGETS["median_ms_at_largest"],
                          "ratio_to_streaming": largest["ratio_median"] <= TARGETS["ratio_to_streaming"],
                          "shrink_ms": max(r["shrink_ms_median"] for r in result["rows"]) <= TARGETS["shrink_ms"]
                          and max(r["grow_ms_median"] for r in result["rows"]) <= TARGETS["shrink_ms"]})
    return result


def markdown(payload: dict[str, Any]) -> str:
    s = payload["sample"]
    lines = [f"Per-user top-{payload['k']} on {s['dataset']} bundles of {payload.get('unit_dtype', 'f32')} units "
             f"({s['users']} sampled users over "
             f"{s['user_groups']} user groups; mean history {s['mean_history']:.1f} items excluded).", "",
             "| profile | budget | bytes loaded | median (ms) | p95 (ms) | stream once (ms) | ratio | "
             "shrink (ms) | grow (ms) | open (ms) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in payload["profiles"]:
        for r in p["rows"]:
            lines.append(f"| {p['profile']} | {r['budget']} | {r['bytes_loaded_mean']:,} | {r['median_ms']:.2f} | "
                         f"{r['p95_ms']:.2f} | {r['streaming_ms_median']:.2f} | {r['ratio_median']:.2f} | "
                         f"{r['shrink_ms_median']:.3f} | {r['grow_ms_median']:.3f} | {r['open_ms_median']:.1f} |")
    lines += ["", "| profile | threads | pinned | peak RSS (MB) | limit (MB) | checks |", "|---|---|---|---|---|---|"]
    for p in payload["profiles"]:
        checks = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in p["checks"].items())
        lines.append(f"| {p['profile']} | {p['threads']} | {p['pinned'] or '-'} | {p['peak_rss_mb']:.1f} | "
                     f"{p['memory_mb']} | {checks} |")
    lines += ["", f"Targets: median <= {TARGETS['median_ms_at_largest']} ms at {payload['budgets'][-1]} on one core; "
              f"<= {TARGETS['ratio_to_streaming']}x the streaming time (stretch); shrink and grow <= "
              f"{TARGETS['shrink_ms']} ms; iot peak RSS <= 64 MB. The paper reports 214-943 ms per user."]
    if payload.get("note"):
        lines += ["", f"Note: {payload['note']}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="trained run; exported to RUN/export when that is missing")
    parser.add_argument("--export", type=Path, help="an existing export directory")
    parser.add_argument("--users", type=int, default=1000, help="users sampled (default 1000)")
    parser.add_argument("-k", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the streaming reference")
    parser.add_argument("--profiles", default="iot,phone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budgets", default=",".join(BUDGETS), help="ascending; the first is the shrink target")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results")
    parser.add_argument("--note", default="", help="a line for the results, e.g. what else ran on the machine")
    parser.add_argument("--name", default="device_latency",
                        help="results file name, e.g. device_latency_q8 for an export of q8 units")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    budgets = [b for b in args.budgets.split(",") if b]
    if args.child:
        print(json.dumps(child(args.export, args.sample, args.k, args.repeats, budgets)))
        return

    from peel.bench import write_result

    export = ensure_export(args.run, args.export)
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample.npz"
        info = sample_users(export, args.users, args.seed, sample)
        profiles = []
        for name in args.profiles.split(","):
            print(f"profile {name} ...", flush=True)
            profiles.append(run_profile(name, export, sample, args.k, args.repeats, budgets))
    unit_dtype = json.loads((export / "index.json").read_text()).get("unit_dtype", "f32")
    payload = {"export": str(export), "unit_dtype": unit_dtype, "k": args.k, "budgets": budgets, "sample": info,
               "targets": TARGETS, "note": args.note,
               "profiles": profiles}
    table = markdown(payload)
    path = write_result(args.name, payload, table, results_dir=args.results_dir)
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
