"""Lesion-wise Dice and HD95 as the BraTS challenges rank them since 2023.

The rules are those of the official BraTS 2023+ evaluator (github.com/rachitsaluja/BraTS-2023-Metrics, used by
the challenges' Synapse workflows), per region (WT, TC, ET):

1. Lesions are 26-connected components. Reference components are merged into one lesion when they fall in the same
   26-connected component of the reference dilated ``dilation`` times by the 18-neighbour structure (3x3x3 without
   its corners), so that satellites next to a mass are not separate lesions.
2. A predicted component matches a reference lesion when it overlaps that lesion dilated the same way; a component
   may match several lesions. Each lesion's Dice and HD95 are against the union of the components it matches
   (an unmatched lesion: Dice 0, HD95 ``penalty_hd95``).
3. Reference lesions of at most ``min_volume_mm3`` are not scored (neither TP nor FN); predicted components that
   match them are not false positives either. Predicted components that match no lesion are false positives.
4. lesion-wise Dice = sum of the scored lesions' Dice / (scored lesions + FP); lesion-wise HD95 = (sum of their
   HD95 + ``penalty_hd95`` x FP) / (scored lesions + FP); with nothing to score (no lesion, no FP) Dice 1, HD95 0.

HD95 per lesion is :func:`bratsseg.metrics.distance.hd95` (MONAI's definition, on voxel surfaces); the official
evaluator uses DeepMind's surface-distance package (surfel-area weighted), which can differ by a voxel or so per
lesion; Dice and the lesion counts are identical (``tests/test_lesion.py`` checks both against the official code
where it is installed). Needs SciPy (``pip install 'bratsseg[lesion]'``) for the components and the dilation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.data.geometry import bbox_of, crop
from bratsseg.errors import BratsSegError
from bratsseg.extras import missing
from bratsseg.metrics.distance import hd95

log = logging.getLogger(__name__)
#: The official evaluator's HD95 for a missed or spurious lesion (mm).
PENALTY_HD95 = 374.0
SOURCE = "BraTS 2023+ lesion-wise rules of the official evaluator (github.com/rachitsaluja/BraTS-2023-Metrics)"


@dataclass(frozen=True)
class LesionRules:
    """One challenge's parameters of the lesion-wise metrics."""

    name: str
    dilation: int
    min_volume_mm3: float
    penalty_hd95: float = PENALTY_HD95

    def __post_init__(self) -> None:
        if self.dilation < 0 or self.min_volume_mm3 < 0:
            raise BratsSegError(f"lesion rules {self.name!r}: dilation and minimum volume must be >= 0")


#: The official evaluator's parameters per BraTS challenge (dilation iterations, minimum lesion volume in mm^3).
PRESETS: dict[str, LesionRules] = {
    r.name: r
    for r in (
        LesionRules("BraTS-GLI", dilation=3, min_volume_mm3=50),
        LesionRules("BraTS-SSA", dilation=3, min_volume_mm3=50),
        LesionRules("BraTS-PED", dilation=3, min_volume_mm3=50),
        LesionRules("BraTS-MEN", dilation=1, min_volume_mm3=50),
        LesionRules("BraTS-MET", dilation=1, min_volume_mm3=2),
    )
}
DEFAULT_RULES = "BraTS-GLI"


def get_rules(name: str | LesionRules) -> LesionRules:
    if isinstance(name, LesionRules):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise BratsSegError(f"unknown lesion rules {name!r}; known: {', '.join(PRESETS)}") from None


@dataclass
class Lesion:
    """One reference lesion (after merging by dilation) and how the prediction met it."""

    volume_mm3: float
    dice: float
    hd95: float
    matched: list[int]  # ids of the predicted components that overlap its dilation
    scored: bool  # above the minimum volume


@dataclass
class LesionScore:
    """Lesion-wise metrics of one region of one case."""

    dice: float
    hd95: float
    tp: int
    fp: int
    fn: int
    lesions: list[Lesion] = field(default_factory=list)
    n_predicted: int = 0

    def row(self) -> dict[str, Any]:
        return {
            "lesion_dice": self.dice,
            "lesion_hd95": self.hd95,
            "lesion_tp": self.tp,
            "lesion_fp": self.fp,
            "lesion_fn": self.fn,
        }


def _structures() -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    from scipy import ndimage

    return ndimage.generate_binary_structure(3, 3), ndimage.generate_binary_structure(3, 2)


def _grown(box: tuple[slice, ...], by: int, shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - by, 0), min(s.stop + by, n)) for s, n in zip(box, shape, strict=True))


