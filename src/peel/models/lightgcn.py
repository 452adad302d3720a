"""LightGCN with item embeddings viewed as N blocks of d dims (stage a).

With ``layers = 0`` it is matrix factorization; with ``lambda_div = 0`` plain LightGCN. The same
model and the same loss serve PEEL's pretraining and the fixed-size baselines; with an ``item_table``
(a composed table, peel.models.composed) the item vectors are composed instead of one row per item
(DLRM-CE, LightRec).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from peel.models.graph import propagate
from peel.models.regularizers import diversity


class LightGCN(nn.Module):
    """User and item ego embeddings of D = n_blocks * block_dim, propagated over the graph."""

    def __init__(self, n_users: int, n_items: int, *, n_blocks: int, block_dim: int, layers: int,
                 layer_combination: str = "mean", adjacency: torch.Tensor | None = None,
                 item_table: nn.Module | None = None) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.n_blocks, self.block_dim = n_blocks, block_dim
        self.layers, self.layer_combination = layers, layer_combination
        dim = n_blocks * block_dim
        self.user_embedding = nn.Parameter(torch.empty(n_users, dim))
        nn.init.normal_(self.user_embedding, std=0.1)
        if item_table is None:
            self.item_embedding = nn.Parameter(torch.empty(n_items, dim))
            nn.init.normal_(self.item_embedding, std=0.1)
        elif layers > 0 or n_blocks > 1:
            raise ValueError("a composed item table needs layers = 0 and one block "
                             "(a device composes item vectors, it never propagates)")
        self.item_table = item_table
        if layers > 0 and adjacency is None:
            raise ValueError("LightGCN with layers > 0 needs the normalized adjacency")
        self.adjacency = adjacency
        # per-item dimensions (ESAPN, AutoEmb): item j scores with the first item_dims[j] coordinates of its
        # final vector, what a device holding only those computes (None: every item uses all D)
        self.item_dims: torch.Tensor | None = None
        # a soft (items, D) multiplier of the final item vectors (AutoEmb's search: weights over candidate dims)
        self.item_scale: torch.Tensor | None = None

    def keep_leading(self, width: int) -> None:
        """Keep only the first ``width`` coordinates of every ego embedding (whole blocks), as they are.

        With per-item dims of at most ``width`` nothing past it ever scores: propagation, BPR and L2 act on each
        coordinate alone, so the leading ones train exactly as they would beside the rest (ESAPN, AutoEmb)."""
        if self.item_table is not None or width % self.block_dim or not 0 < width <= self.n_blocks * self.block_dim:
            raise ValueError(f"cannot keep the first {width} of {self.n_blocks} x {self.block_dim} coordinates"
                             + (" of a composed item table" if self.item_table is not None else ""))
        self.user_embedding = nn.Parameter(self.user_embedding.detach()[:, :width].clone())
        self.item_embedding = nn.Parameter(self.item_embedding.detach()[:, :width].clone())
        self.n_blocks = width // self.block_dim

    def item_ego(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Item ego embeddings of ``index`` (all items when None): the table's rows, or composed."""
        if self.item_table is not None:
            return self.item_table(index)
        return self.item_embedding if index is None else self.item_embedding.index_select(0, index)

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(users, items) after propagation and layer combination (and the per-item dims): what scoring uses."""
        if self.layers == 0:
            users, items = self.user_embedding, self.item_ego()
        else:
            ego = torch.cat([self.user_embedding, self.item_embedding])
            final = propagate(self.adjacency, ego, self.layers, self.layer_combination)
            users, items = final.split([self.n_users, self.n_items])  # one backward copy, not two zero-filled
        if self.item_dims is not None:
            items = items * (torch.arange(items.shape[1]) < self.item_dims[:, None])
        if self.item_scale is not None:
            items = items * self.item_scale
        return users, items

    def loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, *,
             l2: float | tuple[float, ...], lambda_div: float, nested: tuple[int, ...] = (),
             kept: tuple[torch.Tensor, torch.Tensor] | None = None, distillation: float = 0.0,
             self_distillation: float = 0.0, nested_weights: tuple[float, ...] = ()) -> torch.Tensor:
        """BPR + l2 * ||batch ego embeddings||^2 / batch - lambda_div * diversity (Eq. 2, methods.md §2).

        ``nested``: block counts p; the loss is then the mean over p of the whole objective of the
        embedding made of the first p blocks (Matryoshka-style): BPR on their dot product plus L2 on
        those blocks, so that every prefix of blocks is itself a trained embedding with its own L2.
        ``l2`` is one weight, or with ``nested`` one per prefix (a small prefix may want more than a
        large one). ``kept``: (positive, negative) leading blocks per triple that a device keeps for each
        item; adds one more view, BPR on those masked dot products (Eq. 10 with no normalizer), with no
        L2 of its own. ``distillation``: the weight of a codebook table's mean squared distance of the
        batch's composed item vectors to its teacher's (LightRec). ``self_distillation``: with ``nested``, the
        weight of each smaller prefix's cross-entropy toward the full prefix's confidence σ(margin) on the same
        pair (its soft label, not trained through), on top of that prefix's BPR. ``nested_weights``: with
        ``nested``, one weight per prefix on its whole objective (BPR, L2, self-distillation), mean 1; () = equal.
        """
        # positives and negatives in one gather: one scatter of the gradient into the item table, not two
        both = torch.cat([positives, negatives])
        final_is_ego = self.layers == 0 and self.item_dims is None and self.item_scale is None
        if final_is_ego:
            # nothing mixes items: only the batch's items are looked up (a composed table composes each
            # distinct one once), not the whole table; an item outside the batch gets no gradient either way
            u, item_rows = self.user_embedding.index_select(0, users), self.item_ego(both)
        else:
            # index_select, not x[index]: its backward is 1.5-3x faster on CPU (no accumulating index_put)
            user_final, item_final = self.final_embeddings()
            u = user_final.index_select(0, users)
            item_rows = item_final.index_select(0, both)
        batch = len(users)
        # (positive, negative) x batch x D in one product; slicing it per side would cost a full-size backward each
        products = u.unsqueeze(0) * item_rows.view(2, batch, -1)
        if nested:
            cumulative = products.view(2, batch, self.n_blocks, self.block_dim).sum(dim=3).cumsum(dim=2)
            positive_cumulative, negative_cumulative = cumulative[0], cumulative[1]
            prefixes = torch.as_tensor(nested, dtype=torch.long) - 1
            margins = (positive_cumulative - negative_cumulative).index_select(1, prefixes)
            if nested_weights and len(nested_weights) != len(nested):
                raise ValueError(f"{len(nested_weights)} nested weights for {len(nested)} nested prefixes")
            weights = torch.as_tensor(nested_weights or (1.0,) * len(nested), dtype=products.dtype)
            views = -F.logsigmoid(margins)
            if self_distillation > 0 and len(nested) > 1:
                target = torch.sigmoid(margins[:, -1:].detach()).expand(-1, len(nested) - 1)
                views = views + F.pad(self_distillation * F.binary_cross_entropy_with_logits(
                    margins[:, :-1], target, reduction="none"), (0, 1))
            views = (views * weights).sum(dim=1) if nested_weights else views.sum(dim=1)
            if kept is not None:
                device = (positive_cumulative.gather(1, (kept[0] - 1)[:, None])
                          - negative_cumulative.gather(1, (kept[1] - 1)[:, None]))
                views = views - F.logsigmoid(device[:, 0])
            n_views = len(nested) + (kept is not None)
            bpr = views.mean() / n_views
        else:
            scores = products.sum(dim=2)
            bpr = -F.logsigmoid(scores[0] - scores[1]).mean()
        if final_is_ego:
            item_ego = item_rows
        else:
            item_ego = self.item_ego(both)
        ego = (self.user_embedding.index_select(0, users), item_ego)
        if nested:
            # block b is in every prefix p > b: its weight is the sum of those prefixes' L2 over the views
            per_prefix = torch.as_tensor(l2 if isinstance(l2, tuple) else (l2,) * len(nested), dtype=products.dtype)
            if len(per_prefix) != len(nested):
                raise ValueError(f"l2 has {len(per_prefix)} weights for {len(nested)} nested prefixes")
            covers = torch.arange(self.n_blocks)[None, :] < torch.as_tensor(nested)[:, None]
            block_l2 = ((weights * per_prefix)[:, None] * covers).sum(dim=0) / n_views
            # e * e, not e.pow(2): its backward is about 1.5x faster on CPU
            block_norms = sum((e * e).view(len(e), self.n_blocks, self.block_dim).sum(dim=(0, 2)) for e in ego)
            loss = bpr + (block_l2 * block_norms).sum() / (2 * batch)
        else:
            if isinstance(l2, tuple):
                raise ValueError("one l2 weight per prefix needs nested prefixes")
            loss = bpr + l2 * sum((e * e).sum() for e in ego) / (2 * batch)
        if distillation > 0 and self.item_table is not None:  # a codebook table's pull toward its teacher
            loss = loss + distillation * self.item_table.distillation(both, item_rows)
        if lambda_div > 0:
            batch_items = torch.unique(both)
            blocks = self.item_embedding[batch_items].view(-1, self.n_blocks, self.block_dim)
            loss = loss - lambda_div * diversity(blocks)
        return loss
