"""The shared training loop: reduce-on-plateau learning-rate decay, early stopping, resume."""

from __future__ import annotations

import pytest
import torch

from peel.config import ConfigError, PeelConfig, validate
from peel.training.loop import fit


def _fit(tmp_path, scores, *, max_epochs, resume=False, **kwargs):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    data = torch.randn(8, 3)
    it = iter(scores)

    def batches(epoch):
        yield data * epoch

    def step(batch):
        return model(batch).pow(2).mean()

    result = fit(model=model, optimizer=optimizer, batches=batches, step=step, validate=lambda: next(it),
                 max_epochs=max_epochs, checkpoint=tmp_path / "loop.pt", resume=resume, **kwargs)
    return result, optimizer, model


def test_lr_decays_after_lr_patience_validations_without_improvement(tmp_path) -> None:
    result, optimizer, _ = _fit(tmp_path, [0.5, 0.4, 0.4, 0.6, 0.1, 0.1, 0.1], max_epochs=7, patience=10,
                                lr_decay=0.5, lr_patience=2)
    lrs = {h["epoch"]: h["lr"] for h in result.history if "lr" in h}
    assert lrs == {3: 0.05, 6: 0.025}  # epochs 2-3 bad -> decay; 4 improves; 5-6 bad -> decay; 7 bad
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    assert result.best_epoch == 4 and not result.stopped_early


def test_no_decay_by_default_and_early_stopping_still_counts_every_bad_validation(tmp_path) -> None:
    result, optimizer, _ = _fit(tmp_path, [0.5, 0.4, 0.4, 0.4], max_epochs=10, patience=3)
    assert optimizer.param_groups[0]["lr"] == 0.1 and all("lr" not in h for h in result.history)
    assert result.stopped_early and result.epochs_run == 4
    decayed, _, _ = _fit(tmp_path / "b", [0.5, 0.4, 0.4, 0.4], max_epochs=10, patience=3, lr_decay=0.5,
                         lr_patience=1)
    assert decayed.stopped_early and decayed.epochs_run == 4  # a decay does not reset the patience


def test_resumed_run_continues_with_the_decayed_rate(tmp_path) -> None:
    scores = [0.5, 0.4, 0.4, 0.3, 0.2]
    full, full_optimizer, full_model = _fit(tmp_path / "a", scores, max_epochs=5, patience=10, lr_decay=0.5,
                                            lr_patience=2)
    _fit(tmp_path / "b", scores[:3], max_epochs=3, patience=10, lr_decay=0.5, lr_patience=2)
    resumed, optimizer, model = _fit(tmp_path / "b", scores[3:], max_epochs=5, patience=10, resume=True,
                                     lr_decay=0.5, lr_patience=2)
    assert optimizer.param_groups[0]["lr"] == full_optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    assert [h.get("lr") for h in resumed.history] == [h.get("lr") for h in full.history]
    for a, b in zip(model.parameters(), full_model.parameters(), strict=True):  # one process, same ops: exact
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_lr_decay_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="lr_decay"):
        validate(PeelConfig().with_overrides(["pretrain.lr_decay=1.5"]))
    with pytest.raises(ValueError, match="lr_decay"):
        _fit(tmp_path, [1.0], max_epochs=1, patience=1, lr_decay=0.0)


def test_a_resumed_run_that_had_stopped_early_trains_no_further(tmp_path) -> None:
    stopped, _, model = _fit(tmp_path, [0.5, 0.4, 0.4], max_epochs=10, patience=2)
    assert stopped.stopped_early and stopped.epochs_run == 3
    weights = model.weight.detach().clone()
    # a larger epoch cap on resume (as a raced stage a's winner gets) must not revive it
    again, _, model = _fit(tmp_path, [], max_epochs=20, patience=2, resume=True)
    assert again.stopped_early and again.epochs_run == 3 and len(again.history) == 3
    assert torch.equal(model.weight, weights)  # the best epoch's weights, restored


def test_validate_start_keeps_the_starting_model_when_training_only_hurts(tmp_path) -> None:
    torch.manual_seed(0)
    start = torch.nn.Linear(3, 1).weight.detach().clone()
    kept, _, model = _fit(tmp_path / "a", [0.9, 0.5, 0.4, 0.3], max_epochs=10, patience=3, validate_start=True)
    assert kept.best_epoch == 0 and kept.history[0] == {"epoch": 0, "score": 0.9}
    assert kept.stopped_early and kept.epochs_run == 3
    assert torch.equal(model.weight, start)  # restored to the untrained weights
    improved, _, _ = _fit(tmp_path / "b", [0.1, 0.5, 0.4], max_epochs=2, patience=3, validate_start=True)
    assert improved.best_epoch == 1 and improved.best_score == 0.5
    resumed, _, _ = _fit(tmp_path / "b", [0.6], max_epochs=3, patience=3, resume=True, validate_start=True)
    assert resumed.best_epoch == 3 and [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]  # no second start
