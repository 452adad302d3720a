"""Stage a: LightGCN pretraining with item blocks and the diversity regularizer.

With ``lambda_div = 0`` this is the LightGCN baseline; with ``layers = 0`` matrix factorization.
Early stopping on validation Recall@50 (optionally on a fixed sample of validation users).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from peel.config import ModelConfig, PretrainConfig
from peel.data.interactions import Interactions
from peel.evaluation import DotProductScorer, evaluate, evaluation_users
from peel.models.composed import item_table
from peel.models.graph import normalized_adjacency
from peel.models.lightgcn import LightGCN
from peel.training.loop import LoopResult, fit
from peel.training.sampling import TripleSampler

log = logging.getLogger(__name__)

# seconds between stage a's checkpoints: a full-size checkpoint (model and Adam state) of amazon-book-sub
# is 165 MB and about half a second to write, 5-10% of an epoch if written after each
CHECKPOINT_SECONDS = 60.0


@dataclass
class PretrainResult:
    user_vectors: np.ndarray  # (users, D) final (propagated, combined) user embeddings
    item_vectors: np.ndarray  # (items, D) final item embeddings: the table stage b refines
    loop: LoopResult
    # with a race (PretrainConfig.l2_full_prefix_race): the full-prefix L2 that won, and every candidate's
    # best validation score within the race
    l2_full_prefix: float | None = None
    race: dict[float, float] = field(default_factory=dict)
    # a composed item table's tensors (model.item_table), what its export writes, item_vectors being their
    # composition; or the per-item dims ("item_dims"), item_vectors then zero past each item's dims
    item_tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        from peel._io import atomic_path

        composed = {f"{COMPOSED_PREFIX}{name}": arr for name, arr in self.item_tensors.items()}
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, user_vectors=self.user_vectors, item_vectors=self.item_vectors, **composed)


COMPOSED_PREFIX = "composed."


def load_pretrained(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return z["user_vectors"], z["item_vectors"]


def load_item_tensors(path: Path) -> dict[str, np.ndarray]:
    """A composed item table's tensors saved with the embeddings ({} for a full table)."""
    with np.load(path, allow_pickle=False) as z:
        return {k[len(COMPOSED_PREFIX):]: z[k] for k in z.files if k.startswith(COMPOSED_PREFIX)}


def pretrain(data: Interactions, *, model_config: ModelConfig, config: PretrainConfig, seed: int,
             checkpoint: Path | None = None, resume: bool = False, progress: bool = False,
             allocations: tuple[np.ndarray, np.ndarray] | None = None,
             teacher: tuple[np.ndarray, np.ndarray] | None = None,
             item_dims: np.ndarray | None = None,
             on_checkpoint: Callable[[], None] | None = None) -> PretrainResult:
    """Train LightGCN (blocks + diversity regularizer) and return the final embeddings of the best epoch.

    ``allocations``: (item group of every item, (budgets, G_v) leading blocks kept per item group) for
    ``config.allocation_budgets``; each triple is then also scored as a device at one of those budgets.
    With nested blocks, early stopping follows the mean validation Recall@50 of the smallest, middle and
    full nested prefix. With ``config.l2_full_prefix_race``, the full-prefix L2 is raced first (:func:`_race`).
    ``teacher``: a trained model's final (user, item) vectors that the user embeddings start from and a
    codebook item table distils (LightRec). ``item_dims``: item j scores with the first item_dims[j]
    coordinates of its final vector (ESAPN, AutoEmb). ``on_checkpoint`` runs after each checkpoint.
    """
    candidates = config.race_candidates(model_config.n_blocks)
    kwargs = dict(data=data, model_config=model_config, seed=seed, progress=progress, allocations=allocations,
                  teacher=teacher, item_dims=item_dims, on_checkpoint=on_checkpoint)
    if not candidates:
        return _pretrain_once(config=config, checkpoint=checkpoint, resume=resume, **kwargs)
    if checkpoint is not None:
        return _race(config, candidates, checkpoint, resume, kwargs)
    with tempfile.TemporaryDirectory(prefix="peel-race-") as tmp:
        return _race(config, candidates, Path(tmp) / "checkpoint.pt", False, kwargs)


