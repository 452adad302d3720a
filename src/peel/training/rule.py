"""RULE (Chen et al., KDD 2021; ../shared/methods.md): one global elastic model, a performance estimator,
and an evolutionary search per budget.

- Training: PEEL's stage a and item groups (no user groups, no stage b), then random *structures* labelled
  with their validation NDCG@50 on device terms (Eq. 10, both readings in one pass, on one seeded sample of
  validation users), and an estimator (NFM or a 2-layer MLP, chosen by held-out Spearman) that predicts it.
- Search per budget: regularized (aging) evolution over structures that fit the budget, mutation only;
  the estimator's best finalists, plus the previous budget's choice, are scored with the true validation
  metric and the best is kept.

A structure is a (G_v, N) boolean selection: item group g keeps blocks S_g (never empty). It costs
Σ_g |V_g|·|S_g|·d·4 + D·4 bytes (the unit accounting of :mod:`peel.units`). Every structure made here is
*full*: no unselected unit would still fit the budget.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from peel._io import atomic_path
from peel.config import PeelConfig, RuleConfig, search_space
from peel.data.interactions import Interactions
from peel.errors import BudgetError, PeelError
from peel.evaluation import evaluate
from peel.evaluation.evaluator import evaluation_users
from peel.run_layout import RunLayout
from peel.units import EQ10_READINGS, UnitLayout, effective_items, stored_values, user_query

log = logging.getLogger("peel")

LABEL_K = 50          # labels and finalists: NDCG@50
SEARCH_SPACES = ("subsets", "prefixes")
CHECKPOINT_EVERY = 25  # labelled structures between two label checkpoints
MUTATION_ATTEMPTS = 100


# ---------------------------------------------------------------------- structures
def structure_bytes(structure: np.ndarray, layout: UnitLayout) -> int:
    """Bytes a device holds for ``structure``: the kept blocks of every item + the user vector."""
    return int(structure.sum(axis=1) @ layout.group_unit_bytes) + layout.user_vector_bytes


def minimum_bytes(layout: UnitLayout) -> int:
    """One block per item group + the user vector: the smallest structure."""
    return int(layout.group_unit_bytes.sum()) + layout.user_vector_bytes


def check_budget(layout: UnitLayout, budget_bytes: int) -> None:
    minimum = minimum_bytes(layout)
    if budget_bytes < minimum:
        raise BudgetError(f"budget of {budget_bytes:,} bytes is below the minimum of {minimum:,} bytes "
                          f"({minimum / 1e6:.3f} MB: one block per item group + the user vector)")


def _unit_costs(layout: UnitLayout) -> np.ndarray:
    return layout.group_unit_bytes


def _fill(structure: np.ndarray, layout: UnitLayout, budget_bytes: int, rng: np.random.Generator,
          prefixes: bool) -> np.ndarray:
    """Add blocks at random while one fits: any unselected cell (subsets), or the next block of an item
    group (prefixes). The structure is then full."""
    unit = _unit_costs(layout)
    used = structure_bytes(structure, layout)
    n_groups, n_blocks = structure.shape
    if prefixes:
        kept = structure.sum(axis=1)
        while (open_ := np.flatnonzero((kept < n_blocks) & (used + unit <= budget_bytes))).size:  # <= G_v x N steps
            group = rng.choice(open_)
            structure[group, kept[group]] = True
            kept[group] += 1
            used += int(unit[group])
        return structure
    cells = np.flatnonzero(~structure.ravel())
    rng.shuffle(cells)
    for cell in cells:  # at most G_v x N cells
        cost = int(unit[cell // n_blocks])
        if used + cost <= budget_bytes:
            structure.flat[cell] = True
            used += cost
    return structure


def random_structure(layout: UnitLayout, budget_bytes: int, rng: np.random.Generator,
                     prefixes: bool = False) -> np.ndarray:
    """methods.md's random feasible structure: one random block per item group, then the other blocks
    scattered uniformly over unselected cells while they fit. With ``prefixes``: block 0 of every item
    group, then the next block of a random item group while one fits."""
    check_budget(layout, budget_bytes)
    n_groups = len(layout.item_group_sizes)
    structure = np.zeros((n_groups, layout.n_blocks), dtype=bool)
    first = np.zeros(n_groups, dtype=np.int64) if prefixes else rng.integers(layout.n_blocks, size=n_groups)
    structure[np.arange(n_groups), first] = True
    return _fill(structure, layout, budget_bytes, rng, prefixes)


def mutate(parent: np.ndarray, layout: UnitLayout, budget_bytes: int, rng: np.random.Generator,
           prefixes: bool = False) -> np.ndarray:
    """Drop one selected cell of an item group that keeps >= 2 and add one unselected cell (with
    ``prefixes``: the last block of one item group, the next of another); a child over the budget (unit
    sizes differ by up to one item's block) is redrawn; the child is then filled."""
    n_blocks = parent.shape[1]
    for _ in range(MUTATION_ATTEMPTS):
        child = parent.copy()
        kept = child.sum(axis=1)
        if prefixes:
            droppable = np.flatnonzero(kept >= 2) * n_blocks + kept[kept >= 2] - 1
            addable = np.flatnonzero(kept < n_blocks) * n_blocks + kept[kept < n_blocks]
        else:
            droppable = np.flatnonzero((child & (kept[:, None] >= 2)).ravel())
            addable = np.flatnonzero(~child.ravel())
        if droppable.size == 0 or addable.size == 0:  # the smallest or the full structure: nothing to swap
            return _fill(child, layout, budget_bytes, rng, prefixes)
        drop = rng.choice(droppable)
        if prefixes:  # the next block of the item group whose block was dropped is that block again
            addable = addable[addable // n_blocks != drop // n_blocks]
            if addable.size == 0:
                return _fill(child, layout, budget_bytes, rng, prefixes)
        child.flat[drop] = False
        child.flat[rng.choice(addable)] = True
        if structure_bytes(child, layout) <= budget_bytes:
            return _fill(child, layout, budget_bytes, rng, prefixes)
    return parent.copy()


def training_structures(layout: UnitLayout, count: int, rng: np.random.Generator,
                        prefixes: bool = False) -> np.ndarray:
    """(count, G_v, N) random full structures over the whole budget range: each at a budget drawn
    log-uniformly between the smallest structure and the full table."""
    low, high = minimum_bytes(layout), layout.full_bytes()
    budgets = np.exp(rng.uniform(np.log(low), np.log(high), size=count)).astype(np.int64)
    return np.stack([random_structure(layout, max(int(b), low), rng, prefixes) for b in budgets])


def is_prefix(structure: np.ndarray) -> bool:
    """Every item group keeps its first |S_g| blocks."""
    kept = structure.sum(axis=1)
    return bool(np.array_equal(structure, np.arange(structure.shape[1])[None, :] < kept[:, None]))


def unit_weights(structure: np.ndarray) -> np.ndarray:
    """Importance weights whose unit order (:func:`peel.units.unit_order`) lists the structure's units first:
    the lowest kept block of every item group, then its other units, then the rest, each by (item group,
    block). A budget of the structure's bytes keeps exactly the structure (it is full)."""
    rank = np.arange(structure.size, dtype=np.float64).reshape(structure.shape) / structure.size
    return np.where(structure, 3.0, 1.0) - rank


def features(structures: np.ndarray) -> np.ndarray:
    """The estimator's input per structure: one indicator per (item group, block) cell, then |S_g| / N
    per item group (methods.md: one feature per selected cell plus one per group)."""
    structures = np.asarray(structures, dtype=np.float32)
    n = len(structures)
    return np.concatenate([structures.reshape(n, -1), structures.mean(axis=2)], axis=1)


# ---------------------------------------------------------------------- labels
class StructureScorer:
    """Eq. 10 scores of every item for users, one structure, one reading (what a device computes)."""

    def __init__(self, queries: torch.Tensor, blocks: np.ndarray, item_group: np.ndarray, structure: np.ndarray,
                 reading: str, scale: str) -> None:
        self.queries = queries
        self.items = torch.from_numpy(effective_items(blocks, item_group, structure, reading, scale))

    def __call__(self, users: np.ndarray) -> torch.Tensor:
        return self.queries[torch.as_tensor(np.asarray(users, dtype=np.int64))] @ self.items.T


@dataclass
class Scoring:
    """What scoring a structure needs: stage a's blocks and user vectors, the item groups, Eq. 10's scale."""

    blocks: np.ndarray          # (items, N, d)
    user_vectors: np.ndarray    # (users, D)
    item_group: np.ndarray
    scale: str

    def __post_init__(self) -> None:
        n_blocks = self.blocks.shape[1]
        self.queries = {r: torch.from_numpy(user_query(self.user_vectors, n_blocks, r)) for r in EQ10_READINGS}

    def scorer(self, structure: np.ndarray, reading: str) -> StructureScorer:
        return StructureScorer(self.queries[reading], self.blocks, self.item_group, structure, reading, self.scale)

    def ndcg(self, structure: np.ndarray, reading: str, data: Interactions, users: np.ndarray | None = None) -> float:
        """Validation NDCG@50 (standard) of ``structure`` over ``users`` (default: every validation user)."""
        return evaluate(self.scorer(structure, reading), data, split="valid", ks=(LABEL_K,), users=users,
                        legacy_depth=None)[f"ndcg@{LABEL_K}"]


def label_users(data: Interactions, count: int, seed: int) -> np.ndarray:
    """One seeded sample of ``count`` validation users (all of them if fewer), sorted; never test users."""
    users = evaluation_users(data, "valid")
    if len(users) <= count:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, count, replace=False))


