"""The device benchmark script runs end to end on a tiny export (its numbers are not checked here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from peel.methods import export_run

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


def _script(name: str):
    """A benchmark script under benchmarks/ imported as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pipeline_script():
    return _script("pipeline")


def _fake_pretraining(path: Path, batch_size: int, lr: float, scores: dict[int, float], eval_users: int = 100) -> Path:
    (path / "pretrain").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"pretrain": {"batch_size": batch_size, "lr": lr,
                                                               "eval_users": eval_users}}))
    history = [{"epoch": e, "loss": 0.1, "seconds": float(e), **({"score": scores[e]} if e in scores else {})}
               for e in range(1, max(scores) + 1)]
    (path / "pretrain" / "result.json").write_text(json.dumps({"history": history}))
    return path


def test_pipeline_batch_report_compares_at_equal_epochs(tmp_path) -> None:
    script = _pipeline_script()
    main = _fake_pretraining(tmp_path / "main", 65536, 0.02, {3: 0.3, 6: 0.5, 9: 0.6})
    other = _fake_pretraining(tmp_path / "other", 4096, 0.001, {3: 0.2, 6: 0.4})
    report = script.batch_report(main, [other, tmp_path / "missing"])
    assert [c["batch_size"] for c in report["columns"]] == [65536, 4096]
    assert report["rows"] == [{"epoch": 3, "recall@50": [0.3, 0.2]}, {"epoch": 6, "recall@50": [0.5, 0.4]}]
    text = script.markdown({"dataset": "x", "times": {"seconds": {}}, "rows": [], "batch_check": report})
    assert "| 6 | 0.50000 | 0.40000 |" in text
    assert script.batch_report(main, [tmp_path / "missing"]) is None
    _fake_pretraining(tmp_path / "sample", 4096, 0.001, {3: 0.2}, eval_users=5)
    with pytest.raises(SystemExit, match="different validation samples"):
        script.batch_report(main, [tmp_path / "sample"])


def test_pipeline_sweep_labels_the_runs_setting_against_todays_default() -> None:
    script = _pipeline_script()
    sweep = [{"option": "device.blocks", "value": value, "default": value == "transformed", "budgets": ["5MB"],
              "valid_ndcg@50": [0.1]} for value in ("transformed", "raw")]
    sweep.append({"option": "device.eq10", "value": "masked", "default": True, "budgets": ["5MB"],
                  "valid_ndcg@50": [0.1]})
    text = script.markdown({"dataset": "x", "times": {"seconds": {}}, "rows": [], "sweep": sweep})
    assert "| device.blocks | transformed (the default at the time of this run; now raw) |" in text
    assert "| device.blocks | raw |" in text and "| device.eq10 | masked (default) |" in text


def _row(name: str, values: list[float]) -> dict:
    return {"name": name, "valid": [{"budget": b, "ndcg@50": v} for b, v in zip(("5MB-eq", "25MB-eq"), values,
                                                                                   strict=True)]}


def test_defaults_benchmark_compares_configurations_by_their_mean_over_seeds() -> None:
    gaps = _script("defaults").gaps(
        _row("defaults", [0.10, 0.30]),
        [_row("defaults@seed1", [0.12, 0.30]), _row("other", [0.112, 0.20]),
         _row("lucky@seed1", [0.20, 0.10]), _row("lucky", [0.00, 0.10])],
        [{"name": "recorded run", "ndcg@50": [0.05, 0.33]}])
    first, second = gaps
    assert first["defaults"] == pytest.approx(0.11) and first["defaults_range"] == [0.10, 0.12]
    assert first["best_by"] == "other" and first["gap"] == pytest.approx(0.11 / 0.112 - 1)  # lucky's mean is 0.10
    assert first["within"]  # -1.8%
    assert second["best_by"] == "recorded run" and not second["within"]  # -9%


def test_compare_pairs_peel_with_the_fitted_model_best_on_validation() -> None:
    from peel.budget import Budget

    compare = _script("compare")
    users = np.arange(50)
    rng = np.random.default_rng(0)

    def row(run, method, valid, shift):
        ndcg = np.clip(rng.uniform(0, 0.2, 50) + shift, 0, 1)
        return {"run": run, "family": run.partition(compare.L2_SUFFIX)[0], "method": method, "budget": "5MB-eq",
                "valid_ndcg50": valid, "elastic": run.startswith("peel-"),
                "per_user": {"user": users, "ndcg@50": ndcg, "recall@50": ndcg}}

    rows = [row("peel-defaults", "PEEL (defaults)", 0.02, 0.0), row("lightgcn-5MB-eq", "LightGCN fitted", 0.03, 0.05),
            row("lightgcn-5MB-eq-l2=0.001", "LightGCN fitted, L2 0.001", 0.035, 0.1),
            row("pmf-5MB-eq", "PMF fitted", 0.01, 0.5), row("lightgcn-full", "LightGCN (full size)", 0.09, 0.9),
            row("lightgcn-full-l2=0.0001", "LightGCN (full size), L2 0.0001", 0.1, 0.9)]
    tests = compare.paired_rows(rows, [Budget(100, "5MB-eq")])
    # the fitted model best on validation (LightGCN at the smaller L2), not the best on test (PMF) nor the
    # full-size reference at any L2
    assert [t["b"] for t in tests] == ["LightGCN fitted, L2 0.001"] * 2
    assert [t["metric"] for t in tests] == ["ndcg@50", "recall@50"]
    assert tests[0]["difference"] < 0 and tests[0]["p_value"] < 0.01
    # PEEL tuned by hand: the run of PEEL_TUNED better on mean validation NDCG@50 (one choice for every
    # budget) is also paired
    assert compare.tuned_peel(rows) is None
    budgets = [Budget(100, "5MB-eq"), Budget(200, "10MB-eq")]
    rows = [{**r, "budget": b.label} for r in rows for b in budgets]
    low = [{**row("peel-l2fp-1e-4", "PEEL (L2 1e-4)", 0.02, 0.0), "budget": b.label} for b in budgets]
    other = [{**row("peel-l2fp-1e-3", "PEEL (L2 1e-3)", valid, 0.3), "budget": b.label}
             for b, valid in zip(budgets, (0.019, 0.023), strict=True)]  # mean 0.021 > 1e-4's 0.02
    assert compare.tuned_peel(rows + low + other) == "peel-l2fp-1e-3"
    assert compare.tuned_peel(rows + low + [{**r, "valid_ndcg50": 0.0} for r in other]) == "peel-l2fp-1e-4"
    tests = compare.paired_rows(rows + low + other, budgets)
    assert [t["a"] for t in tests] == ["PEEL (defaults)"] * 4 + ["PEEL (L2 1e-3)"] * 4
    assert tests[-2]["difference"] > 0  # shifted up by 0.3 against the yardstick's 0.1
    # another method best on validation: PEEL is paired with it and with the fitted LightGCN's best run
    rows = [*rows[:6], row("lightrec-5MB-eq", "LightRec fitted", 0.05, 0.2)]
    tests = compare.paired_rows(rows, [Budget(100, "5MB-eq")])
    assert [t["b"] for t in tests] == ["LightRec fitted"] * 2 + ["LightGCN fitted, L2 0.001"] * 2


