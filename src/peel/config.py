"""All PEEL hyperparameters: one frozen dataclass per stage, paper / methods.md defaults.

The CLI only parses into these; an unknown key or a value of the wrong type is refused. Each run
writes ``config.json`` beside its outputs and a resumed run checks it is unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peel.device.composed import COMPOSITIONS, MAX_CODEWORDS, QR_OPS, Composition
from peel.errors import ConfigError
from peel.units import EQ10_READINGS, EQ10_SCALES, UNIT_DTYPES


@dataclass(frozen=True)
class ModelConfig:
    n_blocks: int = 16          # N
    block_dim: int = 8          # d; D = N * d
    layers: int = 3             # LightGCN propagation layers (0 = matrix factorization)
    layer_combination: str = "mean"  # "mean" (LightGCN) or "last" (the paper's text)
    embedding_dim: int = 0      # D; 0 = n_blocks * block_dim, else it must equal that
    # How item vectors are stored (the compositional baselines, methods.md): "full", one row per item;
    # "quotient_remainder" (DLRM-CE) or "codebooks" (LightRec), which need layers = 0 and one block, since
    # a device can only hold what it can compose (no propagated item table)
    item_table: str = "full"
    qr_op: str = "mult"         # quotient_remainder: how Q[j // m] and R[j mod m] combine (mult, add, concat)
    # quotient_remainder: m, rows of R and items per row of Q (0 = ⌈√|V|⌉, the fewest rows in all); the
    # tables then hold about |V|/m rows, so a budget buys about m times the dims of a full table
    qr_buckets: int = 2
    codebooks: int = 4          # codebooks: B
    codewords: int = 256        # codebooks: W per codebook (codes of ⌈log2 W⌉ bits)

    @property
    def dim(self) -> int:
        """D = N * d."""
        return self.n_blocks * self.block_dim

    def composition(self, n_items: int) -> Composition | None:
        """The composed item table of ``n_items`` items (None: one row per item)."""
        if self.item_table == "full":
            return None
        if self.item_table == "quotient_remainder":
            buckets = self.qr_buckets or math.isqrt(max(n_items, 1) - 1) + 1  # ⌈√|V|⌉
            return Composition(self.item_table, self.dim, op=self.qr_op, buckets=buckets)
        return Composition(self.item_table, self.dim, codebooks=self.codebooks, codewords=self.codewords)


def _comma_separated(text: str, convert: type, key: str, what: str) -> list[Any]:
    """The values of a comma-separated config string, or a ConfigError naming ``key`` and what it expects."""
    try:
        return [convert(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"{key} must be comma-separated {what}, got {text!r}") from None


@dataclass(frozen=True)
class PretrainConfig:
    # 0 = auto (the default): derived from the number of training interactions by resolve_for_data, so
    # a small dataset still gets enough steps per epoch and a large one few, cheap full-graph steps.
    lr: float = 0.0
    batch_size: int = 0
    lr_at_65536: float = 1e-2   # auto lr = this * (batch / 65536) ** lr_batch_power; the fitted LightGCN's rate
    # How the auto lr follows the auto batch: 0 (the default) the same rate at any batch, 0.5 the square-root
    # rule. The benchmark datasets' batches are 65536 and 32768, where the two rules agree or differ by 1.4x
    # (yelp2018-sub: 7.1e-3 and 1.4e-2 within 1% of each other on validation); on ml-100k (batch 8192) the
    # square-root rule's 3.5e-3 is 3-6% below 1e-2 on validation NDCG@50 (three seeds each,
    # benchmarks/results/defaults_ml-100k.md)
    lr_batch_power: float = 0.0
    # L2 on the batch's ego embeddings, as in LightGCN; 1e-2 is the fitted LightGCN's tuned value at
    # 5MB-eq on both benchmark datasets (tuning_*.md), with nesting that of the smallest prefix
    l2: float = 1e-2
    # With nested blocks: the L2 of the full prefix (0 = l2); prefix p then gets l2 interpolated
    # geometrically in p from l2 at the smallest prefix to this at the full one, since a small embedding
    # wants more regularization than a large one (the fitted LightGCN's tuning: tuning_*.md). Datasets
    # differ here: on validation amazon-book-sub prefers 1e-4, yelp2018-sub 1e-3 (elastic_probe_*.md);
    # 1e-4 is the default because its worst budget against the fitted LightGCN is the better of the two.
    l2_full_prefix: float = 1e-4
    # With nested blocks: other full-prefix L2 values raced against l2_full_prefix on validation ("" = off).
    # Each candidate trains race_epochs epochs from the same seed; the one with the best validation score so
    # far then trains on, so the run is exactly a run at that value, and every other candidate costs
    # race_epochs epochs. At 90 epochs the mean validation Recall@50 already ranks 1e-4 and 1e-3 the way
    # the whole runs do on both benchmark datasets (at 60 yelp2018-sub's are still tied); the race picks
    # 1e-3 on yelp2018-sub and 1e-4 on amazon-book-sub, each the one that beats the fitted LightGCN there
    # (benchmarks/results/compare_*.md). Off, stage a is 90 epochs shorter; set the dataset's value then.
    l2_full_prefix_race: str = "1e-3"
    race_epochs: int = 90
    # Diversity regularizer weight (methods.md §2 says 1e-3, "chosen on validation from {0, 1e-4, 1e-3, 1e-2}").
    # Validation on amazon-book-sub picks 0 at every budget (benchmarks/results/pipeline_amazon-book-sub.md),
    # so the regularizer is off by default; set 1e-3 for the paper's PEEL.
    lambda_div: float = 0.0
    max_epochs: int = 400
    patience: int = 0           # evaluations without improvement of validation Recall@50 (0 = auto)
    eval_every: int = 0         # epochs between validations (0 = auto)
    eval_users: int = 10000     # fixed sample of validation users for early stopping (0 = all)
    lr_decay: float = 1.0       # multiply lr by this after lr_patience validations without improvement (1 = off)
    lr_patience: int = 2
    # Nested blocks: BPR averaged over the dot products of these leading block counts ("1,2,4,8,16"; "" = off,
    # the paper's stage a), so every prefix of an item's blocks is itself a trained embedding (issue 10).
    nested: str = "auto"        # "auto": 1, 2, 4, ... up to and including model.n_blocks
    # With nested blocks, also train on the allocations a device holds: per triple, one of this many budgets
    # (geometric from the minimum to the full table), each item scored with the leading blocks its item
    # group keeps there under the global density order; trains the score scale across item groups that keep
    # different numbers of blocks (0 = off).
    allocation_budgets: int = 0
    # With a teacher (LightRec): the weight of the mean squared distance of the batch's composed item vectors
    # to the teacher's, on top of BPR
    distillation: float = 1.0
    # With nested blocks: the weight of each smaller prefix's cross-entropy toward the full prefix's confidence
    # on the same (user, positive, negative) triple, beside its BPR (0 = off)
    self_distillation: float = 0.0
    # With nested blocks: prefix p's share of the loss (its BPR and its L2) grows as p ** this, normalized to
    # a mean of 1 over the prefixes, so > 0 leans toward large budgets, < 0 toward small ones (0 = equal)
    nested_weight_power: float = 0.0
    # The multi-dimensional baselines (ESAPN, AutoEmb): epochs of the per-item dims search before training
    search_epochs: int = 30

    def nested_blocks(self, n_blocks: int) -> tuple[int, ...]:
        """The block counts of ``nested`` (ascending, within [1, n_blocks]); () when off."""
        if not self.nested.strip():
            return ()
        if self.nested.strip() == "auto":
            return tuple(sorted({2 ** i for i in range(n_blocks.bit_length()) if 2 ** i <= n_blocks} | {n_blocks}))
        counts = tuple(sorted(set(_comma_separated(self.nested, int, "pretrain.nested",
                                                   "block counts such as 1,2,4,8,16"))))
        if not counts or counts[0] < 1 or counts[-1] > n_blocks:
            raise ConfigError(f"pretrain.nested block counts must lie in [1, {n_blocks}] (model.n_blocks), "
                              f"got {self.nested!r}")
        return counts

    def race_candidates(self, n_blocks: int) -> tuple[float, ...]:
        """The full-prefix L2 values raced (``l2_full_prefix`` first); () when there is no race."""
        if not self.nested_blocks(n_blocks) or not self.l2_full_prefix_race.strip():
            return ()
        others = _comma_separated(self.l2_full_prefix_race, float, "pretrain.l2_full_prefix_race",
                                  "L2 values such as 1e-3")
        if any(not math.isfinite(v) or v < 0 for v in others):
            raise ConfigError(f"pretrain.l2_full_prefix_race values must be finite and >= 0, "
                              f"got {self.l2_full_prefix_race!r}")
        candidates = tuple(dict.fromkeys([self.l2_full_prefix, *others]))
        return candidates if len(candidates) > 1 else ()

    def nested_l2(self, n_blocks: int) -> tuple[float, ...]:
        """The L2 weight of every nested prefix (see ``l2_full_prefix``); () when nesting is off."""
        counts = self.nested_blocks(n_blocks)
        if not counts:
            return ()
        last = self.l2_full_prefix or self.l2
        if counts[0] == counts[-1] or last == self.l2:
            return (self.l2,) * len(counts)
        position = [math.log(p / counts[0]) / math.log(counts[-1] / counts[0]) for p in counts]
        return tuple(self.l2 * (last / self.l2) ** t for t in position)

    def nested_weights(self, n_blocks: int) -> tuple[float, ...]:
        """The loss weight of every nested prefix (see ``nested_weight_power``), mean 1; () when all are equal."""
        counts = self.nested_blocks(n_blocks)
        if not counts or self.nested_weight_power == 0:
            return ()
        raw = [p ** self.nested_weight_power for p in counts]
        return tuple(len(raw) * w / sum(raw) for w in raw)

    def without_lr_rule(self) -> PretrainConfig:
        """This config with the auto-lr rule (``lr_at_65536``, ``lr_batch_power``) restated as ``lr`` at any
        batch once ``lr`` is set: the rule then changes nothing, so two runs that differ only there trained
        the same way."""
        return dataclasses.replace(self, lr_at_65536=self.lr, lr_batch_power=0.0) if self.lr else self

    def resolved(self, n_train: int, n_blocks: int) -> PretrainConfig:
        """This config with every auto field (0) derived from the number of training interactions (and,
        for the validation cadence, from whether ``n_blocks`` blocks train nested).

        Chosen on validation (benchmarks/results/defaults_*.md): a batch of about n_train / 8 (a power
        of two in [1024, 65536]: about eight full-graph steps per epoch, so a small dataset still gets
        several steps and a large one few, cheap ones); Adam's learning rate ``lr_at_65536`` at any batch
        (``lr_batch_power`` = 0; 0.5 scales it with the square root of the batch); one validation every
        ceil(n_train / 150,000) epochs (a validation pass on the capped user sample costs about the same
        on any dataset, while an epoch grows with n_train); patience of about 50 epochs (validation Recall@50
        climbs slowly with plateaus of 20-25 epochs: with 20, the fitted LightGCN on yelp2018-sub stopped at
        epoch 200 at 0.0956 where it reached 0.0995 by the 300-epoch cap, benchmarks/results/compare_*.md).
        Nested blocks validate NESTED_EVAL_FACTOR times less often: each validation ranks three prefixes, and
        the elastic model keeps improving to the 400-epoch cap on amazon-book-sub, where validating every 12
        epochs instead of 3 (patience 5) picks the same epoch in about the time 300 epochs took
        (benchmarks/results/elastic_probe_amazon-book-sub.md).
        """
        batch = self.batch_size or int(2 ** min(16, max(10, round(math.log2(max(n_train, 1) / 8)))))
        lr = self.lr or round(self.lr_at_65536 * (batch / 65536) ** self.lr_batch_power, 6)
        factor = NESTED_EVAL_FACTOR if len(self.nested_blocks(n_blocks)) > 1 else 1
        eval_every = self.eval_every or factor * min(5, max(1, math.ceil(n_train / 150_000)))
        patience = self.patience or math.ceil(50 / eval_every)
        return dataclasses.replace(self, batch_size=batch, lr=lr, eval_every=eval_every, patience=patience)


NESTED_EVAL_FACTOR = 4  # the auto validation cadence of nested blocks, in multiples of an unnested run's
PRETRAIN_AUTO = ("lr", "batch_size", "eval_every", "patience")  # 0 = derived from the data (resolve_for_data)


@dataclass(frozen=True)
class GroupingConfig:
    item_groups: int = 20       # G_v
    user_groups: int = 15       # G_u
    item_grouping: str = "popularity"  # "popularity" or "random" (ablation)
    user_grouping: str = "kmeans"      # "kmeans" or "single" (ablation)
    kmeans_n_init: int = 4
    min_valid_users: int = 2    # smaller user groups are merged into the nearest centroid's group


@dataclass(frozen=True)
class FinetuneConfig:
    lr: float = 1e-3            # table / user vectors / BatchNorm / MLP; also xi of the one-step unroll
    controller_lr: float = 1e-3
    batch_size: int = 4096
    l2: float = 1e-4
    # at most 10 epochs: on ml-100k validation NDCG@50 is the same as with 20 (benchmarks/results/defaults_*.md)
    max_epochs: int = 10
    patience: int = 3           # epochs without improvement of the group's validation loss
    controller_hidden: int = 64
    # "first_order" (xi = 0; the default: the same validation NDCG@50 as second order on amazon-book-sub
    # at half the stage-b time) or "second_order" (methods.md's one-step unroll)
    bilevel: str = "first_order"
    scorer: str = "mlp"         # stage_b_scorer: "mlp" (paper) or "dot" (block-aligned dot product)
    use_controller: bool = True  # False: uniform importance weights (the 'no importance weight' ablation)
    # "controller": the paper's stage b (Algorithm 1); "density": no training, the unit order of a nested
    # stage a by value per byte: weight(g, b) = share of the user group's training interactions in item
    # group g x density_decay^b, so blocks of an item group come in order and popular groups get more.
    importance: str = "density"
    # A share twice as large earns log(2) / log(1 / decay) more blocks: 6.6 at 0.9, 1.9 at 0.7. Validation
    # NDCG@50 at 5/10/25MB-eq of the same stage a (benchmarks/results/density_decay_*.md), 0.9 against 0.7:
    # amazon-book-sub +3.5% / +4.7% / +2.4%, yelp2018-sub +1.0% / +1.2% / 0.0%.
    density_decay: float = 0.9


@dataclass(frozen=True)
class DeviceConfig:
    eq10: str = "masked"                 # "masked" or "fold" (methods.md §11)
    eq10_scale: str = "none"             # "none", "sqrt" or "paper" (s_max/|S_g|): see peel.units.EQ10_SCALES
    # The item blocks a device scores with: "raw" (the fine-tuned table), "transformed" (BatchNorm + tanh
    # folded in, methods.md §11) or "pretrained". "raw" by validation NDCG@50 on amazon-book-sub (the mean
    # over 5/10/25MB-eq; benchmarks/results/pipeline_amazon-book-sub.md).
    blocks: str = "raw"
    user_vector: str = "finetuned"       # "finetuned" or "pretrained"
    block_selection: str = "weights"     # "weights" or "random" (ablation)
    # How a bundle stores units, and so what a budget charges per unit: "f32" (|V_g| * d * 4 bytes) or "q8"
    # (|V_g| * d int8 + one float32 scale; peel.units.UNIT_DTYPES). Evaluation scores what the device stores.
    unit_dtype: str = "f32"


@dataclass(frozen=True)
class RuleConfig:
    """RULE (methods.md): a performance estimator over item-group block selections, then an aging evolution
    per budget. The defaults are methods.md's lineage constants (P, C, S) and its label protocol."""

    structures: int = 2000      # random structures labelled for the estimator (methods.md: 1,000-5,000)
    label_users: int = 1000     # seeded sample of validation users the labels are measured on (all if fewer)
    held_out: float = 0.2       # share of the labelled structures held out to pick the estimator
    estimator: str = "auto"     # "auto" (the better held-out Spearman of the two), "nfm" or "mlp"
    estimator_epochs: int = 400  # full-batch Adam epochs of each estimator
    population: int = 20        # P: random feasible structures the evolution starts from
    cycles: int = 50            # C: mutations per search
    sample: int = 5             # S: members drawn per cycle; the best of them is mutated
    finalists: int = 5          # the estimator's best of the search, scored with the true validation metric
    # The structures searched: "subsets" (methods.md: any non-empty set of blocks per item group), "prefixes"
    # (the first k_g blocks of item group g: what a nested stage a trains), or "auto": prefixes when stage a
    # is nested (pretrain.nested), else subsets
    search_space: str = "auto"


