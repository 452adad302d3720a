"""The one training loop: zero_grad / backward / step live here once.

A stage passes in its model, optimizer, a function giving an epoch's batches, a ``step(batch) ->
loss`` and a ``validate() -> score``; the loop does early stopping with patience, optionally
multiplies the learning rate by ``lr_decay`` after ``lr_patience`` validations without improvement
(reduce on plateau), keeps the best state, writes an atomic checkpoint every epoch and resumes from
it. Batches must be a function of the epoch number (seeded per epoch), so a resumed run ends with the
same parameters as an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from peel._io import atomic_path

log = logging.getLogger("peel")


@dataclass
class LoopResult:
    best_epoch: int
    best_score: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class Scalar:
    """A checkpointable float (e.g. stage b's last training loss, AutoEmb's size penalty)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class Stateful:
    """Anything with state_dict / load_state_dict (modules, optimizers)."""

    def state_dict(self) -> dict[str, Any]: ...  # pragma: no cover

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...  # pragma: no cover


def fit(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[int], Iterable[Any]],
    step: Callable[[Any], torch.Tensor],
    validate: Callable[[], float] | None = None,
    mode: str = "max",
    max_epochs: int,
    patience: int,
    eval_every: int = 1,
    lr_decay: float = 1.0,
    lr_patience: int = 0,
    checkpoint: Path | None = None,
    checkpoint_seconds: float = 0.0,
    resume: bool = False,
    extra_state: dict[str, Stateful] | None = None,
    keep_best: dict[str, Stateful] | None = None,
    on_best: Callable[[], None] | None = None,
    on_checkpoint: Callable[[], None] | None = None,
    after_epoch: Callable[[int], dict[str, float] | None] | None = None,
    validate_start: bool = False,
    progress: bool = False,
    desc: str = "train",
) -> LoopResult:
    """Train until ``max_epochs`` or ``patience`` validations without improvement.

    ``extra_state`` (e.g. a controller and its optimizer) is checkpointed with the model;
    ``keep_best`` modules are restored to their best-epoch state with the model at the end.
    ``on_best`` runs whenever validation improves (e.g. to record the controller's output).
    ``on_checkpoint`` runs after each checkpoint is written (e.g. to save the stage's clock with it).
    ``after_epoch(epoch)`` runs after each epoch's batches, before validation (e.g. a search's policy
    step); what it returns is logged with the epoch.
    ``validate_start``: a fresh run also validates the model before any training, as epoch 0, so a model
    that starts trained (LightRec's codes from its teacher) is kept as it started if training only hurts.
    With ``lr_decay < 1`` and ``lr_patience > 0``, every ``lr_patience`` validations in a row without
    improvement multiply the optimizer's learning rates by ``lr_decay`` (the rates live in the
    optimizer's state, so a resumed run continues with the decayed rate).
    The checkpoint is written after an epoch once ``checkpoint_seconds`` have passed since the last one
    (0: after every epoch) and always after the last epoch; a killed run redoes the epochs since, to the
    same parameters, since batches are a function of the epoch. ``seconds`` of the result counts every
    invocation up to its last checkpoint, so a resumed run reports what an uninterrupted one would.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be max or min, got {mode!r}")
    if not 0.0 < lr_decay <= 1.0:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}")
    extra_state = extra_state or {}
    keep_best = {"model": model, **(keep_best or {})}
    sign = 1.0 if mode == "max" else -1.0
    state = {"epoch": 0, "best_epoch": 0, "best_score": -math.inf, "bad": 0, "since_decay": 0, "history": [],
             "best": None}
    if resume and checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint, model, optimizer, extra_state)
        log.info("%s: resumed after epoch %d", desc, state["epoch"])
        # a checkpoint from before the clock was kept: its epochs' own seconds (all but the checkpoint writes)
        state.setdefault("seconds", sum(r.get("seconds", 0.0) for r in state["history"]))
    before = float(state.get("seconds", 0.0))
    start_time = last_save = time.perf_counter()
    stopped_early = validate is not None and state["bad"] >= patience  # a run that had stopped stays stopped
    epochs = range(state["epoch"] + 1, max_epochs + 1) if not stopped_early else range(0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_epochs, initial=state["epoch"], desc=desc, unit="epoch", leave=False)
    if validate is not None and validate_start and state["epoch"] == 0 and state["best"] is None:
        start: dict[str, float] = {"epoch": 0}
        _validate(0, start, validate=validate, model=model, optimizer=optimizer, state=state, sign=sign,
                  keep_best=keep_best, on_best=on_best, lr_decay=1.0, lr_patience=0)
        state["history"].append(start)
        log.info("%s before training: score=%.5g", desc, start["score"])
    for epoch in epochs:
        t0 = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        for batch in batches(epoch):
            optimizer.zero_grad(set_to_none=True)
            loss = step(batch)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            count += 1
        record: dict[str, float] = {"epoch": epoch, "loss": total / max(count, 1)}
        if after_epoch is not None:
            record.update(after_epoch(epoch) or {})
        if validate is not None and (epoch % eval_every == 0 or epoch == max_epochs):
            _validate(epoch, record, validate=validate, model=model, optimizer=optimizer, state=state, sign=sign,
                      keep_best=keep_best, on_best=on_best, lr_decay=lr_decay, lr_patience=lr_patience)
        record["seconds"] = time.perf_counter() - t0
        state["history"].append(record)
        state["epoch"] = epoch
        log.info("%s epoch %d: %s", desc, epoch, ", ".join(f"{k}={v:.5g}" for k, v in record.items() if k != "epoch"))
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "score")})
        stopping = validate is not None and state["bad"] >= patience
        if checkpoint is not None and (stopping or epoch == max_epochs
                                       or time.perf_counter() - last_save >= checkpoint_seconds):
            state["seconds"] = before + time.perf_counter() - start_time
            _save_checkpoint(checkpoint, model, optimizer, extra_state, state)
            last_save = time.perf_counter()
            if on_checkpoint is not None:
                on_checkpoint()
        if stopping:
            stopped_early = True
            break
    if bar is not None:
        bar.close()
    if state["best"] is not None:
        for key, module in keep_best.items():
            module.load_state_dict(state["best"][key])
    best_score = sign * state["best_score"] if state["best"] is not None else math.nan
    return LoopResult(best_epoch=state["best_epoch"], best_score=best_score, epochs_run=state["epoch"],
                      stopped_early=stopped_early, history=state["history"],
                      seconds=before + time.perf_counter() - start_time)


def _validate(epoch: int, record: dict[str, float], *, validate: Callable[[], float], model: torch.nn.Module,
              optimizer: torch.optim.Optimizer, state: dict[str, Any], sign: float, keep_best: dict[str, Stateful],
              on_best: Callable[[], None] | None, lr_decay: float, lr_patience: int) -> None:
    """Score the model on validation into ``record``; keep it as the best, or count a bad validation (and
    decay the learning rate after ``lr_patience`` of them in a row)."""
    model.eval()
    with torch.no_grad():
        score = float(validate())
    record["score"] = score
    if sign * score > state["best_score"]:
        state.update(best_epoch=epoch, best_score=sign * score, bad=0, since_decay=0,
                     best={k: copy.deepcopy(m.state_dict()) for k, m in keep_best.items()})
        if on_best is not None:
            on_best()
        return
    state["bad"] += 1
    state["since_decay"] = state.get("since_decay", 0) + 1
    if lr_decay < 1.0 and lr_patience > 0 and state["since_decay"] >= lr_patience:
        for group in optimizer.param_groups:
            group["lr"] *= lr_decay
        state["since_decay"] = 0
        record["lr"] = optimizer.param_groups[0]["lr"]


def _save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     extra: dict[str, Stateful], state: dict[str, Any]) -> None:
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "extra": {k: v.state_dict() for k, v in extra.items()}, "state": state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     extra: dict[str, Stateful]) -> dict[str, Any]:
    payload = torch.load(path, weights_only=True)  # our own file, but never unpickle arbitrary objects
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    for key, module in extra.items():
        module.load_state_dict(payload["extra"][key])
    return payload["state"]
