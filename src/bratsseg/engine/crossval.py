"""Cross-validation results from out-of-fold probabilities: what ``bratsseg evaluate --split val
--save-probabilities`` wrote for each fold model, pooled so that every number is either taken at a fixed
threshold or *nested* (each fold scored at settings chosen on the other folds).

:func:`cross_validate` gives the pooled table at threshold 0.5 (per fold, per case), the pooled threshold sweep
and its nested estimate, ET on the small-ET (low-grade) cases, and the post-processing candidates (nested regions,
nnU-Net's small-ET rule with its volume chosen per fold). ``bratsseg bundle`` (:mod:`bratsseg.engine.bundle`)
stores it in the bundled model's card; ``scripts/cv_ablation.py`` compares inference variants with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bratsseg.data.cache import CachedCase, open_cache
from bratsseg.errors import BratsSegError
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.labels import REGIONS
from bratsseg.metrics.distance import hd95
from bratsseg.metrics.overlap import dice_per_region
from bratsseg.metrics.sweep import SweepAccumulator, SweepResult
from bratsseg.metrics.tables import read_per_case
from bratsseg.models.card import Postprocessing

SMALL_ET_VOXELS = 5000
ET_VOLUMES_MM3 = (0, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000)


class OutOfFold:
    """Every case's out-of-fold probabilities (float16 on the cropped grid), its truth, spacing and fold."""

    def __init__(self, cv_eval: Path, cache: Path) -> None:
        self.folds = sorted(p for p in cv_eval.iterdir() if (p / "per_case.csv").is_file())
        by_id = {c.case_id: c for c in open_cache(cache)}
        self.rows: list[dict[str, Any]] = []
        self.cases: list[CachedCase] = []
        self.fold_of: list[str] = []
        self.probs: list[Path] = []
        for fold in self.folds:
            self.rows += read_per_case(fold / "per_case.csv")
            for npy in sorted((fold / "probabilities").glob("*.npy")):
                self.cases.append(by_id[npy.stem])
                self.fold_of.append(fold.name)
                self.probs.append(npy)
        ids = [c.case_id for c in self.cases]
        if len(set(ids)) != len(ids) or len(ids) != len(self.rows) // len(REGIONS):
            raise BratsSegError("a case appears in more than one fold's results, or lacks its probabilities", cv_eval)
        self.truth = [c.regions() for c in self.cases]
        self.et_voxels = [int(t[2].sum()) for t in self.truth]

    def probabilities(self, i: int) -> np.ndarray:
        return np.load(self.probs[i]).astype(np.float32)

    def inside(self, fold: str) -> np.ndarray:
        return np.array([f == fold for f in self.fold_of])