def search_space(config: PeelConfig) -> str:
    """RULE's resolved rule.search_space: 'auto' is 'prefixes' when stage a is nested, else 'subsets'."""
    space = config.rule.search_space
    if space != "auto":
        return space
    return "prefixes" if config.pretrain.nested_blocks(config.model.n_blocks) else "subsets"


@dataclass(frozen=True)
class PeelConfig:
    seed: int = 2023
    threads: int = 0            # compute threads of a run, torch's and numpy's BLAS (0 = one a core)
    executor: str = "local"     # "local" or "ray"
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    rule: RuleConfig = field(default_factory=RuleConfig)

    def __post_init__(self) -> None:
        validate(self)

    # --------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PeelConfig:
        return _build(cls, values, prefix="")

    @classmethod
    def from_toml(cls, path: str | Path, base: PeelConfig | None = None) -> PeelConfig:
        """The config of a TOML file, over ``base`` (default: peel's defaults)."""
        values = _read_toml(path)
        return cls.from_dict(_merge(base.to_dict(), values) if base is not None else values)

    @classmethod
    def from_json(cls, path: str | Path) -> PeelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def with_overrides(self, assignments: list[str]) -> PeelConfig:
        """Apply ``section.key=value`` strings (e.g. ``pretrain.lr=2e-3``)."""
        values = self.to_dict()
        for text in assignments:
            if "=" not in text:
                raise ConfigError(f"--set expects key=value, got {text!r}")
            key, raw = (s.strip() for s in text.split("=", 1))
            *path, leaf = key.split(".")
            node = values
            for part in path:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"unknown config section {part!r} in {key!r}; sections: {_sections()}")
                node = node[part]
            if leaf not in node or isinstance(node[leaf], dict):
                raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(known_keys())}")
            node[leaf] = _parse_value(raw)
        return PeelConfig.from_dict(values)


