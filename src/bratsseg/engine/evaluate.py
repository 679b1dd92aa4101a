"""Evaluation over cases: a model on cached cases, label-map files against ground truth, threshold sweeps.

Every model variant (trained, pruned, fp16, ONNX ...) goes through :func:`evaluate_predictor`.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bratsseg.data.cache import CachedCase, open_cache
from bratsseg.dataclass_io import to_dict
from bratsseg.engine.distributed import DistContext, inference_context
from bratsseg.engine.predictors import open_predictor
from bratsseg.errors import BratsSegError
from bratsseg.extras import missing
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.inference.predictor import Predictor, binarize
from bratsseg.io.discovery import discover_cases
from bratsseg.io.nifti import check_labels, check_same_grid, open_nifti, read_array
from bratsseg.labels import REGIONS, labels_to_regions
from bratsseg.metrics.lesion import DEFAULT_RULES, LesionRules, lesion_setup
from bratsseg.metrics.overlap import check_policy
from bratsseg.metrics.sweep import SweepAccumulator, SweepResult
from bratsseg.metrics.tables import EvaluationSummary, case_rows, write_results
from bratsseg.models.card import ModelCard, read_card, write_card

log = logging.getLogger(__name__)


def select_cases(cache: str | Path, split: str | Sequence[str], card: ModelCard | None = None) -> list[CachedCase]:
    """Cached cases with a segmentation: ``all``, ``val`` (the model's validation cases) or a list of ids."""
    cases = [c for c in open_cache(cache) if c.has_seg]
    if not cases:
        raise BratsSegError("no cached case has a segmentation to score against", cache)
    if split == "all":
        return cases
    if split == "val":
        ids = list(card.training.val_cases) if card is not None else []
        if not ids:
            raise BratsSegError("the model records no validation cases; use --split all or train with folds")
    elif isinstance(split, str):
        raise BratsSegError(f"split must be val, all or a list of case ids, got {split!r}")
    else:
        ids = list(split)
    by_id = {c.case_id: c for c in cases}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise BratsSegError(f"cases {missing} are not in the cache (or have no segmentation)", cache)
    return [by_id[i] for i in ids]


def evaluate_predictor(
    predictor: Predictor,
    cases: Sequence[CachedCase],
    out_dir: str | Path | None = None,
    thresholds: dict[str, float] | None = None,
    policy: str = "brats",
    with_hd95: bool = True,
    progress: Callable[[int], Any] | None = None,
    info: dict[str, Any] | None = None,
    save_probabilities: bool = False,
    ctx: DistContext | None = None,
    lesion: str | LesionRules | None = DEFAULT_RULES,
) -> EvaluationSummary:
    """Score ``predictor`` on cached cases; write ``per_case.csv`` and ``summary.json`` if ``out_dir``.

    ``lesion`` names the BraTS lesion-wise rules (:data:`bratsseg.metrics.lesion.PRESETS`) or is None (off);
    without SciPy they are skipped and ``summary.json`` says so.

    With a distributed ``ctx`` (under torchrun) each process scores every ``world_size``-th case and rank 0
    writes the results of all of them.

    Metrics are computed on the cropped grid, which holds every tumour voxel; TN counts the whole original
    grid, and HD95 uses the original spacing, so the numbers equal those on the original grid.
    """
    check_policy(policy)
    rules, lesion_info = lesion_setup(lesion)
    thr = thresholds or predictor.thresholds
    rows: list[dict[str, Any]] = []
    seconds = []
    for case in cases[ctx.rank :: ctx.world_size] if ctx else cases:
        t0 = time.perf_counter()
        probs = predictor.probabilities(case.image)
        seconds.append(time.perf_counter() - t0)
        if save_probabilities and out_dir is not None:
            Path(out_dir, "probabilities").mkdir(parents=True, exist_ok=True)
            np.save(Path(out_dir, "probabilities", f"{case.case_id}.npy"), probs.astype(np.float16))
        pred = postprocess_regions(binarize(probs, thr), case.spacing, predictor.card.postprocessing, case.image)
        total = int(np.prod(case.original_shape))
        rows += case_rows(case.case_id, pred, case.regions(), case.spacing, total, policy, thr, with_hd95, rules)
        if progress:
            progress(1)
    if ctx is not None and ctx.distributed:
        parts = ctx.gather((rows, seconds))
        order = {c.case_id: i for i, c in enumerate(cases)}
        rows = sorted((r for part in parts for r in part[0]), key=lambda r: order[r["case_id"]])
        seconds = [s for part in parts for s in part[1]]
        if not ctx.is_main:
            out_dir = None
    summary_info = {
        "policy": policy,
        "policy_description": "BraTS: both empty Dice 1 / HD95 0; one empty Dice 0 / HD95 373.13"
        if policy == "brats"
        else "undefined values are NaN and left out of means",
        "thresholds": thr,
        "postprocessing": to_dict(predictor.card.postprocessing),
        "network_seconds_per_case": float(np.mean(seconds)) if seconds else None,
        "lesion_wise": lesion_info,
        **(info or {}),
    }
    if out_dir is None:
        return EvaluationSummary.of(rows, summary_info)
    return write_results(out_dir, rows, summary_info)


def evaluate_model(
    model: str | Path,
    cache: str | Path,
    out_dir: str | Path,
    split: str | Sequence[str] = "val",
    thresholds: dict[str, float] | None = None,
    policy: str = "brats",
    device: str = "cpu",
    progress: Callable[[int], Any] | None = None,
    save_probabilities: bool = False,
    mode: str = "fast",
    lesion: str | LesionRules | None = DEFAULT_RULES,
) -> EvaluationSummary:
    """`bratsseg evaluate --model`: a model folder on cached cases (split across processes under torchrun), in
    one of its card's prediction modes."""
    ctx = inference_context(device)
    predictor = open_predictor(model, str(ctx.device), mode=mode)
    cases = select_cases(cache, split, predictor.card)
    arch = predictor.card.architecture  # of the first member, for an ensemble
    info = {
        "model": str(model),
        "split": split if isinstance(split, str) else list(split),
        "backend": predictor.backend,
        "mode": mode,
        "spatial_dims": arch.spatial_dims,
        "parameters": _parameters(arch),
        "widths": list(arch.widths),
    }
    return evaluate_predictor(
        predictor,
        cases,
        out_dir,
        thresholds,
        policy,
        progress=progress,
        info=info,
        save_probabilities=save_probabilities,
        ctx=ctx,
        lesion=lesion,
    )


def _prediction_files(pred_dir: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(pred_dir.iterdir()):
        name = p.name
        for ext in (".nii.gz", ".nii"):
            if name.endswith(ext):
                files[name[: -len(ext)]] = p
                break
    return files


def evaluate_files(
    pred_dir: str | Path,
    ref_root: str | Path,
    out_dir: str | Path,
    policy: str = "brats",
    convention: str | None = None,
    progress: Callable[[int], Any] | None = None,
    lesion: str | LesionRules | None = DEFAULT_RULES,
    naming: str | None = None,
) -> EvaluationSummary:
    """`bratsseg evaluate --pred --ref`: label maps ``<case_id>.nii[.gz]`` from any tool against ground truth
    (whole-region metrics, and the BraTS lesion-wise ones as in :func:`evaluate_predictor`).

    Cases are matched by id; references without a prediction, and predictions that fail validation (wrong
    grid, unknown labels), are listed under ``problems`` in the summary and not scored.
    """
    check_policy(policy)
    rules, lesion_info = lesion_setup(lesion)
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise BratsSegError("no such prediction folder", pred_dir)
    preds = _prediction_files(pred_dir)
    found = discover_cases(ref_root, convention, naming)
    problems = [str(p) for p in found.problems]
    rows: list[dict[str, Any]] = []
    for case in found.cases:
        if case.seg is None:
            continue
        path = preds.get(case.case_id)
        if path is None:
            problems.append(f"{case.case_id}: no prediction {case.case_id}.nii.gz in {pred_dir}")
            continue
        try:
            ref_img, pred_img = open_nifti(case.seg), open_nifti(path)
            check_same_grid([case.seg, path], [ref_img, pred_img])
            ref = check_labels(read_array(ref_img, case.seg, np.int64), case, case.seg)
            pred = check_labels(read_array(pred_img, path, np.int64), case, path)
        except BratsSegError as err:
            problems.append(str(err))
            continue
        spacing = [float(z) for z in ref_img.header.get_zooms()[:3]]
        rows += case_rows(
            case.case_id,
            labels_to_regions(pred, case.convention),
            labels_to_regions(ref, case.convention),
            spacing,
            policy=policy,
            lesion=rules,
        )
        if progress:
            progress(1)
    if not rows:
        raise BratsSegError(f"no prediction could be scored; problems: {problems[:3]}", pred_dir)
    info: dict[str, Any] = {
        "policy": policy,
        "pred_dir": str(pred_dir.resolve()),
        "ref_root": str(ref_root),
        "problems": problems,
        "lesion_wise": lesion_info,
    }
    return write_results(out_dir, rows, info)


def sweep_predictor(
    predictor: Predictor,
    cases: Sequence[CachedCase],
    out_dir: str | Path | None = None,
    metric: str = "iou",
    policy: str = "brats",
    progress: Callable[[int], Any] | None = None,
) -> SweepResult:
    """Mean Dice and IoU per region at 101 thresholds, one network pass per case; best global and per-region."""
    acc = SweepAccumulator(policy=policy)
    for case in cases:
        acc.add(case.case_id, predictor.probabilities(case.image), case.regions())
        if progress:
            progress(1)
    result = acc.result(metric)
    if out_dir is not None:
        write_sweep(out_dir, result)
    return result


def write_sweep(out_dir: str | Path, result: SweepResult) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(result.to_dict(), indent=1))
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["threshold", *(f"dice_{r}" for r in REGIONS), *(f"iou_{r}" for r in REGIONS)])
        for k, t in enumerate(result.thresholds):
            dice = [f"{result.mean_dice[r][k]:.6f}" for r in REGIONS]
            iou = [f"{result.mean_iou[r][k]:.6f}" for r in REGIONS]
            writer.writerow([f"{t:.2f}", *dice, *iou])


