"""Binarised regions -> the regions that are written: nnU-Net's small-enhancing-tumour rule, nesting, and the
removal of small or secondary connected components."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from bratsseg.components import fill_holes, keep_components
from bratsseg.labels import REGIONS
from bratsseg.models.card import Postprocessing


def postprocess_regions(
    regions: NDArray[np.bool_], spacing: Sequence[float], settings: Postprocessing
) -> NDArray[np.bool_]:
    """``(3, ...)`` WT/TC/ET masks after ``settings`` (a copy when anything changes; ``regions`` itself otherwise).

    The small-ET rule looks at the whole case: predicted ET of fewer than ``et_min_volume_mm3`` (voxel volume
    from ``spacing``) is relabelled as necrosis, i.e. it stays in TC and leaves ET. Then the regions are nested,
    then each loses its 26-connected components below ``min_component_mm3`` except its largest (a region is
    never emptied), and all but its largest where ``largest_component_only`` says so; outer regions first: what a
    removed WT component held leaves TC and ET. Last, the regions named in ``fill_holes`` have their enclosed
    holes filled (a filled hole of TC joins WT too, and stays out of ET: necrosis).
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
    if settings.filters_components:
        out = out.copy() if out is regions else out
        for r, name in enumerate(REGIONS):
            out[r] = keep_components(
                out[r], spacing, settings.min_component_mm3.get(name, 0.0), name in settings.largest_component_only
            )
        out[1] &= out[0]  # a removed component takes what lies inside it
        out[2] &= out[1]
    for r, name in enumerate(REGIONS):
        if name in settings.fill_holes:
            region = out[r]
            filled = fill_holes(region)
            if filled is not region:
                out = out.copy() if out is regions else out
                out[r] = filled
                out[0] |= out[r]  # a filled hole of TC is tumour: inside WT
    return out
