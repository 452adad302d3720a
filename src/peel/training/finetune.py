"""Stage b: group-level fine-tuning with the controller, by one-step bi-level optimization.

One user group is one task (numpy in, numpy out, picklable), so an executor can run groups in
this process or as Ray tasks. Each task seeds torch and numpy from (seed, user group) and sets its
own thread count, so the result does not depend on where it runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch.func import functional_call

from peel._io import atomic_path
from peel.config import PeelConfig
from peel.models.finetune import Controller, GroupModel
from peel.training.allocation import density_weights
from peel.training.loop import Scalar, fit
from peel.training.sampling import TripleSampler


@dataclass
class GroupTask:
    """Everything one user group's fine-tuning needs."""

    group: int
    config: PeelConfig
    users: np.ndarray          # global ids of the group's users
    item_table: np.ndarray     # (items, D) pretrained item vectors
    user_vectors: np.ndarray   # (len(users), D) pretrained user vectors
    item_group: np.ndarray     # (items,) item group of every item
    train: sp.csr_matrix       # (len(users), items) the group's training interactions
    valid: sp.csr_matrix       # (len(users), items) the group's validation interactions
    checkpoint: str | None = None
    resume: bool = False
    progress: bool = False


_SCALARS = {"group": int, "best_epoch": int, "epochs_run": int, "best_valid_loss": float, "seconds": float}
_HISTORY = ("epoch", "loss", "score", "seconds")  # one float column per field of a history record


@dataclass
class GroupResult:
    """Fine-tuned state of one user group: what the order, the export and the device need."""

    group: int
    users: np.ndarray
    item_table: np.ndarray
    user_vectors: np.ndarray
    batch_norm: dict[str, np.ndarray]       # running_mean, running_var, weight, bias (D each), eps
    importance_weights: np.ndarray          # (G_v, N)
    best_epoch: int
    epochs_run: int
    best_valid_loss: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        arrays = {"users": self.users, "item_table": self.item_table, "user_vectors": self.user_vectors,
                  "importance_weights": self.importance_weights,
                  **{f"batch_norm_{k}": np.asarray(v) for k, v in self.batch_norm.items()},
                  **{name: np.asarray(getattr(self, name)) for name in _SCALARS},
                  **{f"history_{name}": np.array([h.get(name, math.nan) for h in self.history], dtype=np.float64)
                     for name in _HISTORY}}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> GroupResult:
        with np.load(path, allow_pickle=False) as z:
            bn = {k.removeprefix("batch_norm_"): z[k] for k in z.files if k.startswith("batch_norm_")}
            if "scalars" in z.files:  # written before the scalars had names: the same fields, by position
                scalars = dict(zip(_SCALARS, z["scalars"].tolist(), strict=True))
                columns = dict(zip(_HISTORY, z["history"].T.tolist(), strict=True)) if z["history"].size else {}
            else:
                scalars = {name: z[name].item() for name in _SCALARS}
                columns = {name: z[f"history_{name}"].tolist() for name in _HISTORY}
            rows = len(next(iter(columns.values()), []))
            history = [{name: columns[name][i] for name in _HISTORY} for i in range(rows)]
            return cls(users=z["users"], item_table=z["item_table"], user_vectors=z["user_vectors"], batch_norm=bn,
                       importance_weights=z["importance_weights"], history=history,
                       **{name: kind(scalars[name]) for name, kind in _SCALARS.items()})

    def transformed_blocks(self) -> np.ndarray:
        """tanh(BatchNorm_eval(table)) for every item: the blocks a device scores with (Eq. 4)."""
        bn = self.batch_norm
        normalized = (self.item_table - bn["running_mean"]) / np.sqrt(bn["running_var"] + float(bn["eps"]))
        return np.tanh(normalized * bn["weight"] + bn["bias"]).astype(np.float32)


def item_group_share(train: sp.csr_matrix, item_group: np.ndarray, n_item_groups: int) -> np.ndarray:
    """The group's share of training interactions in each item group (the controller's fixed input)."""
    counts = np.bincount(item_group[train.indices], minlength=n_item_groups).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def density_group(task: GroupTask) -> GroupResult:
    """The 'density' importance: no training; the stage-a table and user vectors as they are."""
    start = time.perf_counter()
    n_item_groups = int(task.item_group.max()) + 1
    share = item_group_share(task.train, task.item_group, n_item_groups)
    dim = task.item_table.shape[1]
    identity = {"running_mean": np.zeros(dim, np.float32), "running_var": np.ones(dim, np.float32),
                "weight": np.ones(dim, np.float32), "bias": np.zeros(dim, np.float32), "eps": np.array(0.0)}
    return GroupResult(group=task.group, users=task.users, item_table=task.item_table,
                       user_vectors=task.user_vectors, batch_norm=identity,
                       importance_weights=density_weights(share, task.config.model.n_blocks,
                                                          task.config.finetune.density_decay),
                       best_epoch=0, epochs_run=0, best_valid_loss=math.nan, seconds=time.perf_counter() - start)


