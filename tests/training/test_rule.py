"""RULE: structures fit their budget to the byte, the estimator ranks held-out structures, the search is
deterministic with a seed and monotone on validation across budgets, and the device serves its structure."""

import json

import numpy as np
import pytest

from peel.budget import Budget
from peel.config import PeelConfig
from peel.errors import BudgetError, ConfigError, PeelError
from peel.methods import METHODS, export_run, load_run
from peel.training import rule
from peel.units import UnitLayout

SMALL = PeelConfig().with_overrides([
    "model.n_blocks=4", "model.block_dim=4", "pretrain.batch_size=512", "pretrain.lr=0.01", "pretrain.max_epochs=15",
    "grouping.item_groups=4", "rule.structures=80", "rule.estimator_epochs=150", "rule.cycles=30"])
# 4 item groups of 50 items (synthetic data, 200 items), blocks of 4 dims: one unit = 50 * 4 * 4 = 800 bytes
LAYOUT = UnitLayout(np.array([50, 50, 50, 50]), 4, 4)


@pytest.fixture(scope="module")
def rule_run(tmp_path_factory, small_data):
    out = tmp_path_factory.mktemp("rule") / "run"
    METHODS["rule"].fit(small_data, out, SMALL, progress=False)
    return out


def test_structure_bytes_by_hand():
    uneven = UnitLayout(np.array([3, 2]), 2, 5)  # 5 items, blocks of 5 dims, D = 10
    structure = np.array([[True, True], [False, True]])
    # group 0 keeps 2 blocks of 3 items, group 1 one block of 2 items: 8 blocks * 5 dims * 4 + D * 4 = 160 + 40
    assert rule.structure_bytes(structure, uneven) == 200
    assert rule.minimum_bytes(uneven) == 5 * 5 * 4 + 40


@pytest.mark.parametrize("prefixes", [False, True], ids=["subsets", "prefixes"])
@pytest.mark.parametrize("budget", [3264, 4000, 6400, 9000, 12864])
def test_random_and_mutated_structures_fit_their_budget_and_are_full(budget, prefixes):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):
        parent = rule.random_structure(LAYOUT, budget, rng, prefixes)
        for structure in (parent, rule.mutate(parent, LAYOUT, budget, rng, prefixes)):
            used = rule.structure_bytes(structure, LAYOUT)
            assert used <= budget and structure.any(axis=1).all()
            assert used + 800 > budget or structure.all()  # full: no other unit fits
            assert rule.is_prefix(structure) or not prefixes
            seen.add(structure.tobytes())
    # one structure only: the full table, and with prefixes any budget with no room for a second block
    assert len(seen) > 1 or budget == 12864 or (prefixes and budget < 3264 + 800)


def test_subsets_are_not_all_prefixes():
    structures = rule.training_structures(LAYOUT, 50, np.random.default_rng(0))
    assert not all(rule.is_prefix(s) for s in structures)
    assert all(rule.is_prefix(s) for s in rule.training_structures(LAYOUT, 50, np.random.default_rng(0), True))


def test_uneven_groups_redraw_a_child_over_budget():
    uneven = UnitLayout(np.array([51, 50, 50, 49]), 4, 4)  # units of 816, 800, 800, 784 bytes
    rng = np.random.default_rng(1)
    budget = rule.minimum_bytes(uneven) + 800  # one more unit fits, unless it is one of group 0's
    children = [rule.mutate(rule.random_structure(uneven, budget, rng), uneven, budget, rng) for _ in range(50)]
    assert all(rule.structure_bytes(c, uneven) <= budget for c in children)
    assert not any(c[0].sum() == 2 for c in children)
    assert len({c.tobytes() for c in children}) > 5


def test_a_budget_below_one_block_per_item_group_is_refused_with_the_minimum():
    with pytest.raises(BudgetError, match="minimum of 3,264 bytes"):
        rule.random_structure(LAYOUT, 3263, np.random.default_rng(0))


def test_unit_weights_put_the_structure_first_so_its_bytes_keep_exactly_it():
    from peel.units import select, unit_order

    structure = np.array([[1, 1, 0, 1], [0, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 0]], dtype=bool)
    order = unit_order(rule.unit_weights(structure))
    kept = select(order, LAYOUT, rule.structure_bytes(structure, LAYOUT))
    assert kept.n_kept == structure.sum()
    np.testing.assert_array_equal(kept.kept_mask(4, 4), structure)
    assert {tuple(u) for u in order[:4]} == {(0, 0), (1, 2), (2, 1), (3, 0)}  # the lowest kept block per group