def _union(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def lesion_scores(
    pred: NDArray[Any],
    truth: NDArray[Any],
    spacing: Sequence[float],
    rules: str | LesionRules = DEFAULT_RULES,
    with_hd95: bool = True,
) -> LesionScore:
    """Lesion-wise Dice, HD95 and TP/FP/FN lesion counts of one region (two 3-D boolean masks on one grid).
    ``with_hd95=False`` leaves the HD95 out (NaN; each matched lesion's distance transform is most of the cost).

    Computed on the masks' joint bounding box padded by ``rules.dilation + 1`` voxels: the same numbers as on the
    whole grid, and a case cropped to its brain box (as the cache holds it) scores as on its original grid.
    """
    from scipy import ndimage

    rules = get_rules(rules)
    p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if p.shape != t.shape or p.ndim != 3:
        raise BratsSegError(f"lesion metrics need two 3-D masks of one shape, got {p.shape} and {t.shape}")
    if p.any() or t.any():  # work on the joint bounding box, padded so that dilation is never cut short
        box = bbox_of(p | t)
        p, t = crop(p, box), crop(t, box)
    pad = rules.dilation + 1
    p, t = np.pad(p, pad), np.pad(t, pad)
    full, eighteen = _structures()
    pred_cc, n_pred = ndimage.label(p, structure=full)
    if t.any():
        grown = ndimage.binary_dilation(t, structure=eighteen, iterations=rules.dilation) if rules.dilation else t
        groups, _ = ndimage.label(grown, structure=full)
        gt_lesions, n_gt = np.where(t, groups, 0), int(groups.max())  # each dilated component holds reference
    else:
        gt_lesions, n_gt = np.zeros(t.shape, dtype=np.int32), 0
    voxel_mm3 = float(np.prod([float(s) for s in spacing]))
    pred_boxes = ndimage.find_objects(pred_cc) if n_pred else []
    gt_boxes = ndimage.find_objects(gt_lesions) if n_gt else []
    pred_sizes = np.bincount(pred_cc.ravel(), minlength=n_pred + 1) if n_pred else np.zeros(1, dtype=np.int64)

    lesions: list[Lesion] = []
    matched_any: set[int] = set()
    for k, box in enumerate(gt_boxes, start=1):
        if box is None:  # pragma: no cover - every dilated component holds reference voxels
            continue
        region = _grown(box, rules.dilation, t.shape)
        lesion = gt_lesions[region] == k
        reach = (
            ndimage.binary_dilation(lesion, structure=eighteen, iterations=rules.dilation) if rules.dilation else lesion
        )
        ids = [int(i) for i in np.unique(pred_cc[region][reach]) if i]
        matched_any.update(ids)
        size = int(np.count_nonzero(lesion))
        volume = size * voxel_mm3
        if ids:
            window = region
            for i in ids:
                window = _union(window, pred_boxes[i - 1])
            mine = np.isin(pred_cc[window], ids)
            ref = gt_lesions[window] == k
            inter = int(np.count_nonzero(mine & ref))
            dice = 2.0 * inter / (size + int(pred_sizes[ids].sum()))
            distance = hd95(mine, ref, spacing) if with_hd95 else math.nan
        else:
            dice, distance = 0.0, rules.penalty_hd95
        lesions.append(Lesion(volume, dice, distance, ids, volume > rules.min_volume_mm3))
    scored = [les for les in lesions if les.scored]
    fp = n_pred - len(matched_any)
    tp = sum(1 for les in scored if les.matched)
    fn = len(scored) - tp
    denominator = len(scored) + fp
    if denominator == 0:
        lw_dice, lw_hd95 = 1.0, 0.0
    else:
        lw_dice = sum(les.dice for les in scored) / denominator
        lw_hd95 = (sum(les.hd95 for les in scored) + rules.penalty_hd95 * fp) / denominator
    return LesionScore(lw_dice, lw_hd95, tp, fp, fn, lesions, n_pred)


def lesion_config(rules: str | LesionRules) -> dict[str, Any]:
    """What ``summary.json`` records about the lesion-wise metrics: the rules and the library doing the work."""
    import scipy

    return {"definition": SOURCE, **asdict(get_rules(rules)), "connectivity": 26, "scipy": scipy.__version__}


def lesion_setup(rules: str | LesionRules | None) -> tuple[LesionRules | None, dict[str, Any]]:
    """The rules to score with (None: off or SciPy missing) and what ``summary.json`` says about them."""
    if rules is None:
        return None, {"computed": False, "reason": "turned off (--no-lesion)"}
    resolved = get_rules(rules)
    if missing("scipy"):
        log.warning("lesion-wise metrics skipped: they need SciPy (pip install 'bratsseg[lesion]')")
        return None, {"computed": False, "reason": "SciPy is not installed: pip install 'bratsseg[lesion]'"}
    return resolved, {"computed": True, **lesion_config(resolved)}