def finetune_group(task: GroupTask) -> GroupResult:
    """Algorithm 1 for one user group; returns the best-epoch state and importance weights."""
    config, ft = task.config, task.config.finetune
    if ft.importance == "density":
        return density_group(task)
    seed = int(np.random.SeedSequence([config.seed, task.group]).generate_state(1)[0])
    torch.manual_seed(seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    n_item_groups = int(task.item_group.max()) + 1
    model = GroupModel(torch.from_numpy(task.item_table), torch.from_numpy(task.user_vectors),
                       torch.from_numpy(task.item_group.astype(np.int64)), n_blocks=config.model.n_blocks,
                       block_dim=config.model.block_dim, n_item_groups=n_item_groups, scorer=ft.scorer, l2=ft.l2)
    share = item_group_share(task.train, task.item_group, n_item_groups)
    controller = Controller(torch.from_numpy(share), n_blocks=config.model.n_blocks, hidden=ft.controller_hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=ft.lr)
    controller_optimizer = torch.optim.Adam(controller.parameters(), lr=ft.controller_lr)
    seen = (task.train + task.valid).tocsr()
    train_sampler = TripleSampler(task.train, exclude=seen)
    valid_sampler = TripleSampler(task.valid, exclude=seen)
    fixed_valid = [torch.from_numpy(a) for a in valid_sampler.sample(len(valid_sampler),
                                                                    np.random.default_rng([seed, 0]))]
    last_loss = Scalar(math.log(2.0))  # the last training loss the controller sees
    uniform = torch.full((n_item_groups, config.model.n_blocks), 1.0 / (n_item_groups * config.model.n_blocks))

    def weights(loss: float) -> torch.Tensor:
        return controller(loss) if ft.use_controller else uniform
    xi = ft.lr if ft.bilevel == "second_order" else 0.0

    def batches(epoch: int):
        rng = np.random.default_rng([seed, epoch])
        for batch in train_sampler.epoch(rng, ft.batch_size):
            valid = valid_sampler.sample(len(batch[0]), rng)
            yield [torch.from_numpy(a) for a in batch], [torch.from_numpy(a) for a in valid]

    def update_controller(train_batch: list[torch.Tensor], valid_batch: list[torch.Tensor]) -> None:
        params = dict(model.named_parameters())
        buffers = {k: v.clone() for k, v in model.named_buffers()}  # the unrolled passes leave BN stats alone
        if xi > 0:
            train_loss = functional_call(model, (params, buffers), (*train_batch, controller(last_loss.value)))
            grads = torch.autograd.grad(train_loss, list(params.values()), create_graph=True)
            params = {k: p - xi * g for (k, p), g in zip(params.items(), grads, strict=True)}
        else:
            params = {k: p.detach() for k, p in params.items()}
        valid_loss = functional_call(model, (params, buffers), (*valid_batch, controller(last_loss.value)))
        controller_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(controller.parameters(), torch.autograd.grad(valid_loss, list(controller.parameters())),
                        strict=True):
            p.grad = g
        controller_optimizer.step()

    def step(batch: tuple[list[torch.Tensor], list[torch.Tensor]]) -> torch.Tensor:
        train_batch, valid_batch = batch
        if ft.use_controller:
            update_controller(train_batch, valid_batch)  # Algorithm 1, lines 2-4
        with torch.no_grad():
            alpha = weights(last_loss.value)
        loss = model(*train_batch, alpha)             # lines 5-9; the loop steps W
        last_loss.value = float(loss.detach())
        return loss

    def validate() -> float:
        with torch.no_grad():
            return float(model(*fixed_valid, weights(last_loss.value)))

    result = fit(model=model, optimizer=optimizer, batches=batches, step=step, validate=validate, mode="min",
                 max_epochs=ft.max_epochs, patience=ft.patience,
                 checkpoint=Path(task.checkpoint) if task.checkpoint else None, resume=task.resume,
                 extra_state={"controller": controller, "controller_optimizer": controller_optimizer,
                              "last_loss": last_loss},
                 keep_best={"controller": controller}, progress=task.progress, desc=f"user group {task.group}")
    with torch.no_grad():
        importance = weights(result.best_score).numpy().astype(np.float64)  # at the best epoch's valid loss
    bn = model.batch_norm
    return GroupResult(
        group=task.group, users=task.users, item_table=model.item_table.detach().numpy().copy(),
        user_vectors=model.user_vectors.detach().numpy().copy(),
        batch_norm={"running_mean": bn.running_mean.numpy().copy(), "running_var": bn.running_var.numpy().copy(),
                    "weight": bn.weight.detach().numpy().copy(), "bias": bn.bias.detach().numpy().copy(),
                    "eps": np.array(bn.eps)},
        importance_weights=importance, best_epoch=result.best_epoch, epochs_run=result.epochs_run,
        best_valid_loss=result.best_score, seconds=result.seconds, history=result.history,
    )
