"""Stage b: the bilevel step, determinism, executors."""

import dataclasses

import numpy as np
import pytest

from peel.training.executor import run_tasks
from peel.training.finetune import GroupResult, GroupTask, finetune_group
from peel.training.grouping import item_groups
from peel.units import unit_order


def _tasks(data, config, n_groups=2):
    rng = np.random.default_rng(0)
    dim = config.model.dim
    user_vectors = rng.normal(scale=0.1, size=(data.n_users, dim)).astype(np.float32)
    item_vectors = rng.normal(scale=0.1, size=(data.n_items, dim)).astype(np.float32)
    items = item_groups(data.popularity("train"), config.grouping.item_groups)
    labels = np.arange(data.n_users) % n_groups
    return [GroupTask(group=g, config=config, users=np.flatnonzero(labels == g), item_table=item_vectors,
                      user_vectors=user_vectors[labels == g], item_group=items,
                      train=data.csr("train")[labels == g], valid=data.csr("valid")[labels == g])
            for g in range(n_groups)]


@pytest.mark.parametrize("bilevel", ["second_order", "first_order"])
@pytest.mark.parametrize("scorer", ["mlp", "dot"])
def test_group_finetuning_learns_weights_and_improves(small_data, small_config, bilevel, scorer):
    config = dataclasses.replace(small_config, threads=1, finetune=dataclasses.replace(
        small_config.finetune, importance="controller", bilevel=bilevel, scorer=scorer, max_epochs=3))
    result = finetune_group(_tasks(small_data, config)[0])
    w = result.importance_weights
    assert w.shape == (config.grouping.item_groups, config.model.n_blocks)
    assert np.isclose(w.sum(), 1.0) and np.all(w > 0)
    assert not np.allclose(w, 1.0 / w.size)  # the controller moved away from uniform
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert 1 <= result.best_epoch <= result.epochs_run


def test_no_controller_gives_uniform_weights(small_data, small_config):
    config = dataclasses.replace(small_config, finetune=dataclasses.replace(
        small_config.finetune, importance="controller", use_controller=False, max_epochs=1))
    w = finetune_group(_tasks(small_data, config)[0]).importance_weights
    np.testing.assert_allclose(w, 1.0 / w.size)


def test_group_result_round_trip(tmp_path, small_data, small_config):
    config = dataclasses.replace(small_config, finetune=dataclasses.replace(small_config.finetune, max_epochs=1))
    result = finetune_group(_tasks(small_data, config)[0])
    result.save(tmp_path / "g.npz")
    loaded = GroupResult.load(tmp_path / "g.npz")
    np.testing.assert_array_equal(loaded.item_table, result.item_table)
    np.testing.assert_array_equal(loaded.importance_weights, result.importance_weights)
    np.testing.assert_allclose(loaded.transformed_blocks(), result.transformed_blocks())
    assert loaded.best_epoch == result.best_epoch and len(loaded.history) == len(result.history)
    assert np.all(np.abs(result.transformed_blocks()) <= 1)  # tanh


@pytest.mark.slow
def test_ray_and_local_executors_give_the_same_result(small_data, small_config):
    ray = pytest.importorskip("ray")
    config = dataclasses.replace(small_config, threads=1, finetune=dataclasses.replace(
        small_config.finetune, max_epochs=2))
    tasks = _tasks(small_data, config)
    local = run_tasks(finetune_group, tasks, executor="local")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_tasks(finetune_group, tasks, executor="ray")
    finally:
        ray.shutdown()
    # A Ray worker is another process running the same code, here with torch pinned to one thread in both
    # (config.threads; with threads = 0 the driver keeps torch's default and a worker gets OMP_NUM_THREADS = its
    # CPUs). Not promised bit for bit (thread count, allocation alignment and ISA dispatch can change torch's
    # rounding), so: equal within a tolerance, and the unit orders equal except where weights tie within it.
    for a, b in zip(local, remote, strict=True):
        assert a.group == b.group
        np.testing.assert_allclose(a.importance_weights, b.importance_weights, rtol=1e-5)
        np.testing.assert_allclose(a.item_table, b.item_table, rtol=1e-5, atol=1e-7)
        # at each position the two orders' units weigh the same (by the local weights) within 3x the tolerance:
        # a tie may swap two units, or a group's best block with its runner-up (moving both head and tail)
        w, order_a, order_b = a.importance_weights, unit_order(a.importance_weights), unit_order(b.importance_weights)
        np.testing.assert_allclose(w[order_b[:, 0], order_b[:, 1]], w[order_a[:, 0], order_a[:, 1]], rtol=3e-5)
