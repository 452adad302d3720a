"""A trained run as the device will see it: per user group, blocks in unit order, user vectors, and
Eq. 10 scoring at any budget (via :mod:`peel.units`, the code the device runtime runs too).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from peel.budget import Budget
from peel.config import DeviceConfig, PeelConfig
from peel.errors import PeelError
from peel.run_layout import RunLayout
from peel.training.finetune import GroupResult
from peel.training.pretrain import load_pretrained
from peel.units import (
    Selection,
    UnitLayout,
    effective_items,
    random_unit_order,
    select,
    stored_values,
    unit_order,
    user_query,
)


@dataclass
class TrainedRun:
    path: Path
    config: PeelConfig
    pretrained_users: np.ndarray
    pretrained_items: np.ndarray
    item_group: np.ndarray
    user_group: np.ndarray
    groups: list[GroupResult]

    @classmethod
    def load(cls, path: str | Path, device: DeviceConfig | None = None) -> TrainedRun:
        """Load a finished run; ``device`` overrides the run's device options (eq10, blocks, ...)."""
        path = Path(path)
        layout = RunLayout(path)
        if not layout.config.exists():
            raise PeelError(f"{path} is not a run directory (no config.json)")
        config = PeelConfig.from_json(layout.config)
        if device is not None:
            config = dataclasses.replace(config, device=device)
        if not layout.embeddings.exists():
            raise PeelError(f"{path}: stage a has not finished (no {layout.embeddings.name}); "
                            "finish it with peel train --resume")
        users, items = load_pretrained(layout.embeddings)
        if not layout.grouping.exists():
            raise PeelError(f"{path}: stage b has not run (no grouping.npz); finish it with peel train --resume")
        with np.load(layout.grouping, allow_pickle=False) as z:
            item_group, user_group = z["item_group"], z["user_group"]
        n_groups = int(user_group.max()) + 1
        missing = [g for g in range(n_groups) if not layout.group(g).exists()]
        if missing:
            raise PeelError(f"{path}: user groups {missing} are not fine-tuned yet; finish with peel train --resume")
        groups = [GroupResult.load(layout.group(g)) for g in range(n_groups)]
        return cls(path, config, users, items, item_group, user_group, groups)

    @property
    def layout(self) -> UnitLayout:
        m = self.config.model
        return UnitLayout(np.bincount(self.item_group), m.n_blocks, m.block_dim, self.config.device.unit_dtype)

    def unit_order(self, group: int) -> np.ndarray:
        d = self.config.device
        if d.block_selection == "random":
            g_v, n = self.groups[group].importance_weights.shape
            return random_unit_order(g_v, n, seed=self.config.seed + group)
        return unit_order(self.groups[group].importance_weights)

    def blocks(self, group: int) -> np.ndarray:
        """(items, N, d) block vectors a device of this user group scores with: as its bundle stores them
        (device.unit_dtype; the writer rounds the raw table the same way, tests/test_units.py)."""
        choice = self.config.device.blocks
        result = self.groups[group]
        table = {"transformed": result.transformed_blocks, "raw": lambda: result.item_table,
                 "pretrained": lambda: self.pretrained_items}[choice]()
        blocks = np.ascontiguousarray(table, dtype=np.float32).reshape(len(table), self.config.model.n_blocks, -1)
        return stored_values(blocks, self.item_group, self.config.device.unit_dtype)

    def user_vectors(self) -> np.ndarray:
        """(users, D) user vectors as exported to devices."""
        if self.config.device.user_vector == "pretrained":
            return self.pretrained_users.astype(np.float32)
        out = np.empty_like(self.pretrained_users, dtype=np.float32)
        for result in self.groups:
            out[result.users] = result.user_vectors
        return out

    def selection(self, group: int, budget: Budget) -> Selection:
        return select(self.unit_order(group), self.layout, budget.bytes)

    def scorer(self, budget: Budget) -> BudgetScorer:
        return BudgetScorer(self, budget)


class BudgetScorer:
    """Eq. 10 scores under a budget: each user scored with their user group's kept units."""

    def __init__(self, run: TrainedRun, budget: Budget) -> None:
        reading, scale = run.config.device.eq10, run.config.device.eq10_scale
        n_blocks = run.config.model.n_blocks
        self.user_group = run.user_group
        self.queries = torch.from_numpy(user_query(run.user_vectors(), n_blocks, reading))
        self.selections = [run.selection(g, budget) for g in range(len(run.groups))]
        g_v = len(run.layout.item_group_sizes)
        self.items = [torch.from_numpy(effective_items(run.blocks(g), run.item_group,
                                                       s.kept_mask(g_v, n_blocks), reading, scale))
                      for g, s in enumerate(self.selections)]

    def __call__(self, users: np.ndarray) -> torch.Tensor:
        users = np.asarray(users)
        groups = self.user_group[users]
        out = torch.empty(len(users), self.items[0].shape[0])
        for g in np.unique(groups):  # at most G_u matmuls per chunk
            rows = np.flatnonzero(groups == g)
            out[torch.from_numpy(rows)] = self.queries[users[rows]] @ self.items[g].T
        return out
