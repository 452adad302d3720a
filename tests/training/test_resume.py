"""A run killed after an epoch and resumed ends with the same parameters as an uninterrupted run."""

import dataclasses
import json

import numpy as np
import pytest

import peel.training.pretrain as pretrain_module
from peel.models.lightgcn import LightGCN
from peel.training.pretrain import pretrain


class Killed(Exception):
    pass


@pytest.mark.parametrize("checkpoint_seconds", [0.0, 1e9])
def test_killed_pretraining_resumes_to_identical_parameters(tmp_path, small_data, small_config, monkeypatch,
                                                            checkpoint_seconds):
    # 0: a checkpoint after every epoch, so the kill in epoch 2 resumes after epoch 1; 1e9: none until the
    # last epoch, so the resumed run starts over, to the same parameters
    monkeypatch.setattr(pretrain_module, "CHECKPOINT_SECONDS", checkpoint_seconds)
    # one stage a, no race of the full-prefix L2 (a killed race resumes: tests/training/test_race.py)
    config = dataclasses.replace(small_config.pretrain, max_epochs=3, patience=10, l2_full_prefix_race="")
    kwargs = dict(model_config=small_config.model, config=config, seed=small_config.seed)
    reference = pretrain(small_data, checkpoint=tmp_path / "a.pt", **kwargs)

    batches_per_epoch = -(-small_data.count("train") // config.batch_size)
    original = LightGCN.loss
    calls = {"n": 0}

    def dying_loss(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] > batches_per_epoch + 1:  # dies inside epoch 2
            raise Killed
        return original(self, *args, **kw)

    monkeypatch.setattr(LightGCN, "loss", dying_loss)
    with pytest.raises(Killed):
        pretrain(small_data, checkpoint=tmp_path / "b.pt", **kwargs)
    assert (tmp_path / "b.pt").exists() == (checkpoint_seconds == 0)
    trained = {"batches": 0}

    def counting_loss(self, *args, **kw):
        trained["batches"] += 1
        return original(self, *args, **kw)

    monkeypatch.setattr(LightGCN, "loss", counting_loss)
    resumed = pretrain(small_data, checkpoint=tmp_path / "b.pt", resume=True, **kwargs)
    assert (tmp_path / "b.pt").exists()  # the last epoch always writes one
    assert resumed.loop.epochs_run == 3 and len(resumed.loop.history) == 3
    # bit for bit is a fair promise here: one process, one torch thread count, the same batches through the same
    # ops on the same shapes, and a checkpoint holds every tensor exactly (not so across machines or thread counts)
    np.testing.assert_array_equal(resumed.item_vectors, reference.item_vectors)
    np.testing.assert_array_equal(resumed.user_vectors, reference.user_vectors)
    # and the checkpoint really was used: a fresh run without resume would also match, so check epochs
    assert [h["epoch"] for h in resumed.loop.history] == [1, 2, 3]
    assert trained["batches"] == (2 if checkpoint_seconds == 0 else 3) * batches_per_epoch


def test_pretraining_is_reproducible_and_seed_dependent(small_data, small_config):
    config = dataclasses.replace(small_config.pretrain, max_epochs=1)
    a = pretrain(small_data, model_config=small_config.model, config=config, seed=1)
    b = pretrain(small_data, model_config=small_config.model, config=config, seed=1)
    c = pretrain(small_data, model_config=small_config.model, config=config, seed=2)
    np.testing.assert_array_equal(a.item_vectors, b.item_vectors)
    assert not np.allclose(a.item_vectors, c.item_vectors)


# ---------------------------------------------------------------------- the run directory across invocations
def _quick(config):
    return config.with_overrides(["pretrain.max_epochs=1"])


def test_resume_refuses_other_synthetic_data(tmp_path, small_data, small_config):
    from peel.data import synthetic_dataset
    from peel.errors import PeelError
    from peel.training.pipeline import train

    out = tmp_path / "run"
    train(small_data, out, _quick(small_config), progress=False, stop_after="pretrain")
    recorded = (out / "data.json").read_text()
    other = synthetic_dataset(n_users=300, n_items=200, mean_interactions=20, seed=4)
    with pytest.raises(PeelError, match=f"{out}.*other data.*seed"):
        train(other, out, _quick(small_config), resume=True, progress=False)
    with pytest.raises(PeelError, match=f"{out}.*other data.*seed"):  # an ablation beside it, too
        train(other, out, _quick(small_config), ablation="single_user_group", progress=False)
    assert (out / "data.json").read_text() == recorded
    assert not (out / "grouping.npz").exists() and not (out / "ablations").exists()


def test_resume_refuses_other_files_and_accepts_the_same_files_moved(tmp_path, small_data, small_config):
    import shutil

    from peel.data import load, save_presplit, synthetic_dataset
    from peel.errors import PeelError
    from peel.training.pipeline import train

    first, second = tmp_path / "first", tmp_path / "second"
    save_presplit(small_data, first)
    save_presplit(synthetic_dataset(n_users=300, n_items=200, mean_interactions=20, seed=4), second)
    out = tmp_path / "run"
    train(load(first), out, _quick(small_config), data_path=first, progress=False, stop_after="pretrain")
    with pytest.raises(PeelError, match=r"was trained on other data: \w+\.txt sha256 \w+ differs"):
        train(load(second), out, _quick(small_config), data_path=second, resume=True, progress=False,
              stop_after="pretrain")
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    train(load(moved), out, _quick(small_config), data_path=moved, resume=True, progress=False,
          stop_after="pretrain")
    assert json.loads((out / "data.json").read_text())["source"] == str(moved)


def test_a_start_refused_by_the_data_writes_nothing(tmp_path, small_data, small_config):
    from peel.errors import ConfigError, PeelError
    from peel.training.pipeline import train

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="item_groups = 500 exceeds the item count"):
        train(small_data, out, small_config.with_overrides(["grouping.item_groups=500"]), progress=False)
    with pytest.raises(PeelError, match="needs a path"):
        train(small_data.replace(report=()), out, small_config, progress=False)
    assert not out.exists() or not any(out.iterdir())
    train(small_data, out, _quick(small_config), progress=False, stop_after="pretrain")  # the corrected rerun


