"""Fixed-size baselines fitted to a budget: the fitting rule by hand, training, evaluation, refusals."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from peel.budget import Budget
from peel.cli import app
from peel.config import PeelConfig
from peel.errors import BudgetError, ConfigError, PeelError
from peel.evaluation import PopularityScorer, evaluate
from peel.methods import METHODS, device_bytes, fitted_size, load_run
from peel.methods.report import evaluate_runs
from peel.training.pretrain import load_pretrained

CONFIG = PeelConfig().with_overrides(["pretrain.batch_size=512", "pretrain.lr=0.01", "pretrain.max_epochs=15"])


def test_fitted_dimension_by_hand():
    # 10 items + the user's vector = 11 rows of k floats of 4 bytes: 44 bytes per dimension
    assert device_bytes(10, 1) == 44
    assert fitted_size(10, Budget(439)) == 9      # 396 <= 439 < 440
    assert fitted_size(10, Budget(440)) == 10
    with pytest.raises(BudgetError, match="smallest .* 44 bytes"):
        fitted_size(10, Budget(43))


def test_q8_fitted_dimension_by_hand():
    # q8: 10 items of k int8 + the table's float32 scale + the user's float32 vector: 14 bytes a dim + 4
    q8 = PeelConfig().with_overrides(["device.unit_dtype=q8"])
    assert device_bytes(10, 8, "q8") == 10 * 8 + 4 + 8 * 4 == 116
    assert fitted_size(10, Budget(199), q8) == 13      # 186 <= 199 < 200
    assert fitted_size(10, Budget(200), q8) == 14
    assert fitted_size(10, Budget(200)) == 4           # float32: 176 <= 200 < 220
    with pytest.raises(BudgetError, match="smallest .* 18 bytes"):
        fitted_size(10, Budget(17), q8)


def test_q8_fitted_pmf_is_scored_charged_and_exported_as_stored(small_data, tmp_path, same_top_k):
    from peel.device import Bundle
    from peel.device.users import Users
    from peel.methods import export_run
    from peel.units import stored_values

    q8 = CONFIG.with_overrides(["device.unit_dtype=q8", "pretrain.max_epochs=3"])
    budget = Budget(device_bytes(small_data.n_items, 8) + 100, label="tiny")
    out = tmp_path / "run"
    METHODS["pmf"].fit(small_data, out, q8, budget=budget, progress=False)
    info = json.loads((out / "method.json").read_text())
    assert info["dim"] == fitted_size(small_data.n_items, budget, q8, "pmf") > 3.5 * 8  # ~4x the float32 dims
    assert info["device_bytes"] == device_bytes(small_data.n_items, info["dim"], "q8") <= budget.bytes
    model = load_run(out)
    user_vectors, item_vectors = load_pretrained(out / "pretrain" / "embeddings.npz")
    stored = stored_values(item_vectors[:, None, :], np.zeros(len(item_vectors), dtype=np.int64), "q8")[:, 0, :]
    assert not np.array_equal(stored, item_vectors)
    scores = model.scorer(budget)(np.arange(5))
    np.testing.assert_allclose(np.asarray(scores), user_vectors[:5] @ stored.T, rtol=1e-5, atol=1e-6)
    export = export_run(out, tmp_path / "export", data=small_data)
    index = json.loads((export / "index.json").read_text())
    assert index["unit_dtype"] == "q8" and index["groups"][0]["charged_bytes_stored"] == info["device_bytes"]
    bundle = Bundle.open(export / "group_0.peelb", budget=budget)
    record = Users.open(export / "users.peelb").user(small_data.user_ids[0])
    ids, top = bundle.for_user(record.vector, internal_history=record.history).recommend(k=20)
    full = stored @ user_vectors[0]
    full[record.history] = -np.inf
    same_top_k(bundle.item_order[bundle.positions_of(ids)], top, full, 1e-5 + 1e-5 * np.abs(top).max())
    with pytest.raises(PeelError, match="only those with one item table .* store it quantized"):
        METHODS["dlrm-ce"].fit(small_data, tmp_path / "qr", q8, budget=budget, progress=False)
    assert not (tmp_path / "qr").exists()


def test_dlrm_ce_fitted_dimension_by_hand():
    # 10 items, m = 2: Q holds 5 rows and R 2, + the user's vector: 8 rows of k floats, 32 bytes per dimension
    config = PeelConfig().with_overrides(["model.qr_buckets=2"])
    assert fitted_size(10, Budget(100), config, "dlrm-ce") == 3      # 96 <= 100 < 128
    assert fitted_size(10, Budget(128), config, "dlrm-ce") == 4
    # concat: each table holds k/2 dims, so (5 + 2) * k/2 * 4 + 4k = 18k bytes, k even: 72 <= 100 < 108
    concat = config.with_overrides(["model.qr_op=concat"])
    assert fitted_size(10, Budget(100), concat, "dlrm-ce") == 4
    with pytest.raises(BudgetError, match="smallest a DLRM-CE model of 10 items can meet: 36 bytes"):
        fitted_size(10, Budget(35), concat, "dlrm-ce")
    # m = 0: ⌈√10⌉ = 4 rows of R and 3 of Q, + the user's vector: 32 bytes per dimension
    assert fitted_size(10, Budget(100), config.with_overrides(["model.qr_buckets=0"]), "dlrm-ce") == 3
    # a large budget: the binary search finds the exact largest k
    assert fitted_size(1000, Budget(10**7), config, "dlrm-ce") == 10**7 // ((500 + 2 + 1) * 4)


def test_a_composed_item_table_refuses_what_a_device_cannot_compute():
    with pytest.raises(ConfigError, match="model.layers, model.n_blocks"):
        PeelConfig().with_overrides(["model.item_table=quotient_remainder"])
    with pytest.raises(ConfigError, match="model.qr_op must be one of"):
        PeelConfig().with_overrides(["model.qr_op=max"])


@pytest.fixture(scope="module", params=["lightgcn", "pmf"])
def fitted(request, tmp_path_factory, small_data):
    out = tmp_path_factory.mktemp(request.param) / "run"
    budget = Budget(device_bytes(small_data.n_items, 8) + 100, label="tiny")
    METHODS[request.param].fit(small_data, out, CONFIG, budget=budget, progress=False)
    return request.param, out, budget


def test_fitted_model_meets_its_budget_and_beats_popularity(fitted, small_data):
    method, out, budget = fitted
    info = json.loads((out / "method.json").read_text())
    assert (info["method"], info["dim"]) == (method, 8)
    assert info["device_bytes"] <= budget.bytes
    users, items = load_pretrained(out / "pretrain" / "embeddings.npz")
    assert users.shape[1] == items.shape[1] == 8
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["layers"] == (0 if method == "pmf" else 3) and config["pretrain"]["lambda_div"] == 0
    [row] = evaluate_runs(out, "5MB", split="valid", ks=(20,))
    popularity = evaluate(PopularityScorer(small_data), small_data, split="valid", ks=(20,))
    assert row["bytes_used"] == info["device_bytes"] and row["ndcg@20"] > popularity["ndcg@20"]


def test_same_seed_same_model_and_resume_refuses_another_budget(fitted, small_data, tmp_path):
    method, out, budget = fitted
    again = tmp_path / "again"
    METHODS[method].fit(small_data, again, CONFIG, budget=budget, progress=False)
    for a, b in zip(load_pretrained(out / "pretrain" / "embeddings.npz"),
                    load_pretrained(again / "pretrain" / "embeddings.npz"), strict=True):
        np.testing.assert_array_equal(a, b)  # same process, same shapes, same thread count: bit-identical
    with pytest.raises(PeelError, match=f"holds a {method} run fitted to tiny, not a {method} run fitted to big"):
        METHODS[method].fit(small_data, again, CONFIG, budget=Budget(budget.bytes * 2, "big"), progress=False,
                            resume=True)
    other = "pmf" if method == "lightgcn" else "lightgcn"
    with pytest.raises(PeelError, match=f"holds a {method} run fitted to tiny, not a {other} run"):
        METHODS[other].fit(small_data, again, CONFIG, budget=budget, progress=False, resume=True)


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "lightgcn"], "give --budget"),
    (["--method", "svd", "--budget", "1MB"], "unknown --method 'svd'"),
    (["--budget", "1MB"], "PEEL is elastic"),
    (["--method", "pmf", "--budget", "100"], "below the smallest"),
])
def test_cli_refuses_bad_method_options(tmp_path, args, message):
    result = CliRunner().invoke(app, ["train", "--data", "synthetic", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code != 0 and isinstance(result.exception, PeelError)
    assert message in str(result.exception)
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_fitted_export_serves_the_server_top50_on_the_device(fitted, small_data, tmp_path, same_top_k):
    from peel.device import Bundle
    from peel.device.users import Users
    from peel.methods import export_run

    method, out, budget = fitted
    export = export_run(out, tmp_path / "export", data=small_data)
    index = json.loads((export / "index.json").read_text())
    assert index["groups"][0]["charged_bytes_stored"] == json.loads((out / "method.json").read_text())["device_bytes"]
    user_vectors, item_vectors = load_pretrained(out / "pretrain" / "embeddings.npz")
    bundle = Bundle.open(export / "group_0.peelb", budget=budget)
    users = Users.open(export / "users.peelb")
    train = small_data.csr("train")
    for user in np.random.default_rng(0).choice(small_data.n_users, 20, replace=False):
        record = users.user(small_data.user_ids[user])
        rec = bundle.for_user(record.vector, internal_history=record.history)
        assert rec.bytes_used <= budget.bytes
        ids, scores = rec.recommend(k=50)
        full = item_vectors @ user_vectors[user]  # the server's dot product, float32
        full[train.indices[train.indptr[user]:train.indptr[user + 1]]] = -np.inf
        internal = bundle.item_order[bundle.positions_of(ids)]
        # one block, one item group: Eq. 10 is the plain dot product, in another summation order
        same_top_k(internal, scores, full, 1e-5 + 1e-5 * np.abs(scores).max())


def test_train_help_names_every_fitted_method():
    """The CLI stays free of torch at import, so its --method help lists the methods by hand: it must keep up."""
    import re

    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400", "TERM": "dumb"})
    listed = re.sub(r"\s+", " ", result.output)
    assert all(name in listed for name in METHODS if name != "peel"), listed


def test_lightrec_fitted_codebooks_by_hand():
    # 10 items, D = 8, W = 5 codewords (3-bit codes): B codebooks cost 5 * 8 * 4 = 160 bytes each, the codes
    # ceil(10 * B * 3 / 8) bytes, the user's vector 32 bytes: B = 2 is 320 + 8 + 32 = 360, B = 3 is 480 + 12 + 32
    config = PeelConfig().with_overrides(["model.n_blocks=1", "model.block_dim=8", "model.codewords=5"])
    assert fitted_size(10, Budget(523), config, "lightrec") == 2
    assert fitted_size(10, Budget(524), config, "lightrec") == 3
    with pytest.raises(BudgetError, match="smallest a LightRec model of 10 items can meet: 196 bytes"):
        fitted_size(10, Budget(195), config, "lightrec")   # 160 + 4 + 32


def test_lightrec_distils_a_given_teacher_and_refuses_a_mismatched_one(small_data, tmp_path):
    config = CONFIG.with_overrides(["model.n_blocks=2", "model.block_dim=4", "model.codewords=8",
                                    "pretrain.max_epochs=3"])
    budget = Budget(device_bytes(small_data.n_items, 4), label="half")
    teacher = tmp_path / "teacher"
    METHODS["lightgcn"].fit(small_data, teacher, config, budget=Budget(device_bytes(small_data.n_items, 8)),
                            progress=False)
    METHODS["lightrec"].fit(small_data, tmp_path / "student", config, budget=budget, progress=False, teacher=teacher)
    info = json.loads((tmp_path / "student" / "method.json").read_text())
    assert info["teacher"] == str(teacher) and not (tmp_path / "student" / "teacher").exists()
    assert info["device_bytes"] <= budget.bytes
    assert load_run(tmp_path / "student").composition.codebooks == info["codebooks"]
    history = json.loads((tmp_path / "student" / "pretrain" / "result.json").read_text())["history"]
    assert history[0]["epoch"] == 0 and "score" in history[0]  # the teacher's quantized start is a candidate
    with pytest.raises(PeelError, match="the student needs 12 dims"):
        METHODS["lightrec"].fit(small_data, tmp_path / "other", config.with_overrides(["model.n_blocks=3"]),
                                budget=budget, progress=False, teacher=teacher)
    assert not (tmp_path / "other").exists()  # refused before anything is written
    for method in ("pmf", "peel"):
        with pytest.raises(PeelError, match="--teacher applies to"):
            METHODS[method].fit(small_data, tmp_path / method, config, progress=False, teacher=teacher,
                                budget=None if method == "peel" else budget)


def test_a_teacher_trained_for_lightrec_gets_lightgcns_recipe_and_the_runs_schedule():
    from peel.config import PretrainConfig
    from peel.methods.fixed import TEACHER_RECIPE, teacher_config

    student = CONFIG.with_overrides(["pretrain.l2=0.1", "pretrain.lr=0.0014", "pretrain.batch_size=512",
                                     "pretrain.max_epochs=7", "seed=5", "model.codewords=16"])
    teacher = teacher_config(student, 16)
    default = PretrainConfig()
    assert all(getattr(teacher.pretrain, name) == getattr(default, name) for name in TEACHER_RECIPE)
    assert (teacher.pretrain.l2, teacher.pretrain.lr) == (1e-2, 0.0)  # LightGCN's L2, its rate derived from data
    assert (teacher.pretrain.max_epochs, teacher.seed) == (7, 5)  # the run's schedule and seed
    assert (teacher.model.dim, teacher.model.item_table) == (16, "full")