def test_estimator_ranks_held_out_structures_of_a_learnable_score():
    rng = np.random.default_rng(0)
    structures = rule.training_structures(LAYOUT, 300, rng)
    value = rng.normal(size=(4, 4))
    labels = (structures * value).sum(axis=(1, 2)) + 0.5 * structures[:, 0, 0] * structures[:, 1, 0]
    config = SMALL.rule
    estimator = rule.fit_estimator(structures, labels, config, seed=0)
    assert set(estimator.held_out_spearman) == {"nfm", "mlp"}
    assert estimator.held_out_spearman[estimator.kind] == max(estimator.held_out_spearman.values())
    assert estimator.held_out_spearman[estimator.kind] > 0.8
    fresh = rule.training_structures(LAYOUT, 100, np.random.default_rng(1))
    truth = (fresh * value).sum(axis=(1, 2)) + 0.5 * fresh[:, 0, 0] * fresh[:, 1, 0]
    assert rule.spearman(estimator.predict(fresh), truth) > 0.8


def test_labels_are_validation_ndcg_on_a_seeded_sample_of_validation_users(rule_run, small_data):
    from peel.evaluation.evaluator import evaluation_users

    with np.load(rule_run / "rule" / "labels.npz") as z:
        structures, labels, users, readings = z["structures"], z["labels"], z["users"], z["readings"].tolist()
    assert structures.shape == (80, 4, 4) and labels.shape == (80, 2) and readings == ["masked", "fold"]
    assert set(users) <= set(evaluation_users(small_data, "valid"))
    np.testing.assert_array_equal(rule.label_users(small_data, 40, 7), rule.label_users(small_data, 40, 7))
    assert len(rule.label_users(small_data, 40, 7)) == 40
    model = load_run(rule_run)
    again = model.scoring.ndcg(structures[3], "fold", small_data, users)
    assert again == pytest.approx(labels[3, 1], abs=1e-12)  # the same computation, the same process
    seconds = json.loads((rule_run / "summary.json").read_text())["seconds"]
    assert {"pretrain", "grouping", "labels", "estimator"} <= set(seconds)
    model.search([Budget(12800)])  # above the budgets other tests search: it seeds none of them
    text = (rule_run / "log.txt").read_text()  # RULE's own stages and searches are in the run's log
    assert "structures labelled" in text and "RULE estimator (fold)" in text and "RULE search (masked)" in text


def test_labelling_resumes_from_its_checkpoint(rule_run, small_data, tmp_path):
    model = load_run(rule_run)
    with np.load(rule_run / "rule" / "labels.npz") as z:
        structures, labels, users = z["structures"][:30], z["labels"][:30], z["users"]
    checkpoint = tmp_path / "labels-checkpoint.npz"
    _, first = rule.label_structures(structures[:25], model.scoring, small_data, users, checkpoint=checkpoint,
                                     resume=False, progress=False)
    with np.load(checkpoint) as z:
        assert len(z["labels"]) == 25 and float(z["seconds"]) == pytest.approx(first, abs=0.05)
    resumed, total = rule.label_structures(structures, model.scoring, small_data, users, checkpoint=checkpoint,
                                           resume=True, progress=False)
    np.testing.assert_allclose(resumed, labels, rtol=0, atol=1e-12)
    assert total > float(first)  # the seconds before the resume count too
    other = structures[::-1].copy()  # e.g. the structures of another search space: the labels are not theirs
    with pytest.raises(PeelError, match="labels of other structures"):
        rule.label_structures(other, model.scoring, small_data, users, checkpoint=checkpoint, resume=True,
                              progress=False)


def test_search_is_deterministic_and_budgets_are_monotone_on_validation(rule_run, small_data, tmp_path):
    import shutil

    full = 200 * 16 * 4
    budgets = [Budget(int(full * f), f"{f:.0%}") for f in (0.3, 0.45, 0.6, 0.8)]
    model = load_run(rule_run)
    model.search([budgets[2], budgets[0]])  # out of order: the middle budget is added later
    model.search(budgets)
    scores = [model.choice(b)[0].valid_ndcg for b in budgets]
    assert scores == sorted(scores)
    for b in budgets:
        chosen = model.choice(b)[0]
        assert chosen.bytes_used <= b.bytes == model.choice(b)[1].budget_bytes
        assert model.device_bytes(b) == chosen.bytes_used
    # the seed is among every search's finalists
    searches = sorted((rule_run / "rule").glob("search-masked-*.json"))
    seeded = [json.loads(p.read_text()) for p in searches if json.loads(p.read_text())["seed_budget_bytes"]]
    assert seeded and all(s["finalists"][0]["from"] == "seed" for s in seeded)
    # the same seed and run give the same search
    copy = tmp_path / "copy"
    shutil.copytree(rule_run, copy, ignore=shutil.ignore_patterns("search-*"))
    again = load_run(copy)
    again.search([budgets[0], budgets[2]])
    for b in (budgets[0], budgets[2]):
        first = json.loads((rule_run / "rule" / f"search-masked-{b.bytes}.json").read_text())
        second = json.loads((copy / "rule" / f"search-masked-{b.bytes}.json").read_text())
        assert first["structure"] == second["structure"] and first["finalists"] == second["finalists"]


