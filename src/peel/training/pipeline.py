"""The server pipeline into a run directory: pretrain -> grouping -> fine-tune every user group.

Each stage writes its output atomically and is skipped when that output exists, so a killed run
continues with ``resume=True`` (the running stage resumes from its last epoch checkpoint).

The run directory's layout is :class:`peel.run_layout.RunLayout`; an ablation shares the main run's
stage a where its config allows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from peel._allocator import keep_freed_memory
from peel._io import refuse_overlap, write_json_atomic
from peel.budget import device_bytes
from peel.config import PeelConfig, missing_keys, resolve_for_data, validate_for_data
from peel.data.interactions import Interactions
from peel.data.source import data_difference, data_source
from peel.errors import ConfigError, PeelError
from peel.run_layout import RunLayout, method_record
from peel.training.executor import run_tasks, thread_limit
from peel.training.finetune import GroupResult, GroupTask, finetune_group
from peel.training.grouping import item_groups, user_groups
from peel.training.pretrain import load_pretrained, pretrain
from peel.training.sampling import check_negatives

log = logging.getLogger("peel")

STAGES = ("pretrain", "grouping")  # the stages a run may stop after (stop_after)
ABLATIONS = ("random_item_groups", "no_diversity", "single_user_group", "random_selection", "lightgcn")


def ablation_config(config: PeelConfig, name: str) -> PeelConfig:
    """The config of one ablation of the paper's Fig. 4 (and full-size LightGCN)."""
    r = dataclasses.replace
    if name == "random_item_groups":
        return r(config, grouping=r(config.grouping, item_grouping="random"))
    if name == "no_diversity":
        if config.pretrain.lambda_div == 0:
            raise ConfigError("the no_diversity ablation equals this run: pretrain.lambda_div is already 0 (peel's "
                              "default); train the run with pretrain.lambda_div=0.001 (the paper's) to ablate it")
        return r(config, pretrain=r(config.pretrain, lambda_div=0.0))
    if name == "single_user_group":
        return r(config, grouping=r(config.grouping, user_grouping="single"))
    if name == "random_selection":
        return r(config, finetune=r(config.finetune, use_controller=False),
                 device=r(config.device, block_selection="random"))
    if name == "lightgcn":  # plain LightGCN: no regularizer, no nested prefixes
        return r(config, pretrain=r(config.pretrain, lambda_div=0.0, nested="", allocation_budgets=0,
                                    l2_full_prefix_race=""))
    raise ConfigError(f"unknown ablation {name!r}; known: {', '.join(ABLATIONS)}")


