import json

import pytest

from peel.config import PeelConfig, config_from_sources, validate_for_data
from peel.errors import ConfigError


def test_defaults_are_the_papers():
    c = PeelConfig()
    assert (c.grouping.user_groups, c.grouping.item_groups, c.model.block_dim, c.model.n_blocks) == (15, 20, 8, 16)
    assert c.model.dim == 128 and c.pretrain.lr == 1e-3 and c.finetune.lr == 1e-3


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
