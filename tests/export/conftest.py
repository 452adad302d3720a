"""A tiny trained run (about 10 s) shared by the export tests."""

from __future__ import annotations

import warnings

import pytest

from peel.config import PeelConfig

TINY = [
    "model.n_blocks=4", "model.block_dim=4", "pretrain.batch_size=512", "pretrain.lr=0.01",
    "pretrain.max_epochs=2", "pretrain.patience=2", "grouping.item_groups=4", "grouping.user_groups=2",
    "finetune.batch_size=1024", "finetune.max_epochs=1", "finetune.patience=1", "finetune.bilevel=first_order",
]


@pytest.fixture(scope="session")
def tiny_data(small_data):
    """The training tests' small synthetic dataset (tests/conftest.py), generated once per session."""
    return small_data


@pytest.fixture(scope="session")
def tiny_config():
    return PeelConfig().with_overrides(TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data, tiny_config):
    from peel.training.pipeline import train

    out = tmp_path_factory.mktemp("export-run") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(tiny_data, out, tiny_config, progress=False)
    return out
