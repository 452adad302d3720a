"""One contract over every registered method (as implicit's test mixin and scikit-learn's
parametrize_with_checks do): a method added to peel.methods.METHODS is covered by registering it."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from peel.budget import Budget, parse_budget
from peel.cli import app
from peel.config import PeelConfig
from peel.errors import BudgetError
from peel.evaluation import PopularityScorer, evaluate
from peel.methods import METHODS, export_run, load_run
from peel.methods.report import evaluate_runs

SMALL = PeelConfig().with_overrides([
    "model.n_blocks=4", "model.block_dim=4", "pretrain.batch_size=512", "pretrain.lr=0.01", "pretrain.max_epochs=15",
    "grouping.item_groups=4", "grouping.user_groups=3", "finetune.batch_size=512", "finetune.max_epochs=3",
    "model.codewords=16",  # LightRec: 256 codewords of 16 dims alone would pass the budget
    "rule.structures=60", "rule.estimator_epochs=100"])  # RULE: a small estimator
BUDGET = "50%"  # of the full 16-dim item table


def _budget(data) -> Budget:
    return parse_budget(BUDGET, full_table_bytes=data.n_items * SMALL.model.dim * 4, n_items=data.n_items)


def _fit(name, data, out):
    method = METHODS[name]
    method.fit(data, out, SMALL, budget=None if method.elastic else _budget(data), progress=False)
    return load_run(out).evaluate(data, [_budget(data)], split="valid", ks=(20,))


@pytest.fixture(scope="module", params=sorted(METHODS))
def fitted(request, tmp_path_factory, small_data):
    out = tmp_path_factory.mktemp(request.param) / "run"
    return request.param, out, _fit(request.param, small_data, out)


def test_fits_within_the_budget_and_beats_popularity(fitted, small_data):
    name, out, rows = fitted
    budget = _budget(small_data)
    popularity = evaluate(PopularityScorer(small_data), small_data, split="valid", ks=(20,))
    [row] = rows
    assert "error" not in row, row
    assert 0 < row["bytes_used"] <= budget.bytes, (name, row["bytes_used"], budget.bytes)
    assert row["ndcg@20"] > popularity["ndcg@20"], name
    assert load_run(out).method == name and json.loads((out / "method.json").read_text())["method"] == name
    # a search or a teacher trained for the run is a stage of its own in the run's seconds
    from peel.methods.fixed import FIXED_SPECS

    spec = FIXED_SPECS.get(name)
    seconds = json.loads((out / "summary.json").read_text())["seconds"]
    assert ("search" in seconds) == bool(spec and spec.search) and ("teacher" in seconds) == bool(spec and spec.teacher)


def test_same_seed_same_result(fitted, small_data, tmp_path):
    name, _, rows = fitted
    again = _fit(name, small_data, tmp_path / "again")
    # same process, same shapes, same thread count: the same floats
    assert [r["ndcg@20"] for r in again] == [r["ndcg@20"] for r in rows]


def test_loaded_model_scores_as_it_evaluated(fitted, small_data):
    """Save/load round trip: a fresh load scores exactly as the one evaluated, and the report (which loads
    the run from its directory, data included) gives the same row."""
    name, out, rows = fitted
    budget = _budget(small_data)
    users = np.arange(min(50, small_data.n_users))
    first, second = load_run(out).scorer(budget)(users), load_run(out).scorer(budget)(users)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))  # same files, same process
    [row] = evaluate_runs(out, BUDGET, split="valid", ks=(20,))
    assert (row["ndcg@20"], row["bytes_used"]) == (rows[0]["ndcg@20"], rows[0]["bytes_used"])


def test_export_serves_the_server_top50_on_the_device(fitted, small_data, tmp_path, same_top_k):
    from peel.device import Bundle
    from peel.device.users import Users

    name, out, rows = fitted
    budget = _budget(small_data)
    export = export_run(out, tmp_path / "export", data=small_data)
    index = json.loads((export / "index.json").read_text())
    charged = [g["charged_bytes_full"] for g in index["groups"]]
    # a fitted model's whole bundle is its budget; an elastic one holds every budget, and rows[0] is its prefix
    assert max(charged) <= budget.bytes if not METHODS[name].elastic else min(charged) >= rows[0]["bytes_used"]
    model = load_run(out)
    users_file = Users.open(export / "users.peelb")
    bundles = {g["user_group"]: Bundle.open(export / g["file"], budget=budget) for g in index["groups"]}
    sample = np.random.default_rng(0).choice(small_data.n_users, 16, replace=False)
    server = np.asarray(model.scorer(budget)(sample), dtype=np.float64)
    for row, user in enumerate(sample):
        record = users_file.user(small_data.user_ids[user])
        bundle = bundles[record.user_group]
        rec = bundle.for_user(record.vector, internal_history=record.history)
        assert rec.bytes_used <= budget.bytes
        ids, scores = rec.recommend(k=50)
        full = server[row].copy()
        full[record.history] = -np.inf
        internal = bundle.item_order[bundle.positions_of(ids)]
        np.testing.assert_array_equal(ids, small_data.item_ids[internal])
        # torch on the server, numpy on the device: the same top-50 up to ties within float32 rounding
        same_top_k(internal, scores, full, 1e-5 + 1e-4 * np.abs(scores).max())


def test_refuses_a_budget_below_its_minimum_and_says_the_minimum(fitted, small_data, tmp_path):
    name, out, _ = fitted
    tiny = Budget(16)
    if METHODS[name].elastic:
        [row] = load_run(out).evaluate(small_data, [tiny], split="valid", ks=(20,))
        assert "minimum" in row["error"]
    else:
        with pytest.raises(BudgetError, match="smallest"):
            METHODS[name].fit(small_data, tmp_path / "tiny", SMALL, budget=tiny, progress=False)
        assert not (tmp_path / "tiny").exists()


def test_cli_evaluates_and_exports_every_method(fitted, tmp_path):
    name, out, rows = fitted
    result = CliRunner().invoke(app, ["evaluate", str(out), "--budgets", BUDGET, "--split", "valid", "--json",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["method"] == rows[0]["method"] and row["bytes_used"] == rows[0]["bytes_used"]
    result = CliRunner().invoke(app, ["export", str(out), "--out", str(tmp_path / "bundle")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bundle" / "index.json").exists()
