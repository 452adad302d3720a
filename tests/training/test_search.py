"""The per-item dims of the multi-dimensional baselines: the budget rule by hand, and the searches
(deterministic with a seed, within the budget, resumable)."""

import dataclasses

import numpy as np
import pytest

from peel.config import PeelConfig
from peel.errors import BudgetError
from peel.training import loop
from peel.training.search import candidate_dims, fit_item_dims, item_dims_bytes, search_item_dims

CANDIDATES = np.array([2, 4, 8])
MODEL = PeelConfig().with_overrides(["model.n_blocks=8", "model.block_dim=2"]).model  # D = 16


def test_candidates():
    np.testing.assert_array_equal(candidate_dims(2, 16), [2, 4, 8, 16])
    np.testing.assert_array_equal(candidate_dims(2, 12), [2, 4, 8, 12])
    np.testing.assert_array_equal(candidate_dims(16, 16), [16])


def test_budget_rule_by_hand():
    popularity = np.array([5, 1, 3, 9])  # items by popularity, rarest first: 1, 2, 0, 3
    dims = np.array([8, 8, 8, 8])        # 32 floats + the user's 8: 160 bytes
    assert item_dims_bytes(dims, 8) == 160
    # 140 bytes = 35 floats: over by 20 bytes, so item 1 drops to 2 (saves 24): 136 bytes
    np.testing.assert_array_equal(fit_item_dims(dims, popularity, 140, CANDIDATES, 8), [8, 2, 8, 8])
    # 100 bytes: over by 60, so items 1, 2 and 0 drop (saving 72): 2 + 2 + 2 + 8 + the user's 8 = 22 floats
    np.testing.assert_array_equal(fit_item_dims(dims, popularity, 100, CANDIDATES, 8), [2, 2, 2, 8])
    # under the budget, the most popular grow to D = 8 one by one
    small = np.array([2, 2, 2, 2])       # 8 + 8 floats = 64 bytes
    # 100 bytes = 25 floats: item 3 grows to 8 (22 floats); 3 floats left, so item 0 takes the largest candidate
    # that fits, 4 (24 floats)
    np.testing.assert_array_equal(fit_item_dims(small, popularity, 100, CANDIDATES, 8), [4, 2, 2, 8])
    with pytest.raises(BudgetError, match="smallest a per-item-dims model of 4 items can meet: 64 bytes"):
        fit_item_dims(dims, popularity, 63, CANDIDATES, 8)


@pytest.mark.parametrize("search", ["esapn", "autoemb"])
def test_search_is_deterministic_fits_the_budget_and_resumes(search, small_data, tmp_path, monkeypatch):
    config = PeelConfig().with_overrides(["pretrain.batch_size=512", "pretrain.lr=0.01"]).pretrain
    budget = item_dims_bytes(np.full(small_data.n_items, 6), MODEL.dim)
    kwargs = dict(model_config=MODEL, config=config, search=search, epochs=4, smallest=2, budget_bytes=budget)
    first = search_item_dims(small_data, seed=1, **kwargs)
    np.testing.assert_array_equal(first, search_item_dims(small_data, seed=1, **kwargs))
    assert set(first.tolist()) <= {2, 4, 8, 16}
    if search == "esapn":  # grants growth only within the budget
        assert item_dims_bytes(first, MODEL.dim) <= budget
    # a search killed in its third epoch (before that epoch's checkpoint) resumes to the same dims
    checkpoint = tmp_path / "search.pt"
    saves = []

    def save_twice(*args):
        if len(saves) == 2:
            raise KeyboardInterrupt
        saves.append(1)
        real_save(*args)

    real_save = loop._save_checkpoint
    monkeypatch.setattr(loop, "_save_checkpoint", save_twice)
    with pytest.raises(KeyboardInterrupt):
        search_item_dims(small_data, seed=1, checkpoint=checkpoint, **kwargs)
    monkeypatch.setattr(loop, "_save_checkpoint", real_save)
    resumed = search_item_dims(small_data, seed=1, checkpoint=checkpoint, resume=True, **kwargs)
    np.testing.assert_array_equal(resumed, first)