def test_train_refuses_a_non_empty_directory_that_is_not_a_run(tmp_path, small_data, small_config):
    from peel.errors import PeelError
    from peel.training.pipeline import train

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for resume in (False, True):
        with pytest.raises(PeelError, match=f"{out} is not empty and holds no run"):
            train(small_data, out, _quick(small_config), resume=resume, progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(PeelError, match="not a directory"):
        train(small_data, tmp_path / "file", _quick(small_config), progress=False)


def test_resume_with_another_executor_and_thread_count(tmp_path, small_data, small_config, monkeypatch):
    import peel.training.pipeline as pipeline
    from peel.training.executor import run_tasks

    out = tmp_path / "run"
    config = _quick(small_config)
    pipeline.train(small_data, out, config, progress=False, stop_after="pretrain")
    used = []

    def fake_ray(fn, tasks, *, executor, **kwargs):  # the executor's own equivalence is test_finetune's
        used.append(executor)
        return run_tasks(fn, tasks, executor="local", **kwargs)

    monkeypatch.setattr(pipeline, "run_tasks", fake_ray)
    ray_config = dataclasses.replace(config, executor="ray", threads=1)
    pipeline.train(small_data, out, ray_config, resume=True, progress=False)
    assert used == ["ray"] and (out / "finetune" / "group_0.npz").exists()
    assert "executor ray" in (out / "log.txt").read_text()
    with pytest.raises(pipeline.PeelError, match="differs"):  # what the run computes still must not change
        pipeline.train(small_data, out, dataclasses.replace(ray_config, seed=1), resume=True, progress=False)


def test_train_refuses_a_run_directory_inside_its_data(tmp_path, small_data, small_config):
    from peel.data import save_presplit
    from peel.errors import PeelError
    from peel.training.pipeline import train

    data_dir = save_presplit(small_data, tmp_path / "data")
    (tmp_path / "link").symlink_to(data_dir)
    with pytest.raises(PeelError, match=f"is inside the input {data_dir}"):
        train(small_data, tmp_path / "link" / "run", small_config, data_path=data_dir, progress=False)
    assert sorted(p.name for p in data_dir.iterdir()) == ["stats.json", "test.txt", "train.txt", "valid.txt"]


def test_summary_keeps_the_seconds_of_stages_finished_before_a_kill(tmp_path, small_data, small_config, monkeypatch):
    import peel.training.pipeline as pipeline

    out = tmp_path / "run"
    config = _quick(small_config)
    pipeline.train(small_data, out, config, progress=False, stop_after="pretrain")
    pretrain_seconds = json.loads((out / "summary.json").read_text())["seconds"]["pretrain"]
    original = pipeline.finetune_group

    def killed(task):
        raise Killed

    monkeypatch.setattr(pipeline, "finetune_group", killed)  # resumed, then killed in stage b
    with pytest.raises(Killed):
        pipeline.train(small_data, out, config, resume=True, progress=False)
    monkeypatch.setattr(pipeline, "finetune_group", original)
    summary = pipeline.train(small_data, out, config, resume=True, progress=False)
    seconds = json.loads((out / "summary.json").read_text())["seconds"]
    assert seconds == summary["seconds"] and set(seconds) == {"pretrain", "grouping", "finetune", "total"}
    assert seconds["pretrain"] == pretrain_seconds
    assert seconds["total"] == pytest.approx(sum(v for k, v in seconds.items() if k != "total"), abs=0.05)



def test_a_killed_and_resumed_stage_a_records_the_seconds_of_every_invocation(tmp_path, small_data, small_config,
                                                                             monkeypatch):
    # a fake clock that one training batch advances by one second, so the seconds are exact counts of batches
    import time

    import peel.training.pipeline as pipeline

    monkeypatch.setattr(pretrain_module, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every epoch
    clock = {"now": 0.0}
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])
    config = small_config.with_overrides(["pretrain.max_epochs=3", "pretrain.patience=10",
                                          "pretrain.l2_full_prefix_race="])
    batches_per_epoch = -(-small_data.count("train") // config.pretrain.resolved(
        small_data.count("train"), config.model.n_blocks).batch_size)
    original = LightGCN.loss
    calls = {"n": 0, "die_after": None}

    def ticking_loss(self, *args, **kw):
        if calls["die_after"] is not None and calls["n"] >= calls["die_after"]:
            raise Killed
        calls["n"] += 1
        clock["now"] += 1.0
        return original(self, *args, **kw)

    monkeypatch.setattr(LightGCN, "loss", ticking_loss)
    pipeline.train(small_data, tmp_path / "whole", config, progress=False, stop_after="pretrain")
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())["seconds"]["pretrain"]
    assert whole == 3 * batches_per_epoch

    calls.update(n=0, die_after=batches_per_epoch + 1)  # dies inside epoch 2, after epoch 1's checkpoint
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        pipeline.train(small_data, out, config, progress=False, stop_after="pretrain")
    assert json.loads((out / "summary.json").read_text())["unfinished_seconds"] == {"pretrain": batches_per_epoch}
    calls["die_after"] = None
    pipeline.train(small_data, out, config, resume=True, progress=False, stop_after="pretrain")
    summary = json.loads((out / "summary.json").read_text())
    # epoch 1 before the kill, epochs 2 and 3 after it; the batch of epoch 2 lost to the kill counts once
    assert summary["seconds"]["pretrain"] == whole and "unfinished_seconds" not in summary
    assert json.loads((out / "pretrain" / "result.json").read_text())["seconds"] == whole


