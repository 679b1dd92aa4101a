"""`bratsseg crossval`: k-fold cross-validation of a recipe on any labelled dataset, resumable at every step.

A run folder ``RUN`` holds, as the steps make them::

    RUN/crossval.json        the plan: data roots, recipe (its text), --set overrides, the strata of every case
    RUN/splits.json          each fold's training and validation cases
    RUN/cache/               the preprocessed cases (``bratsseg preprocess``; cases already there are reused)
    RUN/foldK/               fold K's training run (``bratsseg train``; ``last`` is the model evaluated)
    RUN/foldK-ft/            where the recipe has a ``finetune`` stage: fold K's network continued from
                             ``RUN/foldK/last`` (the model evaluated then)
    RUN/eval/foldK/          fold K's model on its own validation cases, probabilities saved (out of fold)
    RUN/eval-mirror/foldK/   the same with the recipe's test-time mirroring (the accurate mode's threshold)
    RUN/all/                 the recipe on every case (the ``fast`` mode of the bundle; ``RUN/all-ft`` its
                             fine-tuning stage)

Every step is skipped when its output is complete, so the same command resumes after any interruption (a training
run resumes from its last checkpoint). ``fold`` runs one fold alone: several machines sharing ``RUN`` can each take
folds (a fold in work is marked by ``RUN/foldK.lock``, with host and process; another call skips it), and a call
that finds every fold evaluated goes on to the all-case model. ``bratsseg bundle RUN -o MODEL`` then makes the
model folder (:mod:`bratsseg.engine.bundle`).

Strata (the folds are dealt stratum by stratum so each fold gets its share) come from a CSV file of
``case_id,group`` or, by default, from the data: the tumour's size (cases with fewer than 5,000 enhancing-tumour
voxels, often low-grade, first) and the naming's edition and institution prefix (``Brats18_TCIA``,
``BraTS2021``, ``BraTS-GLI``). No case id is written in code.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bratsseg.atomic import write_json_atomic
from bratsseg.data.cache import CachedCase, open_cache
from bratsseg.data.splits import kfold_split
from bratsseg.engine.config import TrainConfig, _deep_update, apply_overrides, finetune_config, from_dict, to_dict
from bratsseg.engine.recipes import Recipe, check_finetune, load_recipe
from bratsseg.errors import BratsSegError

log = logging.getLogger(__name__)

PLAN_FILE = "crossval.json"
SPLITS_FILE = "splits.json"
#: cases with fewer true enhancing-tumour voxels than this form their own stratum (and the small-ET table rows)
SMALL_ET_VOXELS = 5000
#: settings the plan fixes; a later call may not change them (the folds would no longer be the same)
_SET_BY_WORKFLOW = ("fold", "stratify", "strata")


@dataclass(frozen=True)
class CrossvalPlan:
    """What a cross-validation run is: stored as ``RUN/crossval.json`` by the first call, checked by the next."""

    data: tuple[str, ...]
    recipe: dict[str, Any]
    recipe_text: str
    overrides: tuple[str, ...]
    groups: dict[str, str]  # case id -> stratum
    strata_source: str
    config: dict[str, Any] = field(default_factory=dict)  # the TrainConfig of fold 0 (fold varies)

    @property
    def folds(self) -> int:
        return int(self.config["folds"])

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        return tuple(self.recipe.get("mirror_axes", ()))

    @property
    def finetune(self) -> dict[str, Any] | None:
        """The recipe's fine-tuning stage (``epochs``, ``steps_per_epoch``, ``lr_factor``, ``settings``), or None."""
        stage = self.recipe.get("finetune")
        return dict(stage) if stage else None


@dataclass
class CrossvalResult:
    """What one call did and where the run stands."""

    run: Path
    folds_done: list[int]
    folds_pending: list[int]
    folds_busy: dict[int, str]  # fold -> who holds its lock
    final_done: bool
    steps: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.final_done and not self.folds_pending


