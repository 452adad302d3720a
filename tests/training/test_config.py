import json
import math

import pytest

from peel.config import (
    NESTED_EVAL_FACTOR,
    PRETRAIN_AUTO,
    PeelConfig,
    config_from_sources,
    resolve_for_data,
    validate_for_data,
)
from peel.errors import ConfigError


def test_defaults_are_the_papers_where_speed_allows():
    c = PeelConfig()
    assert (c.grouping.user_groups, c.grouping.item_groups, c.model.block_dim, c.model.n_blocks) == (15, 20, 8, 16)
    assert c.model.dim == 128 and c.finetune.lr == 1e-3
    # pretraining batch / lr / validation schedule are derived from the data (resolve_for_data)
    assert all(getattr(c.pretrain, name) == 0 for name in PRETRAIN_AUTO)


@pytest.mark.parametrize(("n_train", "batch", "sqrt_rule_lr", "eval_every", "patience"), [
    (377_587, 65536, 0.01, 3, 17),      # amazon-book-sub
    (209_390, 32768, 0.007071, 2, 25),  # yelp2018-sub
    (70_012, 8192, 0.003536, 1, 50),   # ml-100k
    (500, 1024, 0.00125, 1, 50),        # tiny: the smallest batch, still several steps per epoch
    (50_000_000, 65536, 0.01, 5, 10),   # huge: the largest batch, validation every 5 epochs
])
def test_auto_pretraining_fields_follow_the_data_size(n_train, batch, sqrt_rule_lr, eval_every, patience):
    unnested = resolve_for_data(PeelConfig().with_overrides(["pretrain.nested="]), n_train=n_train).pretrain
    assert (unnested.batch_size, unnested.eval_every, unnested.patience) == (batch, eval_every, patience)
    # nested blocks (the default) validate three prefixes each time, NESTED_EVAL_FACTOR times less often,
    # with the same patience in epochs (about 50)
    p = resolve_for_data(PeelConfig(), n_train=n_train).pretrain
    assert p.eval_every == NESTED_EVAL_FACTOR * eval_every and p.patience == math.ceil(50 / p.eval_every)
    assert p.batch_size == batch
    assert p.lr == 0.01  # the same rate at any batch
    sqrt_rule = resolve_for_data(PeelConfig().with_overrides(["pretrain.lr_batch_power=0.5"]), n_train=n_train)
    assert sqrt_rule.pretrain.lr == pytest.approx(sqrt_rule_lr, rel=1e-6)
    assert sqrt_rule.pretrain.batch_size == batch


def test_the_lr_rule_does_not_matter_once_the_lr_is_derived():
    today = resolve_for_data(PeelConfig(), n_train=377_587).pretrain
    other_rule = resolve_for_data(PeelConfig().with_overrides(["pretrain.lr_batch_power=0.5"]), n_train=377_587)
    assert today != other_rule.pretrain and today.without_lr_rule() == other_rule.pretrain.without_lr_rule()
    smaller = resolve_for_data(PeelConfig().with_overrides(["pretrain.lr_batch_power=0.5"]), n_train=209_390)
    default = resolve_for_data(PeelConfig(), n_train=209_390).pretrain
    assert smaller.pretrain.without_lr_rule() != default.without_lr_rule()
    assert PeelConfig().pretrain.without_lr_rule() == PeelConfig().pretrain  # not derived yet: the rule matters


def test_explicit_pretraining_values_are_kept():
    c = PeelConfig().with_overrides(["pretrain.batch_size=4096", "pretrain.lr=0.001", "pretrain.eval_every=2"])
    p = resolve_for_data(c, n_train=377_587).pretrain
    assert (p.batch_size, p.lr, p.eval_every, p.patience) == (4096, 0.001, 2, 25)
    assert resolve_for_data(resolve_for_data(c, n_train=10), n_train=10**6) == resolve_for_data(c, n_train=10)


def test_round_trip_through_json(tmp_path):
    c = PeelConfig().with_overrides(["device.eq10=fold", "pretrain.lambda_div=0.01", "finetune.bilevel=first_order"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(c.to_dict()))
    assert PeelConfig.from_json(path) == c


def test_toml_and_overrides(tmp_path):
    toml = tmp_path / "peel.toml"
    toml.write_text("seed = 7\n[pretrain]\nlr = 0.002\n[grouping]\nuser_groups = 5\n")
    c = config_from_sources(toml, ["grouping.user_groups=6"])
    assert (c.seed, c.pretrain.lr, c.grouping.user_groups) == (7, 0.002, 6)


@pytest.mark.parametrize(("override", "message"), [
    ("model.embedding_dim=100", "must equal n_blocks \\* block_dim = 16 \\* 8 = 128"),
    ("pretrain.lrr=1", "unknown config key 'pretrain.lrr'"),
    ("nosuch.key=1", "unknown config section 'nosuch'"),
    ("pretrain.lr=fast", "pretrain.lr must be float"),
    ("device.eq10=both", "device.eq10 must be one of masked, fold"),
    ("grouping.item_groups=0", "grouping.item_groups must be positive"),
    ("pretrain.l2=-1", "pretrain.l2 must be >= 0"),
    ("seed", "expects key=value"),
])
def test_bad_configs_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        PeelConfig().with_overrides([override])


def test_unknown_key_in_toml(tmp_path):
    toml = tmp_path / "peel.toml"
    toml.write_text("[pretrain]\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="pretrain.learning_rate"):
        PeelConfig.from_toml(toml)


def test_groups_larger_than_the_data_are_refused():
    with pytest.raises(ConfigError, match="item_groups = 20 exceeds the item count 10"):
        validate_for_data(PeelConfig(), n_users=100, n_items=10)
    with pytest.raises(ConfigError, match="user_groups = 15 exceeds the user count 9"):
        validate_for_data(PeelConfig(), n_users=9, n_items=100)


FLOAT_KEYS = [f"{section}.{key}" for section, values in PeelConfig().to_dict().items() if isinstance(values, dict)
              for key, value in values.items() if isinstance(value, float)]


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_floats_are_refused(key, value):
    assert len(FLOAT_KEYS) >= 7  # every float field of every section
    with pytest.raises(ConfigError, match=f"config {key} must be a finite number, got {value}"):
        PeelConfig().with_overrides([f"{key}={value}"])


@pytest.mark.parametrize("seed", [-1, 2**32, 2**64])
def test_seed_out_of_range_is_refused(seed):
    with pytest.raises(ConfigError, match=f"seed must be in \\[0, 2\\*\\*32\\), got {seed}"):
        PeelConfig().with_overrides([f"seed={seed}"])
    assert PeelConfig().with_overrides([f"seed={2**32 - 1}"]).seed == 2**32 - 1


def test_presets_sit_between_the_defaults_and_the_config_file(tmp_path):
    from peel.config import PRESETS

    paper = config_from_sources(preset="paper")
    assert (paper.pretrain.lambda_div, paper.finetune.importance, paper.finetune.bilevel, paper.pretrain.nested) == \
        (0.001, "controller", "second_order", "")
    toml = tmp_path / "c.toml"
    toml.write_text("[pretrain]\nlambda_div = 0.01\n")
    layered = config_from_sources(toml, ["finetune.max_epochs=3"], preset="paper")
    assert (layered.pretrain.lambda_div, layered.finetune.bilevel, layered.finetune.max_epochs) == \
        (0.01, "second_order", 3)  # file over preset, --set over file, the rest of the preset kept
    with pytest.raises(ConfigError, match="unknown preset 'papr'; known: " + ", ".join(PRESETS)):
        config_from_sources(preset="papr")
