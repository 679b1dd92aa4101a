"""Dice on binary masks with the BraTS convention for empty masks: both empty scores 1, one empty scores 0."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.labels import REGIONS


def dice(pred: NDArray[Any], truth: NDArray[Any]) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (BraTS), 0.0 when only one is."""
    p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    tp = int(np.count_nonzero(p & t))
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    return 1.0 if total == 0 else 2.0 * tp / total


def dice_per_region(pred: NDArray[Any], truth: NDArray[Any]) -> dict[str, float]:
    """``{"WT": ..., "TC": ..., "ET": ...}`` for ``(3, *spatial)`` masks."""
    return {name: dice(pred[i], truth[i]) for i, name in enumerate(REGIONS)}