def naming_group(case_id: str) -> str:
    """A case id's edition and institution prefix: ``Brats18_TCIA10_628_1`` -> ``Brats18_TCIA``,
    ``BraTS2021_00000`` -> ``BraTS2021``, ``BraTS-GLI-00000-000`` -> ``BraTS_GLI``, ``UPENN-GBM-00001_11`` ->
    ``UPENN_GBM``: at most two parts (edition, institution) before the first all-digit part, the institution's
    trailing digits dropped."""
    kept: list[str] = []
    for i, token in enumerate(re.split(r"[_-]", case_id)[:2]):
        if token.isdigit() or not token:
            break
        kept.append(token if i == 0 else re.sub(r"\d+$", "", token))
    return "_".join(kept) or "other"


def strata_from_data(cases: Sequence[CachedCase]) -> dict[str, str]:
    """Each labelled case's stratum: ``small-ET/<prefix>`` (fewer than 5,000 true ET voxels) or ``<prefix>``."""
    groups = {}
    for case in cases:
        et = int(case.regions()[2].sum())
        groups[case.case_id] = ("small-ET/" if et < SMALL_ET_VOXELS else "") + naming_group(case.case_id)
    return groups


def strata_from_file(path: Path, case_ids: Sequence[str]) -> dict[str, str]:
    """``case_id,group`` rows (a header row ``case_id,group`` is allowed); every case must be listed."""
    try:
        rows = [r for r in csv.reader(path.read_text().splitlines()) if r and not r[0].startswith("#")]
    except (OSError, UnicodeDecodeError) as err:
        raise BratsSegError(f"cannot read the strata file: {err}", path) from err
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["case_id", "group"]:
        rows = rows[1:]
    bad = [i + 1 for i, r in enumerate(rows) if len(r) < 2 or not r[0].strip()]
    if bad:
        raise BratsSegError(f"strata rows must be case_id,group; rows {bad[:5]} are not", path)
    groups = {r[0].strip(): r[1].strip() for r in rows}
    missing = sorted(set(case_ids) - set(groups))
    if missing:
        raise BratsSegError(f"{len(missing)} case(s) have no group, e.g. {missing[:3]}", path)
    return {c: groups[c] for c in case_ids}


def strata_lists(groups: dict[str, str]) -> list[list[str]]:
    """The strata as :func:`~bratsseg.data.splits.kfold_split` takes them: small-ET groups first, then by name."""
    names = sorted(set(groups.values()), key=lambda g: (not g.startswith("small-ET"), g))
    return [sorted(c for c, g in groups.items() if g == name) for name in names]


def fold_config(plan: CrossvalPlan, fold: int) -> TrainConfig:
    data = dict(plan.config)
    data["fold"] = fold
    config: TrainConfig = from_dict(TrainConfig, data)
    return config


def finetune_stage_config(plan: CrossvalPlan, fold: int, start: str | Path) -> TrainConfig:
    """The recipe's fine-tuning stage for fold ``fold`` (-1: the all-case model), from ``start``'s weights."""
    stage = plan.finetune
    if stage is None:
        raise BratsSegError("this run's recipe has no fine-tuning stage", start)
    return _stage_config(fold_config(plan, fold), stage, start)


def _stage_config(base: TrainConfig, stage: dict[str, Any], start: str | Path) -> TrainConfig:
    """``base`` continued by the fine-tuning ``stage`` (a recipe's ``finetune`` mapping) from ``start``'s weights."""
    return finetune_config(
        base, start, stage["epochs"], stage["steps_per_epoch"], stage["lr_factor"], stage["settings"]
    )


def stage_dir(run: Path, plan: CrossvalPlan, fold: int, final: bool = True) -> Path:
    """Fold ``fold``'s training run (-1: the all-case model's): ``RUN/foldK`` (``RUN/all``), or with ``final`` and a
    recipe that fine-tunes, the fine-tuning stage's ``RUN/foldK-ft`` (``RUN/all-ft``)."""
    name = "all" if fold < 0 else f"fold{fold}"
    return run / (name + ("-ft" if final and plan.finetune else ""))