def mean_dice(scores: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    s = scores if mask is None else scores[mask]
    return {g: float(s[:, r].mean()) for r, g in enumerate(REGIONS)}


def pooled_at_half(oof: OutOfFold) -> dict[str, Any]:
    out = {}
    for g in REGIONS:
        dice = np.array([r["dice"] for r in oof.rows if r["region"] == g])
        hd = np.array([r["hd95"] for r in oof.rows if r["region"] == g])
        out[g] = {
            "dice_mean": float(dice.mean()),
            "dice_std": float(dice.std()),
            "dice_median": float(np.median(dice)),
            "hd95_mean": float(hd.mean()),
        }
    return out


def sweep(oof: OutOfFold) -> tuple[SweepResult, dict[str, float], np.ndarray]:
    """The pooled sweep, the nested threshold of each fold, and each case's Dice at its nested threshold."""
    acc = SweepAccumulator(policy="brats")
    for i, case in enumerate(oof.cases):
        acc.add(case.case_id, oof.probabilities(i), oof.truth[i])
    result = acc.result("dice")
    dice = np.stack(acc.dice)  # (cases, 3, thresholds)
    nested_t: dict[str, float] = {}
    for fold in oof.folds:
        inside = oof.inside(fold.name)
        nested_t[fold.name] = float(acc.thresholds[int(np.argmax(dice[~inside].mean(axis=(0, 1))))])
    return result, nested_t, dice


def postprocessing_study(oof: OutOfFold, nested_t: dict[str, float]) -> dict[str, Any]:
    """Each fold at its nested threshold, then: as is; nested regions; nested regions + the small-ET rule with
    the volume chosen on the other folds (each setting scored on cases that did not choose it)."""
    n = len(oof.cases)
    # binarise every case at every fold's threshold once: the volume choice of fold f uses the other folds'
    # cases at f's threshold
    plain = np.zeros((len(oof.folds), n, 3))
    nested = np.zeros((len(oof.folds), n, 3))
    et_removed = np.zeros((len(oof.folds), n))  # ET Dice if ET is relabelled as necrosis
    et_volume = np.zeros((len(oof.folds), n))
    for i, case in enumerate(oof.cases):
        probs = oof.probabilities(i)
        voxel_mm3 = float(np.prod(case.spacing))
        for k, fold in enumerate(oof.folds):
            pred = probs > nested_t[fold.name]
            d = dice_per_region(pred, oof.truth[i])
            plain[k, i] = [d[g] for g in REGIONS]
            d = dice_per_region(
                postprocess_regions(pred, case.spacing, Postprocessing(nested_regions=True)), oof.truth[i]
            )
            nested[k, i] = [d[g] for g in REGIONS]
            et_removed[k, i] = 1.0 if not oof.truth[i][2].any() else 0.0
            et_volume[k, i] = pred[2].sum() * voxel_mm3
    own = np.array([[f.name for f in oof.folds].index(f) for f in oof.fold_of])  # each case's own fold index

    def scores(k: np.ndarray, table: np.ndarray) -> np.ndarray:
        return table[k, np.arange(n)]

    with_rule = scores(own, nested).copy()
    volumes: dict[str, float] = {}
    for k, fold in enumerate(oof.folds):
        others = ~oof.inside(fold.name)
        best_v, best_et = 0.0, -1.0
        for v in ET_VOLUMES_MM3:
            small = (et_volume[k] > 0) & (et_volume[k] < v)
            et = np.where(small, et_removed[k], nested[k, :, 2])[others].mean()
            if et > best_et + 1e-12:
                best_v, best_et = float(v), float(et)
        volumes[fold.name] = best_v
        mine = oof.inside(fold.name)
        small = (et_volume[k] > 0) & (et_volume[k] < best_v)
        with_rule[mine, 2] = np.where(small, et_removed[k], nested[k, :, 2])[mine]
    # the volume for the shipped model: chosen on all cases at the shipped (pooled) threshold is done by the
    # caller; here the nested choices and their scores
    small_et = np.array(oof.et_voxels) < SMALL_ET_VOXELS
    rows = {}
    for name, s in (
        ("nested threshold", scores(own, plain)),
        ("+ nested regions", scores(own, nested)),
        ("+ small-ET rule", with_rule),
    ):
        rows[name] = {
            "per_region": mean_dice(s),
            "mean_dice": float(s.mean()),
            "small_et_dice": float(s[small_et, 2].mean()) if small_et.any() else None,
            "per_case": {c.case_id: dict(zip(REGIONS, map(float, s[i]), strict=True)) for i, c in enumerate(oof.cases)},
        }
    return {"rows": rows, "nested_volumes_mm3": volumes, "candidates_mm3": list(ET_VOLUMES_MM3)}


def choose_volume(oof: OutOfFold, threshold: float) -> float:
    """The small-ET volume that maximises pooled ET Dice at ``threshold`` (for the shipped model)."""
    vols, as_is, removed = [], [], []
    for i, case in enumerate(oof.cases):
        pred = postprocess_regions(oof.probabilities(i) > threshold, case.spacing, Postprocessing(nested_regions=True))
        vols.append(pred[2].sum() * float(np.prod(case.spacing)))
        as_is.append(dice_per_region(pred, oof.truth[i])["ET"])
        removed.append(1.0 if not oof.truth[i][2].any() else 0.0)
    v_arr, a_arr, r_arr = np.array(vols), np.array(as_is), np.array(removed)
    best = max(ET_VOLUMES_MM3, key=lambda v: (np.where((v_arr > 0) & (v_arr < v), r_arr, a_arr).mean(), -v))
    return float(best)


def shipped_hd95(oof: OutOfFold, threshold: float, post: Postprocessing) -> dict[str, float]:
    """Mean HD95 per region with the shipped threshold and post-processing (chosen on these cases: the pooled row)."""
    out: dict[str, list[float]] = {g: [] for g in REGIONS}
    for i, case in enumerate(oof.cases):
        pred = postprocess_regions(oof.probabilities(i) > threshold, case.spacing, post, case.image)
        for r, g in enumerate(REGIONS):
            out[g].append(hd95(pred[r], oof.truth[i][r], case.spacing))
    return {g: float(np.mean(v)) for g, v in out.items()}


def sweep_nested(oof: OutOfFold) -> tuple[SweepResult, dict[str, float], np.ndarray]:
    """The pooled sweep, the nested threshold of each fold, and each case's Dice per region (cases x regions) at
    its own fold's nested threshold."""
    result, nested_t, dice = sweep(oof)
    nested = np.zeros((len(oof.cases), 3))
    for fold in oof.folds:
        inside = oof.inside(fold.name)
        k = int(np.argmin(np.abs(np.array(result.thresholds) - nested_t[fold.name])))
        nested[inside] = dice[inside, :, k]
    return result, nested_t, nested


def cross_validate(oof: OutOfFold) -> dict[str, Any]:
    """Every table of the module docstring, as plain JSON values."""
    result, nested_t, nested = sweep_nested(oof)
    half: dict[str, dict[str, float]] = {r["case_id"]: {} for r in oof.rows}
    for r in oof.rows:
        half[r["case_id"]][r["region"]] = float(r["dice"])
    small = np.array(oof.et_voxels) < SMALL_ET_VOXELS
    per_fold = {
        f.name: {
            "cases": sorted(c.case_id for c, w in zip(oof.cases, oof.fold_of, strict=True) if w == f.name),
            "dice": mean_dice(np.array([[half[c.case_id][g] for g in REGIONS] for c in oof.cases]), oof.inside(f.name)),
        }
        for f in oof.folds
    }
    return {
        "n_cases": len(oof.cases),
        "folds": len(oof.folds),
        "threshold": 0.5,
        "pooled": pooled_at_half(oof),
        "per_fold": per_fold,
        "per_case": {
            c.case_id: {"fold": oof.fold_of[i], "et_voxels": oof.et_voxels[i], "dice": half[c.case_id]}
            for i, c in enumerate(oof.cases)
        },
        "sweep_best_global": {k: result.to_dict()["best_global"][k] for k in ("threshold", "mean_dice", "per_region")},
        "sweep_best_per_region": result.to_dict()["best_per_region"],
        "nested_threshold": {
            "thresholds": nested_t,
            "per_region": mean_dice(nested),
            "mean_dice": float(nested.mean()),
        },
        "small_et": {
            "voxels_below": SMALL_ET_VOXELS,
            "cases": [c.case_id for c, s in zip(oof.cases, small, strict=True) if s],
            "et_dice_at_0.5": float(
                np.mean([half[c.case_id]["ET"] for c, s in zip(oof.cases, small, strict=True) if s])
            )
            if small.any()
            else None,
        },
        "postprocessing": postprocessing_study(oof, nested_t),
    }