def test_fold_reading_has_its_own_estimator_and_searches(rule_run, small_data):
    budget = Budget(6400, "50%")
    [row] = load_run(rule_run, overrides=["device.eq10=fold"]).evaluate(small_data, [budget], split="valid",
                                                                          ks=(20,))
    assert "error" not in row and (rule_run / "rule" / "search-fold-6400.json").exists()
    with pytest.raises(PeelError, match="only device.eq10"):
        load_run(rule_run, overrides=["device.eq10_scale=paper"])


def test_export_holds_exactly_the_structure(rule_run, small_data, tmp_path):
    budget = Budget(6400, "50%")
    model = load_run(rule_run)
    chosen = model.choice(budget)[0]
    export = export_run(rule_run, tmp_path / "export", max_budget=budget, data=small_data)
    index = json.loads((export / "index.json").read_text())
    [entry] = index["groups"]
    assert index["n_user_groups"] == 1 and entry["units_stored"] == chosen.structure.sum()
    assert entry["charged_bytes_stored"] == chosen.bytes_used <= budget.bytes


def test_hostile_search_file_is_refused_by_name(rule_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(rule_run, copy)
    path = copy / "rule" / "search-masked-99999.json"
    def hostile(structure, used):
        path.write_text(json.dumps({"budget_bytes": 99999, "reading": "masked", "structure": structure,
                                    "bytes_used": used, "valid_ndcg@50": 1.0, "finalists": [], "seconds": 0,
                                    "seed_budget_bytes": None}))
        with pytest.raises(PeelError, match="search-masked-99999.json"):
            load_run(copy).device_bytes(Budget(99999))

    hostile([[0, 0, 0, 0]] * 4, 64)  # an item group with no block
    hostile([[0, 1, 0, 0]] * 4, 3264)  # not a prefix in a prefix search
    hostile([[1, 0, 0, 0]] * 4, 100)  # bytes that are not the structure's
    path.write_text("{not json")
    with pytest.raises(PeelError, match="not a RULE search result"):
        load_run(copy).device_bytes(Budget(99999))


def test_rule_refuses_a_budget_and_peel_options(small_data, tmp_path):
    with pytest.raises(PeelError, match="elastic"):
        METHODS["rule"].fit(small_data, tmp_path / "a", SMALL, budget=Budget(5000), progress=False)
    with pytest.raises(PeelError, match="--ablation"):
        METHODS["rule"].fit(small_data, tmp_path / "b", SMALL, ablation="lightgcn", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_rule_reuses_a_peel_runs_stage_a_and_searches_subsets_when_asked(small_data, tmp_path):
    from peel.training.pipeline import train

    peel_run, out = tmp_path / "peel", tmp_path / "rule"
    train(small_data, peel_run, SMALL, stop_after="pretrain", progress=False)
    METHODS["rule"].fit(small_data, out, SMALL.with_overrides(["rule.structures=30", "rule.search_space=subsets"]),
                        progress=False, stage_a_from=peel_run)
    stage_a = "pretrain/embeddings.npz"
    assert (out / stage_a).stat().st_ino == (peel_run / stage_a).stat().st_ino  # hard-linked, not retrained
    assert "pretrain" not in json.loads((out / "summary.json").read_text())["seconds"]
    model = load_run(out)
    assert model.space == "subsets" and model.device_bytes(Budget(6400)) <= 6400


def test_auto_space_follows_stage_a():
    from peel.config import search_space

    assert search_space(SMALL) == "prefixes"  # the default stage a is nested
    assert search_space(SMALL.with_overrides(["pretrain.nested="])) == "subsets"
    assert search_space(SMALL.with_overrides(["pretrain.nested=", "rule.search_space=prefixes"])) == "prefixes"


def test_stop_after_names_a_stage(small_data, tmp_path):
    from peel.training.pipeline import train

    with pytest.raises(ConfigError, match="stop_after must be one of pretrain, grouping"):
        train(small_data, tmp_path / "x", SMALL, stop_after="finetune", progress=False)
    assert not (tmp_path / "x").exists()


def test_within_budget_spearman_does_not_credit_ranking_by_size():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1000, 5000, size=400).astype(float)
    quality = rng.normal(size=400)
    labels = sizes / 1000 + quality  # bigger structures score higher, and within a size quality decides
    by_size, by_quality = sizes, sizes / 1000 + quality + rng.normal(scale=0.1, size=400)
    assert rule.spearman(by_size, labels) > 0.6 and abs(rule.within_budget_spearman(by_size, labels, sizes)) < 0.3
    assert rule.within_budget_spearman(by_quality, labels, sizes) > 0.9