def fold_model(run: str | Path, fold: int) -> Path:
    """The model folder a cross-validation run evaluates for fold ``fold`` (-1: the all-case model): its last
    stage's ``last``."""
    run = Path(run)
    return stage_dir(run, read_plan(run), fold) / "last"


def _stage_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--set`` overrides split into the training settings' and the fine-tuning stage's (``finetune.epochs=1``,
    ``finetune=null`` for none)."""
    stage = [o for o in overrides if o.split("=", 1)[0].strip().split(".")[0] == "finetune"]
    return [o for o in overrides if o not in stage], stage


def plan_finetune(recipe: Recipe, overrides: Sequence[str]) -> dict[str, Any] | None:
    """The recipe's fine-tuning stage with the ``finetune.*`` overrides applied (checked), or None."""
    _, stage = _stage_overrides(overrides)
    if not stage:
        return recipe.finetune
    return check_finetune(apply_overrides({"finetune": recipe.finetune}, stage)["finetune"], f"recipe {recipe.name}")


def _plan_config(recipe: Recipe, overrides: Sequence[str], groups: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = to_dict(TrainConfig())
    _deep_update(data, recipe.settings)
    data = apply_overrides(data, _stage_overrides(overrides)[0])
    fixed = sorted({o.split("=", 1)[0].strip() for o in overrides} & set(_SET_BY_WORKFLOW))
    if fixed:
        raise BratsSegError(f"--set {', '.join(fixed)}: crossval sets these itself (use --fold, --strata)")
    data.update(fold=0, stratify=[], strata=strata_lists(groups))
    config: TrainConfig = from_dict(TrainConfig, data)  # validates every setting now, before any work
    stage = plan_finetune(recipe, overrides)
    if stage:  # and the fine-tuning stage's
        _stage_config(config, stage, "-")
    return to_dict(config)


def _read_plan(run: Path) -> CrossvalPlan | None:
    path = run / PLAN_FILE
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        return CrossvalPlan(
            data=tuple(d["data"]),
            recipe=d["recipe"],
            recipe_text=d["recipe_text"],
            overrides=tuple(d["overrides"]),
            groups=d["groups"],
            strata_source=d["strata_source"],
            config=d["config"],
        )
    except (ValueError, KeyError, TypeError) as err:
        raise BratsSegError(f"not a readable cross-validation plan ({err})", path) from err


def _write_plan(run: Path, plan: CrossvalPlan) -> None:
    write_json_atomic(
        run / PLAN_FILE,
        {
            "data": list(plan.data),
            "recipe": plan.recipe,
            "recipe_text": plan.recipe_text,
            "overrides": list(plan.overrides),
            "groups": plan.groups,
            "strata_source": plan.strata_source,
            "config": plan.config,
        },
    )


def read_plan(run: str | Path) -> CrossvalPlan:
    """The plan of a cross-validation run folder (one-line error where there is none)."""
    plan = _read_plan(Path(run))
    if plan is None:
        raise BratsSegError(f"not a cross-validation run (no {PLAN_FILE}); make one with `bratsseg crossval`", run)
    return plan


class _FoldLock:
    """``RUN/foldK.lock``, created exclusively: one process trains and evaluates a fold at a time. A lock whose
    process is gone (same host) is taken over."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False
        self.me = f"{socket.gethostname()}:{os.getpid()}"

    def holder(self) -> str | None:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return None

    def acquire(self) -> bool:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue
                host, _, pid = holder.partition(":")
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    log.info("taking over %s from a process that is gone (%s)", self.path.name, holder)
                    self.path.unlink(missing_ok=True)
                    continue
                return False
            with os.fdopen(fd, "w") as f:
                f.write(self.me)
            self.held = True
            return True
        return False

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def eval_dir(run: Path, fold: int, mirrored: bool = False) -> Path:
    return run / ("eval-mirror" if mirrored else "eval") / f"fold{fold}"


def fold_done(run: Path, fold: int, mirror_axes: Sequence[int] = ()) -> bool:
    """Fold ``fold`` is trained and evaluated out of fold (and mirrored, when the recipe mirrors)."""
    done = (eval_dir(run, fold) / "per_case.csv").is_file()
    return done and (not mirror_axes or (eval_dir(run, fold, True) / "per_case.csv").is_file())


def _trained(run: Path, epochs: int) -> bool:
    card = run / "last" / "model.json"
    if not card.is_file():
        return False
    try:
        return int(json.loads(card.read_text())["training"]["epoch"]) >= epochs
    except (ValueError, KeyError, TypeError):
        return False


def final_done(run: Path, plan: CrossvalPlan) -> bool:
    """The all-case model has finished training (and its fine-tuning stage, where the recipe has one)."""
    if plan.finetune:
        return _trained(stage_dir(run, plan, -1), int(plan.finetune["epochs"]))
    return _trained(run / "all", int(plan.config["epochs"]))


def crossval(
    data: Sequence[str | Path],
    run_dir: str | Path,
    recipe: str | Path | None = None,
    overrides: Sequence[str] = (),
    strata_file: str | Path | None = None,
    fold: int | None = None,
    final: bool = True,
    workers: int = 1,
    device: str = "auto",
    threads: int | None = None,
    max_steps: int | None = None,
    say: Callable[[str], None] = print,
    progress: bool = False,
) -> CrossvalResult:
    """Cross-validate ``recipe`` on the labelled cases under ``data`` into ``run_dir`` (see the module docstring).

    ``fold`` runs that fold alone (then the all-case model too, if every fold is done); ``final=False`` stops
    after the folds. ``max_steps`` stops each training after that many steps in all (a smoke test; the run is
    then not complete and a later call without it continues). ``say`` receives one line per step.
    """
    run = Path(run_dir)
    ctx = _context(device)  # under torchrun: rank 0 prepares and holds the locks, every rank trains
    created = not run.exists()
    try:
        plan = _prepare(data, run, recipe, overrides, strata_file, workers, say) if ctx.is_main else None
    except BaseException:
        if created and run.is_dir():  # a run that fails to start leaves no folder behind
            import shutil

            shutil.rmtree(run, ignore_errors=True)
        raise
    finally:
        ctx.barrier()
    plan = plan or read_plan(run)
    if not ctx.is_main:
        say = _silent
    if fold is not None and not 0 <= fold < plan.folds:
        raise BratsSegError(f"--fold must be in 0..{plan.folds - 1} for a {plan.folds}-fold run, got {fold}")
    result = CrossvalResult(run, [], [], {}, ctx.agree(final_done(run, plan)))
    how = _Training(device, threads, max_steps, progress, say)
    for k in [fold] if fold is not None else range(plan.folds):
        if ctx.agree(fold_done(run, k, plan.mirror_axes)):
            continue
        lock = _FoldLock(run / f"fold{k}.lock")
        if not ctx.agree(not ctx.is_main or lock.acquire()):
            result.folds_busy[k] = lock.holder() or "?"
            say(f"fold {k}: in work elsewhere ({result.folds_busy[k]}); skipped")
            continue
        try:
            finished = _train_stages(run, plan, k, how, f"fold {k}/{plan.folds}")
            if finished:
                _evaluate_fold(run, k, plan, device, say)
                result.steps.append(f"fold{k}")
        finally:
            lock.release()
    ctx.barrier()
    result.folds_done = [k for k in range(plan.folds) if ctx.agree(fold_done(run, k, plan.mirror_axes))]
    result.folds_pending = [k for k in range(plan.folds) if k not in result.folds_done]
    if final and not result.folds_pending and not result.final_done:
        lock = _FoldLock(run / "all.lock")
        if ctx.agree(not ctx.is_main or lock.acquire()):
            try:
                _train_stages(run, plan, -1, how, "all cases")
                result.final_done = ctx.agree(final_done(run, plan))
                result.steps.append("all")
            finally:
                lock.release()
        else:
            say(f"the all-case model: in work elsewhere ({lock.holder()}); skipped")
    return result


@dataclass
class _Context:
    """The process group as crossval needs it: who prepares, a barrier, and one decision for every rank."""

    is_main: bool = True
    distributed: Any = None  # a DistContext under torchrun

    def barrier(self) -> None:
        if self.distributed is not None:
            self.distributed.barrier()

    def agree(self, decision: bool) -> bool:
        """Rank 0's ``decision``, on every rank."""
        if self.distributed is None:
            return decision
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1 if decision else 0], device=self.distributed.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())


