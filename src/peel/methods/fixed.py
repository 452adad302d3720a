"""Baselines fitted to one budget (methods.md, Baselines): LightGCN, PMF, DLRM-CE, LightRec, ESAPN, AutoEmb.

Each is stage a's code with no diversity regularizer or nesting, described by a :class:`FixedSpec`:
LightGCN propagates, PMF does not (layers = 0); DLRM-CE is PMF with item vectors composed from
quotient–remainder tables, LightRec PMF with codebooks distilled from a full-size LightGCN
(``model.item_table``); ESAPN and AutoEmb are LightGCN with per-item dims found by a search
(:mod:`peel.training.search`). The fitting rule is one for all: the largest size (k dims, or B
codebooks) whose device bytes fit the budget, counting everything a device holds to rank all items for
one user, the user's vector included: (|V| + 1) * k * 4 for a full table, the composed tensors
(:meth:`peel.device.composed.Composition.device_bytes`), or Σ_j dims_j + D floats (fitted after the
search, :func:`peel.training.search.fit_item_dims`). All train with BPR through the one training loop,
with early stopping on validation, into a run directory whose ``method.json`` records the method, the
budget, the dimension and the device bytes. Without a budget the model is full size (the config's D):
the full-size LightGCN of the paper's tables.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from peel.budget import BYTES_PER_FLOAT, Budget, device_bytes, format_bytes
from peel.config import PeelConfig, PretrainConfig
from peel.data.interactions import Interactions
from peel.errors import BudgetError, PeelError
from peel.evaluation import DotProductScorer, Scorer
from peel.methods.protocol import Method, TrainedModel
from peel.run_layout import RunLayout, method_record
from peel.units import stored_values


@dataclass(frozen=True)
class FixedSpec:
    """A fitted method: its label, whether it propagates (LightGCN's layers), how it stores item vectors,
    what the budget fits (``dim``: the largest k; ``codebooks``: the most codebooks B at the config's D and
    W) and whether it is distilled from a full-size LightGCN of the config's D (its teacher)."""

    label: str
    propagates: bool
    item_table: str = "full"
    fits: str = "dim"
    teacher: bool = False
    search: str = ""  # fits "item_dims": the search that gives each item its dims (peel.training.search)

    @property
    def one_table(self) -> bool:
        """One full item table of k dims: what can be stored as a q8 unit (device.unit_dtype=q8)."""
        return self.item_table == "full" and self.fits == "dim"


FIXED_SPECS = {"lightgcn": FixedSpec("LightGCN", True), "pmf": FixedSpec("PMF", False),
               "dlrm-ce": FixedSpec("DLRM-CE", False, "quotient_remainder"),
               "lightrec": FixedSpec("LightRec", False, "codebooks", fits="codebooks", teacher=True),
               "esapn": FixedSpec("ESAPN", True, fits="item_dims", search="esapn"),
               "autoemb": FixedSpec("AutoEmb", True, fits="item_dims", search="autoemb")}
SMALLEST_ITEM_DIM = 2  # per-item dims: the smallest candidate, and the block every candidate is a multiple of
FIXED_METHODS = {name: spec.label for name, spec in FIXED_SPECS.items()}  # method name -> label in tables
Q8_METHODS = tuple(name for name, spec in FIXED_SPECS.items() if spec.one_table)  # may store their table as q8


def fitted_config(config: PeelConfig, method: str, size: int) -> PeelConfig:
    """``config`` fitted to ``size`` (k dims, or B codebooks of the config's D dims): one block, no regularizer
    or nesting, the method's item table, and no propagation unless the method propagates. Per-item dims
    keep the config's D as blocks of the smallest candidate (a device keeps whole blocks)."""
    if method not in FIXED_SPECS:
        raise PeelError(f"unknown fixed-size method {method!r}; known: {', '.join(FIXED_METHODS)}")
    spec, r = FIXED_SPECS[method], dataclasses.replace
    layers = config.model.layers if spec.propagates else 0
    dim, codebooks = (size, config.model.codebooks) if spec.fits == "dim" else (config.model.dim, size)
    n_blocks, block_dim = 1, dim
    if spec.fits == "item_dims":
        codebooks, block_dim = config.model.codebooks, min(SMALLEST_ITEM_DIM, dim)
        if dim % block_dim:
            raise PeelError(f"--method {method}: D = {dim} must be a multiple of the smallest item dim {block_dim}")
        n_blocks = dim // block_dim
    return r(config, model=r(config.model, n_blocks=n_blocks, block_dim=block_dim, layers=layers, embedding_dim=0,
                             item_table=spec.item_table, codebooks=codebooks),
             pretrain=r(config.pretrain, lambda_div=0.0, nested="", allocation_budgets=0, l2_full_prefix=0.0,
                        l2_full_prefix_race=""))


TEACHER_RECIPE = ("l2", "lr", "batch_size", "lr_at_65536", "lr_batch_power")  # PretrainConfig fields


def teacher_config(config: PeelConfig, dim: int) -> PeelConfig:
    """The full-size LightGCN of ``dim`` dims a distilled method trains as its teacher when none is given:
    LightGCN's recipe (the pretraining defaults for ``TEACHER_RECIPE``, which are its tuned L2 and rate),
    not the student's (LightRec's tuned L2 of 0.1 is far too strong for a LightGCN: 0.0225 against 0.0295
    validation NDCG@50 on yelp2018-sub, benchmarks/results/tuning_yelp2018-sub.md), on the run's schedule
    (epochs, validation, seed, threads)."""
    default = PretrainConfig()
    recipe = {name: getattr(default, name) for name in TEACHER_RECIPE}
    base = dataclasses.replace(config, pretrain=dataclasses.replace(config.pretrain, **recipe))
    return fitted_config(base, "lightgcn", dim)


def model_device_bytes(config: PeelConfig, n_items: int) -> int:
    """What a device holds to rank all items for one user with this (one-block) model."""
    composition = config.model.composition(n_items)
    if composition is not None:
        return composition.device_bytes(n_items)
    return device_bytes(n_items, config.model.dim, config.device.unit_dtype)


def fitted_size(n_items: int, budget: Budget, config: PeelConfig | None = None, method: str = "lightgcn") -> int:
    """What the one fitting rule gives ``method``: the largest size (k dims, or B codebooks) whose device bytes
    fit ``budget`` (a full table: (|V| + 1) * k * 4); a budget below the smallest size is refused with it."""
    config = config or PeelConfig()
    spec = FIXED_SPECS[method]
    if spec.fits == "item_dims":  # the dims are fitted after the search; here only the minimum is checked
        from peel.training.search import check_item_dims_budget

        check_item_dims_budget(n_items, budget.bytes, min(SMALLEST_ITEM_DIM, config.model.dim), config.model.dim)
        return config.model.dim
    step = 2 if spec.item_table == "quotient_remainder" and config.model.qr_op == "concat" else 1  # k split in two
    what = "dimension" if spec.fits == "dim" else "codebook"

    def cost(size: int) -> int:
        return model_device_bytes(fitted_config(config, method, size), n_items)

    if cost(step) > budget.bytes:
        smallest = cost(step)
        raise BudgetError(f"budget {budget} is below the smallest a {FIXED_METHODS[method]} model of {n_items:,} items "
                          f"can meet: {smallest:,} bytes ({format_bytes(smallest)}, {step} {what}(s))")
    low, high = 1, max(1, budget.bytes // (step * BYTES_PER_FLOAT))  # cost grows with size by >= 4 bytes a step
    while low < high:  # the largest multiple j of step with cost(j * step) <= budget
        mid = (low + high + 1) // 2
        low, high = (mid, high) if cost(mid * step) <= budget.bytes else (low, mid - 1)
    return low * step


class FixedSizeMethod(Method):
    """LightGCN or PMF with its dimension fitted to the budget it is trained for."""

    elastic = False

    def __init__(self, name: str) -> None:
        self.name, self.label = name, f"{FIXED_METHODS[name]} fitted"

    def fit(self, data: Interactions, out: str | Path, config: PeelConfig, *, budget: Budget | None = None,
            data_path: str | Path | None = None, resume: bool = False, progress: bool = True,
            **options: Any) -> dict[str, Any]:
        from peel.training.pipeline import train

        spec = FIXED_SPECS[self.name]
        teacher = options.pop("teacher", None)
        if teacher and not spec.teacher:
            distilled = ", ".join(n for n, s in FIXED_SPECS.items() if s.teacher)
            raise PeelError(f"--teacher applies to a distilled method ({distilled}), not --method {self.name}")
        if any(options.values()):
            raise PeelError(f"{', '.join('--' + k.replace('_', '-') for k, v in options.items() if v)} "
                            "apply to --method peel only (--stage-a-from also to rule)")
        if budget is None:
            raise PeelError(f"--method {self.name} is fitted to one budget: give --budget, e.g. 5MB-eq")
        if config.device.unit_dtype != "f32" and not spec.one_table:
            raise PeelError(f"device.unit_dtype={config.device.unit_dtype}: of the fitted methods only those with one "
                            f"item table ({', '.join(Q8_METHODS)}) store it quantized; --method {self.name} stores "
                            "float32")
        size = fitted_size(data.n_items, budget, config, self.name)
        fitted = fitted_config(config, self.name, size)
        item_dims = (spec.search, budget.bytes) if spec.search else None
        record = method_record(self.name, budget, fitted.model.dim,  # per-item dims: known after the search
                               None if item_dims else model_device_bytes(fitted, data.n_items))
        teacher_plan = None
        if spec.teacher:  # a full-size LightGCN of D dims: given, or trained into RUN/teacher first
            record.update(codebooks=size, teacher=str(teacher) if teacher else "teacher")
            teacher_plan = (Path(teacher) if teacher else None, teacher_config(config, fitted.model.dim))
        return train(data, out, fitted, data_path=data_path, resume=resume, progress=progress, stop_after="pretrain",
                     method=record, teacher=teacher_plan, item_dims=item_dims)

    def load(self, layout: RunLayout, *, overrides: list[str] | None = None) -> FixedSizeModel:
        if overrides:
            raise PeelError(f"{layout.root} is a {self.label} run: --set device.* applies to PEEL runs only")
        return FixedSizeModel(self.name, layout)


class FixedSizeModel(TrainedModel):
    """A fixed-size model: its final user and item vectors, scored by the dot product."""

    elastic = False

    def __init__(self, method: str, layout: RunLayout) -> None:
        from peel.training.pretrain import load_item_tensors, load_pretrained

        info = layout.read_method() or {}
        if not layout.embeddings.exists():
            raise PeelError(f"{layout.root}: training has not finished (no {layout.embeddings.name}); "
                            "finish it with peel train --resume")
        self.method, self.layout = method, layout
        self.user_vectors, self.item_vectors = load_pretrained(layout.embeddings)
        self.dim = int(self.item_vectors.shape[1])
        # q8 (device.unit_dtype): the table as its bundle stores it, one unit with one scale; scored and charged so
        self.unit_dtype = layout.read_config().device.unit_dtype
        one_unit = np.zeros(len(self.item_vectors), dtype=np.int64)
        self.stored_items = stored_values(self.item_vectors[:, None, :], one_unit, self.unit_dtype)[:, 0, :]
        # a composed item table (DLRM-CE): what the export writes; item_vectors are its composition
        self.composition = layout.read_config().model.composition(len(self.item_vectors))
        self.item_tensors = load_item_tensors(layout.embeddings)
        self.item_dims = self.item_tensors.pop("item_dims", None)  # per-item dims (ESAPN, AutoEmb)
        budget_bytes = info.get("budget_bytes")
        self.fitted_budget = None if budget_bytes is None else Budget(int(budget_bytes), info.get("budget") or "")
        c = self.composition
        size = f"D={self.dim}" + ("" if c is None else f", m={c.buckets}" if c.type == "quotient_remainder"
                                  else f", B={c.codebooks}, W={c.codewords}")
        if self.item_dims is not None:
            size = f"D<={self.dim}, mean {self.item_dims.mean():.1f}"
        self.label = (f"{FIXED_METHODS[method]} fitted ({size})" if self.fitted_budget is not None
                      else f"{FIXED_METHODS[method]} (full size, {size})")

    def device_bytes(self, budget: Budget | None) -> int:
        if self.item_dims is not None:
            from peel.training.search import item_dims_bytes

            return item_dims_bytes(self.item_dims, self.dim)
        if self.composition is not None:
            return self.composition.device_bytes(len(self.item_vectors))
        return device_bytes(len(self.item_vectors), self.dim, self.unit_dtype)

    def scorer(self, budget: Budget | None) -> Scorer:
        return DotProductScorer(self.user_vectors, self.stored_items)

    def export(self, out: str | os.PathLike[str], data: Interactions, *, max_budget: Budget | None = None,
               groups: list[int] | None = None, history: bool = True, overwrite: bool = False) -> Path:
        from peel.export.export import export_fixed

        if max_budget is not None or groups not in (None, [0]):
            raise PeelError(f"{self.layout.root} is a {self.label} run: one bundle at the budget it was fitted to "
                            "(--max-budget and --groups apply to PEEL runs)")
        return export_fixed(self.layout.root, self.user_vectors, self.item_vectors, out, data=data, method=self.method,
                            history=history, overwrite=overwrite, composition=self.composition,
                            item_tensors=self.item_tensors, item_dims=self.item_dims,
                            block_dim=self.layout.read_config().model.block_dim, unit_dtype=self.unit_dtype)
