"""Binarised regions -> the regions that are written: nesting and nnU-Net's small-enhancing-tumour rule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from bratsseg.models.card import Postprocessing


def postprocess_regions(
    regions: NDArray[np.bool_], spacing: Sequence[float], settings: Postprocessing
) -> NDArray[np.bool_]:
    """``(3, ...)`` WT/TC/ET masks after ``settings`` (a copy when anything changes; ``regions`` itself otherwise).

    The small-ET rule looks at the whole case: predicted ET of fewer than ``et_min_volume_mm3`` (voxel volume
    from ``spacing``) is relabelled as necrosis, i.e. it stays in TC and leaves ET.
    """
    out = regions
    if settings.et_min_volume_mm3 > 0:
        volume = float(regions[2].sum()) * float(np.prod(spacing))
        if 0 < volume < settings.et_min_volume_mm3:
            out = out.copy()
            out[1] |= out[2]
            out[2] = False
    if settings.nested_regions:
        out = out.copy() if out is regions else out
        out[1] |= out[2]
        out[0] |= out[1]
    return out