def _silent(text: str) -> None:
    """What ranks other than 0 say: nothing (rank 0 speaks for the run)."""


def _context(device: str) -> _Context:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Context()
    from bratsseg.engine.distributed import init_distributed

    ctx = init_distributed(device)
    return _Context(ctx.is_main, ctx)


def _prepare(
    data: Sequence[str | Path],
    run: Path,
    recipe: str | Path | None,
    overrides: Sequence[str],
    strata_file: str | Path | None,
    workers: int,
    say: Callable[[str], None],
) -> CrossvalPlan:
    """Preprocess (reusing what is cached), then the plan: made by the first call, checked by later ones."""
    from bratsseg.data.preprocess import preprocess_dataset

    stored = _read_plan(run)
    roots = tuple(str(Path(d).resolve()) for d in data) if data else (stored.data if stored else ())
    if not roots:
        raise BratsSegError("give the dataset (a folder of labelled cases)", run)
    if stored is not None and set(roots) != set(stored.data):
        raise BratsSegError(f"this run was made on {list(stored.data)}, not {list(roots)}; use another folder", run)
    loaded = load_recipe(recipe) if (recipe is not None or stored is None) else None
    if stored is not None and loaded is not None and loaded.source != stored.recipe_text:
        raise BratsSegError(f"this run was made with recipe {stored.recipe['name']!r}; its recipe cannot change", run)
    if stored is not None and overrides and tuple(overrides) != stored.overrides:
        raise BratsSegError(f"this run was made with --set {list(stored.overrides)}; it cannot change", run)
    if stored is None:
        assert loaded is not None
        _plan_config(loaded, overrides, {})  # every setting checked before minutes of preprocessing
    run.mkdir(parents=True, exist_ok=True)
    cache = run / "cache"
    for root in roots:
        report = preprocess_dataset(root, cache, workers=workers)
        for problem in report.failed:
            say(f"skipped: {problem}")
        if report.written:
            say(f"preprocessed {len(report.written)} case(s) of {root} into {cache}")
    cases = [c for c in open_cache(cache) if c.has_seg]
    if stored is not None:
        missing = sorted(set(stored.groups) - {c.case_id for c in cases})
        if missing:
            raise BratsSegError(f"cases of this run are no longer in its cache: {missing[:5]}", cache)
        return stored
    if len(cases) < 2:
        raise BratsSegError(f"cross-validation needs labelled cases; found {len(cases)}", roots[0])
    assert loaded is not None
    ids = [c.case_id for c in cases]
    if strata_file:
        groups, source = strata_from_file(Path(strata_file), ids), f"file {Path(strata_file).resolve()}"
    else:
        groups, source = strata_from_data(cases), "data: small-ET size class and naming prefix"
    config = _plan_config(loaded, overrides, groups)
    if len(cases) < int(config["folds"]):
        raise BratsSegError(f"cannot make {config['folds']} folds from {len(cases)} labelled case(s)", roots[0])
    recipe_data = dataclasses.replace(loaded, finetune=plan_finetune(loaded, overrides)).to_dict()
    plan = CrossvalPlan(roots, recipe_data, loaded.source, tuple(overrides), groups, source, config)
    _write_plan(run, plan)
    splits = {}
    seed = config["seed"] if config.get("split_seed") is None else config["split_seed"]
    for k in range(plan.folds):
        splits[f"fold{k}"] = kfold_split(sorted(ids), plan.folds, k, seed, (), strata_lists(groups))
    write_json_atomic(run / SPLITS_FILE, splits)
    counts: dict[str, int] = {}
    for g in groups.values():
        counts[g] = counts.get(g, 0) + 1
    say(
        f"{len(ids)} labelled cases, {plan.folds} folds, recipe {loaded.name}; strata ({source}): "
        + ", ".join(f"{g} {n}" for g, n in sorted(counts.items()))
    )
    return plan