def label_structures(structures: np.ndarray, scoring: Scoring, data: Interactions, users: np.ndarray, *,
                     checkpoint: Path, resume: bool, progress: bool) -> tuple[np.ndarray, float]:
    """(structures, readings) validation NDCG@50 of every structure under each Eq. 10 reading, and the seconds
    labelling took in all (over every resume). Every CHECKPOINT_EVERY structures the labels so far are saved
    with their seconds; ``resume`` continues from them."""
    labels = np.full((len(structures), len(EQ10_READINGS)), np.nan)
    start, before, clock = 0, 0.0, time.perf_counter()
    if resume and checkpoint.exists():
        with np.load(checkpoint, allow_pickle=False) as z:
            done, labelled = z["labels"], z["structures"]
            # a checkpoint of an older peel has no seconds: the time before the resume is then not counted
            before = float(z["seconds"]) if "seconds" in z.files else 0.0
        if (done.shape[1:] != labels.shape[1:] or len(done) > len(labels) or labelled.shape != (len(done),
                                                                                              *structures.shape[1:])
                or not np.array_equal(labelled, structures[:len(done)])):
            raise PeelError(f"{checkpoint} holds labels of other structures than this run's; delete it to relabel")
        labels[:len(done)], start = done, len(done)
    steps: Any = range(start, len(structures))
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="RULE: labelling structures", unit="structure", initial=start,
                     total=len(structures))
    for i in steps:
        for r, reading in enumerate(EQ10_READINGS):
            labels[i, r] = scoring.ndcg(structures[i], reading, data, users)
        if (i + 1) % CHECKPOINT_EVERY == 0 or i + 1 == len(structures):
            with atomic_path(checkpoint) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, labels=labels[:i + 1], structures=structures[:i + 1],
                         seconds=before + time.perf_counter() - clock)
    return labels, before + time.perf_counter() - clock


