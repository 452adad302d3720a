import pytest

from peel.config import PeelConfig

SMALL = [
    "model.n_blocks=4", "model.block_dim=4", "pretrain.batch_size=512", "pretrain.lr=0.01",
    "pretrain.max_epochs=4", "pretrain.patience=2", "grouping.item_groups=4", "grouping.user_groups=3",
    "finetune.batch_size=512", "finetune.max_epochs=3", "finetune.patience=2",
]


@pytest.fixture(scope="session")
def small_config():
    return PeelConfig().with_overrides(SMALL)


@pytest.fixture(scope="session")
def small_overrides():
    return list(SMALL)