@dataclass(frozen=True)
class _Training:
    """How every training of a crossval call runs."""

    device: str
    threads: int | None
    max_steps: int | None
    progress: bool
    say: Callable[[str], None]


def _train(run: Path, cache: Path, config: TrainConfig, how: _Training, label: str) -> bool:
    from bratsseg.engine.trainer import CHECKPOINT, train

    if how.threads:
        import torch

        torch.set_num_threads(how.threads)
    resume = (run / CHECKPOINT).exists()
    how.say(f"{label}: {'resuming' if resume else 'training'} {run}")
    result = train(cache, run, config, resume=resume, device=how.device, max_steps=how.max_steps,
                   progress=how.progress, label=label)  # fmt: skip
    if not result.finished:
        how.say(f"{label}: stopped at step {result.state.global_step} of {config.total_steps} (rerun to continue)")
    return result.finished


def _train_stages(run: Path, plan: CrossvalPlan, fold: int, how: _Training, label: str) -> bool:
    """Fold ``fold``'s training (-1: the all-case model), then the recipe's fine-tuning stage from its last weights;
    True when both have finished. Each resumes where an interruption left it."""
    first = stage_dir(run, plan, fold, final=False)
    if not _train(first, run / "cache", fold_config(plan, fold), how, label):
        return False
    if not plan.finetune:
        return True
    config = finetune_stage_config(plan, fold, first / "last")
    return _train(stage_dir(run, plan, fold), run / "cache", config, how, f"{label}, fine-tuning")


