"""Per-item embedding dimensions for the multi-dimensional baselines (methods.md, Baselines): a search,
then the budget-fitting rule.

Both searches train stage a's model at the full D, item j scoring with the first dims_j coordinates of
its final vector (one table shared by every candidate dim, as one-shot searches share weights), for
``epochs`` epochs through the one training loop, and return the dims; :func:`fit_item_dims` then fits
them to the budget, and the method trains a fresh model with those dims (the recipe every fitted
baseline gets). Candidate dims are the smallest candidate times powers of two, up to D.

Both searches know the budget. Without it every item grows to D (a larger dim always lowers the loss:
measured on ml-100k, both searches then chose D for every item) and the budget rule alone would decide.

- ``esapn`` (Liu et al., SIGIR 2020): every item starts at the smallest candidate. After each epoch a
  policy network (an MLP of the item's log popularity, its current candidate and its validation loss)
  proposes per item whether to enlarge its dim to the next candidate; it learns by REINFORCE, the
  reward of an item's action being the decrease of that item's validation BPR loss (per validation
  interaction, on fixed negatives) over the next epoch, less the use-weighted mean decrease of items in
  its popularity decile (the baseline), and each item's term weighted by its validation interactions
  (ESAPN acts each time a feature occurs, so a popular item weighs as often as it is used). The policy
  starts without preference (zero last layer). ESAPN decides at each use of an item, so over an epoch an
  item with u training interactions is enlarged (one candidate up) with probability 1 - (1 - p)^u, p the
  policy's probability, and REINFORCE takes that action's log-probability. The budget is released evenly
  over the epochs, and proposals are granted by the expected number of enlarge decisions u·p, ties in a
  random order, while the epoch's allowance lasts (ESAPN only enlarges, so a budget spent in the first
  epochs would be spent before the policy learned anything). With one proposal per item and epoch at
  probability p (as until 2026-12-03), decisions ignored use: on yelp2018-sub at 5MB-eq 1,579 items reached
  D = 128 holding 17% of the interactions, the least popular decile had more dims (10.4 on average) than
  the middle ones (about 7), and the fitted model scored far below AutoEmb's at the same bytes. Measured
  on ml-100k (D=32, 10 epochs, three seeds), one decision per item and epoch: Spearman +0.46 to +0.62
  between dims and popularity; the reward summed per item against one global baseline gave -0.35 to -0.76.
- ``autoemb`` (Zhao et al., ICDM 2021): a controller (an MLP of the item's log popularity) gives every
  item soft weights over the candidates, and its vector is the weighted sum of its truncations; DARTS'
  first-order alternation: per batch the controller steps on a validation batch, then the model on the
  training batch. The controller's loss adds λ times the expected dims per item over D; λ doubles after
  an epoch whose expected total is over the budget and halves otherwise. Each item keeps its argmax.
  That λ rule makes the expected dims swing around the budget rather than settle (ml-100k at 50,000 bytes,
  30 epochs: 3.3 to 8.9 dims per item over the last ten epochs, the budget allowing 7.4), so the argmax is
  taken at whatever phase the last epoch ends in (there 2.7 dims on average: 2 for 1,184 items, 4 for 488,
  16 for the 10 most popular; by popularity, not collapsed); the budget rule then grows the most popular.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from peel.config import ModelConfig, PretrainConfig
from peel.data.interactions import Interactions
from peel.errors import BudgetError
from peel.training.loop import Scalar, fit
from peel.training.sampling import TripleSampler
from peel.units import BYTES_PER_FLOAT

log = logging.getLogger(__name__)

SEARCHES = ("esapn", "autoemb")
HIDDEN = 16          # units of the policy / controller MLP
SEARCH_LR = 1e-2     # Adam learning rate of the policy / controller
# ESAPN's policy steps per search epoch on that epoch's rewards: ESAPN decides each time a feature occurs,
# so its policy learns from many more decisions than one per item and epoch; with one step per epoch the
# policy hardly moved from its random start, which alone then decided whose dims grew
POLICY_STEPS = 20
POPULARITY_BINS = 10  # ESAPN's REINFORCE baseline: the mean reward within each popularity decile


def candidate_dims(smallest: int, dim: int) -> np.ndarray:
    """``smallest`` times 1, 2, 4, ... below ``dim``, then ``dim``."""
    out = [smallest]
    while out[-1] * 2 < dim:
        out.append(out[-1] * 2)
    return np.array(out + [dim] if out[-1] != dim else out, dtype=np.int64)


def item_dims_bytes(item_dims: np.ndarray, dim: int) -> int:
    """What a device holds with per-item dims: every item's kept floats + the user's D-dim vector."""
    return (int(np.sum(item_dims)) + dim) * BYTES_PER_FLOAT


def fit_item_dims(item_dims: np.ndarray, popularity: np.ndarray, budget_bytes: int, candidates: np.ndarray,
                  dim: int) -> np.ndarray:
    """The budget-fitting rule of the multi-dimensional baselines: over the budget, the least popular items
    drop to the smallest candidate, one by one, until it fits; under it, the most popular items grow to the
    full D, one by one, while it fits (the next may grow to the largest candidate that still fits). A
    budget below every item at the smallest candidate is refused with that minimum."""
    dims = np.asarray(item_dims, dtype=np.int64).copy()
    smallest = int(candidates[0])
    check_item_dims_budget(len(dims), budget_bytes, smallest, dim)
    cost = item_dims_bytes(dims, dim)
    rare_first = np.argsort(popularity, kind="stable")
    if cost > budget_bytes:
        saved = np.cumsum((dims[rare_first] - smallest) * BYTES_PER_FLOAT)
        count = int(np.searchsorted(saved, cost - budget_bytes)) + 1  # the fewest drops that fit
        dims[rare_first[:count]] = smallest
        return dims
    popular_first = rare_first[::-1]
    spent = np.cumsum((dim - dims[popular_first]) * BYTES_PER_FLOAT)
    count = int(np.searchsorted(spent, budget_bytes - cost, side="right"))  # grown while the total fits
    dims[popular_first[:count]] = dim
    if count < len(dims):
        left = budget_bytes - item_dims_bytes(dims, dim)
        next_item = popular_first[count]
        fitting = candidates[candidates <= dims[next_item] + left // BYTES_PER_FLOAT]
        if fitting.size:
            dims[next_item] = max(int(dims[next_item]), int(fitting[-1]))
    return dims


def check_item_dims_budget(n_items: int, budget_bytes: int, smallest: int, dim: int) -> None:
    """Refuse a budget below every item at the ``smallest`` dims + the user's ``dim``-dim vector."""
    minimum = item_dims_bytes(np.full(n_items, smallest), dim)
    if budget_bytes < minimum:
        raise BudgetError(f"budget of {budget_bytes:,} bytes is below the smallest a per-item-dims model of "
                          f"{n_items:,} items can meet: {minimum:,} bytes (every item at {smallest} dims + the "
                          "user's vector)")