def train(data: Interactions, out: str | Path, config: PeelConfig, *, data_path: str | Path | None = None,
          resume: bool = False, progress: bool = True, ablation: str | None = None,
          stop_after: str | None = None, stage_a_from: str | Path | None = None,
          method: dict[str, Any] | None = None,
          teacher: tuple[Path | None, PeelConfig] | None = None,
          item_dims: tuple[str, int] | None = None) -> dict[str, Any]:
    """Run (or resume) the whole pipeline into ``out``; returns the summary written to summary.json.

    With ``ablation``, the run goes to ``out/ablations/<name>`` with the ablation's config, reusing
    the main run's stage a when the ablation does not change it. ``stop_after`` ('pretrain' or 'grouping')
    stops after that stage.
    ``stage_a_from``: a finished run (or a folder of runs with an ``ablations/`` beside) whose stage a
    is reused (hard-linked) when its model, pretraining config, seed and data equal this one's.
    ``method``: the run's method.json (default PEEL's); a fitted baseline passes its method and budget.
    ``teacher``: (a finished full-size run, or None to train one into ``out/teacher`` with the given config)
    whose final vectors stage a starts from and distils (LightRec). ``item_dims``: (search, budget bytes):
    per-item dims are searched first (ESAPN, AutoEmb), fitted to the budget, and stage a trains with them.
    Large freed arrays stay in the process for the next step (:func:`peel._allocator.keep_freed_memory`).
    """
    out = Path(out)
    if stop_after is not None and stop_after not in STAGES:
        raise ConfigError(f"stop_after must be one of {', '.join(STAGES)}, got {stop_after!r}")
    method = method or {"method": "peel"}
    config = resolve_for_data(config, n_train=data.count("train"))  # config.json holds the resolved values
    check_negatives(data)  # a user with every item has no BPR negative: refused before anything is written
    if ablation is not None:
        parent = out
        config = ablation_config(config, ablation)
        out = RunLayout(parent).ablation(ablation).root
        if ablation == "lightgcn":  # full-size LightGCN: stage a alone, a fixed-size model with no budget
            stop_after = "pretrain"
            method = method_record("lightgcn", None, config.model.dim, device_bytes(data.n_items, config.model.dim))
    validate_for_data(config, n_users=data.n_users, n_items=data.n_items)  # nothing is written before the checks
    refuse_overlap(out, [data_path] if data_path is not None else [], cwd=False)
    source = data_source(data, data_path)
    if ablation is not None:  # an ablation is compared with its main run: the same data
        _check_same_data(parent, source)
    if teacher is not None and teacher[0] is not None:  # a given teacher is checked before anything is written
        _teacher_vectors(teacher[0], data, source, teacher[1].model.dim)
    extended = _prepare_run_dir(out, config, source, method, resume=resume)
    if ablation is not None:
        _share_pretraining(parent, out, config)
    elif stage_a_from is not None:
        _share_pretraining(Path(stage_a_from), out, config)
    with run_log(RunLayout(out).log), thread_limit(config.threads):
        log.info("train %s: executor %s, threads %d%s%s", out, config.executor, config.threads,
                 ", resume" if resume else "", ", freed memory kept" if keep_freed_memory() else "")
        if extended:
            log.info("pretrain.max_epochs raised to %d on resume (stage a %s)", config.pretrain.max_epochs, extended)
        return _run_stages(data, out, config, resume=resume, progress=progress, stop_after=stop_after,
                           teacher=teacher, data_path=data_path, item_dims=item_dims)


def _run_stages(data: Interactions, out: Path, config: PeelConfig, *, resume: bool, progress: bool,
                stop_after: str | None, teacher: tuple[Path | None, PeelConfig] | None = None,
                data_path: str | Path | None = None, item_dims: tuple[str, int] | None = None) -> dict[str, Any]:
    timings: dict[str, float] = {}
    layout = RunLayout(out)
    embeddings = layout.embeddings
    if not embeddings.exists():
        teacher_vectors = None
        if teacher is not None:  # its seconds count when it is trained here (a given teacher costs this run none)
            fresh = teacher[0] is None and not RunLayout(layout.teacher).embeddings.exists()
            teacher_vectors = _teacher(data, out, *teacher, resume=resume, progress=progress, data_path=data_path)
            if fresh:  # the teacher run's own clock: every invocation that trained it
                timings["teacher"] = RunLayout(layout.teacher).stage_seconds("total") or 0.0
                _write_summary(out, timings, groups=[])
        layout.pretrain_dir.mkdir(parents=True, exist_ok=True)
        dims = None
        if item_dims is not None:
            fresh, clock = not layout.search.exists(), StageClock(out, "search", resume=resume)
            dims = _searched_dims(data, layout, config, *item_dims, resume=resume, progress=progress,
                                  on_checkpoint=clock.save)
            if fresh:
                timings["search"] = clock.seconds()
                _write_summary(out, timings, groups=[])
        clock = StageClock(out, "pretrain", resume=resume)
        result = pretrain(data, model_config=config.model, config=config.pretrain, seed=config.seed,
                          checkpoint=layout.pretrain_checkpoint, resume=resume, progress=progress,
                          allocations=_allocations(data, config), teacher=teacher_vectors, item_dims=dims,
                          on_checkpoint=clock.save)
        result.save(embeddings)
        write_json_atomic(layout.pretrain_result, {
            "best_epoch": result.loop.best_epoch, "valid_recall@50": result.loop.best_score,
            "epochs_run": result.loop.epochs_run, "seconds": result.loop.seconds, "history": result.loop.history,
            **({"l2_full_prefix": result.l2_full_prefix, "race": {f"{v:g}": score for v, score in result.race.items()}}
               if result.race else {})})
        log.info("pretrain: best epoch %d, valid recall@50 %.5f", result.loop.best_epoch, result.loop.best_score)
        # at least its loop's seconds: a stage a checkpointed before the clock was kept has none recorded
        timings["pretrain"] = max(clock.seconds(), result.loop.seconds)
        _write_summary(out, timings, groups=[])  # each finished stage's time survives a later kill
    user_vectors, item_vectors = load_pretrained(embeddings)
    if stop_after == "pretrain":
        return _write_summary(out, timings, groups=[])
    t1 = time.perf_counter()
    fresh = not layout.grouping.exists()
    item_group, user_group = _grouping(data, out, config, user_vectors)
    if fresh:
        timings["grouping"] = time.perf_counter() - t1
        _write_summary(out, timings, groups=[])
    if stop_after == "grouping":
        return _write_summary(out, timings, groups=[])
    clock = StageClock(out, "finetune", resume=resume)
    pending = layout.finished_groups()
    groups = _finetune(data, out, config, user_vectors, item_vectors, item_group, user_group,
                       resume=resume, progress=progress, on_group=clock.save)
    if pending < len(groups):
        timings["finetune"] = clock.seconds()
    return _write_summary(out, timings, groups=groups)