def _sections() -> str:
    return ", ".join(f.name for f in dataclasses.fields(PeelConfig) if dataclasses.is_dataclass(f.default_factory))


def known_keys() -> list[str]:
    keys = []
    for f in dataclasses.fields(PeelConfig):
        if f.default_factory is not dataclasses.MISSING:
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(f.default_factory())]
        else:
            keys.append(f.name)
    return keys


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # a bare word: a string


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or 'root'} must be a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{sorted(unknown)[0]}'; known keys: {', '.join(known_keys())}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # a list-valued key given one number: pretrain.nested=4, l2_full_prefix_race=1e-3
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ConfigError(f"config {key} must be {hint.__name__}, got {value!r}")
    return value


_CHOICES = {
    ("model", "layer_combination"): ("mean", "last"),
    ("grouping", "item_grouping"): ("popularity", "random"),
    ("grouping", "user_grouping"): ("kmeans", "single"),
    ("finetune", "bilevel"): ("second_order", "first_order"),
    ("finetune", "scorer"): ("mlp", "dot"),
    ("finetune", "importance"): ("controller", "density"),
    ("model", "item_table"): ("full", *COMPOSITIONS),
    ("model", "qr_op"): QR_OPS,
    ("device", "eq10"): EQ10_READINGS,
    ("device", "eq10_scale"): EQ10_SCALES,
    ("device", "blocks"): ("transformed", "raw", "pretrained"),
    ("device", "user_vector"): ("finetuned", "pretrained"),
    ("device", "block_selection"): ("weights", "random"),
    ("device", "unit_dtype"): UNIT_DTYPES,
    ("rule", "estimator"): ("auto", "nfm", "mlp"),
    ("rule", "search_space"): ("auto", "subsets", "prefixes"),
}