def test_compare_carries_committed_runs_and_their_paired_tests(tmp_path) -> None:
    """--carry: a run not on this machine keeps its committed row and paired test; a fresh run replaces its
    committed row; the yardstick is chosen over both, and a pair with a carried side is never recomputed."""
    from peel.budget import Budget

    compare = _script("compare")
    users = np.arange(40)

    def row(run, valid, per_user=True):
        r = {"run": run, "family": run.partition(compare.L2_SUFFIX)[0], "method": run, "budget": "5MB-eq",
             "valid_ndcg50": valid, "elastic": run.startswith("peel-")}
        r = {**r, "ndcg@50": valid, "recall@50": valid}  # test means: the validation score, for brevity
        return {**r, "per_user": {"user": users, "ndcg@50": np.linspace(0, valid, 40),
                                  "recall@50": np.linspace(0, valid, 40)}} if per_user else r

    old_pair = {"budget": "5MB-eq", "a": "peel-defaults", "b": "lightgcn-5MB-eq", "metric": "ndcg@50", "p_value": 0.5,
                "mean_a": 0.03, "mean_b": 0.02}
    committed = {"date": "2026-12-01T10:00:00", "rows": [row("peel-defaults", 0.03, False),
                                                         row("lightgcn-5MB-eq", 0.02, False),
                                                         row("dlrm-ce-5MB-eq", 0.01, False),
                                                         row("retired-run", 0.5, False)],
                 "paired": [old_pair], "curves": [{"method": "peel-defaults", "ndcg@50": 0.1},
                                                  {"method": "retired-run", "ndcg@50": 0.2}]}
    (tmp_path / "compare_toy.json").write_text(json.dumps(committed))
    carried = compare.carried_results("toy", {"peel-defaults", "lightgcn-5MB-eq", "dlrm-ce-5MB-eq"}, tmp_path)
    assert [r["run"] for r in carried["rows"]] == ["peel-defaults", "lightgcn-5MB-eq", "dlrm-ce-5MB-eq"]
    assert all(r["carried"] == "2026-12-01T10:00:00" for r in carried["rows"])
    assert [c["method"] for c in carried["curves"]] == ["peel-defaults"]
    # DLRM-CE trained here afresh (its committed row is replaced); PEEL and LightGCN carried
    fresh = [row("dlrm-ce-5MB-eq", 0.012)]
    rows = compare.mark_chosen(fresh + [r for r in carried["rows"] if r["run"] != "dlrm-ce-5MB-eq"])
    assert [r["run"] for r in rows].count("dlrm-ce-5MB-eq") == 1
    tests = compare.paired_rows(rows, [Budget(100, "5MB-eq")], carried["paired"])
    assert tests == [old_pair]  # carried: no per-user scores here, so the committed test (recall: none)
    # PEEL retrained here (other test means) against the carried LightGCN: the committed test was of the old
    # PEEL, so the pair is left out rather than shown beside the new PEEL row
    retrained = [row("peel-defaults", 0.031)] + [r for r in rows if r["run"] != "peel-defaults"]
    assert compare.paired_rows(compare.mark_chosen(retrained), [Budget(100, "5MB-eq")], carried["paired"]) == []
    # a fresh yardstick beating the carried one on validation cannot be paired with a carried PEEL
    rows = compare.mark_chosen(rows + [row("lightgcn-5MB-eq-l2=0.001", 0.025)])
    assert compare.paired_rows(rows, [Budget(100, "5MB-eq")], carried["paired"]) == []
    assert [r["chosen"] for r in rows if r["family"] == "lightgcn-5MB-eq"] == [False, True]
    with pytest.raises(SystemExit, match="no committed results"):
        compare.carried_results("none", set(), tmp_path)


