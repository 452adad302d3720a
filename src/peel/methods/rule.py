"""RULE behind the method protocol (:mod:`peel.training.rule`): trained once (stage a + estimator), then one
search per budget, cached in the run directory (rule/search-<reading>-<bytes>.json) with its seconds.

A budget is served by the best structure, on validation NDCG@50, among the searches of this budget and of
every smaller searched budget (each fits it): so a larger budget never scores lower on validation, whatever
order budgets were searched in. Each search's population is seeded with the choice of the next smaller
searched budget. The device holds one global bundle: the structure's units (RULE has no user groups).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from peel.budget import Budget
from peel.config import PeelConfig
from peel.data.interactions import Interactions
from peel.errors import BudgetError, PeelError
from peel.evaluation import Scorer
from peel.methods.peel import with_device_overrides
from peel.methods.protocol import Method, TrainedModel
from peel.run_layout import RunLayout
from peel.units import UnitLayout, select, stored_values

log = logging.getLogger("peel")


class RuleMethod(Method):
    name, label, elastic = "rule", "RULE", True

    def fit(self, data: Interactions, out: str | Path, config: PeelConfig, *, budget: Budget | None = None,
            data_path: str | Path | None = None, resume: bool = False, progress: bool = True,
            **options: Any) -> dict[str, Any]:
        """Stage a, item groups, labels and estimators; ``options``: stage_a_from (a finished run whose stage a
        is reused when its model, pretraining config, seed and data are this run's)."""
        from peel.training.rule import train_rule

        stage_a_from = options.pop("stage_a_from", None)
        if given := sorted("--" + k.replace("_", "-") for k, v in options.items() if v is not None):
            raise PeelError(f"--method rule does not take {', '.join(given)} (it has no stage b or ablations)")
        if budget is not None:
            raise PeelError("RULE is elastic: it is trained once and searched per budget; give budgets to "
                            "peel evaluate or peel export --max-budget (--budget is for a fitted method)")
        return train_rule(data, out, config, data_path=data_path, resume=resume, progress=progress,
                          stage_a_from=stage_a_from)

    def load(self, layout: RunLayout, *, overrides: list[str] | None = None) -> RuleModel:
        config = layout.read_config()
        if overrides:
            if bad := [o for o in overrides if not o.strip().startswith("device.eq10=")]:
                raise PeelError(f"RULE's labels were measured with this run's device options; only device.eq10 "
                                f"(both readings are labelled) can change, got {bad[0]!r}")
            config = with_device_overrides(config, overrides)
        return RuleModel(layout, config)


class RuleModel(TrainedModel):
    """A trained RULE run: a searched structure per budget, scored by Eq. 10 on stage a's blocks."""

    method, label, elastic, fitted_budget = "rule", "RULE", True, None

    def __init__(self, layout: RunLayout, config: PeelConfig) -> None:
        from peel.training.pretrain import load_pretrained
        from peel.training.rule import Scoring, features, load_estimators

        if not layout.rule_estimator.exists():
            raise PeelError(f"{layout.root}: RULE's estimator is not trained yet; finish with peel train --resume")
        self.layout, self.config = layout, config
        self.users, self.items = load_pretrained(layout.embeddings)
        with np.load(layout.grouping, allow_pickle=False) as z:
            self.item_group = z["item_group"]
        m = config.model
        self.units = UnitLayout(np.bincount(self.item_group, minlength=config.grouping.item_groups), m.n_blocks,
                                m.block_dim, config.device.unit_dtype)
        self.reading = config.device.eq10
        n_features = features(np.zeros((1, config.grouping.item_groups, m.n_blocks), dtype=bool)).shape[1]
        self.space, estimators = load_estimators(layout.rule_estimator, n_features)
        self.estimator = estimators[self.reading]
        self.scoring = Scoring(stored_values(self.items.reshape(len(self.items), m.n_blocks, m.block_dim),
                                             self.item_group, config.device.unit_dtype),
                               self.users.astype(np.float32), self.item_group, config.device.eq10_scale)
        self._data: Interactions | None = None

    # ------------------------------------------------------------------ searches
    def _searches(self) -> dict[int, Any]:
        from peel.training.rule import SearchResult

        found = {}
        for path in self.layout.rule_searches(self.reading):
            result = SearchResult.read(path, self.units, self.space)
            found[result.budget_bytes] = result
        return found

    def search(self, budgets: list[Budget]) -> None:
        """Search every budget not searched yet, smallest first (each seeded by the choice below it); the
        searches are logged to the run's log.txt."""
        from peel._io import write_json_atomic
        from peel.training.pipeline import run_log
        from peel.training.rule import check_budget, search

        pending = sorted((b for b in budgets if not self.layout.rule_search(self.reading, b.bytes).exists()),
                         key=lambda b: b.bytes)
        if not pending:
            return
        with run_log(self.layout.log):
            for budget in pending:
                path = self.layout.rule_search(self.reading, budget.bytes)
                if path.exists():  # the same budget twice in one call
                    continue
                check_budget(self.units, budget.bytes)
                below = [b for b in self._searches() if b < budget.bytes]
                seed = None if not below else (max(below), self._choice(max(below))[0].structure)
                result = search(self.estimator, self.units, budget.bytes, self.reading, self.config,
                                self._validation_ndcg, seed=seed, space=self.space)
                write_json_atomic(path, result.to_json())
                log.info("RULE search (%s) at %s: validation NDCG@50 %.5f, %.1f s", self.reading, budget,
                         result.valid_ndcg, result.seconds)

    def _validation_ndcg(self, structure: np.ndarray) -> float:
        """The true validation metric of a finalist: NDCG@50 over every validation user."""
        if self._data is None:
            self._data = self.layout.load_data()
        return self.scoring.ndcg(structure, self.reading, self._data)

    def _choice(self, budget_bytes: int) -> tuple[Any, Any]:
        """(the best search result at or below ``budget_bytes`` on validation, the search at this budget)."""
        searches = self._searches()
        own = searches[budget_bytes]
        fitting = [r for b, r in sorted(searches.items()) if b <= budget_bytes]
        best = max(range(len(fitting)), key=lambda i: (fitting[i].valid_ndcg, i))
        return fitting[best], own

    def choice(self, budget: Budget | None) -> tuple[Any, Any]:
        """(the structure that serves ``budget``, this budget's own search), searching it if it is new."""
        if budget is None:
            raise BudgetError("RULE is elastic: give it a budget")
        self.search([budget])
        return self._choice(budget.bytes)

    # ------------------------------------------------------------------ protocol
    def device_bytes(self, budget: Budget | None) -> int:
        return self.choice(budget)[0].bytes_used

    def scorer(self, budget: Budget | None) -> Scorer:
        return self.scoring.scorer(self.choice(budget)[0].structure, self.reading)

    def details(self, budget: Budget | None) -> dict[str, Any]:
        chosen, own = self.choice(budget)
        return {"blocks_kept": int(chosen.structure.sum()), "search_seconds": own.seconds,
                "structure_from_budget_bytes": chosen.budget_bytes, "valid_ndcg@50": chosen.valid_ndcg}

    def evaluate(self, data: Interactions, budgets: list[Budget], **options: Any) -> list[dict[str, Any]]:
        from peel.training.rule import minimum_bytes

        self._data = data
        # smallest first, so that each seeds the next; a budget below the minimum gets its error row
        self.search([b for b in budgets if b.bytes >= minimum_bytes(self.units)])
        return super().evaluate(data, budgets, **options)

    def export(self, out: str | os.PathLike[str], data: Interactions, *, max_budget: Budget | None = None,
               groups: list[int] | None = None, history: bool = True, overwrite: bool = False) -> Path:
        """One global bundle holding the structure of ``max_budget`` (default: the largest searched budget),
        its units first; a device with that budget reads exactly them."""
        from peel.export.export import export_peel

        if max_budget is None:
            searched = sorted(self._searches())
            if not searched:
                raise PeelError(f"{self.layout.root}: RULE has no searched budget yet; give --max-budget (or evaluate "
                                "at a budget first)")
            max_budget = Budget(searched[-1], label=str(searched[-1]))
        chosen = self.choice(max_budget)[0]
        run = self._trained_run(chosen.structure)
        kept = Budget(chosen.bytes_used, label=max_budget.label)
        if select(run.unit_order(0), run.layout, kept.bytes).n_kept != int(chosen.structure.sum()):
            raise PeelError(f"{self.layout.root}: the structure at {max_budget} is not a prefix of its unit order")
        return export_peel(run, out, data=data, max_budget=kept, groups=groups, history=history, overwrite=overwrite)

    def _trained_run(self, structure: np.ndarray) -> Any:
        """The structure as a one-user-group PEEL run (what the export writes): its units first in the order."""
        from peel.run import TrainedRun
        from peel.training.finetune import GroupResult
        from peel.training.rule import unit_weights

        users = np.arange(len(self.users))
        group = GroupResult(group=0, users=users, item_table=self.items, user_vectors=self.users, batch_norm={},
                            importance_weights=unit_weights(structure), best_epoch=0, epochs_run=0,
                            best_valid_loss=math.nan, seconds=0.0)
        return TrainedRun(self.layout.root, self.config, self.users, self.items, self.item_group,
                          np.zeros(len(self.users), dtype=np.int64), [group])

