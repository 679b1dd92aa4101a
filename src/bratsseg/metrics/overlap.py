"""Confusion counts and the overlap metrics derived from them, with an explicit policy for empty masks.

Policies (written into every results file):

``brats`` (default, as the BraTS challenge up to 2022): a region empty in both prediction and truth scores
Dice 1, IoU 1, HD95 0, sensitivity 1; empty in only one scores Dice 0, IoU 0, HD95 373.13 mm (the diagonal
of the 240x240x155 grid), and sensitivity 0 when the truth is empty but the prediction is not.

``nan``: undefined values are NaN and left out of means (MONAI's default behaviour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.errors import BratsSegError
from bratsseg.labels import REGIONS

BRATS_MAX_HD95 = 373.13
POLICIES = ("brats", "nan")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise BratsSegError(f"empty-mask policy must be one of {POLICIES}, got {policy!r}")
    return policy


@dataclass(frozen=True)
class Counts:
    """Voxel counts of one region of one case. ``tn`` is over the whole original grid."""

    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def of(cls, pred: NDArray[Any], truth: NDArray[Any], total_voxels: int | None = None) -> Counts:
        p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
        if p.shape != t.shape:
            raise BratsSegError(f"prediction {p.shape} and truth {t.shape} differ in shape")
        tp = int(np.count_nonzero(p & t))
        npred, ntrue = int(np.count_nonzero(p)), int(np.count_nonzero(t))
        total = int(p.size if total_voxels is None else total_voxels)
        return cls(tp, npred - tp, ntrue - tp, total - npred - ntrue + tp)


def overlap_metrics(c: Counts, policy: str = "brats") -> dict[str, float]:
    """Dice, IoU, sensitivity and specificity from counts, empty masks handled by ``policy``."""
    check_policy(policy)
    npred, ntrue = c.tp + c.fp, c.tp + c.fn
    if npred + ntrue == 0:
        dice = iou = 1.0 if policy == "brats" else math.nan
    else:
        dice = 2 * c.tp / (npred + ntrue)
        iou = c.tp / (c.tp + c.fp + c.fn)
    empty_truth_sens = (1.0 if npred == 0 else 0.0) if policy == "brats" else math.nan
    sens = c.tp / ntrue if ntrue else empty_truth_sens
    spec = c.tn / (c.tn + c.fp) if c.tn + c.fp else (1.0 if policy == "brats" else math.nan)
    return {"dice": dice, "iou": iou, "sensitivity": sens, "specificity": spec}


def dice(pred: NDArray[Any], truth: NDArray[Any], policy: str = "brats") -> float:
    """Dice of two boolean masks; 1.0 when both are empty and 0.0 when only one is (``brats`` policy)."""
    return overlap_metrics(Counts.of(pred, truth), policy)["dice"]


def dice_per_region(pred: NDArray[Any], truth: NDArray[Any], policy: str = "brats") -> dict[str, float]:
    """``{"WT": ..., "TC": ..., "ET": ...}`` for ``(3, *spatial)`` masks."""
    return {name: dice(pred[i], truth[i], policy) for i, name in enumerate(REGIONS)}