def test_compare_deployment_retrains_a_fitted_method_per_budget_and_an_elastic_one_once() -> None:
    compare = _script("compare")

    def row(run: str, budget: str, seconds: float, elastic: bool, chosen: bool = True) -> dict:
        return {"run": run, "family": run.partition(compare.L2_SUFFIX)[0], "method": run, "budget": budget,
                "elastic": elastic, "chosen": chosen, "train_seconds": seconds, "ndcg@50": 0.1, "recall@50": 0.2}

    budgets = ["5MB-eq", "10MB-eq", "25MB-eq"]
    rows = [row("peel-defaults", b, 100, True) for b in budgets]
    rows += [row("peel-stage-b", b, 5, True) for b in budgets]  # reuses another run's stage a: not a deployment
    rows += [row(f"pmf-{b}", b, s, False) for b, s in zip(budgets, (1, 2, 4), strict=True)]
    rows += [row(f"pmf-{b}{compare.L2_SUFFIX}0.001", b, 1000, False, chosen=False) for b in budgets]  # tuning
    rows.append(row("lightgcn-full", "full", 50, False))
    steps = compare.deployment({"budgets": [f"{b} (1 MB)" for b in budgets], "rows": rows})
    seconds = {(s["method"], s["budget"]): s["accumulated_seconds"] for s in steps}
    assert seconds == {("peel-defaults", "25MB-eq"): 100, ("peel-defaults", "10MB-eq"): 100,
                       ("peel-defaults", "5MB-eq"): 100, ("PMF fitted", "25MB-eq"): 4,
                       ("PMF fitted", "10MB-eq"): 6, ("PMF fitted", "5MB-eq"): 7}
    assert [s["budget"] for s in steps][::2] == ["25MB-eq", "10MB-eq", "5MB-eq"]  # the largest budget first


def test_compare_fits_each_budget_at_the_tuned_l2_and_a_tenth_and_a_hundredth_of_it() -> None:
    from types import SimpleNamespace

    compare = _script("compare")
    data = SimpleNamespace(name="amazon-book-sub", n_items=55_268)
    runs = compare.fitted_runs(data, compare.budgets_for(data, None), ("lightgcn",))
    tuned = runs["lightgcn-5MB-eq"][2]
    assert "pretrain.l2=0.01" in tuned  # benchmarks/results/tuning_amazon-book-sub.json's LightGCN winner
    assert sorted(runs) == ["lightgcn-10MB-eq", "lightgcn-10MB-eq-l2=0.0001", "lightgcn-10MB-eq-l2=0.001",
                            "lightgcn-25MB-eq", "lightgcn-25MB-eq-l2=0.0001", "lightgcn-25MB-eq-l2=0.001",
                            "lightgcn-5MB-eq", "lightgcn-5MB-eq-l2=0.0001", "lightgcn-5MB-eq-l2=0.001",
                            "lightgcn-full", "lightgcn-full-l2=0.0001", "lightgcn-full-l2=0.001"]
    assert runs["lightgcn-25MB-eq-l2=0.001"][2] == [*tuned, "pretrain.l2=0.001"]  # the later override wins
    assert runs["lightgcn-25MB-eq"][1].label == "25MB-eq" and runs["lightgcn-full"][1].label == "full"


def test_compare_at_q8_fits_the_full_size_model_at_q8_and_writes_its_own_results() -> None:
    from types import SimpleNamespace

    from peel.budget import device_bytes

    compare = _script("compare")
    data = SimpleNamespace(name="amazon-book-sub", n_items=55_268)
    runs = compare.fitted_runs(data, compare.budgets_for(data, None), ("lightgcn",), "q8")
    assert runs["lightgcn-full"][1].bytes == device_bytes(55_268, 128, "q8") == 55_268 * 128 + 4 + 512
    assert compare.results_name("yelp2018-sub", "q8") == "compare_yelp2018-sub_q8"
    assert compare.results_name("yelp2018-sub") == "compare_yelp2018-sub"
    assert compare.Q8_METHODS == ("lightgcn", "pmf")


def test_tuning_grid_scales_the_defaults_and_names_runs() -> None:
    from peel.config import PeelConfig

    tuning = _script("tuning")
    overrides = tuning.overrides_for(PeelConfig().with_overrides(tuning.GRID_CENTRE), 2_000_000, 0.1, 0.25, 0.5)
    # n_train 2M: auto batch 2^round(log2(250k)) capped at 65536, lr 2e-2; a quarter batch at half the lr
    assert overrides == ["pretrain.l2=0.1", "pretrain.batch_size=16384", "pretrain.lr=0.01"]
    assert tuning.config_name(overrides) == "l20.1_batch_size16384_lr0.01"
    # every method's own structural grid names a registered method and valid config keys
    from peel.methods import FIXED_METHODS

    assert set(tuning.STRUCTURE_GRID) <= set(FIXED_METHODS)
    # a method that starts from its teacher is also fine-tuned at a tenth of the rate; the others are not
    assert tuning.lr_batch_grid("lightrec") == (*tuning.LR_BATCH_GRID, (1, 0.1))
    assert tuning.lr_batch_grid("dlrm-ce") == tuning.LR_BATCH_GRID
    for extras in tuning.STRUCTURE_GRID.values():
        for extra in extras:
            PeelConfig().with_overrides([extra])


def test_tuning_a_distilled_method_needs_its_teacher_before_training(shared_data, tmp_path, monkeypatch,
                                                                     capsys) -> None:
    tuning = _script("tuning")
    data = str(shared_data / "ml-100k")
    for extra, message in (([], "--teacher RUN is required to tune lightrec"),
                           (["--teacher", str(tmp_path / "none")], "no trained run there")):
        monkeypatch.setattr(sys, "argv", ["tuning.py", "--data", data, "--runs", str(tmp_path / "runs"),
                                          "--methods", "pmf,lightrec", *extra])
        with pytest.raises(SystemExit):
            tuning.main()
        assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before anything was trained