def _evaluate_fold(run: Path, k: int, plan: CrossvalPlan, device: str, say: Callable[[str], None]) -> None:
    """Fold ``k``'s model on its validation cases, probabilities saved; again mirrored if the recipe mirrors."""
    from bratsseg.engine.distributed import inference_context
    from bratsseg.engine.evaluate import evaluate_predictor, select_cases
    from bratsseg.engine.predictors import open_predictor
    from bratsseg.inference.loading import set_mirror

    model = stage_dir(run, plan, k) / "last"
    dev = "cuda" if device == "cuda" else "cpu"
    ctx = inference_context(dev)
    variants = [((), False)] + ([(plan.mirror_axes, True)] if plan.mirror_axes else [])
    predictor = open_predictor(model, str(ctx.device))
    cases = select_cases(run / "cache", "val", predictor.card)
    for axes, mirrored in variants:
        out = eval_dir(run, k, mirrored)
        if (out / "per_case.csv").is_file():
            continue
        set_mirror(predictor, tuple(axes))
        summary = evaluate_predictor(
            predictor, cases, out, None, "brats", save_probabilities=True, ctx=ctx, info={"model": str(model)}
        )
        if ctx.is_main:
            text = ", ".join(f"{g} {summary.dice(g):.3f}" for g in summary.metrics)
            say(f"fold {k}: out of fold{' (mirrored)' if mirrored else ''} on {len(cases)} cases: {text}")
