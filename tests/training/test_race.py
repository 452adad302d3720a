"""Racing the full-prefix L2 (pretrain.l2_full_prefix_race): the winner's run is exactly an unraced run at the
winning value, every candidate's score is recorded, and the race is off without nested blocks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from peel.config import PRESETS, ConfigError, PeelConfig, validate
from peel.methods.fixed import fitted_config
from peel.training.pretrain import pretrain


def _race_config(small_config, race: str, race_epochs: int = 2):
    return dataclasses.replace(small_config.pretrain, nested="auto", l2=1e-2, l2_full_prefix=1e-4,
                               l2_full_prefix_race=race, race_epochs=race_epochs, eval_every=1, patience=10)


def test_the_race_winner_trains_on_exactly_as_an_unraced_run_at_its_value(tmp_path, small_data, small_config):
    config = _race_config(small_config, "1.0")  # a full-prefix L2 of 1 hobbles the large prefixes
    kwargs = dict(model_config=small_config.model, seed=small_config.seed)
    raced = pretrain(small_data, config=config, checkpoint=tmp_path / "checkpoint.pt", **kwargs)
    assert set(raced.race) == {1e-4, 1.0}
    assert raced.l2_full_prefix == max(raced.race, key=raced.race.get)
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint-l2fp-0.0001.pt", "checkpoint-l2fp-1.pt"}
    alone = pretrain(small_data, config=dataclasses.replace(config, l2_full_prefix=raced.l2_full_prefix,
                                                            l2_full_prefix_race=""), **kwargs)
    assert raced.loop.epochs_run == alone.loop.epochs_run == config.max_epochs  # the winner went past the race
    assert [h.get("score") for h in raced.loop.history] == pytest.approx([h.get("score") for h in alone.loop.history])
    # one process, one thread count, the same ops on the same shapes: a resumed checkpoint continues bit for bit
    np.testing.assert_array_equal(raced.item_vectors, alone.item_vectors)
    # the race's heats stop at race_epochs: the loser trained 2 epochs, not 4
    loser = pretrain(small_data, config=dataclasses.replace(config, max_epochs=2, l2_full_prefix_race="",
                                                            l2_full_prefix=min(raced.race, key=raced.race.get)),
                     **kwargs)
    assert raced.race[min(raced.race, key=raced.race.get)] == pytest.approx(loser.loop.best_score)


def test_a_finished_race_resumes_without_training(tmp_path, small_data, small_config):
    config = _race_config(small_config, "1e-3")
    kwargs = dict(model_config=small_config.model, seed=small_config.seed, checkpoint=tmp_path / "checkpoint.pt")
    first = pretrain(small_data, config=config, **kwargs)
    again = pretrain(small_data, config=config, resume=True, **kwargs)
    assert again.race == first.race and again.l2_full_prefix == first.l2_full_prefix
    assert len(again.loop.history) == len(first.loop.history)
    np.testing.assert_array_equal(again.item_vectors, first.item_vectors)


def test_race_candidates_and_their_checks():
    base = PeelConfig().pretrain
    assert base.race_candidates(16) == (1e-4, 1e-3)  # the default races the two benchmark datasets' choices
    assert dataclasses.replace(base, l2_full_prefix_race="").race_candidates(16) == ()  # "" turns it off
    for preset in (PeelConfig().with_overrides(PRESETS["paper"]), fitted_config(PeelConfig(), "lightgcn", 13)):
        assert preset.pretrain.race_candidates(preset.model.n_blocks) == () and not preset.pretrain.l2_full_prefix_race
    raced = dataclasses.replace(base, l2_full_prefix_race="1e-3, 1e-4 ,1e-2")
    assert raced.race_candidates(16) == (1e-4, 1e-3, 1e-2)  # l2_full_prefix first, no repeats
    assert dataclasses.replace(raced, nested="").race_candidates(16) == ()  # no nesting, nothing to race
    assert dataclasses.replace(base, l2_full_prefix_race="1e-4").race_candidates(16) == ()  # one value: no race
    for bad in ("fast", "1e-3,-1", "nan"):
        with pytest.raises(ConfigError, match="l2_full_prefix_race"):
            validate(PeelConfig().with_overrides([f"pretrain.l2_full_prefix_race={bad}"]))
    with pytest.raises(ConfigError, match="race_epochs"):
        validate(PeelConfig().with_overrides(["pretrain.race_epochs=0"]))


def test_the_pipeline_records_the_race_and_its_winner(tmp_path, small_data, small_config):
    import json

    from peel.training.pipeline import train

    config = small_config.with_overrides(["pretrain.nested=auto", "pretrain.l2_full_prefix_race=1.0",
                                          "pretrain.race_epochs=2", "finetune.importance=density"])
    train(small_data, tmp_path / "run", config, progress=False)
    result = json.loads((tmp_path / "run" / "pretrain" / "result.json").read_text())
    assert set(result["race"]) == {"0.0001", "1"}
    assert f"{result['l2_full_prefix']:g}" == max(result["race"], key=result["race"].get)
    assert "pretrain race: full-prefix L2" in (tmp_path / "run" / "log.txt").read_text()