def test_tuning_resumes_from_committed_rows_and_reports_each_configuration(tmp_path, monkeypatch) -> None:
    """A grid longer than one machine's life: configurations already in the results are taken from there
    (nothing trains), the grid so far is reported after every configuration, and compare.py refuses an
    unfinished grid."""
    tuning = _script("tuning")

    class Data:
        name = "toy"

        def count(self, split: str) -> int:
            return 100_000

    trained: list[list[str]] = []

    def fake_run(data, data_path, runs, method, overrides, teacher=None):
        trained.append(overrides)
        l2 = float(overrides[0].split("=")[1])
        return {"method": method, "overrides": overrides, "valid_ndcg@50": -abs(l2 - 0.01) - len(overrides),
                "valid_recall@50": 0.0, "seconds": 1.0, "best_epoch": 1, "epochs_run": 2}

    monkeypatch.setattr(tuning, "run_one", fake_run)
    reports: list[dict] = []
    first = tuning.tune(Data(), "", tmp_path, "dlrm-ce", on_row=reports.append)
    n = len(tuning.L2_GRID) + len(tuning.lr_batch_grid("dlrm-ce")) + len(tuning.STRUCTURE_GRID["dlrm-ce"])
    assert len(trained) == len(first["rows"]) == len(reports) == n
    assert [len(r["rows"]) for r in reports] == list(range(1, n + 1)) and all(r["unfinished"] for r in reports)
    assert "pretrain.l2=0.01" in first["best"]
    # resume after the first five configurations: only the rest train, and the grid decides the same way
    trained.clear()
    done = {tuple(r["overrides"]): r for r in reports[4]["rows"]}
    again = tuning.tune(Data(), "", tmp_path, "dlrm-ce", done=done)
    assert len(trained) == n - 5 and again["rows"] == first["rows"] and again["best"] == first["best"]
    (tmp_path / "tuning_toy.json").write_text(json.dumps({"methods": [reports[4]]}))
    assert set(tuning.committed_rows("toy", "dlrm-ce", tmp_path)) == set(done)
    with pytest.raises(SystemExit, match="unfinished"):
        tuning.chosen_overrides("toy", "dlrm-ce", tmp_path)
    assert "unfinished: 5 configurations so far" in tuning.markdown({"dataset": "toy", "methods": [reports[4]]})


def test_elastic_probe_splits_a_variant_into_training_device_and_shared_stage_a(tmp_path) -> None:
    probe = _script("elastic_probe")
    name, training, device, stage_a = probe.parse_variant(
        "d05=from:nested;pretrain.nested=1,2,4;finetune.density_decay=0.5;device.eq10_scale=none", tmp_path)
    assert (name, training, device, stage_a) == ("d05", ["pretrain.nested=1,2,4", "finetune.density_decay=0.5"],
                                                 ["device.eq10_scale=none"], tmp_path / "nested")