def validate(config: PeelConfig) -> None:
    """Cross-field and range checks; data-dependent checks are in :func:`validate_for_data`."""
    _check_finite_and_seed(config)
    for (section, key), choices in _CHOICES.items():
        value = getattr(getattr(config, section), key)
        if value not in choices:
            raise ConfigError(f"config {section}.{key} must be one of {', '.join(choices)}, got {value!r}")
    if config.executor not in ("local", "ray"):
        raise ConfigError(f"config executor must be local or ray, got {config.executor!r}")
    positive = {
        "model.n_blocks": config.model.n_blocks, "model.block_dim": config.model.block_dim,
        "pretrain.max_epochs": config.pretrain.max_epochs,
        "grouping.item_groups": config.grouping.item_groups, "grouping.user_groups": config.grouping.user_groups,
        "finetune.batch_size": config.finetune.batch_size, "finetune.max_epochs": config.finetune.max_epochs,
        "finetune.patience": config.finetune.patience,
        "finetune.lr": config.finetune.lr, "finetune.controller_lr": config.finetune.controller_lr,
        "finetune.controller_hidden": config.finetune.controller_hidden,
        "finetune.density_decay": config.finetune.density_decay,
        "pretrain.lr_patience": config.pretrain.lr_patience, "pretrain.lr_at_65536": config.pretrain.lr_at_65536,
        "pretrain.race_epochs": config.pretrain.race_epochs, "pretrain.search_epochs": config.pretrain.search_epochs,
        "rule.label_users": config.rule.label_users, "rule.estimator_epochs": config.rule.estimator_epochs,
        "rule.population": config.rule.population, "rule.cycles": config.rule.cycles,
        "rule.finalists": config.rule.finalists,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config {key} must be positive, got {value}")
    config.pretrain.nested_blocks(config.model.n_blocks)  # refuses a malformed list before anything runs
    config.pretrain.race_candidates(config.model.n_blocks)
    if not math.isfinite(config.pretrain.nested_weight_power):
        raise ConfigError(f"config pretrain.nested_weight_power must be finite, "
                          f"got {config.pretrain.nested_weight_power}")
    if config.model.embedding_dim and config.model.embedding_dim != config.model.dim:
        raise ConfigError(f"model.embedding_dim = {config.model.embedding_dim} must equal n_blocks * block_dim = "
                          f"{config.model.n_blocks} * {config.model.block_dim} = {config.model.dim}")
    for key, value in {"model.layers": config.model.layers, "pretrain.l2": config.pretrain.l2,
                       "pretrain.l2_full_prefix": config.pretrain.l2_full_prefix,
                       "pretrain.lambda_div": config.pretrain.lambda_div, "finetune.l2": config.finetune.l2,
                       "pretrain.eval_users": config.pretrain.eval_users, "threads": config.threads,
                       "pretrain.allocation_budgets": config.pretrain.allocation_budgets,
                       "pretrain.distillation": config.pretrain.distillation,
                       "pretrain.self_distillation": config.pretrain.self_distillation,
                       "pretrain.lr_batch_power": config.pretrain.lr_batch_power,
                       **{f"pretrain.{name}": getattr(config.pretrain, name) for name in PRETRAIN_AUTO}}.items():
        if value < 0:
            raise ConfigError(f"config {key} must be >= 0, got {value}")
    r = config.rule
    if r.structures < 10 or not 0.0 < r.held_out < 1.0 or round(r.structures * r.held_out) < 5:
        raise ConfigError(f"config rule.structures must be >= 10 with rule.held_out in (0, 1) leaving >= 5 held out "
                          f"(methods.md uses 1,000-5,000 and 0.2), got {r.structures} and {r.held_out}")
    if not 1 <= r.sample <= r.population:
        raise ConfigError(f"config rule.sample must be in [1, rule.population = {r.population}], got {r.sample}")
    if not 0.0 < config.pretrain.lr_decay <= 1.0:
        raise ConfigError(f"config pretrain.lr_decay must be in (0, 1] (1 = no decay), got {config.pretrain.lr_decay}")
    _check_item_table(config)


def _check_item_table(config: PeelConfig) -> None:
    m, p = config.model, config.pretrain
    if m.qr_buckets < 0:
        raise ConfigError(f"config model.qr_buckets must be >= 0 (0 = ⌈√|V|⌉), got {m.qr_buckets}")
    if m.codebooks < 1 or not 2 <= m.codewords <= MAX_CODEWORDS:
        raise ConfigError(f"config model.codebooks must be >= 1 and model.codewords in [2, {MAX_CODEWORDS}], "
                          f"got {m.codebooks} and {m.codewords}")
    if m.item_table == "full":
        return
    clashes = {"model.layers": m.layers, "model.n_blocks": m.n_blocks - 1, "pretrain.nested": p.nested,
               "pretrain.lambda_div": p.lambda_div, "pretrain.allocation_budgets": p.allocation_budgets,
               "pretrain.l2_full_prefix_race": p.l2_full_prefix_race}
    if bad := [k for k, v in clashes.items() if v]:
        raise ConfigError(f"model.item_table = {m.item_table} composes item vectors a device cannot propagate or "
                          f"split into blocks: it needs model.layers = 0, model.n_blocks = 1, and no nesting, "
                          f"diversity, allocation or race; {', '.join(bad)} clash")
    if m.item_table == "quotient_remainder" and m.qr_op == "concat" and m.dim % 2:
        raise ConfigError(f"model.qr_op = concat splits the {m.dim} dims between two tables: they must be even")


def _check_finite_and_seed(config: PeelConfig) -> None:
    """No NaN / inf in any float field; a seed numpy, torch and scikit-learn all accept."""
    for section in dataclasses.fields(config):
        node = getattr(config, section.name)
        items = dataclasses.asdict(node).items() if dataclasses.is_dataclass(node) else [("", node)]
        for key, value in items:
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"config {section.name}{'.' + key if key else ''} must be a finite number, "
                                  f"got {value}")
    if not 0 <= config.seed < 2**32:  # KMeans(random_state=) takes [0, 2**32)
        raise ConfigError(f"config seed must be in [0, 2**32), got {config.seed}")