# ---------------------------------------------------------------------- estimator
class NFM(nn.Module):
    """Neural factorization machine: a linear term plus an MLP over the bi-interaction pooling of one
    learned vector per feature."""

    def __init__(self, n_features: int, factors: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)
        self.factors = nn.Parameter(torch.randn(n_features, factors) * 0.1)
        self.mlp = nn.Sequential(nn.Linear(factors, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = 0.5 * ((x @ self.factors) ** 2 - (x * x) @ (self.factors * self.factors))
        return (self.linear(x) + self.mlp(pooled)).squeeze(1)


class MLP(nn.Module):
    """Two layers, 128 hidden ReLU units, on the flattened structure."""

    def __init__(self, n_features: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


ESTIMATORS: dict[str, type[nn.Module]] = {"nfm": NFM, "mlp": MLP}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


@dataclass
class Estimator:
    """A trained performance estimator of one Eq. 10 reading; predictions are in label units."""

    kind: str
    model: nn.Module
    mean: float
    std: float
    held_out_spearman: dict[str, float]  # of every kind tried

    def predict(self, structures: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self.model(torch.from_numpy(features(structures)))
        return out.double().numpy() * self.std + self.mean


def _train_estimator(kind: str, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = ESTIMATORS[kind](x.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-5)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    for _ in range(epochs):  # full batch: a few thousand structures
        optimizer.zero_grad()
        loss = torch.mean((model(inputs) - targets) ** 2)
        loss.backward()
        optimizer.step()
    return model.eval()


def held_out_split(n: int, config: RuleConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, training) indices of ``n`` labelled structures: one seeded permutation."""
    order = np.random.default_rng(seed).permutation(n)
    return order[:round(n * config.held_out)], order[round(n * config.held_out):]


def within_budget_spearman(predicted: np.ndarray, labels: np.ndarray, sizes: np.ndarray, bins: int = 5) -> float:
    """Mean Spearman correlation within ``bins`` quantile bins of structure bytes: how well structures of about
    the same size are ranked (the search compares those), without the easy ranking by size."""
    edges = np.quantile(sizes, np.linspace(0, 1, bins + 1))
    index = np.clip(np.searchsorted(edges, sizes, side="right") - 1, 0, bins - 1)
    return float(np.mean([spearman(predicted[index == b], labels[index == b]) for b in range(bins)
                          if np.sum(index == b) > 2]))


def fit_estimator(structures: np.ndarray, labels: np.ndarray, config: RuleConfig, seed: int) -> Estimator:
    """Train each estimator kind on the structures not held out; keep config.estimator, or ('auto') the kind
    whose held-out Spearman correlation is higher."""
    held, kept = held_out_split(len(structures), config, seed)
    mean, std = float(labels[kept].mean()), float(labels[kept].std()) or 1.0
    x = features(structures)
    kinds = list(ESTIMATORS) if config.estimator == "auto" else [config.estimator]
    trained, correlation = {}, {}
    for kind in kinds:
        trained[kind] = _train_estimator(kind, x[kept], (labels[kept] - mean) / std, config.estimator_epochs, seed)
        with torch.no_grad():
            predicted = trained[kind](torch.from_numpy(x[held])).numpy()
        correlation[kind] = spearman(predicted, labels[held])
    best = max(kinds, key=lambda k: (np.nan_to_num(correlation[k], nan=-2.0), -kinds.index(k)))
    return Estimator(best, trained[best], mean, std, correlation)


def save_estimators(path: Path, estimators: dict[str, Estimator], space: str) -> None:
    """One estimator per reading in one npz, with the search space it was trained on: tensors by name, the
    rest as a JSON string (no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    readings = {}
    for reading, est in estimators.items():
        readings[reading] = {"kind": est.kind, "mean": est.mean, "std": est.std,
                             "held_out_spearman": est.held_out_spearman}
        arrays |= {f"{reading}/{name}": t.detach().numpy() for name, t in est.model.state_dict().items()}
    meta = {"search_space": space, "readings": readings}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)


def read_estimator_meta(path: Path) -> dict[str, Any]:
    """{"search_space": ..., "readings": {reading: {kind, mean, std, held_out_spearman}}} of an estimator file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
        if meta.get("search_space") not in SEARCH_SPACES or not isinstance(meta.get("readings"), dict):
            raise ValueError("no search space or readings")
        return meta
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PeelError(f"{path}: not a RULE estimator of this run ({exc}); delete it and resume the run") from None


def load_estimators(path: Path, n_features: int) -> tuple[str, dict[str, Estimator]]:
    """(the search space, one estimator per reading) of an estimator file."""
    meta = read_estimator_meta(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {}
            for reading, m in meta["readings"].items():
                model = ESTIMATORS[m["kind"]](n_features)
                state = {name: torch.from_numpy(z[f"{reading}/{name}"]) for name in model.state_dict()}
                model.load_state_dict(state)
                out[reading] = Estimator(m["kind"], model.eval(), float(m["mean"]), float(m["std"]),
                                         m["held_out_spearman"])
            return meta["search_space"], out
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, json.JSONDecodeError) as exc:
        raise PeelError(f"{path}: not a RULE estimator of this run ({exc}); delete it and resume the run") from None


# ---------------------------------------------------------------------- search
@dataclass
class SearchResult:
    """One budget's search: the chosen structure and how it was chosen."""

    budget_bytes: int
    reading: str
    structure: np.ndarray
    bytes_used: int
    valid_ndcg: float
    finalists: list[dict[str, Any]]
    seconds: float
    seed_budget_bytes: int | None

    def to_json(self) -> dict[str, Any]:
        return {"budget_bytes": self.budget_bytes, "reading": self.reading,
                "structure": self.structure.astype(int).tolist(), "bytes_used": self.bytes_used,
                f"valid_ndcg@{LABEL_K}": self.valid_ndcg, "finalists": self.finalists, "seconds": self.seconds,
                "seed_budget_bytes": self.seed_budget_bytes}

    @classmethod
    def read(cls, path: Path, layout: UnitLayout, space: str = "subsets") -> SearchResult:
        """A search file, checked: the structure's shape, at least one block per item group (the first ones
        if the space is prefixes), within its budget."""
        try:
            values = json.loads(path.read_text())
            structure = np.asarray(values["structure"])
            budget, used = int(values["budget_bytes"]), int(values["bytes_used"])
            result = cls(budget, str(values["reading"]), structure.astype(bool), used,
                         float(values[f"valid_ndcg@{LABEL_K}"]), list(values["finalists"]), float(values["seconds"]),
                         values["seed_budget_bytes"])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise PeelError(f"{path}: not a RULE search result ({exc}); delete it to search again") from None
        expected = (len(layout.item_group_sizes), layout.n_blocks)
        if (structure.shape != expected or not np.isin(structure, (0, 1)).all()
                or not result.structure.any(axis=1).all() or used != structure_bytes(result.structure, layout)
                or used > budget or (space == "prefixes" and not is_prefix(result.structure))):
            raise PeelError(f"{path}: the structure must be {expected[0]} x {expected[1]} of 0/1 with a block in every "
                            f"item group ({space}), costing bytes_used <= budget_bytes; delete it to search again")
        return result


def evolve(estimator: Estimator, layout: UnitLayout, budget_bytes: int, config: RuleConfig,
           rng: np.random.Generator, seeds: list[np.ndarray], prefixes: bool) -> list[tuple[np.ndarray, float]]:
    """Regularized (aging) evolution (Real et al. 2019), mutation only: P members (``seeds`` first, then
    random feasible ones); each of C cycles mutates the best of S drawn members, appends the child and
    drops the oldest. Returns the history (every member ever made) with its predicted score."""
    members = [s.copy() for s in seeds][:config.population]
    members += [random_structure(layout, budget_bytes, rng, prefixes)
                for _ in range(config.population - len(members))]
    population = deque(zip(members, estimator.predict(np.stack(members)).tolist(), strict=True))
    history = list(population)
    for _ in range(config.cycles):
        drawn = rng.choice(len(population), config.sample, replace=False)
        parent = max((population[i] for i in drawn), key=lambda member: member[1])[0]
        child = mutate(parent, layout, budget_bytes, rng, prefixes)
        member = (child, float(estimator.predict(child[None])[0]))
        population.append(member)
        population.popleft()
        history.append(member)
    return history


def search(estimator: Estimator, layout: UnitLayout, budget_bytes: int, reading: str, config: PeelConfig,
           true_score: Callable[[np.ndarray], float], seed: tuple[int, np.ndarray] | None = None,
           space: str = "subsets") -> SearchResult:
    """One budget's search. The finalists are the estimator's ``rule.finalists`` best distinct structures of
    the history and ``seed`` (budget bytes, the next smaller budget's choice), which fits this budget and stays
    among them; each is scored with ``true_score`` (validation NDCG@50) and the best is kept, the seed on a tie."""
    start = time.perf_counter()
    check_budget(layout, budget_bytes)
    rng = np.random.default_rng([config.seed, budget_bytes, EQ10_READINGS.index(reading)])
    seeds = [] if seed is None else [seed[1]]
    history = evolve(estimator, layout, budget_bytes, config.rule, rng, seeds, space == "prefixes")
    finalists: list[tuple[np.ndarray, float, str]] = [(s, float(estimator.predict(s[None])[0]), "seed") for s in seeds]
    seen = {s.tobytes() for s in seeds}
    for structure, predicted in sorted(history, key=lambda member: -member[1]):
        if len(finalists) - len(seeds) == config.rule.finalists:
            break
        if structure.tobytes() not in seen:
            seen.add(structure.tobytes())
            finalists.append((structure, predicted, "search"))
    scored = [(true_score(s), s, p, origin) for s, p, origin in finalists]
    best = max(range(len(scored)), key=lambda i: (scored[i][0], -i))
    ndcg, structure = scored[best][0], scored[best][1]
    return SearchResult(budget_bytes, reading, structure, structure_bytes(structure, layout), ndcg,
                        [{"from": origin, "predicted": p, f"valid_ndcg@{LABEL_K}": score,
                          "bytes_used": structure_bytes(s, layout), "blocks": int(s.sum())}
                         for score, s, p, origin in scored],
                        round(time.perf_counter() - start, 3), None if seed is None else seed[0])


# ---------------------------------------------------------------------- training
def rule_config(config: PeelConfig) -> PeelConfig:
    """RULE's run config: one global model (a single user group), stage a's blocks and user vectors on the
    device (no stage b)."""
    r = dataclasses.replace
    return r(config, grouping=r(config.grouping, user_grouping="single"),
             device=r(config.device, blocks="pretrained", user_vector="pretrained", block_selection="weights"))


def train_rule(data: Interactions, out: str | Path, config: PeelConfig, *, data_path: str | Path | None = None,
               resume: bool = False, progress: bool = True, stage_a_from: str | Path | None = None) -> dict[str, Any]:
    """Stage a and item groups (PEEL's pipeline, or a finished run's stage a reused), then the labels and the
    estimators of both Eq. 10 readings; each stage is timed in summary.json and resumable."""
    from peel.training.pipeline import run_log, train

    config = rule_config(config)
    summary = train(data, out, config, data_path=data_path, resume=resume, progress=progress, stop_after="grouping",
                    stage_a_from=stage_a_from, method={"method": "rule"})
    layout = RunLayout(out)
    if layout.rule_estimator.exists():
        return summary
    with run_log(layout.log):
        return _labels_and_estimators(data, layout, resume=resume, progress=progress)


def _labels_and_estimators(data: Interactions, layout: RunLayout, *, resume: bool, progress: bool) -> dict[str, Any]:
    from peel.training.pipeline import record_seconds
    from peel.training.pretrain import load_pretrained

    out = layout.root
    config = layout.read_config()  # resolved for the data
    space = search_space(config)
    layout.rule_dir.mkdir(exist_ok=True)
    users, items = load_pretrained(layout.embeddings)
    with np.load(layout.grouping, allow_pickle=False) as z:
        item_group = z["item_group"]
    m = config.model
    units = UnitLayout(np.bincount(item_group, minlength=config.grouping.item_groups), m.n_blocks, m.block_dim,
                       config.device.unit_dtype)
    scoring = Scoring(stored_values(items.reshape(len(items), m.n_blocks, m.block_dim), item_group,
                                    config.device.unit_dtype),
                      users.astype(np.float32), item_group, config.device.eq10_scale)
    timings: dict[str, float] = {}
    if not layout.rule_labels.exists():
        rng = np.random.default_rng([config.seed, 1])
        structures = training_structures(units, config.rule.structures, rng, space == "prefixes")
        sample = label_users(data, config.rule.label_users, config.seed)
        labels, timings["labels"] = label_structures(structures, scoring, data, sample, resume=resume,
                                                     checkpoint=layout.rule_labels_checkpoint, progress=progress)
        with atomic_path(layout.rule_labels) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, structures=structures, labels=labels, users=sample, readings=np.array(EQ10_READINGS),
                     search_space=np.array(space))
        layout.rule_labels_checkpoint.unlink(missing_ok=True)
        log.info("RULE: %d structures labelled on %d validation users in %.1f s", len(structures), len(sample),
                 timings["labels"])
        record_seconds(out, timings)
    with np.load(layout.rule_labels, allow_pickle=False) as z:
        structures, labels = z["structures"], z["labels"]
    start = time.perf_counter()
    estimators = {r: fit_estimator(structures, labels[:, i], config.rule, config.seed)
                  for i, r in enumerate(EQ10_READINGS)}
    save_estimators(layout.rule_estimator, estimators, space)
    timings["estimator"] = time.perf_counter() - start
    for reading, est in estimators.items():
        log.info("RULE estimator (%s): %s, held-out Spearman %s", reading, est.kind,
                 {k: round(v, 4) for k, v in est.held_out_spearman.items()})
    return record_seconds(out, timings)
