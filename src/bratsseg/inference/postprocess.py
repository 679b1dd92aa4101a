"""Binarised regions -> the regions that are written: the enhancing tumour redrawn from T1ce at full resolution,
nnU-Net's small-enhancing-tumour rule, nesting, the removal of small or secondary connected components, and the
filling of holes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from bratsseg.components import fill_holes, keep_components
from bratsseg.errors import BratsSegError
from bratsseg.labels import MODALITIES, REGIONS
from bratsseg.models.card import Postprocessing

T1CE = MODALITIES.index("t1ce")  # the channel of the network's input the enhancing-tumour rule reads


def dilate(mask: NDArray[np.bool_], steps: int) -> NDArray[np.bool_]:
    """``mask`` grown by ``steps`` 26-connected steps (a cube of side ``2 * steps + 1``), numpy only (the runtime
    install has no SciPy): a running maximum along each axis in turn. Always a new array."""
    out = np.array(mask, dtype=bool)
    if steps == 0:
        return out
    for axis in range(out.ndim):
        grown = out.copy()
        n = out.shape[axis]
        for shift in range(1, min(steps, n - 1) + 1):
            lo = [slice(None)] * out.ndim
            hi = [slice(None)] * out.ndim
            lo[axis], hi[axis] = slice(0, n - shift), slice(shift, n)
            grown[tuple(lo)] |= out[tuple(hi)]
            grown[tuple(hi)] |= out[tuple(lo)]
        out = grown
    return out


def postprocess_regions(
    regions: NDArray[np.bool_],
    spacing: Sequence[float],
    settings: Postprocessing,
    image: NDArray[np.floating] | None = None,
) -> NDArray[np.bool_]:
    """``(3, ...)`` WT/TC/ET masks after ``settings`` (a copy when anything changes; ``regions`` itself otherwise).

    ``image``: the ``(4, ...)`` z-scored image the regions were predicted from (on the same grid), which the
    enhancing-tumour rule (``settings.et_t1ce_threshold``) reads and which it needs. That rule comes first: ET
    becomes the voxels of TC or ET whose T1ce exceeds the threshold, and TC their union. The small-ET rule looks
    at the whole case: predicted ET of fewer than ``et_min_volume_mm3`` (voxel volume from ``spacing``) is
    relabelled as necrosis, i.e. it stays in TC and leaves ET. Then the regions are nested,
    then each loses its 26-connected components below ``min_component_mm3`` except its largest (a region is
    never emptied), and all but its largest where ``largest_component_only`` says so; outer regions first: what a
    removed WT component held leaves TC and ET. Last, the regions named in ``fill_holes`` have their enclosed
    holes filled (a filled hole of TC joins WT too, and stays out of ET: necrosis).
    """
    out = regions
    if settings.et_t1ce_threshold is not None:
        if image is None:
            raise BratsSegError("postprocessing.et_t1ce_threshold needs the case's image (pass image=)")
        if image.shape[1:] != regions.shape[1:]:
            raise BratsSegError(f"image {image.shape} and regions {regions.shape} are not on the same grid")
        out = out.copy()
        within = settings.et_t1ce_within
        near = None if within is None else dilate(out[2], within)  # a new array: out[2] is redrawn below
        out[1] |= out[2]
        np.greater(image[T1CE], settings.et_t1ce_threshold, out=out[2])
        out[2] &= out[1]
        if near is not None:
            out[2] &= near
    if settings.et_min_volume_mm3 > 0:
        volume = float(out[2].sum()) * float(np.prod(spacing))
        if 0 < volume < settings.et_min_volume_mm3:
            out = out.copy() if out is regions else out
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