def _race(config: PretrainConfig, candidates: tuple[float, ...], checkpoint: Path, resume: bool,
          kwargs: dict) -> PretrainResult:
    """Train every full-prefix L2 candidate for ``race_epochs`` (rounded up to a validation epoch, so the
    winner's validations fall where an unraced run's do), then train the one with the best validation
    score on from its own checkpoint: the result is that of a run at the winning value. Each candidate
    checkpoints beside ``checkpoint``, so a killed race resumes where it stopped."""
    resolved = config.resolved(kwargs["data"].count("train"), kwargs["model_config"].n_blocks)
    end = min(resolved.max_epochs, math.ceil(config.race_epochs / resolved.eval_every) * resolved.eval_every)
    scores: dict[float, float] = {}
    for value in candidates:
        heat = dataclasses.replace(config, l2_full_prefix=value, max_epochs=end)
        result = _pretrain_once(config=heat, checkpoint=_race_checkpoint(checkpoint, value), resume=resume,
                                **kwargs)
        # the winner's checkpoint may hold epochs past the race (a resumed run): score the race's epochs only
        scores[value] = max((h["score"] for h in result.loop.history if "score" in h and h["epoch"] <= end),
                            default=math.nan)
        log.info("pretrain race: full-prefix L2 %g, best validation score %.5f by epoch %d", value,
                 scores[value], min(result.loop.epochs_run, end))
    winner = max(candidates, key=lambda v: (not math.isnan(scores[v]), scores[v]))  # first of equals
    log.info("pretrain race: full-prefix L2 %g trains on", winner)
    final = _pretrain_once(config=dataclasses.replace(config, l2_full_prefix=winner),
                           checkpoint=_race_checkpoint(checkpoint, winner), resume=True, **kwargs)
    return dataclasses.replace(final, l2_full_prefix=winner, race=scores)


def _race_checkpoint(checkpoint: Path, value: float) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}-l2fp-{value:g}{checkpoint.suffix}")


def build_model(data: Interactions, model_config: ModelConfig, seed: int,
                teacher: tuple[np.ndarray, np.ndarray] | None = None) -> LightGCN:
    """Stage a's model, seeded: LightGCN, with a composed item table when the config asks for one; with a
    ``teacher``, its users start from the teacher's and a codebook table distils the teacher's items."""
    torch.manual_seed(seed)
    adjacency = normalized_adjacency(data.csr("train")) if model_config.layers > 0 else None
    composition = model_config.composition(data.n_items)
    teacher_items = None if teacher is None else torch.from_numpy(np.asarray(teacher[1], dtype=np.float32))
    table = item_table(data.n_items, composition, teacher_items) if composition else None
    model = LightGCN(data.n_users, data.n_items, n_blocks=model_config.n_blocks, block_dim=model_config.block_dim,
                     layers=model_config.layers, layer_combination=model_config.layer_combination,
                     adjacency=adjacency, item_table=table)
    if teacher is not None:
        if teacher[0].shape != tuple(model.user_embedding.shape):
            raise ValueError(f"teacher user vectors must be {tuple(model.user_embedding.shape)}, "
                             f"got {teacher[0].shape}")
        with torch.no_grad():
            model.user_embedding.copy_(torch.from_numpy(np.asarray(teacher[0], dtype=np.float32)))
    return model


