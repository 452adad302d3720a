"""End to end on small synthetic data: peel train / peel evaluate, ablations, resume, budgets."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from peel.budget import Budget
from peel.cli import app
from peel.config import NESTED_EVAL_FACTOR, PeelConfig, resolve_for_data
from peel.data import save_presplit
from peel.errors import BudgetError, PeelError
from peel.evaluation import PopularityScorer, evaluate
from peel.methods.peel import evaluate_run
from peel.run import TrainedRun
from peel.training.pipeline import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data, small_config):
    out = tmp_path_factory.mktemp("run") / "run"
    train(small_data, out, small_config, progress=False)
    return out


def test_run_directory_layout(trained, small_config, small_data):
    for name in ("config.json", "data.json", "log.txt", "summary.json", "pretrain/embeddings.npz", "grouping.npz",
                 "finetune/group_0.npz"):
        assert (trained / name).exists(), name
    assert not list((trained / "finetune").glob("checkpoint_*"))  # removed once a group is done
    summary = json.loads((trained / "summary.json").read_text())
    assert set(summary["seconds"]) == {"pretrain", "grouping", "finetune", "total"}
    assert small_config.pretrain.eval_every == 0  # auto in the requested config ...
    resolved = resolve_for_data(small_config, n_train=small_data.count("train"))
    # ... resolved from the data in the run's config.json: every epoch on small data, times the nested factor
    assert resolved.pretrain.eval_every == NESTED_EVAL_FACTOR
    assert json.loads((trained / "config.json").read_text()) == resolved.to_dict()


def test_log_says_density_groups_are_not_fine_tuned(trained, small_config):
    assert small_config.finetune.importance == "density"  # the default: no stage-b training, no validation loss
    log = (trained / "log.txt").read_text()
    assert "user group 0:" in log and "density importance weights (no fine-tuning)" in log
    assert "valid loss nan" not in log


def test_resume_with_the_same_auto_config_is_accepted(trained, small_data, small_config):
    summary = train(small_data, trained, small_config, resume=True, progress=False)  # everything done: no work
    assert set(summary["seconds"]) >= {"pretrain", "grouping", "finetune"}


def test_peel_beats_popularity_and_more_budget_helps(trained, small_data):
    run = TrainedRun.load(trained)
    full = run.layout.full_bytes()
    minimum = max(run.layout.minimum_bytes(run.unit_order(g)) for g in range(len(run.groups)))
    rows = evaluate_run(run, small_data, [Budget(minimum), Budget(full)], split="valid", ks=(10,))
    popularity = evaluate(PopularityScorer(small_data), small_data, split="valid", ks=(10,), legacy_depth=None)
    assert rows[-1]["recall@10"] > popularity["recall@10"]
    assert rows[0]["units_kept_max"] < rows[1]["units_kept_min"]
    assert all(r["bytes_used"] <= r["budget_bytes"] for r in rows)
    with pytest.raises(BudgetError, match="below the minimum"):
        run.scorer(Budget(minimum - 1))


def test_existing_run_needs_resume_and_same_config(trained, small_data, small_config, tmp_path):
    with pytest.raises(PeelError, match="--resume"):
        train(small_data, trained, small_config, progress=False)
    changed = small_config.with_overrides(["pretrain.lr=0.5"])
    with pytest.raises(PeelError, match="differs"):
        train(small_data, trained, changed, resume=True, progress=False)
    # a config.json from before a key existed would load with today's default for it: refused, named
    import shutil

    old = shutil.copytree(trained, tmp_path / "old-run")
    values = json.loads((old / "config.json").read_text())
    del values["pretrain"]["l2_full_prefix_race"], values["finetune"]["density_decay"]
    (old / "config.json").write_text(json.dumps(values))
    with pytest.raises(PeelError, match=r"older peel and lacks pretrain\.l2_full_prefix_race, finetune\.density_decay"):
        train(small_data, old, small_config, resume=True, progress=False)
    # ... except a key that changes nothing once the run's lr is derived: the auto-lr rule
    values = json.loads((trained / "config.json").read_text())
    del values["pretrain"]["lr_batch_power"], values["device"]["unit_dtype"]  # before q8 every run was float32
    (old / "config.json").write_text(json.dumps(values))
    assert PeelConfig().device.unit_dtype == "f32", "an older run without device.unit_dtype is float32: fill that"
    train(small_data, old, small_config.with_overrides(["pretrain.lr_batch_power=0.5"]), resume=True, progress=False)
    with pytest.raises(PeelError, match="differs"):  # the derived lr itself still counts
        train(small_data, old, small_config.with_overrides(["pretrain.lr=0", "pretrain.lr_batch_power=0.5"]),
              resume=True, progress=False)
    before = (trained / "finetune" / "group_0.npz").stat().st_mtime_ns
    recorded = json.loads((trained / "summary.json").read_text())["seconds"]
    train(small_data, trained, small_config, resume=True, progress=False)  # everything done: nothing reruns
    assert (trained / "finetune" / "group_0.npz").stat().st_mtime_ns == before
    assert json.loads((trained / "summary.json").read_text())["seconds"] == recorded  # times kept


def test_unit_order_puts_one_block_of_every_item_group_first(trained, small_config):
    run = TrainedRun.load(trained)
    g_v = small_config.grouping.item_groups
    for g in range(len(run.groups)):
        assert sorted(run.unit_order(g)[:g_v, 0].tolist()) == list(range(g_v))


@pytest.mark.slow
def test_cli_train_evaluate_with_ablations(tmp_path, small_data, small_overrides):
    data_dir = tmp_path / "data"
    save_presplit(small_data, data_dir)
    out = tmp_path / "run"
    runner = CliRunner()
    sets = [a for s in small_overrides for a in ("--set", s)]
    result = runner.invoke(app, ["train", "--data", str(data_dir), "--out", str(out), "--quiet", *sets])
    assert result.exit_code == 0, result.output
    for ablation in ("single_user_group", "random_selection", "lightgcn"):
        result = runner.invoke(app, ["train", "--data", str(data_dir), "--out", str(out), "--quiet",
                                     "--ablation", ablation, *sets])
        assert result.exit_code == 0, result.output
    # the ablations that keep stage a share it instead of retraining
    assert (out / "ablations" / "single_user_group" / "pretrain" / "embeddings.npz").stat().st_ino == \
        (out / "pretrain" / "embeddings.npz").stat().st_ino
    result = runner.invoke(app, ["evaluate", str(out), "--budgets", "1%,30%,100%", "--ablation", "--json",
                                 "--split", "valid"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)  # progress bars go to stderr
    methods = [r["method"] for r in rows]
    assert methods.count("PEEL") == 3
    assert "below the minimum" in rows[0]["error"]  # 1% cannot hold one block per item group
    assert any("not trained" in r.get("error", "") for r in rows)  # random_item_groups, no_diversity
    assert sum(1 for r in rows if "user clustering" in r["method"] and "recall@50" in r) == 2
    assert rows[1]["recall@50"] <= rows[2]["recall@50"] + 0.02
    lightgcn = [r for r in rows if r["method"].startswith("LightGCN")]
    assert len(lightgcn) == 1 and lightgcn[0]["recall@50"] > 0
    fold = runner.invoke(app, ["evaluate", str(out), "--budgets", "100%", "--json", "--split", "valid",
                               "--set", "device.eq10=fold"])
    assert fold.exit_code == 0 and json.loads(fold.stdout)[0]["recall@50"] != rows[2]["recall@50"]


def test_cli_refuses_bad_config_with_one_line(tmp_path):
    exe = Path(sys.executable).with_name("peel")
    proc = subprocess.run([str(exe), "train", "--data", "synthetic", "--out", str(tmp_path / "r"),
                           "--set", "model.embedding_dim=100"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "embedding_dim = 100 must equal" in proc.stderr and "Traceback" not in proc.stderr
    assert np.all([not (tmp_path / "r" / "finetune").exists()])


def test_stage_a_from_shares_pretraining_only_when_it_matches(trained, small_data, small_config, tmp_path):
    variant = tmp_path / "dot"
    train(small_data, variant, small_config.with_overrides(["finetune.scorer=dot"]), progress=False,
          stage_a_from=trained)
    shared = variant / "pretrain" / "embeddings.npz"
    assert shared.stat().st_ino == (trained / "pretrain" / "embeddings.npz").stat().st_ino
    assert "pretrain" not in json.loads((variant / "summary.json").read_text())["seconds"]
    assert TrainedRun.load(variant).config.finetune.scorer == "dot"

    other = tmp_path / "other"  # a different pretraining config trains its own stage a
    train(small_data, other, small_config.with_overrides(["pretrain.max_epochs=1"]), progress=False,
          stage_a_from=trained, stop_after="pretrain")
    assert (other / "pretrain" / "embeddings.npz").stat().st_ino != shared.stat().st_ino


def test_no_diversity_ablation_needs_a_run_with_the_regularizer(small_config):
    from peel.errors import ConfigError
    from peel.training.pipeline import ablation_config

    assert small_config.pretrain.lambda_div == 0  # peel's validated default
    with pytest.raises(ConfigError, match="lambda_div is already 0"):
        ablation_config(small_config, "no_diversity")
    paper = small_config.with_overrides(["pretrain.lambda_div=0.001"])
    assert ablation_config(paper, "no_diversity").pretrain.lambda_div == 0


def test_evaluate_overrides_apply_to_the_runs_own_device_options(trained, tmp_path):
    import shutil

    from peel.errors import ConfigError
    from peel.methods.report import evaluate_runs

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    config = json.loads((run / "config.json").read_text())
    config["device"] |= {"eq10_scale": "paper", "blocks": "transformed"}  # device options do not change training
    (run / "config.json").write_text(json.dumps(config))
    plain = evaluate_runs(run, "60%,100%", split="valid")
    # an override that restates one of the run's options changes nothing (it used to reset the rest to defaults)
    assert evaluate_runs(run, "60%,100%", split="valid", overrides=["device.eq10=masked"]) == plain
    assert evaluate_runs(run, "60%,100%", split="valid", overrides=["device.eq10_scale=sqrt"]) != plain
    with pytest.raises(ConfigError, match="only device options.*pretrain.lr"):
        evaluate_runs(run, "100%", overrides=["pretrain.lr=0.5"])


def test_evaluate_shows_progress_on_stderr_only(trained, capsys):
    from peel.methods.report import evaluate_runs

    rows = evaluate_runs(trained, "50%,100%", split="valid", ks=(20,), progress=True)
    captured = capsys.readouterr()
    assert "PEEL at 50%" in captured.err and "PEEL at 100%" in captured.err
    assert captured.out == "" and len(rows) == 2
    evaluate_runs(trained, "50%", split="valid", ks=(20,), progress=False)
    assert capsys.readouterr().err == ""


def test_a_run_keeps_to_its_thread_count(small_data, small_config, tmp_path, monkeypatch):
    """config.threads bounds every stage (stage a included, not only stage b's groups): torch's pool and numpy's
    BLAS inside the run, the caller's own counts after it."""
    import torch
    from threadpoolctl import threadpool_info

    import peel.training.pipeline as pipeline

    seen = []
    real_pretrain = pipeline.pretrain

    def counting_pretrain(*args, **kwargs):
        blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        seen.append((torch.get_num_threads(), blas))
        return real_pretrain(*args, **kwargs)

    monkeypatch.setattr(pipeline, "pretrain", counting_pretrain)
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # more than the run's 1, on any machine
    try:
        train(small_data, tmp_path / "run", small_config.with_overrides(["threads=1", "pretrain.max_epochs=1"]),
              progress=False, stop_after="pretrain")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert seen and seen[0][0] == 1
    assert all(n == 1 for n in seen[0][1])
