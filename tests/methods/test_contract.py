"""One contract over every registered method (as implicit's test mixin and scikit-learn's
parametrize_with_checks do): a method added to peel.methods.METHODS is covered by registering it."""

import json

import pytest

from peel.budget import Budget, parse_budget
from peel.config import PeelConfig
from peel.errors import BudgetError
from peel.evaluation import PopularityScorer, evaluate
from peel.evaluation.report import evaluate_runs
from peel.export import export_run
from peel.methods import METHODS

SMALL = PeelConfig().with_overrides([
    "model.n_blocks=4", "model.block_dim=4", "pretrain.batch_size=512", "pretrain.lr=0.01", "pretrain.max_epochs=15",
    "grouping.item_groups=4", "grouping.user_groups=3", "finetune.batch_size=512", "finetune.max_epochs=3"])
BUDGET = "50%"  # of the full 16-dim item table


def _budget(data) -> Budget:
    return parse_budget(BUDGET, full_table_bytes=data.n_items * SMALL.model.dim * 4)


def _fit(name, data, out):
    method = METHODS[name]
    method.train(data, out, SMALL, budget=None if method.elastic else _budget(data), progress=False)
    return evaluate_runs(out, BUDGET, split="valid", ks=(20,))


@pytest.fixture(scope="module", params=sorted(METHODS))
def fitted(request, tmp_path_factory, small_data):
    out = tmp_path_factory.mktemp(request.param) / "run"
    return request.param, out, _fit(request.param, small_data, out)


def test_fits_within_the_budget_and_beats_popularity(fitted, small_data):
    name, _, rows = fitted
    budget = _budget(small_data)
    popularity = evaluate(PopularityScorer(small_data), small_data, split="valid", ks=(20,))
    [row] = rows
    assert "error" not in row, row
    assert 0 < row["bytes_used"] <= budget.bytes, (name, row["bytes_used"], budget.bytes)
    assert row["ndcg@20"] > popularity["ndcg@20"], name


def test_same_seed_same_result(fitted, small_data, tmp_path):
    name, _, rows = fitted
    again = _fit(name, small_data, tmp_path / "again")
    # same process, same shapes, same thread count: the same floats
    assert [r["ndcg@20"] for r in again] == [r["ndcg@20"] for r in rows]


def test_exports_a_bundle_within_the_budget(fitted, small_data, tmp_path):
    name, out, rows = fitted
    index = json.loads((export_run(out, tmp_path / "export", data=small_data) / "index.json").read_text())
    charged = [g["charged_bytes_full"] for g in index["groups"]]
    # a fitted model's whole bundle is its budget; an elastic one holds every budget, and rows[0] is its prefix
    assert max(charged) <= _budget(small_data).bytes if not METHODS[name].elastic else min(charged) >= rows[0][
        "bytes_used"]


def test_refuses_a_budget_below_its_minimum_and_says_the_minimum(fitted, small_data, tmp_path):
    name, out, _ = fitted
    tiny = Budget(16)
    if METHODS[name].elastic:
        [row] = evaluate_runs(out, "16", split="valid", ks=(20,))
        assert "minimum" in row["error"]
    else:
        with pytest.raises(BudgetError, match="smallest"):
            METHODS[name].train(small_data, tmp_path / "tiny", SMALL, budget=tiny, progress=False)