def _trained_width(item_dims: np.ndarray, model_config: ModelConfig, config: PretrainConfig,
                   checkpoint: Path | None) -> int:
    """The leading coordinates stage a trains with per-item dims: the largest dim, in whole blocks, when each
    coordinate trains alone (no diversity regularizer or nested prefixes, which couple the blocks); a
    checkpoint written by a run that trained every coordinate (before this rule) resumes at its width."""
    if checkpoint is not None and checkpoint.exists():
        payload = torch.load(checkpoint, weights_only=True, mmap=True)
        return int(payload["model"]["user_embedding"].shape[1])
    if config.lambda_div > 0 or config.nested_blocks(model_config.n_blocks):
        return model_config.dim
    block = model_config.block_dim
    return min(model_config.dim, -(-int(np.max(item_dims)) // block) * block)


def _pretrain_once(data: Interactions, *, model_config: ModelConfig, config: PretrainConfig, seed: int,
                   checkpoint: Path | None, resume: bool, progress: bool,
                   allocations: tuple[np.ndarray, np.ndarray] | None,
                   teacher: tuple[np.ndarray, np.ndarray] | None = None,
                   item_dims: np.ndarray | None = None,
                   on_checkpoint: Callable[[], None] | None = None) -> PretrainResult:
    config = config.resolved(data.count("train"), model_config.n_blocks)
    model = build_model(data, model_config, seed, teacher)
    width = model_config.dim
    if item_dims is not None:
        width = _trained_width(item_dims, model_config, config, checkpoint if resume else None)
        if width < model_config.dim:
            log.info("pretrain: per-item dims of at most %d of D = %d: only the leading %d coordinates train "
                     "(the rest never score)", width, model_config.dim, width)
            model.keep_leading(width)
        model.item_dims = torch.from_numpy(np.asarray(item_dims, dtype=np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    sampler = TripleSampler(data.csr("train"))
    valid_users = evaluation_users(data, "valid")
    if config.eval_users and config.eval_users < len(valid_users):
        valid_users = np.sort(np.random.default_rng([seed, 1]).choice(valid_users, config.eval_users, replace=False))

    nested = config.nested_blocks(model_config.n_blocks)
    l2 = config.nested_l2(model_config.n_blocks) or config.l2

    def batches(epoch: int):
        rng = np.random.default_rng([seed, epoch])
        for batch in sampler.epoch(rng, config.batch_size):
            if allocations is not None and nested:
                item_group, table = allocations
                budget = rng.integers(len(table), size=len(batch[0]))
                batch = (*batch, table[budget, item_group[batch[1]]], table[budget, item_group[batch[2]]])
            yield [torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in batch]

    def step(batch: list[torch.Tensor]) -> torch.Tensor:
        kept = (batch[3], batch[4]) if len(batch) == 5 else None
        return model.loss(*batch[:3], l2=l2, lambda_div=config.lambda_div, nested=nested, kept=kept,
                          distillation=config.distillation if teacher is not None else 0.0,
                          self_distillation=config.self_distillation,
                          nested_weights=config.nested_weights(model_config.n_blocks))

    def validate() -> float:
        users, items = model.final_embeddings()
        # the smallest, middle and full prefix: each is one full-ranking evaluation, the cost of an epoch or more
        picks = sorted({nested[0], nested[len(nested) // 2], nested[-1]}) if nested else [model_config.n_blocks]
        dims = [p * model_config.block_dim for p in picks]
        return float(np.mean([evaluate(DotProductScorer(users[:, :k], items[:, :k]), data, split="valid", ks=(50,),
                                       users=valid_users, legacy_depth=None)["recall@50"] for k in dims]))

    loop = fit(model=model, optimizer=optimizer, batches=batches, step=step, validate=validate, mode="max",
               max_epochs=config.max_epochs, patience=config.patience, eval_every=config.eval_every,
               lr_decay=config.lr_decay, lr_patience=config.lr_patience, checkpoint=checkpoint,
               checkpoint_seconds=CHECKPOINT_SECONDS, resume=resume, progress=progress, desc="pretrain",
               validate_start=teacher is not None, on_checkpoint=on_checkpoint)
    model.eval()  # a codebook table composes its exact hard codes only outside training
    with torch.no_grad():
        users, items = model.final_embeddings()
    tensors = model.item_table.tensors() if model.item_table is not None else {}
    if item_dims is not None:
        tensors = {"item_dims": np.asarray(item_dims, dtype=np.int64)}
        # the untrained coordinates are zero: no item scores with them, so the user's never count either
        users, items = (F.pad(x, (0, model_config.dim - width)) for x in (users, items))
    return PretrainResult(users.detach().numpy().copy(), items.detach().numpy().copy(), loop,  # layers=0: parameters
                          item_tensors=tensors)
