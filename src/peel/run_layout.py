"""Where every artifact of a run directory lives, and how the small JSON files in it are read.

Every module that reads or writes a run (the pipeline, the fitted baselines, the evaluator's report,
the export, the benchmarks) names its files through :class:`RunLayout`, so the layout is spelled once:

    config.json     the resolved config (PeelConfig)
    data.json       where the data came from and its identity (checked on resume)
    method.json     which registered method trained the run, and the budget it was fitted to
    summary.json    seconds per stage (written after each stage; a killed stage's seconds so far, at its last
                    checkpoint, in unfinished_seconds, so a resumed stage counts them) and per user group
    log.txt
    pretrain/       checkpoint.pt (while running), embeddings.npz, result.json; search.npz (ESAPN, AutoEmb)
    teacher/        a distilled method's full-size teacher run, the same layout
    grouping.npz    item_group, user_group, centroids; grouping.json: their sizes
    finetune/       group_<g>.npz per user group (+ checkpoint_<g>.pt while running)
    rule/           RULE: labels.npz (labelled structures), estimator.npz, search-<reading>-<bytes>.json
    ablations/<name>/   the same layout, one per ablation
    evaluation/     benchmark evaluations of the finished run, by a key of all they depend on (peel.bench.cache)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peel.budget import Budget
from peel.config import PeelConfig
from peel.data.interactions import Interactions
from peel.errors import PeelError


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory (``RunLayout("runs/x").embeddings``); nothing is read until asked."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------------ files
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def data(self) -> Path:
        return self.root / "data.json"

    @property
    def method(self) -> Path:
        return self.root / "method.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def log(self) -> Path:
        return self.root / "log.txt"

    @property
    def pretrain_dir(self) -> Path:
        return self.root / "pretrain"

    @property
    def pretrain_checkpoint(self) -> Path:
        return self.pretrain_dir / "checkpoint.pt"

    @property
    def embeddings(self) -> Path:
        """Stage a's final user and item vectors (what a fitted baseline scores with)."""
        return self.pretrain_dir / "embeddings.npz"

    @property
    def search(self) -> Path:
        """A multi-dimensional baseline's searched per-item dims, before they are fitted to the budget."""
        return self.pretrain_dir / "search.npz"

    @property
    def search_checkpoint(self) -> Path:
        return self.pretrain_dir / "search-checkpoint.pt"

    @property
    def teacher(self) -> Path:
        """The full-size run a distilled method (LightRec) trained as its teacher, when none was given."""
        return self.root / "teacher"

    @property
    def pretrain_result(self) -> Path:
        return self.pretrain_dir / "result.json"

    @property
    def grouping(self) -> Path:
        return self.root / "grouping.npz"

    @property
    def grouping_sizes(self) -> Path:
        return self.root / "grouping.json"

    @property
    def finetune_dir(self) -> Path:
        return self.root / "finetune"

    def group(self, user_group: int) -> Path:
        return self.finetune_dir / f"group_{user_group}.npz"

    def group_checkpoint(self, user_group: int) -> Path:
        return self.finetune_dir / f"checkpoint_{user_group}.pt"

    def finished_groups(self) -> int:
        return len(list(self.finetune_dir.glob("group_*.npz"))) if self.finetune_dir.exists() else 0

    @property
    def rule_dir(self) -> Path:
        return self.root / "rule"

    @property
    def rule_labels(self) -> Path:
        """RULE's labelled random structures: structures, labels (one column per Eq. 10 reading), users."""
        return self.rule_dir / "labels.npz"

    @property
    def rule_labels_checkpoint(self) -> Path:
        return self.rule_dir / "labels-checkpoint.npz"

    @property
    def rule_estimator(self) -> Path:
        return self.rule_dir / "estimator.npz"

    def rule_search(self, reading: str, budget_bytes: int) -> Path:
        """RULE's search at one budget for one Eq. 10 reading."""
        return self.rule_dir / f"search-{reading}-{budget_bytes}.json"

    def rule_searches(self, reading: str) -> list[Path]:
        return sorted(self.rule_dir.glob(f"search-{reading}-*.json")) if self.rule_dir.exists() else []

    @property
    def evaluation_cache(self) -> Path:
        return self.root / "evaluation"

    @property
    def ablations_dir(self) -> Path:
        return self.root / "ablations"

    def ablation(self, name: str) -> RunLayout:
        return RunLayout(self.ablations_dir / name)

    def ablations(self) -> list[RunLayout]:
        return [RunLayout(p) for p in sorted(self.ablations_dir.glob("*")) if p.is_dir()]

    # ------------------------------------------------------------------ reading
    def is_run(self) -> bool:
        return self.config.exists() and self.data.exists()

    def require_run(self) -> None:
        if not self.data.exists():
            raise PeelError(f"{self.root} is not a run directory (no data.json); create one with peel train")
        if not self.config.exists():
            raise PeelError(f"{self.root} is not a run directory (no config.json); create one with peel train")

    def read_json(self, path: Path, *, missing: Any = None) -> Any:
        """A JSON file of this run; ``missing`` when it does not exist; a PeelError naming it if unreadable."""
        if not path.exists():
            return missing
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PeelError(f"{path}: cannot read this run file ({exc})") from None

    def read_data_source(self) -> dict[str, Any]:
        return self.read_json(self.data, missing={})

    def load_data(self) -> Interactions:
        """The run's dataset, loaded again from where data.json says it came from."""
        from peel.data.source import load_data_source

        if not self.data.exists():
            raise PeelError(f"{self.root} has no data.json: it is not a run directory, or pass the dataset itself")
        return load_data_source(self.read_data_source())

    def read_config(self) -> PeelConfig:
        if not self.config.exists():
            raise PeelError(f"{self.root} is not a run directory (no config.json); create one with peel train")
        return PeelConfig.from_json(self.config)

    def read_summary(self) -> dict[str, Any]:
        return self.read_json(self.summary, missing={})

    def stage_seconds(self, stage: str = "total") -> float | None:
        """Seconds a stage took (``total``: the sum), as summary.json recorded them."""
        return self.read_summary().get("seconds", {}).get(stage)

    def read_method(self) -> dict[str, Any] | None:
        """method.json: {"method": name, ...}; None for a run from before it was written (a PEEL run)."""
        info = self.read_json(self.method)
        if info is not None and (not isinstance(info, dict) or not isinstance(info.get("method"), str)):
            raise PeelError(f"{self.method}: expected a JSON object with a \"method\" name")
        return info


def method_record(method: str, budget: Budget | None, dim: int, device_bytes: int) -> dict[str, Any]:
    """method.json of a fixed-size model (``budget`` None: full size): the method, the budget it was fitted
    to, its dimension and the bytes a device holds."""
    return {"method": method, "budget": None if budget is None else budget.label or str(budget.bytes),
            "budget_bytes": None if budget is None else budget.bytes, "dim": dim, "device_bytes": device_bytes}
