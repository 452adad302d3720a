"""Composed item tables in torch (the compositional baselines): the server's side of
:mod:`peel.device.composed`, which owns the layout, the byte accounting and the device's scoring.

A table is a module whose ``forward(index)`` gives the item vectors of ``index`` (all items when None)
and whose ``tensors()`` are what the export writes, so the device scores what the server trained.
"""

from __future__ import annotations

import math
from typing import Any

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




class CodebookTable(nn.Module):
    """LightRec's composite codes (Lian et al. 2020): item j is Σ_b C_b[c_b(j)], B codebooks of W codewords.

    Codes are chosen by residual quantization of a trainable encoder vector e_j (initialized from the
    teacher's item vector): codebook b takes the codeword nearest to what codebooks 0..b-1 left of e_j.
    Training is straight-through: the forward value uses the hard codes (exactly what a device composes),
    the backward pass the softmax over negative squared distances, so the codes, codewords and encoder
    learn jointly. With a teacher, codebook b starts as k-means of the teacher items' residuals, and
    :meth:`distillation` pulls each composed vector toward the teacher's.
    """

    def __init__(self, n_items: int, composition: Composition, teacher: torch.Tensor | None = None) -> None:
        super().__init__()
        if composition.type != "codebooks":
            raise ValueError(f"CodebookTable needs a codebooks composition, got {composition.type}")
        self.composition, self.n_items = composition, n_items
        b, w, dim = composition.codebooks, composition.codewords, composition.dim
        self.encoder = nn.Parameter(torch.empty(n_items, dim))
        self.codebooks = nn.Parameter(torch.empty(b, w, dim))
        if teacher is None:
            nn.init.normal_(self.encoder, std=INIT_STD)
            nn.init.normal_(self.codebooks, std=INIT_STD / math.sqrt(b))
            self.register_buffer("teacher", None)
        else:
            if tuple(teacher.shape) != (n_items, dim):
                raise ValueError(f"teacher item vectors must be ({n_items}, {dim}), got {tuple(teacher.shape)}")
            with torch.no_grad():
                self.encoder.copy_(teacher)
                self.codebooks.copy_(residual_kmeans(teacher, b, w))
            self.register_buffer("teacher", teacher.clone())

    def forward(self, index: torch.Tensor | None = None) -> torch.Tensor:
        if index is not None and len(index) > 1:
            # a batch repeats items (positives, negatives): compose each distinct item once, B x W distances each
            distinct, inverse = torch.unique(index, return_inverse=True)
            if len(distinct) < len(index):
                return self._compose(self.encoder.index_select(0, distinct)).index_select(0, inverse)
        return self._compose(self.encoder if index is None else self.encoder.index_select(0, index))

    def _compose(self, encoded: torch.Tensor) -> torch.Tensor:
        if self.training:
            return ResidualQuantize.apply(encoded, self.codebooks)
        residual = encoded.clone()
        for book in self.codebooks:  # B is small; each step is one (items, W) matrix of closeness
            residual.sub_(book.index_select(0, _nearest(residual, book)))
        return encoded - residual

    def codes(self, chunk: int = 8192) -> np.ndarray:
        """The hard codes (items, B) of every item, as the forward pass chooses them."""
        out = np.empty((self.n_items, self.composition.codebooks), dtype=np.int64)
        with torch.no_grad():
            for start in range(0, self.n_items, chunk):
                residual = self.encoder[start: start + chunk].clone()
                for b, book in enumerate(self.codebooks):
                    hard = _nearest(residual, book)
                    out[start: start + chunk, b] = hard.numpy()
                    residual.sub_(book.index_select(0, hard))
        return out

    def distillation(self, index: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Mean squared distance of the composed ``vectors`` of ``index`` to the teacher's (0 without one)."""
        if self.teacher is None:
            return vectors.new_zeros(())
        return (vectors - self.teacher.index_select(0, index)).pow(2).sum(dim=1).mean()

    def tensors(self) -> dict[str, np.ndarray]:
        from peel.device.composed import pack_codes

        books = self.codebooks.detach().numpy().reshape(-1, self.composition.dim).copy()
        return {"codebooks": books, "codes": pack_codes(self.codes(), self.composition.code_bits)}


class ResidualQuantize(torch.autograd.Function):
    """Σ_b chosen_b of residual quantization with straight-through gradients, in closed form.

    Forward: codebook b takes the codeword nearest to r_b, the residual codebooks 0..b-1 left
    (r_0 = encoded), and r_{b+1} = r_b - chosen_b; the output is encoded - r_B, what a device composes.
    Backward: as if r_{b+1} = r_b - chosen_b - soft_b with soft_b = softmax(-|r_b - C_b|²) @ C_b the
    mixture that stands in for the discrete choice. With h the gradient at r_{b+1}, s = h C_bᵀ, p the
    softmax, o the one-hot codes and q = p ⊙ (s - (p·s)), the gradient at r_b is h - 2 q C_b, and C_b gets
    2 C_b ⊙ Σ_n q - (p + o)ᵀh - 2qᵀr_b. Only the codes and the last residual are kept; each r_b is rebuilt
    backwards (r_b = r_{b+1} + chosen_b). Autograd through the same mixtures (what this replaced;
    tests/device/test_composed.py keeps it as the reference) recomputed every codebook's graph.
    Every (items, D) pass is memory-bound at small W, so the loops update r and h in place and fold each
    codebook's gradient into matrix products: at yelp2018-sub's 25MB-eq (B = 297, W = 16) a training step
    takes 1.84 s against 4.57 s before (benchmarks/results/step_time_yelp2018-sub_lightrec_inplace.md).
    Rows are independent but for the codewords' gradient, so both passes go ROWS_PER_PASS rows at a time
    through every codebook: r and h of one such slice stay in the core's cache across the B codebooks
    instead of streaming the batch from memory B times. That matters when other jobs share the memory bus:
    at amazon-book-sub's 25MB-eq (B = 421) a 1-thread step beside two training jobs takes 21.0 s against
    38.3 s before, and the same on an idle machine at 2 threads (12.4 s)
    (benchmarks/results/step_time_amazon-book-sub_lightrec_rows_per_pass*.md). The codebooks are unbound once,
    not per slice, codes are max's indices (not argmax's, slower at W = 16) and the codes' one-hot term joins p's
    product instead of an index_add: there, beside two training jobs, 11.0 s of CPU a step against 12.7 s
    (wall 16.7 s against 18.3 s; step_time_amazon-book-sub_lightrec_unbind_fold_1thread.md).
    """

    @staticmethod
    def forward(ctx: Any, encoded: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
        norms = codebooks.pow(2).sum(dim=2)
        residual = torch.empty_like(encoded)
        codes = torch.empty(len(codebooks), len(encoded), dtype=torch.long)
        books, book_norms = codebooks.unbind(0), norms.unbind(0)  # once: iterating a tensor unbinds it anew
        for rows in _slices(len(encoded)):
            r = encoded[rows].clone()
            for b, book in enumerate(books):
                hard = codes[b, rows] = _nearest(r, book, book_norms[b])
                r.sub_(book.index_select(0, hard))
            residual[rows] = r
        ctx.save_for_backward(codebooks, residual, codes)
        return encoded - residual

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codebooks, residual, codes = ctx.saved_tensors
        norms = codebooks.pow(2).sum(dim=2)
        grad_books = torch.zeros_like(codebooks)
        grad_encoded = torch.empty_like(grad)
        books, book_norms, book_grads = codebooks.unbind(0), norms.unbind(0), grad_books.unbind(0)
        for rows in _slices(len(grad)):
            r = residual[rows].clone()  # rebuilt in place, codebook by codebook
            h = -grad[rows]  # at the last residual: the output is encoded - r_B
            ones = h.new_ones(len(h), 1)
            for b in range(len(codebooks) - 1, -1, -1):
                book, hard = books[b], codes[b, rows]
                r.add_(book.index_select(0, hard))
                p = torch.softmax(_closeness(r, book, book_norms[b]), dim=1)
                s = h @ book.T
                q = s.sub_((p * s).sum(dim=1, keepdim=True)).mul_(p)
                p.scatter_add_(1, hard[:, None], ones)  # p + o: the codes' one-hot term joins p's product
                (book_grads[b].addcmul_(book, q.sum(dim=0)[:, None], value=2).addmm_(p.T, h, alpha=-1)
                 .addmm_(q.T, r, alpha=-2))
                h.addmm_(q, book, alpha=-2)
            grad_encoded[rows] = h.add_(grad[rows])
        return grad_encoded, grad_books


ROWS_PER_PASS = 1024  # 2 x 512 KiB of r and h at D = 128: within a core's L2 cache


def _slices(n: int) -> list[slice]:
    return [slice(start, start + ROWS_PER_PASS) for start in range(0, n, ROWS_PER_PASS)]


def _closeness(x: torch.Tensor, book: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
    """(items, W) closeness 2 x·c - |c|² of the rows of ``x`` to the codewords of ``book``: the negative squared
    distance up to each row's |x|², so the same argmax and softmax, without |x|²'s rounding or its pass
    (``norms``: the codewords' |c|², when already computed)."""
    return torch.addmm(book.pow(2).sum(dim=1) if norms is None else norms, x, book.T, beta=-1, alpha=2)


def _nearest(x: torch.Tensor, book: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
    """The index of the codeword of ``book`` nearest to each row of ``x`` (the first of a tie, as argmax;
    max's indices are the same and twice as fast on CPU for rows of W = 16)."""
    return _closeness(x, book, norms).max(dim=1).indices


def residual_kmeans(vectors: torch.Tensor, codebooks: int, codewords: int, iterations: int = 10) -> torch.Tensor:
    """(B, W, D) codebooks by residual k-means: codebook b clusters what codebooks 0..b-1 left of ``vectors``.
    Starts from distinct random rows (torch's seeded generator); an empty cluster keeps its codeword."""
    residual = vectors.detach().clone()
    books = []
    for _ in range(codebooks):
        start = torch.randperm(len(residual))[:codewords]
        book = residual[start].clone()
        if len(book) < codewords:  # fewer items than codewords: the spare codewords start at zero
            book = torch.cat([book, book.new_zeros(codewords - len(book), book.shape[1])])
        for _ in range(iterations):
            assign = _nearest(residual, book)
            sums = torch.zeros_like(book).index_add_(0, assign, residual)
            counts = torch.bincount(assign, minlength=codewords).to(book.dtype)[:, None]
            book = torch.where(counts > 0, sums / counts.clamp_min(1), book)
        residual = residual - book[_nearest(residual, book)]
        books.append(book)
    return torch.stack(books)


def item_table(n_items: int, composition: Composition, teacher: torch.Tensor | None = None) -> nn.Module:
    """The torch module of a composed item table (``teacher``: item vectors a codebook table distils)."""
    if composition.type == "quotient_remainder":
        return QuotientRemainderTable(n_items, composition)
    return CodebookTable(n_items, composition, teacher)
