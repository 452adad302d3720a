"""Stage b models (paper §IV-C, methods.md §5-6): the group model W and the controller V."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupModel(nn.Module):
    """One user group's recommender: a trainable copy of the item table and the group's user vectors.

    Blocks are transformed by BatchNorm (per block, d features: one BatchNorm1d over D features has
    exactly those statistics) and tanh (Eq. 4), weighted by alpha_{g,n} * G_v * N (uniform weights
    give 1), and scored by an MLP on [u, v'] (Eqs. 5-6) or by the block-aligned dot product u . v'.
    ``forward`` returns the BPR loss, so ``torch.func.functional_call`` can unroll one step of it.
    """

    def __init__(self, item_table: torch.Tensor, user_vectors: torch.Tensor, item_group: torch.Tensor, *,
                 n_blocks: int, block_dim: int, n_item_groups: int, scorer: str = "mlp", l2: float = 1e-4) -> None:
        super().__init__()
        dim = n_blocks * block_dim
        self.item_table = nn.Parameter(item_table.clone())
        self.user_vectors = nn.Parameter(user_vectors.clone())
        self.batch_norm = nn.BatchNorm1d(dim)
        self.register_buffer("item_group", item_group.clone(), persistent=False)
        self.n_blocks, self.block_dim, self.n_item_groups = n_blocks, block_dim, n_item_groups
        self.scorer, self.l2 = scorer, l2
        if scorer == "mlp":
            self.mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.Tanh(), nn.Linear(dim, dim // 2), nn.Tanh(),
                                     nn.Linear(dim // 2, 1))

    def transformed(self, items: torch.Tensor) -> torch.Tensor:
        """ê_j = tanh(BatchNorm(e_j)) for the given items (Eq. 4)."""
        return torch.tanh(self.batch_norm(self.item_table.index_select(0, items)))

    def weighted(self, blocks: torch.Tensor, items: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """v'_j = [alpha_{g(j),n} * G_v * N * ê_j^n]_n."""
        scale = (alpha * (self.n_item_groups * self.n_blocks))[self.item_group[items]]  # (B, N)
        return blocks * scale.repeat_interleave(self.block_dim, dim=1)

    def score(self, users: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
        u = self.user_vectors.index_select(0, users)  # index_select: a faster backward than x[index] on CPU
        if self.scorer == "mlp":
            return self.mlp(torch.cat([u, item_vectors], dim=1)).squeeze(1)
        return (u * item_vectors).sum(dim=1)

    def forward(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                alpha: torch.Tensor) -> torch.Tensor:
        """BPR loss of a triple batch under importance weights ``alpha`` (G_v x N), plus L2."""
        items = torch.cat([positives, negatives])
        blocks = self.weighted(self.transformed(items), items, alpha)  # one BatchNorm batch for both
        pos, neg = blocks[: len(users)], blocks[len(users):]
        bpr = -F.logsigmoid(self.score(users, pos) - self.score(users, neg)).mean()
        reg = (self.user_vectors.index_select(0, users).pow(2).sum()
               + self.item_table.index_select(0, items).pow(2).sum()) / (2 * len(users))
        return bpr + self.l2 * reg


class Controller(nn.Module):
    """Importance weights from context (methods.md §6).

    Input: the group's share of training interactions in each item group (G_v numbers) and the
    current mean training loss; two tanh hidden layers; softmax over all N * G_v outputs.
    """

    def __init__(self, item_group_share: torch.Tensor, *, n_blocks: int, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("item_group_share", item_group_share.float().clone())
        n_groups = len(item_group_share)
        self.n_item_groups, self.n_blocks = n_groups, n_blocks
        self.net = nn.Sequential(nn.Linear(n_groups + 1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, n_groups * n_blocks))

    def forward(self, loss: torch.Tensor | float) -> torch.Tensor:
        context = torch.cat([self.item_group_share, torch.as_tensor([float(loss)], dtype=torch.float32)])
        return torch.softmax(self.net(context), dim=0).view(self.n_item_groups, self.n_blocks)