def test_a_bad_unfinished_stage_clock_is_refused_with_its_file(tmp_path, small_data, small_config):
    import peel.training.pipeline as pipeline
    from peel.errors import PeelError

    out = tmp_path / "run"
    (out).mkdir()
    (out / "summary.json").write_text(json.dumps({"unfinished_seconds": {"pretrain": "soon"}}))
    with pytest.raises(PeelError, match=r"summary\.json: unfinished_seconds\.pretrain must be a non-negative"):
        pipeline.StageClock(out, "pretrain", resume=True)
    assert pipeline.StageClock(out, "pretrain", resume=False).before == 0.0  # a fresh stage reads nothing

# ------------------------------------------------------------------------- a larger stage-a epoch cap on resume
def _capped(config, max_epochs, patience=50):
    """Stage a validated every epoch, no race, ``max_epochs`` and ``patience`` as given."""
    return config.with_overrides([f"pretrain.max_epochs={max_epochs}", f"pretrain.patience={patience}",
                                  "pretrain.eval_every=1", "pretrain.l2_full_prefix_race="])


def test_a_larger_epoch_cap_continues_a_killed_stage_a_as_a_fresh_run_at_that_cap(tmp_path, small_data, small_config,
                                                                                 monkeypatch):
    from peel.training.pipeline import train
    from peel.training.pretrain import load_pretrained

    monkeypatch.setattr(pretrain_module, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every epoch
    fresh = tmp_path / "fresh"
    train(small_data, fresh, _capped(small_config, 4), progress=False, stop_after="pretrain")

    original, calls = LightGCN.loss, {"n": 0}
    batches_per_epoch = -(-small_data.count("train") // json.loads((fresh / "config.json").read_text())
                          ["pretrain"]["batch_size"])

    def dying_loss(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] > 2 * batches_per_epoch:  # dies inside epoch 3 of a 3-epoch cap
            raise Killed
        return original(self, *args, **kw)

    out = tmp_path / "run"
    monkeypatch.setattr(LightGCN, "loss", dying_loss)
    with pytest.raises(Killed):
        train(small_data, out, _capped(small_config, 3), progress=False, stop_after="pretrain")
    monkeypatch.setattr(LightGCN, "loss", original)
    train(small_data, out, _capped(small_config, 4), resume=True, progress=False, stop_after="pretrain")
    assert json.loads((out / "config.json").read_text()) == json.loads((fresh / "config.json").read_text())
    assert json.loads((out / "pretrain" / "result.json").read_text())["epochs_run"] == 4
    # bit for bit: one process, one thread count, the same batches (test_killed_pretraining_resumes_...)
    for a, b in zip(load_pretrained(out / "pretrain" / "embeddings.npz"),
                    load_pretrained(fresh / "pretrain" / "embeddings.npz"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_larger_epoch_cap_keeps_a_stage_a_that_stopped_early_and_refuses_one_that_reached_its_cap(
        tmp_path, small_data, small_config):
    from peel.errors import PeelError
    from peel.training.pipeline import train

    stopped, capped = tmp_path / "stopped", tmp_path / "capped"
    train(small_data, stopped, _capped(small_config, 60, patience=1), progress=False, stop_after="pretrain")
    epochs_run = json.loads((stopped / "pretrain" / "result.json").read_text())["epochs_run"]
    assert epochs_run < 60  # the premise: patience 1 stops it early
    embeddings = (stopped / "pretrain" / "embeddings.npz").read_bytes()
    train(small_data, stopped, _capped(small_config, 90, patience=1), resume=True, progress=False,
          stop_after="pretrain")
    assert (stopped / "pretrain" / "embeddings.npz").read_bytes() == embeddings  # nothing trained again
    assert json.loads((stopped / "config.json").read_text())["pretrain"]["max_epochs"] == 90
    assert f"stopped early at epoch {epochs_run}" in (stopped / "log.txt").read_text()

    train(small_data, capped, _capped(small_config, 2), progress=False, stop_after="pretrain")
    recorded = (capped / "config.json").read_text()
    with pytest.raises(PeelError, match="trained stage a to its cap of 2 epochs.*pretrain.max_epochs=2"):
        train(small_data, capped, _capped(small_config, 3), resume=True, progress=False, stop_after="pretrain")
    with pytest.raises(PeelError, match="differs from the requested config"):  # a smaller cap is another run
        train(small_data, stopped, _capped(small_config, 30, patience=1), resume=True, progress=False)
    assert (capped / "config.json").read_text() == recorded
