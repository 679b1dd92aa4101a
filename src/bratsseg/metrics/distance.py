"""95th-percentile Hausdorff distance in mm (spacing-aware), by MONAI, on the masks' joint bounding box."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance
from numpy.typing import NDArray

from bratsseg.data.geometry import bbox_of, crop
from bratsseg.metrics.overlap import BRATS_MAX_HD95, check_policy


def hd95(pred: NDArray[Any], truth: NDArray[Any], spacing: Sequence[float], policy: str = "brats") -> float:
    """Symmetric 95th-percentile surface distance between two 3-D boolean masks, in mm.

    Both empty: 0 (``brats``) or NaN; one empty: 373.13 (``brats``) or NaN. Computed on the joint bounding
    box grown by one voxel, which leaves every surface voxel and distance unchanged and saves time.
    """
    check_policy(policy)
    p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return 0.0 if policy == "brats" else math.nan
    if not has_p or not has_t:
        return BRATS_MAX_HD95 if policy == "brats" else math.nan
    box = bbox_of(p | t, margin=1)
    pc, tc = crop(p, box), crop(t, box)
    y_pred = torch.from_numpy(np.ascontiguousarray(pc))[None, None]
    y = torch.from_numpy(np.ascontiguousarray(tc))[None, None]
    with warnings.catch_warnings():  # MONAI warns about its own deprecated internal argument
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            y_pred, y, include_background=True, percentile=95, spacing=[float(s) for s in spacing]
        )
    return float(value.item())