class StageClock:
    """Seconds a stage has taken over every invocation of a run: this one's, plus (on resume) what the
    earlier ones had spent by their last checkpoint, kept in summary.json's ``unfinished_seconds``. A
    killed and resumed stage so records about what an uninterrupted one takes: the work after the last
    checkpoint is redone and counted once. (Stage b saves the clock as each user group finishes, so a
    group killed halfway counts only its resumed part.)"""

    def __init__(self, out: Path, stage: str, *, resume: bool) -> None:
        self.layout, self.stage = RunLayout(out), stage
        self.before = self._recorded() if resume else 0.0
        self.start = time.perf_counter()

    def _recorded(self) -> float:
        unfinished = self.layout.read_summary().get("unfinished_seconds", {})
        value = unfinished.get(self.stage, 0.0) if isinstance(unfinished, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < math.inf:
            raise PeelError(f"{self.layout.summary}: unfinished_seconds.{self.stage} must be a non-negative number "
                            f"of seconds, got {value!r}")
        return float(value)

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start

    def save(self) -> None:
        summary = self.layout.read_summary()
        unfinished = summary.get("unfinished_seconds")
        summary["unfinished_seconds"] = {**(unfinished if isinstance(unfinished, dict) else {}),
                                         self.stage: round(self.seconds(), 2)}
        write_json_atomic(self.layout.summary, summary)


def _searched_dims(data: Interactions, layout: RunLayout, config: PeelConfig, search: str, budget_bytes: int, *,
                   resume: bool, progress: bool, on_checkpoint: Callable[[], None] | None = None) -> np.ndarray:
    """Per-item dims: searched (or read from a finished search), then fitted to the budget."""
    from peel._io import atomic_path
    from peel.training.search import candidate_dims, fit_item_dims, search_item_dims

    m = config.model
    if layout.search.exists():
        with np.load(layout.search, allow_pickle=False) as z:
            searched = z["item_dims"]
    else:
        searched = search_item_dims(data, model_config=m, config=config.pretrain, search=search, seed=config.seed,
                                    epochs=config.pretrain.search_epochs, smallest=m.block_dim,
                                    budget_bytes=budget_bytes, checkpoint=layout.search_checkpoint, resume=resume,
                                    progress=progress, on_checkpoint=on_checkpoint)
        with atomic_path(layout.search) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, item_dims=searched)
        if layout.search_checkpoint.exists():
            layout.search_checkpoint.unlink()
    dims = fit_item_dims(searched, data.popularity("train"), budget_bytes, candidate_dims(m.block_dim, m.dim), m.dim)
    log.info("%s search: mean dims %.1f searched, %.1f fitted to %d bytes", search, searched.mean(), dims.mean(),
             budget_bytes)
    return dims