def test_density_decay_probe_reorders_a_density_run_without_retraining(tiny_run, tiny_data) -> None:
    from peel.budget import Budget, device_bytes
    from peel.methods import load_run
    from peel.units import unit_order

    module = _script("density_decay")
    run = load_run(tiny_run)
    budget = Budget(device_bytes(tiny_data.n_items, run.run.config.model.dim) // 2, "half")
    trained_decay = run.run.config.finetune.density_decay
    expected = run.evaluate(tiny_data, [budget], split="valid", ks=(50,))[0]
    rows = module.probe(tiny_data, tiny_run, [trained_decay, 0.01], [budget])
    assert [r["decay"] for r in rows] == [trained_decay, 0.01]
    # the trained decay rebuilds the stored order, so the same evaluation runs on the same units; 1e-12
    # allows only for the weights' renormalization, which cannot change a rank-based metric
    assert abs(rows[0]["valid"]["half"]["ndcg@50"] - expected["ndcg@50"]) < 1e-12

    shares = [g.importance_weights[:, 0].copy() for g in run.run.groups]
    g_v = len(shares[0])
    for decay, second_blocks in ((0.01, [1] * g_v), (1.0, None)):
        module.reorder(run.run, shares, decay)
        order = unit_order(run.run.groups[0].importance_weights)
        # a tiny decay orders block-major: after every item group's first block, every second block
        if second_blocks is not None:
            assert order[g_v:2 * g_v, 1].tolist() == second_blocks
        else:  # no decay: the most used item group's blocks all come right after the first blocks
            top = int(np.argmax(shares[0]))
            assert order[g_v:g_v + run.run.config.model.n_blocks - 1, 0].tolist() == \
                [top] * (run.run.config.model.n_blocks - 1)


def test_rule_benchmark_pairs_each_rule_row_with_the_peel_run_of_its_stage_a() -> None:
    from peel.budget import Budget

    rule = _script("rule")
    users = np.arange(40)
    rng = np.random.default_rng(0)

    def row(run, method, budget, shift, **extra):
        ndcg = np.clip(rng.uniform(0, 0.2, 40) + shift, 0, 1)
        return {"run": run, "method": method, "budget": budget, "bytes_used": 1000, "valid_ndcg@50": 0.03,
                "recall@20": 0.1, "ndcg@20": 0.05, "recall@50": 0.2, "ndcg@50": float(ndcg.mean()),
                "per_user": {"user": users, "ndcg@50": ndcg, "recall@50": ndcg}, **extra}

    budgets = [Budget(100, "5MB-eq"), Budget(200, "10MB-eq")]
    rows = [row("rule", f"RULE, {r}", b.label, 0.1, versus="peel-defaults", reading=r, blocks_kept=30,
                search_seconds=2.0) for r in ("masked", "fold") for b in budgets]
    rows += [row("peel-defaults", "PEEL (defaults)", b.label, 0.0) for b in budgets]
    rows.append({"run": "rule", "method": "RULE, masked", "budget": "1KB", "error": "below the minimum",
                 "versus": "peel-defaults"})
    tests = rule.paired_rows(rows, budgets)
    assert [(t["a"], t["budget"], t["metric"]) for t in tests][:4] == [  # the rows' order, budgets ascending
        ("RULE, masked", "5MB-eq", "ndcg@50"), ("RULE, masked", "5MB-eq", "recall@50"),
        ("RULE, masked", "10MB-eq", "ndcg@50"), ("RULE, masked", "10MB-eq", "recall@50")]
    assert len(tests) == 8 and all(t["b"] == "PEEL (defaults)" and t["difference"] > 0 for t in tests)
    deployment = [{"run": "rule", "search_space": "prefixes", "structures": 2000, "label_users": 1000,
                   "stage_a_seconds": 3000.0, "labels_seconds": 1800.0, "estimator_seconds": 30.0,
                   "estimators": {"masked": {"kind": "mlp", "held_out_spearman": {"nfm": 0.8, "mlp": 0.9},
                                             "within_budget_spearman": 0.7}}}]
    text = rule.markdown({"dataset": "amazon-book-sub", "rows": rows, "paired": tests, "deployment": deployment})
    assert "| RULE, masked | 1KB | below the minimum |" in text
    assert "| rule | prefixes | 2000 | 1000 | 3000 | 1800 | 30 | masked | mlp | 0.800 | 0.900 | 0.700 |" in text


def test_step_time_script_times_each_variant_in_its_own_process(shared_data, tmp_path) -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "step_time.py"
    done = subprocess.run([sys.executable, str(script), "--data", str(shared_data / "ml-100k"), "--steps", "2",
                           "--repeats", "1", "--threads", "1", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    payload = json.loads((tmp_path / "step_time_ml-100k.json").read_text())
    variants = payload["variants"]
    assert set(variants) == {"kept", "glibc"}  # no --baseline-src: no baseline
    (kept,), (glibc,) = variants["kept"]["runs"], variants["glibc"]["runs"]
    assert kept["steps"] == glibc["steps"] == 2 and kept["wall_per_step"] > 0
    assert glibc["freed_memory_kept"] is False  # glibc's own setting in the environment wins
    if sys.platform.startswith("linux"):
        assert kept["freed_memory_kept"] is True
    # the same seed, batches and code: the two processes train the same steps
    assert kept["last_loss"] == pytest.approx(glibc["last_loss"], rel=1e-5)
    assert "| kept |" in (tmp_path / "step_time_ml-100k.md").read_text()


def test_step_time_script_times_a_fixed_method_fitted_to_the_budget(shared_data, tmp_path) -> None:
    from peel.budget import parse_budget
    from peel.config import PeelConfig
    from peel.data import load
    from peel.methods.fixed import fitted_size

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "step_time.py"
    base = [sys.executable, str(script), "--data", str(shared_data / "ml-100k"), "--steps", "1", "--repeats", "1",
            "--threads", "1", "--results-dir", str(tmp_path)]
    done = subprocess.run([*base, "--method", "lightrec", "--budget", "50000", "--set", "model.codewords=16",
                           "--tag", "w16"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    (run,) = json.loads((tmp_path / "step_time_ml-100k_lightrec_w16.json").read_text())["variants"]["kept"]["runs"]
    config = PeelConfig().with_overrides(["model.codewords=16"])
    n_items = load(shared_data / "ml-100k").n_items
    assert run["model"] == {"item_table": "codebooks", "dim": 128, "codewords": 16,
                            "codebooks": fitted_size(n_items, parse_budget(50000), config, "lightrec")}
    refused = subprocess.run([*base, "--budget", "50000"], capture_output=True, text=True, check=False)
    assert refused.returncode != 0 and "--budget goes with a fixed-size --method" in refused.stderr


def test_seed_repeats_pair_each_seed_and_test_the_per_user_mean_over_seeds(monkeypatch) -> None:
    seeds = _script("seeds")
    from peel.budget import Budget

    users = np.arange(6)

    def row(recall: list[float], ndcg: list[float], valid: float) -> dict:
        per_user = {"user": users, "recall@50": np.array(recall), "ndcg@50": np.array(ndcg)}
        return {"per_user": per_user, "recall@50": float(np.mean(recall)), "ndcg@50": float(np.mean(ndcg)),
                "valid_ndcg50": valid, "bytes_used": 10}

    # PEEL wins with seed 1 and loses with seed 2; over both seeds it is ahead on users 0-3, level on 4-5
    results = {
        ("peel", 1): row([1, 1, 1, 1, 0, 0], [0.5] * 4 + [0, 0], 0.3),
        ("peel", 2): row([1, 1, 1, 1, 1, 0], [0.4] * 6, 0.2),
        ("fitted", 1): row([0, 0, 0, 0, 0, 0], [0.1] * 6, 0.1),
        ("fitted", 2): row([1, 1, 1, 1, 1, 1], [0.5] * 6, 0.4),
    }
    monkeypatch.setattr(seeds, "evaluations",
                        lambda data, runs, budget: {s: results[(name, s)] for name, s in
                                                    ((str(p), s) for s, p in runs.items())})
    rows, pairs = seeds.compare_pairs(None, {"peel": {1: "peel", 2: "peel"}},
                                      {"fitted": (Budget(10, "5MB-eq"), {1: "fitted", 2: "fitted"})})
    recall = next(p for p in pairs if p["metric"] == "recall@50")
    assert recall["seeds"] == [1, 2]
    assert recall["per_seed"]["1"]["difference"] > 0 > recall["per_seed"]["2"]["difference"]
    mean = recall["seed_mean"]
    assert mean["mean_a"] == pytest.approx(np.mean([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]]))
    assert mean["mean_b"] == pytest.approx(0.5)
    assert (mean["wins"], mean["losses"], mean["ties"]) == (4, 1, 1)
    text = seeds.markdown({"dataset": "x", "rows": rows, "pairs": pairs})
    assert "| fitted | 5MB-eq | 2 | 0.50000 (200.0%) |" in text  # recall 0 and 1: spread 1 over the mean 0.5
    assert "2: -16.7% (" in text  # seed 2: recall 5/6 against 1


def test_quantization_probe_rounds_each_item_block_on_its_own_scale() -> None:
    rounded = _script("quantization_probe").rounded
    items = np.array([[1.0, -0.4, 100.0, 3.0], [0.0, 0.0, 0.3, -0.2]], dtype=np.float32)  # 2 blocks of 2 dims
    out = rounded(items, n_blocks=2, bits=4)  # 7 levels a side: a block's absmax is kept, the rest snapped
    assert out[0, 0] == pytest.approx(1.0, rel=1e-3) and out[0, 1] == pytest.approx(-3 / 7, rel=1e-3)
    assert out[0, 2] == pytest.approx(100.0, rel=1e-3) and out[0, 3] == pytest.approx(0.0, abs=1e-6)
    assert (out[1, :2] == 0).all() and out[1, 2] == pytest.approx(0.3, rel=1e-3)
    assert out[1, 3] == pytest.approx(-0.3 * 5 / 7, rel=1e-3)
    assert np.abs(rounded(items, n_blocks=2, bits=16) - items).max() < 1e-2


def test_a_rewritten_result_keeps_the_command_date_and_machine_it_was_measured_with(tmp_path) -> None:
    from peel.bench import write_result

    write_result("probe", {"rows": [1], "notes": []}, "| a |", results_dir=tmp_path)
    measured = json.loads((tmp_path / "probe.json").read_text())
    measured_md = (tmp_path / "probe.md").read_text()
    for key in ("command", "date", "machine"):
        measured[key] = f"then: {key}" if key != "machine" else {**measured[key], "cpus": 99}
    (tmp_path / "probe.json").write_text(json.dumps(measured))  # as if measured elsewhere, earlier
    write_result("probe", {"rows": [1], "notes": ["a note"]}, "| a | with a note |", results_dir=tmp_path,
                 keep_meta=True)
    again = json.loads((tmp_path / "probe.json").read_text())
    assert again["notes"] == ["a note"] and again["command"] == "then: command" and again["date"] == "then: date"
    text = (tmp_path / "probe.md").read_text()
    assert "with a note" in text and "- command: `then: command`" in text and "99 CPUs" in text
    assert text != measured_md


def test_paired_script_pairs_two_runs_user_by_user_at_each_budget_both_serve(tiny_run, tiny_data) -> None:
    from peel.budget import Budget, device_bytes
    from peel.methods import load_run

    module = _script("paired")
    full = device_bytes(tiny_data.n_items, load_run(tiny_run).run.config.model.dim)
    budgets = [Budget(full // 2, "half"), Budget(full, "all")]
    rows = module.pair(tiny_data, tiny_run, tiny_run, budgets, "valid")
    assert [(r["budget"], r["metric"]) for r in rows] == [(b, m) for b in ("half", "all") for m in module.METRICS]
    for row in rows:  # a run against itself: the same users, every one a tie
        assert row["difference"] == 0.0 and row["ties"] == row["users"] > 0 and row["p_value"] == 1.0
    half, whole = rows[3], rows[7]  # ndcg@50 at each budget: the half budget really is the smaller model
    assert half["mean_a"] != whole["mean_a"]
    assert "| half | ndcg@50 |" in module.markdown(rows, tiny_run, tiny_run, "valid")


def test_compare_distils_the_full_size_lightgcn_best_on_validation_even_when_lightgcn_is_not_fitted(
        tiny_data, tmp_path, monkeypatch) -> None:
    from peel.budget import Budget
    from peel.run_layout import RunLayout

    compare = _script("compare")
    fitted = {"lightrec-half": ("lightrec", Budget(10_000, "half"), [])}
    seen = {}
    monkeypatch.setattr(compare.METHODS["lightrec"], "fit", lambda *a, **kw: seen.update(kw))
    monkeypatch.setattr(compare, "PEEL_VARIANTS", {})
    monkeypatch.setattr(compare, "chosen_overrides", lambda dataset, method: ["pretrain.l2=0.01"])
    full_size = ["lightgcn-full", "lightgcn-full-l2=0.001", "lightgcn-full-l2=0.0001"]
    for name in full_size[:2]:
        teacher = RunLayout(tmp_path / name).embeddings
        teacher.parent.mkdir(parents=True)
        teacher.write_bytes(b"")
    # refused until every full-size run is there, rather than training a teacher of its own with the student's
    # recipe or choosing among whichever runs happen to be present
    with pytest.raises(SystemExit, match="train lightgcn-full-l2=0.0001 first"):
        compare.train_all(tiny_data, "synthetic", tmp_path, fitted)
    assert not seen
    RunLayout(tmp_path / full_size[2]).embeddings.parent.mkdir(parents=True)
    RunLayout(tmp_path / full_size[2]).embeddings.write_bytes(b"")
    validation = {"lightgcn-full": 0.03, "lightgcn-full-l2=0.001": 0.05, "lightgcn-full-l2=0.0001": 0.04}
    monkeypatch.setattr(compare, "validation_ndcg50", lambda data, path, budget: validation[path.name])
    compare.train_all(tiny_data, "synthetic", tmp_path, fitted)
    assert seen["teacher"] == tmp_path / "lightgcn-full-l2=0.001"  # not the run at the tuned L2

    # on a new machine a full-size run not trained there counts by its committed row, so only the teacher is
    # trained again; one committed as the best is asked for, never passed over for a present one
    import json

    results = tmp_path / "results"
    results.mkdir()
    (results / f"compare_{tiny_data.name}.json").write_text(json.dumps({"rows": [
        {"run": name, "valid_ndcg50": score} for name, score in validation.items()]}))
    fresh = tmp_path / "fresh"
    for name in ("lightgcn-full", "lightgcn-full-l2=0.0001"):
        RunLayout(fresh / name).embeddings.parent.mkdir(parents=True)
        RunLayout(fresh / name).embeddings.write_bytes(b"")
    with pytest.raises(SystemExit, match="the teacher is lightgcn-full-l2=0.001.*train it first"):
        compare.teacher_run(tiny_data, fresh, results_dir=results)
    RunLayout(fresh / "lightgcn-full-l2=0.001").embeddings.parent.mkdir(parents=True)
    RunLayout(fresh / "lightgcn-full-l2=0.001").embeddings.write_bytes(b"")
    for name in ("lightgcn-full", "lightgcn-full-l2=0.0001"):
        RunLayout(fresh / name).embeddings.unlink()
    assert compare.teacher_run(tiny_data, fresh, results_dir=results) == fresh / "lightgcn-full-l2=0.001"


def test_seed_repeats_train_one_side_per_process_but_compare_only_both(shared_data, tmp_path, monkeypatch,
                                                                       capsys) -> None:
    """``--train-only`` may repeat a PEEL run or a fitted run alone (two processes share the work); comparing
    still needs both sides."""
    seeds = _script("seeds")
    trained: list[tuple[Path, set[str], int]] = []
    monkeypatch.setattr(seeds.compare, "chosen_overrides", lambda dataset, method: ["pretrain.l2=0.01"])
    monkeypatch.setattr(seeds.compare, "train_all",
                        lambda data, data_path, runs, fitted, only, threads, seed: trained.append((runs, only, seed)))
    common = ["seeds.py", "--data", str(shared_data / "ml-100k"), "--runs", str(tmp_path), "--seeds", "7",
              "--reference", "amazon-book"]
    for name in ("peel-defaults", "lightgcn-5MB-eq"):
        monkeypatch.setattr(sys, "argv", [*common, "--names", name, "--train-only"])
        seeds.main()
    assert trained == [(tmp_path / "seed7", {"peel-defaults"}, 7), (tmp_path / "seed7", {"lightgcn-5MB-eq"}, 7)]
    monkeypatch.setattr(sys, "argv", [*common, "--names", "peel-defaults"])
    with pytest.raises(SystemExit):
        seeds.main()
    assert "not a finished run" in capsys.readouterr().err


def test_compare_numbers_carried_rows_by_the_date_of_their_result() -> None:
    """Rows carried from results of several dates are told apart (†1, †2 in date order, each date in the
    footnote); rows of one date keep a plain †; a row evaluated here has no mark."""
    compare = _script("compare")
    metrics = {k: 0.01 for k in ("recall@20", "ndcg@20", "recall@50", "ndcg@50")}

    def row(label: str, suffix: str, carried: str | None) -> dict:
        return {"run": "lightgcn-5MB-eq" + suffix, "method": label, "family": "lightgcn-5MB-eq", "budget": "5MB-eq",
                "bytes_used": 10, "train_seconds": 1.0, "valid_ndcg50": 0.01, "carried": carried,
                "elastic": False, "chosen": not suffix, **metrics}

    payload = {"dataset": "toy", "rows": [row("late", "-l2=0.001", "2026-12-03T22:00:00"),
                                          row("early", "-l2=0.0001", "2026-12-02T10:00:00"), row("fresh", "", None)],
               "paired": [], "curves": [], "not_run": [], "popularity": metrics, "peel_tuned": None,
               "budgets": ["5MB-eq (100 bytes)"]}
    lines = compare.markdown(payload).splitlines()
    assert any(line.startswith("| late †2 |") for line in lines)
    assert any(line.startswith("| early †1 |") for line in lines)
    assert any(line.startswith("| fresh |") for line in lines)
    assert any("†1 2026-12-02T10:00:00, †2 2026-12-03T22:00:00" in line for line in lines)
    payload["rows"] = payload["rows"][1:]
    lines = compare.markdown(payload).splitlines()
    assert any(line.startswith("| early † |") for line in lines)


def test_compare_evaluates_a_run_again_only_when_something_it_depends_on_changed(tiny_run, tiny_data, tmp_path,
                                                                                  monkeypatch) -> None:
    import peel.bench.cache as cache
    from peel.budget import Budget
    from peel.data.source import data_source
    from peel.errors import PeelError
    from peel.methods import load_run

    compare = _script("compare")
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    full = load_run(run).run.layout.full_bytes()
    budgets = [Budget(int(full * 0.6), "small"), Budget(full, "full")]
    identity = data_source(tiny_data, None)["identity"]
    evaluated = []
    original = compare.evaluate_run

    def counting(*args):
        evaluated.append(args[2])
        return original(*args)

    monkeypatch.setattr(compare, "evaluate_run", counting)

    def rows():
        return compare.evaluate_all(tiny_data, identity, {"peel-defaults": run}, budgets)

    first = rows()
    scored = len(evaluated)
    assert scored >= 1 and len(first) == scored * len(budgets)
    (run / "log.txt").write_text("another invocation\n")  # neither the log nor the seconds change a row
    (run / "summary.json").write_text(json.dumps({"seconds": {"total": 1.0}}))
    again = rows()
    assert len(evaluated) == scored  # all from the cache
    for a, b in zip(first, again, strict=True):
        assert {k: v for k, v in a.items() if k not in ("per_user", "train_seconds")} == \
            {k: v for k, v in b.items() if k not in ("per_user", "train_seconds")}  # JSON keeps floats exactly
        assert a["per_user"].keys() == b["per_user"].keys()
        for name in a["per_user"]:
            np.testing.assert_array_equal(a["per_user"][name], b["per_user"][name])
    assert again[0]["train_seconds"] == 1.0  # read from the run, never cached

    result = run / "pretrain" / "result.json"
    result.write_text(result.read_text().replace("{", '{"touched": 1, ', 1))
    rows()
    assert len(evaluated) == 2 * scored  # a run file changed
    rows()
    assert len(evaluated) == 2 * scored
    monkeypatch.setattr(cache, "source_digest", lambda: "another peel")
    rows()
    assert len(evaluated) == 3 * scored  # the code changed
    compare.evaluate_all(tiny_data, {"other": "data"}, {"peel-defaults": run}, budgets)
    assert len(evaluated) == 4 * scored  # the data changed

    for entry in (run / "evaluation").glob("*.json"):
        entry.write_text("[{")
    with pytest.raises(PeelError, match=r"evaluation.*\.json: a damaged evaluation cache entry"):
        rows()


def _fake_lightrec_run(path: Path, users: np.ndarray, books: np.ndarray, codes: np.ndarray) -> Path:
    """A finished LightRec run's files as compare.py leaves them: B codebooks of W codewords, packed codes."""
    from peel.config import PeelConfig
    from peel.device.composed import pack_codes

    n_books, words, dim = books.shape
    items = sum(books[b][codes[:, b]] for b in range(n_books)).astype(np.float32)
    (path / "pretrain").mkdir(parents=True)
    config = PeelConfig().to_dict()
    config["model"]["codewords"] = words
    (path / "config.json").write_text(json.dumps(config))
    (path / "method.json").write_text(json.dumps({"method": "lightrec", "dim": dim, "codebooks": n_books}))
    np.savez(path / "pretrain" / "embeddings.npz", user_vectors=users, item_vectors=items,
             **{"composed.codebooks": books.reshape(-1, dim), "composed.codes": pack_codes(codes, 2)})
    return path


def test_codebook_prefix_scores_a_runs_first_codebooks_against_a_run_fitted_with_them(tiny_data, tmp_path) -> None:
    script = _script("codebook_prefix")
    rng = np.random.default_rng(0)
    users = rng.normal(size=(tiny_data.n_users, 8)).astype(np.float32)
    books = rng.normal(size=(5, 4, 8)).astype(np.float32)
    codes = rng.integers(0, 4, size=(tiny_data.n_items, 5))
    big = _fake_lightrec_run(tmp_path / "big", users, books, codes)
    # a run holding exactly big's first 2 codebooks scores as big's prefix; its last 2 do not
    first = _fake_lightrec_run(tmp_path / "first", users, books[:2], codes[:, :2])
    last = _fake_lightrec_run(tmp_path / "last", users, books[3:], codes[:, 3:])
    rows = script.probe(tiny_data, big, [first, last])
    assert [(r["against"], r["codebooks"], r["of"], r["split"]) for r in rows] == [
        (str(first), 2, 5, "valid"), (str(first), 2, 5, "test"), (str(last), 2, 5, "valid"), (str(last), 2, 5, "test")]
    for row in rows[:2]:
        assert row["ndcg@50"] == row["ndcg@50 fitted"] and row["recall@50"] == row["recall@50 fitted"]
    assert any(row["ndcg@50"] != row["ndcg@50 fitted"] for row in rows[2:])
    whole = script.Composition("codebooks", 8, codebooks=5, codewords=4)
    assert rows[0]["bytes"] < whole.device_bytes(tiny_data.n_items)
    # codes that do not rebuild the stored item vectors are refused
    np.savez(big / "pretrain" / "embeddings.npz", user_vectors=users, item_vectors=np.zeros((tiny_data.n_items, 8)),
             **{"composed.codebooks": books.reshape(-1, 8), "composed.codes": np.zeros(1, dtype=np.uint8)})
    with pytest.raises(SystemExit, match="do not rebuild"):
        script.lightrec_run(big)


def test_added_rows_replace_earlier_rows_of_the_same_key_and_keep_the_others(tmp_path) -> None:
    from peel.bench import added_rows

    earlier = {"rows": [{"run": "a", "v": 1}, {"run": "b", "v": 2}], "commands": ["python x.py --run a"]}
    (tmp_path / "probe.json").write_text(json.dumps(earlier))
    added = added_rows("probe", [{"run": "b", "v": 3}, {"run": "c", "v": 4}], lambda r: r["run"], results_dir=tmp_path)
    assert added["rows"] == [{"run": "a", "v": 1}, {"run": "b", "v": 3}, {"run": "c", "v": 4}]
    assert added["commands"][0] == "python x.py --run a" and len(added["commands"]) == 2
    assert added_rows("none", [{"run": "a"}], lambda r: r["run"], results_dir=tmp_path)["rows"] == [{"run": "a"}]


def test_compare_verdict_names_the_budgets_a_peel_was_not_paired_at() -> None:
    """A PEEL row paired only at some budgets must not read as 'loses nowhere' where it was never tested."""
    compare = _script("compare")

    def row(method: str, budget: str, valid: float, elastic: bool = False) -> dict:
        return {"method": method, "family": method, "budget": budget, "valid_ndcg50": valid, "elastic": elastic}

    def pair(a: str, budget: str, b: str, difference: float, p: float) -> dict:
        return {"a": a, "b": b, "budget": budget, "metric": "ndcg@50", "difference": difference,
                "relative": difference, "p_value": p}

    rows = [row("PEEL", "5MB-eq", 0.04, True), row("PEEL", "10MB-eq", 0.05, True),
            row("LightGCN", "5MB-eq", 0.03), row("LightGCN", "10MB-eq", 0.04), row("LightRec", "10MB-eq", 0.06)]
    paired = [pair("PEEL", "5MB-eq", "LightGCN", 0.2, 1e-9), pair("PEEL", "10MB-eq", "LightRec", -0.1, 1e-9),
              pair("PEEL hand", "5MB-eq", "LightGCN", 0.2, 1e-9)]
    lines = [line for line in compare.verdicts({"rows": rows, "paired": paired}) if line]
    assert lines[0] == ("**Where PEEL loses** (NDCG@50, significant at 5%): 10MB-eq (-10%, p = 1e-09); "
                        "where it wins: 5MB-eq.")
    assert lines[1].endswith("where it wins: 5MB-eq; not paired with the best fitted model at 10MB-eq.")
    assert len(lines) == 2  # every budget's best model is paired with some PEEL
    lines = compare.verdicts({"rows": rows, "paired": paired[:1]})
    assert lines[-1].startswith("**Not paired**") and "10MB-eq (LightRec)" in lines[-1]
