"""Nested stage a (every prefix of blocks a trained embedding) and the density unit order."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from peel.budget import Budget
from peel.config import PeelConfig
from peel.errors import ConfigError
from peel.models.lightgcn import LightGCN
from peel.run import TrainedRun
from peel.training.allocation import allocation_table, density_weights
from peel.training.pipeline import train
from peel.units import UnitLayout, unit_order


def _model_and_batch():
    torch.manual_seed(0)
    model = LightGCN(20, 30, n_blocks=4, block_dim=3, layers=0)
    users, pos, neg = (torch.randint(0, n, (64,)) for n in (20, 30, 30))
    return model, users, pos, neg


def _bpr_on_prefix(model, users, pos, neg, blocks):
    dims = blocks * model.block_dim
    u = model.user_embedding[users, :dims]
    margin = (u * model.item_embedding[pos, :dims]).sum(1) - (u * model.item_embedding[neg, :dims]).sum(1)
    return -F.logsigmoid(margin).mean()


def test_nested_loss_is_the_mean_of_prefix_bpr_losses():
    model, users, pos, neg = _model_and_batch()
    # the full prefix alone is the plain loss (the same sums, grouped by block: float32 rounding apart)
    full = model.loss(users, pos, neg, l2=0.0, lambda_div=0.0, nested=(4,))
    plain = model.loss(users, pos, neg, l2=0.0, lambda_div=0.0)
    torch.testing.assert_close(full, plain, rtol=1e-5, atol=1e-6)
    nested = model.loss(users, pos, neg, l2=0.0, lambda_div=0.0, nested=(1, 2, 4))
    expected = sum(_bpr_on_prefix(model, users, pos, neg, b) for b in (1, 2, 4)) / 3
    torch.testing.assert_close(nested, expected, rtol=1e-5, atol=1e-6)
    one_block = model.loss(users, pos, neg, l2=0.0, lambda_div=0.0, nested=(1,))
    nested.backward()
    assert model.item_embedding.grad[:, 3 * 3:].abs().sum() > 0  # the last block is trained by the full prefix
    model.zero_grad()
    one_block.backward()
    assert model.item_embedding.grad[:, 3:].abs().sum() == 0     # a 1-block prefix trains block 0 only


def test_self_distillation_pulls_smaller_prefixes_toward_the_full_prefix_without_training_it():
    model, users, pos, neg = _model_and_batch()
    plain = model.loss(users, pos, neg, l2=0.0, lambda_div=0.0, nested=(1, 4))
    plain.backward()
    plain_grad = model.item_embedding.grad.clone()
    model.zero_grad()
    distilled = model.loss(users, pos, neg, l2=0.0, lambda_div=0.0, nested=(1, 4), self_distillation=0.5)
    # the 1-block prefix's cross-entropy toward σ(the full prefix's margin) on the same triples, beside its BPR
    dims = model.block_dim
    u = model.user_embedding[users]
    small = (u[:, :dims] * (model.item_embedding[pos, :dims] - model.item_embedding[neg, :dims])).sum(1)
    full = (u * (model.item_embedding[pos] - model.item_embedding[neg])).sum(1)
    cross_entropy = F.binary_cross_entropy_with_logits(small, torch.sigmoid(full).detach())
    torch.testing.assert_close(distilled, plain + 0.5 * cross_entropy / 2, rtol=1e-5, atol=1e-6)
    distilled.backward()
    # the soft label is not trained through: blocks 1-3 (in the full prefix only) get the plain gradient
    torch.testing.assert_close(model.item_embedding.grad[:, dims:], plain_grad[:, dims:])
    assert not torch.allclose(model.item_embedding.grad[:, :dims], plain_grad[:, :dims])


def test_nested_weights_weigh_each_prefix_whole_objective():
    model, users, pos, neg = _model_and_batch()
    # linear in the prefixes: the weighted loss is the weighted mean of each prefix's own loss (BPR + its L2)
    weights, l2 = (0.5, 1.0, 1.5), (1e-1, 1e-2, 1e-3)
    weighted = model.loss(users, pos, neg, l2=l2, lambda_div=0.0, nested=(1, 2, 4), nested_weights=weights)
    alone = [model.loss(users, pos, neg, l2=w, lambda_div=0.0, nested=(b,)) for b, w in zip((1, 2, 4), l2, strict=True)]
    expected = sum(w * a for w, a in zip(weights, alone, strict=True)) / 3
    torch.testing.assert_close(weighted, expected, rtol=1e-5, atol=1e-6)
    equal = model.loss(users, pos, neg, l2=l2, lambda_div=0.0, nested=(1, 2, 4))
    torch.testing.assert_close(model.loss(users, pos, neg, l2=l2, lambda_div=0.0, nested=(1, 2, 4),
                                          nested_weights=(1.0, 1.0, 1.0)), equal, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="2 nested weights for 3"):
        model.loss(users, pos, neg, l2=l2, lambda_div=0.0, nested=(1, 2, 4), nested_weights=(1.0, 2.0))


def test_nested_weight_power_leans_toward_large_or_small_prefixes():
    def weights(power):
        return PeelConfig().with_overrides([f"pretrain.nested_weight_power={power}"]).pretrain.nested_weights(16)
    assert weights(0) == ()  # equal weights: the unweighted loss
    up, down = weights(1), weights(-1)
    assert len(up) == 5 and sum(up) == pytest.approx(5) and sum(down) == pytest.approx(5)
    assert up == pytest.approx([5 * p / 31 for p in (1, 2, 4, 8, 16)])
    assert list(up) == sorted(up) and list(down) == sorted(down, reverse=True)
    assert PeelConfig().with_overrides(["pretrain.nested=", "pretrain.nested_weight_power=1"]).pretrain \
        .nested_weights(16) == ()
    with pytest.raises(ConfigError, match="nested_weight_power"):
        PeelConfig().with_overrides(["pretrain.nested_weight_power=nan"])


def test_self_distillation_must_be_non_negative():
    with pytest.raises(ConfigError, match="self_distillation"):
        PeelConfig().with_overrides(["pretrain.self_distillation=-1"])


def _l2_on_prefix(model, users, pos, neg, blocks):
    dims = blocks * model.block_dim
    ego = torch.cat([model.user_embedding[users, :dims], model.item_embedding[pos, :dims],
                     model.item_embedding[neg, :dims]])
    return ego.pow(2).sum() / (2 * len(users))


@pytest.mark.parametrize("l2", [0.1, (0.3, 0.1, 0.01)])
def test_every_nested_prefix_carries_its_own_l2(l2):
    # the nested loss is the mean over prefixes of that prefix's whole objective, BPR + L2 on its blocks;
    # L2 on all blocks at full weight would put a trailing block, which only the full prefix's BPR trains,
    # under len(nested) times the L2 per unit of BPR gradient that a fitted model of that size meets
    model, users, pos, neg = _model_and_batch()
    prefixes = (1, 2, 4)
    weights = l2 if isinstance(l2, tuple) else (l2,) * 3
    loss = model.loss(users, pos, neg, l2=l2, lambda_div=0.0, nested=prefixes)
    expected = sum(_bpr_on_prefix(model, users, pos, neg, b) + w * _l2_on_prefix(model, users, pos, neg, b)
                   for b, w in zip(prefixes, weights, strict=True)) / 3
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="2 weights for 3 nested prefixes"):
        model.loss(users, pos, neg, l2=(0.1, 0.2), lambda_div=0.0, nested=prefixes)


def test_nested_l2_runs_geometrically_from_the_smallest_to_the_full_prefix():
    config = PeelConfig().with_overrides(["pretrain.nested=auto", "pretrain.l2=0.01",
                                          "pretrain.l2_full_prefix=0.0001"]).pretrain
    assert config.nested_blocks(16) == (1, 2, 4, 8, 16)
    assert config.nested_blocks(12) == (1, 2, 4, 8, 12)
    assert config.nested_l2(16) == pytest.approx((1e-2, 10 ** -2.5, 1e-3, 10 ** -3.5, 1e-4), rel=1e-9)
    flat = PeelConfig().with_overrides(["pretrain.nested=1,4", "pretrain.l2=0.01",
                                        "pretrain.l2_full_prefix=0"]).pretrain
    assert flat.nested_l2(16) == (0.01, 0.01)
    assert PeelConfig().with_overrides(["pretrain.nested="]).pretrain.nested_l2(16) == ()


@pytest.mark.parametrize("text", ["0,2", "1,5", "a,b", "1,,x"])
def test_nested_refuses_block_counts_outside_the_model(text):
    with pytest.raises(ConfigError, match="pretrain.nested"):
        PeelConfig().with_overrides(["model.n_blocks=4", f"pretrain.nested={text}"])


def test_density_order_keeps_each_item_groups_blocks_in_order_and_favours_its_share():
    share = np.array([0.5, 0.3, 0.15, 0.05])
    order = unit_order(density_weights(share, n_blocks=4, decay=0.7))
    for group in range(4):
        assert order[order[:, 0] == group, 1].tolist() == [0, 1, 2, 3]   # a prefix of blocks at any budget
    assert order[:4, 1].tolist() == [0, 0, 0, 0]                        # first one block of every item group
    counts = [np.sum(order[:8, 0] == g) for g in range(4)]               # then the most shared gets most
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[3]


def test_pipeline_with_density_keeps_block_prefixes_at_every_budget(small_data, small_config, tmp_path):
    config = small_config.with_overrides(["pretrain.nested=1,2,4", "finetune.importance=density",
                                          "device.eq10_scale=none"])
    summary = train(small_data, tmp_path / "run", config, progress=False)
    assert all(g["epochs_run"] == 0 for g in summary["groups"])  # no stage-b training
    def strict(constant):
        raise AssertionError(f"summary.json holds {constant}, which strict JSON readers refuse")

    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text(), parse_constant=strict)
    assert all(g["best_valid_loss"] is None for g in on_disk["groups"])
    run = TrainedRun.load(tmp_path / "run")
    np.testing.assert_array_equal(run.groups[0].item_table, run.pretrained_items)  # the stage-a table as is
    full = run.layout.full_bytes()
    for fraction in (0.3, 0.5, 0.8):
        for g in range(len(run.groups)):
            mask = run.selection(g, Budget(int(full * fraction))).kept_mask(4, 4)
            kept = mask.sum(axis=1)
            np.testing.assert_array_equal(mask, np.arange(4)[None, :] < kept[:, None])  # leading blocks only


def test_allocation_view_scores_each_item_with_the_blocks_its_group_keeps():
    model, users, pos, neg = _model_and_batch()
    full = torch.full((64,), 4)
    plain = model.loss(users, pos, neg, l2=0.0, lambda_div=0.0)
    # a device keeping every block computes the plain score: the mean of two equal views
    torch.testing.assert_close(model.loss(users, pos, neg, l2=0.0, lambda_div=0.0, nested=(4,), kept=(full, full)),
                               plain, rtol=1e-5, atol=1e-6)
    one = torch.ones(64, dtype=torch.long)
    mixed = model.loss(users, pos, neg, l2=0.0, lambda_div=0.0, nested=(4,), kept=(one, full))
    dims = model.block_dim
    u = model.user_embedding[users]
    device = (u[:, :dims] * model.item_embedding[pos, :dims]).sum(1) - (u * model.item_embedding[neg]).sum(1)
    torch.testing.assert_close(mixed, (plain - F.logsigmoid(device).mean()) / 2, rtol=1e-5, atol=1e-6)


def test_allocation_table_grows_with_the_budget_and_favours_popular_groups():
    layout = UnitLayout(np.array([10, 10, 10, 10]), n_blocks=4, block_dim=2)
    table = allocation_table(np.array([0.6, 0.25, 0.1, 0.05]), layout, decay=0.7, n_budgets=6)
    assert table.shape == (6, 4)
    assert table[0].tolist() == [1, 1, 1, 1] and table[-1].tolist() == [4, 4, 4, 4]
    assert (np.diff(table, axis=0) >= 0).all() and (np.diff(table, axis=1) <= 0).all()


def test_pipeline_trains_on_device_allocations(small_data, small_config, tmp_path):
    config = small_config.with_overrides(["pretrain.nested=1,2,4", "pretrain.allocation_budgets=4",
                                          "finetune.importance=density", "device.eq10_scale=none"])
    train(small_data, tmp_path / "run", config, progress=False)
    plain = small_config.with_overrides(["pretrain.nested=1,2,4", "finetune.importance=density"])
    train(small_data, tmp_path / "plain", plain, progress=False)
    assert not np.array_equal(TrainedRun.load(tmp_path / "run").pretrained_items,
                              TrainedRun.load(tmp_path / "plain").pretrained_items)  # the view changes training


def test_the_lightgcn_ablation_of_a_nested_run_is_plain_lightgcn():
    from peel.training.pipeline import ablation_config

    config = PeelConfig().with_overrides(["pretrain.nested=1,2,4", "pretrain.allocation_budgets=3",
                                          "pretrain.lambda_div=0.001"])
    plain = ablation_config(config, "lightgcn").pretrain
    assert (plain.nested, plain.allocation_budgets, plain.lambda_div) == ("", 0, 0.0)