def test_esapn_gives_popular_items_larger_dims(ml100k):
    """ESAPN's policy learns from frequency and loss that popular items profit most from more dims. The policy
    once reinforced whatever it happened to do first and gave the most popular items the fewest dims (ml-100k:
    Spearman -0.35 to -0.76 over three seeds); with one decision per item and epoch +0.46 to +0.62, the top
    decile at 19-26 of 32 dims; deciding at each use (ESAPN's way) +0.81 to +0.87, the top decile at 32."""
    from scipy.stats import spearmanr

    model = PeelConfig().with_overrides(["model.n_blocks=4", "model.block_dim=8"]).model  # D = 32
    budget = item_dims_bytes(np.full(ml100k.n_items, 8), model.dim)  # a quarter of D per item on average
    popularity = ml100k.popularity("train")
    dims = search_item_dims(ml100k, model_config=model, config=PeelConfig().pretrain, search="esapn", seed=1,
                            epochs=10, smallest=2, budget_bytes=budget)
    deciles = np.array_split(np.argsort(popularity, kind="stable"), 10)
    assert spearmanr(dims, popularity)[0] > 0.7
    assert dims[deciles[-1]].mean() > 2 * dims[deciles[0]].mean()


def test_training_with_item_dims_trains_only_the_leading_coordinates(small_data, tmp_path, monkeypatch):
    """With per-item dims of at most 4 of D = 16, stage a trains 4 coordinates, not 16: propagation, BPR and L2
    act on each coordinate alone, so the result is the run that trains all 16 (whose last 12 never score),
    up to float rounding (the dot products sum over 16 coordinates there, 4 here: another summation order,
    about 1e-7 relative a step, which four epochs of Adam keep far below 1e-4). The untrained coordinates come
    back as zeros, and a checkpoint of a run that trained every coordinate resumes at its width."""
    from peel.training import pretrain as stage_a

    config = PeelConfig().with_overrides(["pretrain.batch_size=512", "pretrain.lr=0.01", "pretrain.max_epochs=4",
                                          "pretrain.eval_every=2", "pretrain.patience=9", "pretrain.nested=",
                                          "pretrain.lambda_div=0"]).pretrain  # as a fitted method trains
    dims = np.random.default_rng(0).choice([2, 4], size=small_data.n_items)
    kwargs = dict(model_config=MODEL, config=config, seed=1, item_dims=dims)
    narrow = stage_a.pretrain(small_data, **kwargs)
    real_width = stage_a._trained_width
    monkeypatch.setattr(stage_a, "_trained_width", lambda *args: MODEL.dim)
    full = stage_a.pretrain(small_data, **kwargs)
    assert narrow.user_vectors.shape == full.user_vectors.shape == (small_data.n_users, 16)
    assert np.all(narrow.user_vectors[:, 4:] == 0) and np.all(narrow.item_vectors[:, 4:] == 0)
    assert np.abs(full.user_vectors[:, 4:]).min() > 0  # the full run did train them (and they never score)
    np.testing.assert_allclose(narrow.user_vectors[:, :4], full.user_vectors[:, :4], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(narrow.item_vectors, full.item_vectors, rtol=1e-4, atol=1e-6)
    assert narrow.loop.best_epoch == full.loop.best_epoch

    checkpoint = tmp_path / "checkpoint.pt"
    short = dict(kwargs, config=dataclasses.replace(config, max_epochs=2))
    stage_a.pretrain(small_data, checkpoint=checkpoint, **short)  # every coordinate trained
    monkeypatch.setattr(stage_a, "_trained_width", real_width)
    resumed = stage_a.pretrain(small_data, checkpoint=checkpoint, resume=True, **kwargs)
    np.testing.assert_allclose(resumed.user_vectors, full.user_vectors, rtol=1e-4, atol=1e-6)
