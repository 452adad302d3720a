"""Export of a trained run, and the device runtime against the server's Eq. 10 scoring."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from peel.budget import Budget
from peel.cli import app, main
from peel.data import synthetic_dataset
from peel.device import BudgetError, Bundle, BundleError, ExportIndex, Users, recommend_for_user
from peel.errors import PeelError
from peel.methods import export_run
from peel.run import TrainedRun


@pytest.fixture(scope="module")
def exported(tiny_run, tiny_data, tmp_path_factory) -> Path:
    return export_run(tiny_run, tmp_path_factory.mktemp("export") / "bundles", data=tiny_data)


def budget_grid(run: TrainedRun) -> list[Budget]:
    layout = run.layout
    minimum = max(layout.minimum_bytes(run.unit_order(g)) for g in range(len(run.groups)))
    full = layout.full_bytes()
    return [Budget(minimum), Budget((minimum + full) // 2), Budget(full)]


def test_round_trip_at_full_budget(exported, tiny_run, tiny_data) -> None:
    run = TrainedRun.load(tiny_run)
    index = json.loads((exported / "index.json").read_text())
    assert index["n_user_groups"] == len(run.groups) == len(index["groups"])
    for g in range(len(run.groups)):
        bundle = Bundle.open(exported / f"group_{g}.peelb")
        order, blocks = run.unit_order(g), run.blocks(g)
        np.testing.assert_array_equal(bundle.unit_order, order)
        assert bundle.n_units_loaded == len(order) and bundle.eq10 == run.config.device.eq10
        bounds = bundle.item_group_bounds
        np.testing.assert_array_equal(run.item_group[bundle.item_order], np.repeat(np.arange(4), np.diff(bounds)))
        for i, (group, block) in enumerate(order):
            stored = bundle.item_order[bounds[group]: bounds[group + 1]]
            np.testing.assert_array_equal(bundle.unit(i), blocks[stored, block, :])
        stored_ids = bundle.item_ids.at(np.arange(bundle.n_items))
        np.testing.assert_array_equal(stored_ids, tiny_data.item_ids[bundle.item_order])
        entry = index["groups"][g]
        assert entry["file_bytes"] == (exported / entry["file"]).stat().st_size == bundle.file_bytes
        assert entry["charged_bytes_full"] == entry["charged_bytes_stored"] == bundle.bytes_loaded
    users = Users.open(exported / "users.peelb")
    np.testing.assert_array_equal(users.user_vectors, run.user_vectors())
    np.testing.assert_array_equal(users.user_group, run.user_group)
    train = tiny_data.csr("train")
    np.testing.assert_array_equal(users.history_indptr, train.indptr)
    np.testing.assert_array_equal(users.history_items, train.indices)


def server_top(scorer, user: int, history: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k of the server's Eq. 10 scores (TrainedRun.scorer) with the history masked, and all scores."""
    scores = scorer(np.array([user]))[0].clone()
    scores[torch.from_numpy(history)] = -torch.inf
    top = torch.topk(scores, k)
    return top.indices.numpy(), top.values.numpy(), scores.numpy()


@pytest.mark.parametrize(("reading", "scale", "unit_dtype"),
                         [("masked", "sqrt", "f32"), ("masked", "paper", "f32"), ("fold", "none", "f32"),
                          ("masked", "sqrt", "q8")])