class _Dims:
    """The search's per-item candidate levels, checkpointed with the model (and set on it when loaded)."""

    def __init__(self, model: nn.Module, candidates: torch.Tensor, n_items: int) -> None:
        self.model, self.candidates = model, candidates
        self.level = torch.zeros(n_items, dtype=torch.long)
        self.pending: dict[str, torch.Tensor] = {}
        self.apply()

    def apply(self) -> None:
        self.model.item_dims = self.candidates[self.level]

    def state_dict(self) -> dict[str, Any]:
        return {"level": self.level, **{f"pending_{k}": v for k, v in self.pending.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.level = state["level"]
        self.pending = {k[len("pending_"):]: v for k, v in state.items() if k.startswith("pending_")}
        self.apply()


def search_item_dims(data: Interactions, *, model_config: ModelConfig, config: PretrainConfig, search: str,
                     seed: int, epochs: int, smallest: int, budget_bytes: int, checkpoint: Path | None = None,
                     resume: bool = False, progress: bool = False,
                     on_checkpoint: Callable[[], None] | None = None) -> np.ndarray:
    """Per-item dims (items,) found by ``search`` (``esapn`` or ``autoemb``) in ``epochs`` epochs under a
    budget of ``budget_bytes``; ``on_checkpoint`` runs after each checkpoint."""
    from peel.training.pretrain import build_model

    if search not in SEARCHES:
        raise ValueError(f"unknown search {search!r}; known: {', '.join(SEARCHES)}")
    config = config.resolved(data.count("train"), model_config.n_blocks)
    model = build_model(data, model_config, seed)
    candidates = torch.from_numpy(candidate_dims(smallest, model_config.dim))
    popularity = torch.from_numpy(np.log1p(data.popularity("train")).astype(np.float32))
    popularity = (popularity - popularity.mean()) / popularity.std().clamp_min(1e-6)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    train_sampler = TripleSampler(data.csr("train"))
    valid = data.csr("valid")
    valid_sampler = TripleSampler(valid, exclude=data.csr("train") + valid)

    def batches(epoch: int):
        rng = np.random.default_rng([seed, epoch])
        for batch in train_sampler.epoch(rng, config.batch_size):
            yield [torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in batch]

    def bpr(batch: list[torch.Tensor]) -> torch.Tensor:
        return model.loss(*batch[:3], l2=config.l2, lambda_div=0.0)

    kwargs: dict[str, Any] = dict(model=model, optimizer=optimizer, batches=batches, max_epochs=epochs,
                                  patience=epochs + 1, checkpoint=checkpoint, resume=resume, progress=progress,
                                  on_checkpoint=on_checkpoint,
                                  desc=f"search ({search})")
    budget_floats = budget_bytes // BYTES_PER_FLOAT - model_config.dim  # what the items may hold together
    if search == "esapn":
        uses = torch.from_numpy(data.popularity("train").astype(np.float32))
        return _esapn(model, candidates, popularity, uses, valid_sampler, seed, bpr, budget_floats, epochs, kwargs)
    return _autoemb(model, candidates, popularity, valid_sampler, seed, config.batch_size, bpr, budget_floats,
                    kwargs)


def _enlarge_log_probability(logit: torch.Tensor, uses: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``action`` (enlarged this epoch or not) when the policy's enlarge probability
    sigmoid(``logit``) is drawn at each of an item's ``uses``: kept means no enlarge in any use."""
    log_keep = -uses * F.softplus(logit)  # log (1 - p) ** uses
    log_enlarge = torch.log(-torch.expm1(log_keep).clamp_min(1e-12))
    return torch.where(action > 0, log_enlarge, log_keep)


def _esapn(model: nn.Module, candidates: torch.Tensor, popularity: torch.Tensor, uses: torch.Tensor,
           valid: TripleSampler, seed: int, bpr: Any, budget_floats: int, epochs: int,
           kwargs: dict[str, Any]) -> np.ndarray:
    n_items = len(popularity)
    dims = _Dims(model, candidates, n_items)
    policy = nn.Sequential(nn.Linear(3, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))
    with torch.no_grad():  # no preference before any reward: a random start alone decided whose dims grew first
        policy[2].weight.zero_()
        policy[2].bias.zero_()
    policy_optimizer = torch.optim.Adam(policy.parameters(), lr=SEARCH_LR)
    top = len(candidates) - 1

    rank = torch.argsort(torch.argsort(popularity, stable=True), stable=True)
    popularity_bin = rank * POPULARITY_BINS // n_items

    # the same negatives every epoch, so that a change of an item's loss is the model's, not the negatives' draw
    valid_users, valid_positives = torch.from_numpy(valid.users), torch.from_numpy(valid.positives)
    valid_negatives = torch.from_numpy(valid.negatives(valid.users, np.random.default_rng([seed, 7])))
    count = torch.bincount(valid_positives, minlength=n_items).float()  # each item's validation interactions

    def item_loss() -> torch.Tensor:
        """Every item's mean validation BPR loss (NaN for an item without validation interactions)."""
        with torch.no_grad():
            users, items = model.final_embeddings()
            margin = (users[valid_users] * (items[valid_positives] - items[valid_negatives])).sum(1)
            loss = F.softplus(-margin).double()
        total = torch.zeros(n_items, dtype=torch.float64).index_add_(0, valid_positives, loss)
        return (total / count).float()  # 0 / 0 = NaN

    def after_epoch(epoch: int) -> dict[str, float]:
        loss = item_loss()
        if dims.pending:  # REINFORCE on the actions of the last epoch
            p = dims.pending
            reward = p["loss"] - loss  # the item's loss decrease per validation interaction
            acted = torch.isfinite(reward) & p["eligible"]
            if acted.any():
                # Baseline: the use-weighted mean reward of items of like popularity. How far an item's loss
                # falls depends on its popularity whatever the action; against one global mean the policy
                # reinforced whatever it had done for one end of the popularity range.
                bin_of, weight = popularity_bin[acted], count[acted]
                total = torch.zeros(POPULARITY_BINS).index_add_(0, bin_of, reward[acted] * weight)
                size = torch.zeros(POPULARITY_BINS).index_add_(0, bin_of, weight)
                advantage = reward[acted] - (total / size.clamp_min(1e-12))[bin_of]
                spread = torch.sqrt((weight * advantage**2).sum() / weight.sum())
                advantage = advantage / spread.clamp_min(1e-12)
                state, action = p["state"][acted], p["action"][acted].float()
                for _ in range(POLICY_STEPS):
                    log_prob = _enlarge_log_probability(policy(state).squeeze(1), uses[acted], action)
                    policy_optimizer.zero_grad(set_to_none=True)
                    # an item's decision weighs as often as the item is used (ESAPN decides per occurrence)
                    (-(weight * advantage * log_prob).sum() / weight.sum()).backward()
                    policy_optimizer.step()
        finite = torch.isfinite(loss)
        seen = torch.nan_to_num(loss, nan=float(loss[finite].mean()) if finite.any() else 0.0)  # no loss: the mean
        seen = (seen - seen.mean()) / seen.std().clamp_min(1e-6)
        state = torch.stack([popularity, dims.level.float() / max(top, 1), seen], dim=1)
        with torch.no_grad():
            logit = policy(state).squeeze(1)
            # ESAPN decides each time an item is used: over its uses of an epoch an item is enlarged (one
            # candidate up) if any use says so, and the expected number of enlarge decisions orders the grants
            probability = -torch.expm1(-uses * F.softplus(logit))
            expected = uses * torch.sigmoid(logit)
        generator = torch.Generator().manual_seed(int(np.random.default_rng([seed, 11, epoch]).integers(2**62)))
        proposed = (torch.bernoulli(probability, generator=generator) > 0) & (dims.level < top)
        # the epoch's allowance: the budget released evenly; proposals granted while it lasts
        start = len(popularity) * int(candidates[0])
        allowance = start + (budget_floats - start) * epoch // epochs - int(model.item_dims.sum())
        growth = (candidates[(dims.level + 1).clamp_max(top)] - candidates[dims.level]) * proposed
        shuffled = torch.randperm(n_items, generator=generator)  # ties in a random order
        order = shuffled[torch.argsort(-(expected * proposed)[shuffled], stable=True)]
        granted = torch.zeros_like(proposed)
        granted[order] = proposed[order] & (torch.cumsum(growth[order], 0) <= allowance)
        eligible = (dims.level < top) & (granted | ~proposed)  # a refused proposal teaches the policy nothing
        action = granted
        dims.level = dims.level + action.long()
        dims.apply()
        dims.pending = {"state": state, "action": action, "eligible": eligible, "loss": loss}
        return {"mean_dim": float(model.item_dims.float().mean()), "enlarged": float(action.sum())}

    fit(step=bpr, after_epoch=after_epoch,
        extra_state={"policy": policy, "policy_optimizer": policy_optimizer, "dims": dims}, **kwargs)
    return model.item_dims.numpy().copy()


def _autoemb(model: nn.Module, candidates: torch.Tensor, popularity: torch.Tensor, valid: TripleSampler, seed: int,
             batch_size: int, bpr: Any, budget_floats: int, kwargs: dict[str, Any]) -> np.ndarray:
    controller = nn.Sequential(nn.Linear(1, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, len(candidates)))
    controller_optimizer = torch.optim.Adam(controller.parameters(), lr=SEARCH_LR)
    masks = (torch.arange(int(candidates[-1]))[None, :] < candidates[:, None]).float()  # (candidates, D)
    features = popularity[:, None]
    penalty = Scalar(1.0)  # the size penalty λ
    dim = float(candidates[-1])

    def soft_scale() -> torch.Tensor:
        """(items, D): the controller's weights over the candidates, spread over the coordinates each keeps."""
        return torch.softmax(controller(features), dim=1) @ masks

    model.item_scale = None
    base_batches = kwargs.pop("batches")

    def batches(epoch: int):
        rng = np.random.default_rng([seed, 13, epoch])
        for batch in base_batches(epoch):
            users, positives, negatives = valid.sample(min(len(batch[0]), batch_size), rng)
            yield batch, [torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in (users, positives, negatives)]

    def step(both: tuple[list[torch.Tensor], list[torch.Tensor]]) -> torch.Tensor:
        train_batch, valid_batch = both
        weights = torch.softmax(controller(features), dim=1)
        model.item_scale = weights @ masks  # the controller's step on validation (DARTS, first order)
        expected = (weights @ candidates.float()).mean() / dim
        controller_optimizer.zero_grad(set_to_none=True)
        (model.loss(*valid_batch, l2=0.0, lambda_div=0.0) + penalty.value * expected).backward()
        controller_optimizer.step()
        model.zero_grad(set_to_none=True)  # the validation loss trains the controller only
        with torch.no_grad():
            model.item_scale = soft_scale()
        return bpr(train_batch)

    def after_epoch(epoch: int) -> dict[str, float]:
        with torch.no_grad():
            expected = float((torch.softmax(controller(features), dim=1) @ candidates.float()).sum())
        penalty.value *= 2.0 if expected > budget_floats else 0.5
        return {"expected_dims": expected / len(features), "penalty": penalty.value}

    fit(batches=batches, step=step, after_epoch=after_epoch, **kwargs,
        extra_state={"controller": controller, "controller_optimizer": controller_optimizer, "penalty": penalty})
    model.item_scale = None
    with torch.no_grad():
        return candidates[controller(features).argmax(dim=1)].numpy().copy()
