"""Threshold sweep from one pass over the probabilities: histogram counts, not 101 re-thresholdings.

A voxel is predicted positive at threshold ``t`` when ``p > t`` (the same rule as everywhere else). For
each region we count, per case, how many truth-positive and truth-negative voxels fall between consecutive
thresholds; cumulative sums then give TP / FP / FN at every threshold at once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.errors import BratsSegError
from bratsseg.labels import REGIONS
from bratsseg.metrics.overlap import check_policy

#: The 101 thresholds 0.00, 0.01, ..., 1.00 (float64; the sweep and brute force use these exact values).
THRESHOLDS: NDArray[np.float64] = np.arange(101, dtype=np.float64) / 100


def threshold_bins(prob: NDArray[np.floating], thresholds: NDArray[np.float64] = THRESHOLDS) -> NDArray[np.intp]:
    """For every voxel, the number of thresholds strictly below its probability (0 .. len(thresholds)).

    ``p > thresholds[k]`` exactly when ``k < bins``. Uses ``ceil(100 p)`` and then corrects the few voxels
    where floating-point rounding puts that estimate one off, so the result equals ``searchsorted`` exactly.
    """
    p = np.asarray(prob, dtype=np.float64).ravel()
    n = len(thresholds)
    if n == 101 and np.array_equal(thresholds, THRESHOLDS):
        idx = np.clip(np.ceil(p * 100), 0, n).astype(np.intp)
        low = idx - 1
        # estimate too high: thresholds[idx-1] is not below p
        too_high = (idx > 0) & (thresholds[np.clip(low, 0, n - 1)] >= p)
        idx[too_high] -= 1
        # estimate too low: thresholds[idx] is still below p
        too_low = (idx < n) & (thresholds[np.clip(idx, 0, n - 1)] < p)
        idx[too_low] += 1
        return idx
    return np.searchsorted(thresholds, p, side="left").astype(np.intp)


def sweep_counts(
    prob: NDArray[np.floating], truth: NDArray[Any], thresholds: NDArray[np.float64] = THRESHOLDS
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """TP, FP, FN at every threshold for one region of one case (arrays of ``len(thresholds)``)."""
    t = np.asarray(truth, dtype=bool).ravel()
    bins = threshold_bins(prob, thresholds)
    n = len(thresholds)
    hist = np.bincount(bins * 2 + t, minlength=2 * (n + 1)).reshape(n + 1, 2)
    # positives at threshold k: voxels whose bin index exceeds k
    above = np.cumsum(hist[::-1], axis=0)[::-1]  # above[j] = voxels with bin >= j
    tp = above[1:, 1]
    fp = above[1:, 0]
    fn = int(t.sum()) - tp
    return tp.astype(np.int64), fp.astype(np.int64), fn.astype(np.int64)


def _scores(tp: NDArray[Any], fp: NDArray[Any], fn: NDArray[Any], policy: str) -> tuple[NDArray[Any], NDArray[Any]]:
    denom_dice = 2 * tp + fp + fn
    denom_iou = tp + fp + fn
    empty = 1.0 if policy == "brats" else np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denom_dice > 0, 2 * tp / np.maximum(denom_dice, 1), empty)
        iou = np.where(denom_iou > 0, tp / np.maximum(denom_iou, 1), empty)
    return dice, iou


@dataclass
class SweepAccumulator:
    """Adds cases one at a time; :meth:`result` gives mean Dice/IoU per region at every threshold."""

    thresholds: NDArray[np.float64] = field(default_factory=lambda: THRESHOLDS.copy())
    policy: str = "brats"
    dice: list[NDArray[np.float64]] = field(default_factory=list)  # per case: (3, n)
    iou: list[NDArray[np.float64]] = field(default_factory=list)
    case_ids: list[str] = field(default_factory=list)

    def add(self, case_id: str, prob: NDArray[np.floating], truth: NDArray[Any]) -> None:
        """``prob`` and ``truth`` are ``(3, *spatial)`` (WT, TC, ET)."""
        check_policy(self.policy)
        if prob.shape != truth.shape or prob.shape[0] != 3:
            raise BratsSegError(f"expected (3, ...) probabilities and truth, got {prob.shape} and {truth.shape}")
        d, i = [], []
        for r in range(3):
            tp, fp, fn = sweep_counts(prob[r], truth[r], self.thresholds)
            dr, ir = _scores(tp, fp, fn, self.policy)
            d.append(dr)
            i.append(ir)
        self.dice.append(np.stack(d))
        self.iou.append(np.stack(i))
        self.case_ids.append(case_id)

    def result(self, metric: str = "iou") -> SweepResult:
        """Mean curves and the best global and per-region thresholds by ``metric`` (``iou`` or ``dice``)."""
        if not self.case_ids:
            raise BratsSegError("no cases were swept")
        if metric not in ("iou", "dice"):
            raise BratsSegError(f"sweep metric must be iou or dice, got {metric!r}")
        with warnings.catch_warnings():  # all-NaN columns (policy "nan", region empty everywhere) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_dice = np.nanmean(np.stack(self.dice), axis=0)  # (3, n)
            mean_iou = np.nanmean(np.stack(self.iou), axis=0)
        score = mean_iou if metric == "iou" else mean_dice
        overall = score.mean(axis=0)
        g = int(np.argmax(overall))  # ties: the lowest threshold
        per_region = {name: int(np.argmax(score[r])) for r, name in enumerate(REGIONS)}
        per_region_score = float(np.mean([score[r, k] for r, k in enumerate(per_region.values())]))
        return SweepResult(
            metric=metric,
            policy=self.policy,
            cases=list(self.case_ids),
            thresholds=self.thresholds.tolist(),
            mean_dice={name: mean_dice[r].tolist() for r, name in enumerate(REGIONS)},
            mean_iou={name: mean_iou[r].tolist() for r, name in enumerate(REGIONS)},
            best_global=ThresholdChoice(
                thresholds={name: float(self.thresholds[g]) for name in REGIONS},
                score=float(overall[g]),
                per_region={name: float(score[r, g]) for r, name in enumerate(REGIONS)},
            ),
            best_per_region=ThresholdChoice(
                thresholds={name: float(self.thresholds[k]) for name, k in per_region.items()},
                score=per_region_score,
                per_region={name: float(score[r, k]) for r, (name, k) in enumerate(per_region.items())},
            ),
        )


@dataclass(frozen=True)
class ThresholdChoice:
    """Thresholds per region, the mean score over the regions they give (``score``: mean IoU or Dice, as the
    sweep's ``metric``) and each region's score."""

    thresholds: dict[str, float]
    score: float
    per_region: dict[str, float]

    @property
    def threshold(self) -> float:
        """The one threshold of a global choice (the first region's otherwise)."""
        return float(next(iter(self.thresholds.values())))


EDGE = 0.05  # a threshold this close to 0 or 1 is at the edge of the sweep


def noise_warnings(thresholds: dict[str, float], n_cases: int) -> list[str]:
    """Why a sweep's choice is likely noise rather than a finding: a threshold at the edge of the range (the curve
    may still rise beyond it: the probabilities are over- or under-confident, and the choice extrapolates) or too
    few cases to choose on."""
    out = []
    edge = {r: t for r, t in thresholds.items() if t <= EDGE or t >= 1 - EDGE}
    if edge:
        where = ", ".join(f"{r} {t:.2f}" for r, t in edge.items())
        out.append(f"warning: threshold at the edge of the sweep ({where}): likely noise or a miscalibrated model, "
                   "not a finding; check the curve, and choose on more cases")  # fmt: skip
    if n_cases < 5:
        out.append(f"warning: chosen on {n_cases} case(s): a threshold chosen on so few cases is noise")
    return out


@dataclass(frozen=True)
class SweepResult:
    """What a threshold sweep found: the mean Dice and IoU per region at every threshold, and the best global and
    per-region thresholds by ``metric``. :meth:`to_dict` is ``sweep.json``'s layout; :meth:`from_dict` reads it."""

    metric: str
    policy: str
    cases: list[str]
    thresholds: list[float]
    mean_dice: dict[str, list[float]]
    mean_iou: dict[str, list[float]]
    best_global: ThresholdChoice
    best_per_region: ThresholdChoice

    @property
    def n_cases(self) -> int:
        return len(self.cases)

    def to_dict(self) -> dict[str, Any]:
        key = f"mean_{self.metric}"
        return {
            "metric": self.metric,
            "policy": self.policy,
            "n_cases": self.n_cases,
            "cases": self.cases,
            "thresholds": self.thresholds,
            "mean_dice": self.mean_dice,
            "mean_iou": self.mean_iou,
            "best_global": {
                "threshold": self.best_global.threshold,
                key: self.best_global.score,
                "per_region": self.best_global.per_region,
            },
            "best_per_region": {
                "thresholds": self.best_per_region.thresholds,
                key: self.best_per_region.score,
                "per_region": self.best_per_region.per_region,
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepResult:
        key = f"mean_{d['metric']}"
        g, p = d["best_global"], d["best_per_region"]
        return cls(
            metric=d["metric"],
            policy=d["policy"],
            cases=list(d["cases"]),
            thresholds=list(d["thresholds"]),
            mean_dice=d["mean_dice"],
            mean_iou=d["mean_iou"],
            best_global=ThresholdChoice(dict.fromkeys(REGIONS, float(g["threshold"])), g[key], g["per_region"]),
            best_per_region=ThresholdChoice(p["thresholds"], p[key], p["per_region"]),
        )