def test_device_top50_equals_server_scoring(tiny_run, tiny_data, tmp_path, reading, scale, unit_dtype,
                                            same_top_k) -> None:
    base = TrainedRun.load(tiny_run)
    device = dataclasses.replace(base.config.device, eq10=reading, eq10_scale=scale, unit_dtype=unit_dtype)
    run = TrainedRun.load(tiny_run, device=device)
    out = export_run(run, tmp_path / reading, data=tiny_data)
    users = Users.open(out / "users.peelb")
    sample = np.random.default_rng(0).choice(tiny_data.n_users, 24, replace=False)
    for budget in budget_grid(run):
        scorer = run.scorer(budget)
        bundles = {g: Bundle.open(out / f"group_{g}.peelb", budget=budget) for g in range(len(run.groups))}
        assert {b.unit_dtype for b in bundles.values()} == {unit_dtype}
        for user in sample:
            record = users.user(tiny_data.user_ids[user])
            rec = bundles[record.user_group].for_user(record.vector, internal_history=record.history)
            assert rec.eq10 == reading and rec.eq10_scale == scale
            selection = scorer.selections[record.user_group]
            assert rec.bytes_used == selection.bytes_used <= budget.bytes
            np.testing.assert_array_equal(rec.blocks_per_item_group, selection.kept_mask(4, 4).sum(axis=1))
            ids, scores = rec.recommend(k=50)
            _, values, full = server_top(scorer, user, record.history, 50)
            np.testing.assert_allclose(scores, values, rtol=1e-4, atol=1e-5)
            internal = bundles[record.user_group].item_order[bundles[record.user_group].positions_of(ids)]
            np.testing.assert_allclose(full[internal], scores, rtol=1e-4, atol=1e-5)
            # torch on the server, numpy on the device: the server's top-50 up to ties within that tolerance
            same_top_k(internal, scores, full, 1e-5 + 1e-4 * np.abs(values).max())
            np.testing.assert_array_equal(ids, tiny_data.item_ids[internal])  # the bundle's raw ids are the data's


def test_max_budget_export_holds_the_prefix(tiny_run, tiny_data, tmp_path) -> None:
    run = TrainedRun.load(tiny_run)
    low, middle, full = budget_grid(run)
    out = export_run(run, tmp_path / "capped", data=tiny_data, max_budget=middle, groups=[1])
    index = ExportIndex.open(out)
    assert sorted(index.group_files) == [1] and not (out / "group_0.peelb").exists()
    entry = index.info["groups"][0]
    kept = run.selection(1, middle)
    assert entry["units_stored"] == kept.n_kept < entry["units_total"] == 16
    assert entry["charged_bytes_stored"] == kept.bytes_used and entry["charged_bytes_full"] == full.bytes
    assert entry["file_bytes"] == (out / "group_1.peelb").stat().st_size
    bundle = index.bundle(1, budget=full)  # a larger budget keeps everything stored
    assert bundle.n_units_loaded == kept.n_kept and bundle.bytes_read == bundle.file_bytes
    user = int(run.groups[1].users[0])
    result = recommend_for_user(out, tiny_data.user_ids[user], budget=low, k=10)
    assert result["units"] == run.selection(1, low).n_kept and result["bytes_used"] <= low.bytes
    other = int(run.groups[0].users[0])
    with pytest.raises(BundleError, match="user group 0 was not exported"):
        recommend_for_user(out, tiny_data.user_ids[other])


def test_export_refusals_leave_nothing(tiny_run, tiny_data, tmp_path, exported) -> None:
    run = TrainedRun.load(tiny_run)
    minimum = budget_grid(run)[0]
    with pytest.raises(BudgetError, match="below the minimum"):
        export_run(run, tmp_path / "small", data=tiny_data, max_budget=Budget(minimum.bytes - 1))
    with pytest.raises(PeelError, match="groups must be user groups in"):
        export_run(run, tmp_path / "groups", data=tiny_data, groups=[5])
    with pytest.raises(PeelError, match="trained on 300 users"):
        export_run(run, tmp_path / "other", data=synthetic_dataset(n_users=120, n_items=200, seed=1))
    with pytest.raises(PeelError, match="not empty"):
        export_run(run, exported, data=tiny_data)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["run", "inside", "containing"])
def test_export_refuses_an_output_overlapping_its_run_even_with_force(tiny_run, tmp_path, where) -> None:
    import shutil

    run = tmp_path / "copy" / "run"
    shutil.copytree(tiny_run, run)
    out = {"run": run, "inside": run / "bundles", "containing": run.parent}[where]
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(out), "--force"])
    assert isinstance(result.exception, PeelError), result.output
    assert f"the input {run}" in str(result.exception)
    assert TrainedRun.load(run).config == TrainedRun.load(tiny_run).config  # the run is intact
    assert not (run / "bundles").exists()


