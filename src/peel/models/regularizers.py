"""The diversity-driven regularizer (Eq. 2) in the bounded closed form of methods.md §2."""

from __future__ import annotations

import torch


def diversity(blocks: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over items of sum_{n1<n2} ||a_n1 - a_n2||^2 with each block a_n scaled to unit length.

    ``blocks`` is (items, N, d). Uses sum_{n1<n2} ||a_n1 - a_n2||^2 = N * sum_n ||a_n||^2 - ||sum_n a_n||^2
    (= N^2 - ||sum_n a_n||^2 for unit blocks): O(N * d) per item, no loop over block pairs.
    """
    unit = blocks / blocks.norm(dim=-1, keepdim=True).clamp_min(eps)
    n_blocks = blocks.shape[1]
    total = n_blocks * unit.pow(2).sum(dim=(1, 2)) - unit.sum(dim=1).pow(2).sum(dim=1)
    return total.mean()


def diversity_pairwise(blocks: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The explicit pairwise sum, for tests: same value as :func:`diversity`."""
    unit = blocks / blocks.norm(dim=-1, keepdim=True).clamp_min(eps)
    n_blocks = blocks.shape[1]
    total = torch.zeros(blocks.shape[0], dtype=blocks.dtype)
    for n1 in range(n_blocks):
        for n2 in range(n1 + 1, n_blocks):
            total = total + (unit[:, n1] - unit[:, n2]).pow(2).sum(dim=1)
    return total.mean()