def sweep_model(
    model: str | Path,
    cache: str | Path,
    out_dir: str | Path,
    split: str | Sequence[str] = "val",
    metric: str = "iou",
    policy: str = "brats",
    apply: str | None = None,
    progress: Callable[[int], Any] | None = None,
) -> SweepResult:
    """`bratsseg sweep`; ``apply`` = ``global`` or ``per-region`` stores the chosen thresholds in the model."""
    if apply is not None and Path(model).suffix == ".onnx":
        raise BratsSegError("--apply stores thresholds in a model folder; sweep the PyTorch model, then export", model)
    predictor = open_predictor(model)
    cases = select_cases(cache, split, predictor.card)
    result = sweep_predictor(predictor, cases, out_dir, metric, policy, progress)
    if apply is not None:
        apply_thresholds(model, result, apply)
    return result


def apply_thresholds(model: str | Path, sweep: SweepResult, which: str) -> dict[str, float]:
    """Write the sweep's ``global`` or ``per-region`` thresholds into the model's ``model.json`` (and its
    ``model.onnx``: :func:`~bratsseg.models.card.write_card`)."""
    if which == "global":
        thresholds = dict(sweep.best_global.thresholds)
    elif which == "per-region":
        thresholds = dict(sweep.best_per_region.thresholds)
    else:
        raise BratsSegError(f"apply must be global or per-region, got {which!r}")
    source = {"chosen_by": f"bratsseg sweep ({which}, metric {sweep.metric})", "cases": sweep.cases}
    write_card(model, read_card(model).replace(thresholds=thresholds, threshold_source=source))
    return thresholds


def _parameters(arch: Any) -> int | None:
    """The network's parameter count (PyTorch builds it; None on the runtime install)."""
    if missing("torch"):
        return None
    from bratsseg.models.unet import UNet, count_parameters

    return count_parameters(UNet(arch))