def _teacher(data: Interactions, out: Path, run: Path | None, config: PeelConfig, *, resume: bool, progress: bool,
             data_path: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """The final (user, item) vectors of the teacher: the given finished run (checked: this data, the
    config's D), or a full-size run trained into ``out/teacher`` (resumable) with ``config``."""
    if run is None:
        run = RunLayout(out).teacher
        if not RunLayout(run).embeddings.exists():
            dim = config.model.dim
            log.info("teacher: training a full-size LightGCN of D = %d into %s", dim, run)
            train(data, run, config, data_path=data_path, resume=resume or RunLayout(run).config.exists(),
                  progress=progress, stop_after="pretrain",
                  method=method_record("lightgcn", None, dim, device_bytes(data.n_items, dim)))
    return _teacher_vectors(run, data, data_source(data, data_path), config.model.dim)


def _teacher_vectors(run: Path, data: Interactions, source: dict[str, Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A teacher run's final vectors, refused unless it is finished, on this data, with ``dim`` dims."""
    layout = RunLayout(run)
    if not layout.embeddings.exists():
        raise PeelError(f"teacher {run} holds no finished stage a ({layout.embeddings} is missing)")
    _check_same_data(run, source)
    users, items = load_pretrained(layout.embeddings)
    if items.shape != (data.n_items, dim) or users.shape != (data.n_users, dim):
        raise PeelError(f"teacher {run} holds {items.shape[1]}-dim vectors of {len(users)} users and "
                        f"{len(items)} items; the student needs {dim} dims (model.n_blocks * model.block_dim) "
                        f"on {data.n_users} users and {data.n_items} items")
    return users, items


def _allocations(data: Interactions, config: PeelConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """What stage a needs to train on device allocations (pretrain.allocation_budgets): the item groups
    (the same popularity groups stage b forms) and the global density order's blocks per budget."""
    if not config.pretrain.allocation_budgets or not config.pretrain.nested_blocks(config.model.n_blocks):
        return None
    from peel.training.allocation import allocation_table
    from peel.training.finetune import item_group_share
    from peel.units import UnitLayout

    items = _item_groups(data, config)
    layout = UnitLayout(np.bincount(items), config.model.n_blocks, config.model.block_dim)
    share = item_group_share(data.csr("train"), items, config.grouping.item_groups)
    return items, allocation_table(share, layout, config.finetune.density_decay, config.pretrain.allocation_budgets)


def _item_groups(data: Interactions, config: PeelConfig) -> np.ndarray:
    """Item groups by training popularity (or random, the ablation): a function of the data and config only."""
    g = config.grouping
    return item_groups(data.popularity("train"), g.item_groups, g.item_grouping, seed=config.seed)


def _grouping(data: Interactions, out: Path, config: PeelConfig,
              user_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    layout = RunLayout(out)
    path = layout.grouping
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return z["item_group"], z["user_group"]
    g = config.grouping
    items = _item_groups(data, config)
    has_valid = np.diff(data.csr("valid").indptr) > 0
    users = user_groups(user_vectors, g.user_groups, mode=g.user_grouping, seed=config.seed, n_init=g.kmeans_n_init,
                        valid_users=has_valid, min_valid_users=g.min_valid_users)
    from peel._io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, item_group=items, user_group=users.labels, centroids=users.centroids)
    write_json_atomic(layout.grouping_sizes, {
        "item_group_sizes": np.bincount(items).tolist(), "user_group_sizes": np.bincount(users.labels).tolist(),
        "merged_user_groups": users.merged})
    return items, users.labels


def _finetune(data: Interactions, out: Path, config: PeelConfig, user_vectors: np.ndarray, item_vectors: np.ndarray,
              item_group: np.ndarray, user_group: np.ndarray, *, resume: bool, progress: bool,
              on_group: Callable[[], None] | None = None) -> list[GroupResult]:
    layout = RunLayout(out)
    layout.finetune_dir.mkdir(exist_ok=True)
    train_csr, valid_csr = data.csr("train"), data.csr("valid")
    done: dict[int, GroupResult] = {}
    tasks = []
    for g in range(int(user_group.max()) + 1):  # a loop over user groups, not users
        path = layout.group(g)
        if path.exists():
            done[g] = GroupResult.load(path)
            continue
        users = np.flatnonzero(user_group == g)
        tasks.append(GroupTask(group=g, config=config, users=users, item_table=item_vectors,
                               user_vectors=user_vectors[users], item_group=item_group, train=train_csr[users],
                               valid=valid_csr[users], checkpoint=str(layout.group_checkpoint(g)),
                               resume=resume, progress=progress and config.executor == "local"))

    def save(result: GroupResult) -> None:
        result.save(layout.group(result.group))
        checkpoint = layout.group_checkpoint(result.group)
        if checkpoint.exists():
            checkpoint.unlink()
        if on_group is not None:
            on_group()
        if config.finetune.importance == "density":  # nothing trained, so no validation loss
            log.info("user group %d: %d users, density importance weights (no fine-tuning), %.1f s", result.group,
                     len(result.users), result.seconds)
        else:
            log.info("user group %d: %d users, best epoch %d, valid loss %.5f, %.1f s", result.group,
                     len(result.users), result.best_epoch, result.best_valid_loss, result.seconds)

    for result in run_tasks(finetune_group, tasks, executor=config.executor, cpus_per_task=max(config.threads, 1),
                            on_result=save, progress=progress, desc="stage b: user groups"):
        done[result.group] = result
    return [done[g] for g in sorted(done)]


def record_seconds(out: str | Path, timings: dict[str, float]) -> dict[str, Any]:
    """Add the seconds of stages run outside this pipeline (RULE's labels and estimator) to summary.json."""
    return _write_summary(Path(out), timings, groups=[])


def _write_summary(out: Path, timings: dict[str, float], groups: list[GroupResult]) -> dict[str, Any]:
    """Stage times (:class:`StageClock`); a stage skipped because it was done keeps its recorded time,
    written when it finished. Called between stages, so no stage is unfinished: ``unfinished_seconds`` goes."""
    layout = RunLayout(out)
    path = layout.summary
    recorded = layout.read_summary().get("seconds", {})
    seconds = {k: v for k, v in recorded.items() if k != "total"}
    seconds.update({k: round(v, 2) for k, v in timings.items()})
    summary = {"seconds": seconds,
               "groups": [{"group": r.group, "users": len(r.users), "best_epoch": r.best_epoch,
                           "epochs_run": r.epochs_run,  # no validation loss without stage-b training: null
                           "best_valid_loss": None if math.isnan(r.best_valid_loss) else r.best_valid_loss,
                           "seconds": round(r.seconds, 2)} for r in groups]}
    summary["seconds"]["total"] = round(sum(summary["seconds"].values()), 2)
    write_json_atomic(path, summary)
    return summary


def _prepare_run_dir(out: Path, config: PeelConfig, source: dict[str, Any], method: dict[str, Any], *,
                     resume: bool) -> str:
    """Refuse what is not this run (another run, another method or budget, other data, a directory of
    something else), then record the config, the method and the data. Executor and threads may change on
    resume: they do not change results; so may a larger stage-a epoch cap where it trains what a fresh run
    at that cap would (returns why, "" otherwise)."""
    extended = ""
    if out.exists() and not out.is_dir():
        raise PeelError(f"run directory {out} exists and is not a directory")
    layout = RunLayout(out)
    config_path = layout.config
    if config_path.exists():
        if not resume:
            raise PeelError(f"run directory {out} already holds a run; pass --resume to continue it "
                            "or choose another --out")
        recorded = layout.read_method() or {"method": "peel"}
        if recorded != method:
            raise PeelError(f"run directory {out} holds {_describe(recorded)}, not {_describe(method)}; "
                            "choose another --out")
        values = layout.read_json(config_path)
        if missing := missing_keys(values):
            raise PeelError(f"{config_path} was written by an older peel and lacks {', '.join(missing)}; today's "
                            "defaults for them may not be what the run was trained with: add them to that file "
                            "with the values the run used, then resume")
        saved = PeelConfig.from_dict(values)
        extended = _raised_epoch_cap(layout, saved, config)
        if _computed(saved) != _computed(config) and not extended:
            raise PeelError(f"{config_path} differs from the requested config; a resumed run must keep its config "
                            "(only executor and threads may change, and a larger pretrain.max_epochs where "
                            "stage a has not reached its cap)")
        _check_same_data(out, source)
        if extended:
            write_json_atomic(config_path, dataclasses.replace(
                saved, pretrain=dataclasses.replace(saved.pretrain, max_epochs=config.pretrain.max_epochs)).to_dict())
    elif out.is_dir() and any(out.iterdir()):
        raise PeelError(f"run directory {out} is not empty and holds no run (no config.json); "
                        "choose a new or empty --out")
    out.mkdir(parents=True, exist_ok=True)
    if not config_path.exists():
        write_json_atomic(config_path, config.to_dict())
    write_json_atomic(layout.method, method)
    write_json_atomic(layout.data, source)
    return extended


def _raised_epoch_cap(layout: RunLayout, saved: PeelConfig, config: PeelConfig) -> str:
    """Why resuming ``saved`` with ``config``'s larger stage-a epoch cap trains exactly what a fresh run at that
    cap would ("" when it would not, or the configs differ elsewhere): stage a stopped early before the old cap,
    or has not reached it and never validated off its cadence (the loop also validates at the cap). Batches
    depend only on the seed and the epoch, so the epochs before the old cap are the same either way. A stage a
    that ran to its cap is refused: training it on would change every later stage."""
    old, new = saved.pretrain.max_epochs, config.pretrain.max_epochs
    raised = dataclasses.replace(saved, pretrain=dataclasses.replace(saved.pretrain, max_epochs=new))
    if new <= old or _computed(raised) != _computed(config):
        return ""
    result = layout.read_json(layout.pretrain_result, missing=None)
    if result is None:
        return "unfinished" if old % saved.pretrain.eval_every == 0 else ""
    epochs_run = result.get("epochs_run") if isinstance(result, dict) else None
    if not isinstance(epochs_run, int):
        return ""
    if epochs_run < old:
        return f"stopped early at epoch {epochs_run}"
    raise PeelError(f"{layout.root} trained stage a to its cap of {old} epochs (pretrain.max_epochs); a larger cap "
                    f"would train it on and change every later stage: resume it with "
                    f"--set pretrain.max_epochs={old}, or train the larger cap into a new --out")


def _describe(method: dict[str, Any]) -> str:
    budget = f" fitted to {method['budget']}" if method.get("budget") else ""
    return f"a {method['method']} run{budget}"


def _check_same_data(run: Path, source: dict[str, Any]) -> None:
    recorded = RunLayout(run).read_data_source()
    difference = data_difference(recorded, source) if recorded else None
    if difference:
        raise PeelError(f"run {run} was trained on other data: {difference}; use it with its own data "
                        f"({recorded['source']})")


def _computed(config: PeelConfig) -> PeelConfig:
    """The config without how it is executed (executor, threads) or how its resolved lr was derived."""
    return dataclasses.replace(config, executor="local", threads=0, pretrain=config.pretrain.without_lr_rule())


def _share_pretraining(parent: Path, out: Path, config: PeelConfig) -> None:
    """Reuse finished stage-a embeddings from the main run or a sibling ablation with the same stage a."""
    target = RunLayout(out)
    if target.embeddings.exists():
        return
    for candidate in [RunLayout(parent), *RunLayout(parent).ablations()]:
        if candidate.root == out or not candidate.embeddings.exists() or not candidate.config.exists():
            continue
        if data_difference(candidate.read_data_source(), target.read_data_source()) is not None:
            continue
        other = PeelConfig.from_json(candidate.config)
        if other.model == config.model and other.seed == config.seed and \
                other.pretrain.without_lr_rule() == config.pretrain.without_lr_rule():
            target.pretrain_dir.mkdir(parents=True, exist_ok=True)
            os.link(candidate.embeddings, target.embeddings)
            if candidate.pretrain_result.exists():
                os.link(candidate.pretrain_result, target.pretrain_result)
            log.info("%s: stage a shared with %s", out, candidate.root)
            return


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Append the "peel" logger's records to a run's log.txt while the block runs."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("peel")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
