"""Composed item tables in torch (the compositional baselines): the server's side of
:mod:`peel.device.composed`, which owns the layout, the byte accounting and the device's scoring.

A table is a module whose ``forward(index)`` gives the item vectors of ``index`` (all items when None)
and whose ``tensors()`` are what the export writes, so the device scores what the server trained.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from peel.device.composed import Composition

INIT_STD = 0.1  # the std of a full table's entries (LightGCN's init); composed vectors start at the same scale


class QuotientRemainderTable(nn.Module):
    """DLRM-CE's quotient–remainder trick: item j is Q[j // m] op R[j mod m] (Shi et al. 2020)."""

    def __init__(self, n_items: int, composition: Composition) -> None:
        super().__init__()
        if composition.type != "quotient_remainder":
            raise ValueError(f"QuotientRemainderTable needs a quotient_remainder composition, got {composition.type}")
        self.composition, self.n_items = composition, n_items
        (_, _, q_shape), (_, _, r_shape) = composition.tensor_shapes(n_items)
        self.quotient = nn.Parameter(torch.empty(q_shape))
        self.remainder = nn.Parameter(torch.empty(r_shape))
        # a product of two N(0, s^2) entries has std s^2, a sum of two std s*sqrt(2)
        std = {"mult": math.sqrt(INIT_STD), "add": INIT_STD / math.sqrt(2), "concat": INIT_STD}[composition.op]
        nn.init.normal_(self.quotient, std=std)
        nn.init.normal_(self.remainder, std=std)

    def forward(self, index: torch.Tensor | None = None) -> torch.Tensor:
        index = torch.arange(self.n_items) if index is None else index
        m = self.composition.buckets
        q = self.quotient.index_select(0, torch.div(index, m, rounding_mode="floor"))
        r = self.remainder.index_select(0, torch.remainder(index, m))
        if self.composition.op == "mult":
            return q * r
        return q + r if self.composition.op == "add" else torch.cat([q, r], dim=1)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"qr_quotient": self.quotient.detach().numpy().copy(),
                "qr_remainder": self.remainder.detach().numpy().copy()}


def item_table(n_items: int, composition: Composition) -> nn.Module:
    """The torch module of a composed item table."""
    if composition.type == "quotient_remainder":
        return QuotientRemainderTable(n_items, composition)
    raise ValueError(f"no torch table for composition {composition.type!r} yet")