def _read_toml(path: str | Path) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
        values = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text (bytes {raw[exc.start:exc.end]!r}); "
                          "a TOML config must be UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: cannot read config ({type(exc).__name__}: {exc})") from None
    return values


def _merge(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` over ``base``, section by section (unknown keys stay for from_dict to refuse)."""
    out = dict(base)
    for key, value in values.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def validate_for_data(config: PeelConfig, *, n_users: int, n_items: int) -> None:
    """Checks that need the dataset's size (e.g. G_v larger than the item count)."""
    if config.grouping.item_groups > n_items:
        raise ConfigError(f"grouping.item_groups = {config.grouping.item_groups} exceeds the item count {n_items}")
    if config.grouping.user_groups > n_users:
        raise ConfigError(f"grouping.user_groups = {config.grouping.user_groups} exceeds the user count {n_users}")


def resolve_for_data(config: PeelConfig, *, n_train: int) -> PeelConfig:
    """The config with every auto field (0 in :data:`PRETRAIN_AUTO`) derived from the data's size."""
    return dataclasses.replace(config, pretrain=config.pretrain.resolved(n_train, config.model.n_blocks))


# Named configurations (peel train --preset NAME). "paper": PEEL as the paper and methods.md describe it
# (diversity regularizer, stage b with the controller and the second-order bi-level step, BatchNorm + tanh
# folded into the exported blocks, no nested blocks), kept so the reproduction tables can still show it.
PRESETS: dict[str, list[str]] = {
    "paper": ["pretrain.lambda_div=0.001", "pretrain.nested=", "pretrain.l2=0.0001", "pretrain.l2_full_prefix=0",
              "pretrain.l2_full_prefix_race=",
              "pretrain.lr_at_65536=0.02", "pretrain.lr_batch_power=0.5", "finetune.importance=controller",
              "finetune.bilevel=second_order", "finetune.max_epochs=20", "device.blocks=transformed",
              "device.eq10_scale=sqrt"],
}


def config_from_sources(path: str | Path | None = None, overrides: list[str] | None = None, *,
                        preset: str | None = None) -> PeelConfig:
    """Defaults <- preset <- TOML file <- ``--set`` overrides."""
    base = PeelConfig()
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        base = base.with_overrides(PRESETS[preset])
    config = PeelConfig.from_toml(path, base=base) if path else base
    return config.with_overrides(overrides or [])


# Keys added after runs existed whose default is what every older run did (one row per item; RULE's section,
# which no older run used), so a config.json without them is complete
IMPLIED_KEYS = ("model.item_table", "model.qr_op", "model.qr_buckets", "model.codebooks", "model.codewords",
                "pretrain.distillation", "pretrain.search_epochs", "pretrain.self_distillation",
                "pretrain.nested_weight_power",
                "device.unit_dtype",  # float32 units: the only kind before q8
                # only derives pretrain.lr when it is 0 (auto), and a run's config.json holds the derived lr
                "pretrain.lr_batch_power",
                *(f"rule.{f.name}" for f in dataclasses.fields(RuleConfig)), "rule")


def missing_keys(values: dict[str, Any]) -> list[str]:
    """Dotted keys of today's config absent from ``values`` (a run's config.json written by an older peel):
    loading fills them with today's defaults, which need not be what the run was trained with (keys in
    :data:`IMPLIED_KEYS` excepted)."""
    def walk(defaults: dict[str, Any], given: dict[str, Any], prefix: str) -> list[str]:
        out = []
        for key, default in defaults.items():
            if key not in given:
                out.append(prefix + key)
            elif isinstance(default, dict) and isinstance(given[key], dict):
                out += walk(default, given[key], f"{prefix}{key}.")
        return out
    missing = walk(PeelConfig().to_dict(), values, "") if isinstance(values, dict) else []
    return [key for key in missing if key not in IMPLIED_KEYS]