def test_string_ids(tiny_run, tiny_data, tmp_path) -> None:
    data = tiny_data.replace(item_ids=np.array([f"book-{j}" for j in range(200)], dtype=object),
                             user_ids=np.array([f"reader-{u}" for u in range(300)], dtype=object))
    out = export_run(tiny_run, tmp_path / "strings", data=data, history=True)
    result = recommend_for_user(out, "reader-7", k=20)
    seen = {f"book-{j}" for j in tiny_data.csr("train")[7].indices}
    assert len(result["items"]) == 20 and all(i.startswith("book-") for i in result["items"])
    assert not seen & set(result["items"]) and result["history_excluded"] == len(seen)
    with pytest.raises(BundleError, match="unknown user '7'"):
        recommend_for_user(out, "7")


def test_cli_export_and_recommend(tiny_run, tmp_path, monkeypatch, capsys) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["export", str(tiny_run), "--out", str(out), "--max-budget", "30%"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert (out / "users.peelb").exists() and (out / "group_1.peelb").exists()
    result = runner.invoke(app, ["recommend", str(out), "--user", "12", "-k", "5", "--json", "--budget", "3500"])
    assert result.exit_code == 0, (result.output, result.exception)
    payload = json.loads(result.output)
    assert len(payload["items"]) == 5 and payload["bytes_used"] <= payload["budget_bytes"]
    result = runner.invoke(app, ["recommend", str(out), "--user", "12", "-k", "3"])
    assert result.exit_code == 0 and "rank" in result.output
    monkeypatch.setattr(sys, "argv", ["peel", "recommend", str(out), "--user", "nobody-here"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown user 'nobody-here'" in lines[0]


def test_cli_export_of_an_f32_run_as_q8_units(tiny_run, exported, tmp_path) -> None:
    """A trained run exports q8 bundles without retraining; they hold more units in the same budget."""
    out = tmp_path / "q8"
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(out), "--set", "device.unit_dtype=q8"])
    assert result.exit_code == 0, (result.output, result.exception)
    index = json.loads((out / "index.json").read_text())
    assert index["unit_dtype"] == "q8"
    budget = budget_grid(TrainedRun.load(tiny_run))[1]
    q8, f32 = (ExportIndex.open(d).bundle(0, budget=budget) for d in (out, exported))
    assert (q8.unit_dtype, f32.unit_dtype) == ("q8", "f32") and q8.n_units_loaded > f32.n_units_loaded
    assert index["total_file_bytes"] < json.loads((exported / "index.json").read_text())["total_file_bytes"]
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(tmp_path / "bad"),
                                      "--set", "device.unit_dtype=q4"])
    assert result.exit_code != 0 and "unit_dtype must be one of" in str(result.exception)
    assert not (tmp_path / "bad").exists()


def test_item_group_matrices_are_read_only_views_of_the_loaded_units(exported, tiny_run) -> None:
    run = TrainedRun.load(tiny_run)
    _, middle, _ = budget_grid(run)
    bundle = ExportIndex.open(exported).bundle(0, budget=middle)
    matrices = bundle.item_group_matrices
    assert len(matrices) == bundle.n_item_groups
    assert sum(m.nbytes for m in matrices) + bundle.layout.user_vector_bytes == bundle.bytes_loaded
    for m in matrices:
        assert not m.flags.writeable
        with pytest.raises(ValueError):
            m[...] = 0
    for i in range(bundle.n_units_loaded):  # every unit sits in its item group's matrix, in unit order
        g = int(bundle.unit_order[i, 0])
        column = int(np.count_nonzero(bundle.unit_order[:i, 0] == g))
        d = bundle.block_dim
        np.testing.assert_array_equal(matrices[g][:, column * d: (column + 1) * d], bundle.unit(i))
