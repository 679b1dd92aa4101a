"""Tumour-free brains made from labelled cases: the tumour replaced by the mirror image of the other hemisphere.

A model trained only on brains that hold a tumour learns that there is always one: given a brain without tumour it
paints the most unusual tissue it finds (issue 32.7 measured 15-250 cm^3 on tumour-free inputs). Real scans of
healthy or post-operative brains are not among the labelled collections, so tumour-free samples are made: where the
whole tumour lies in one hemisphere, its region, widened by ``margin`` voxels, is filled with the tissue mirrored
from the other hemisphere (left-right, axis 0, about the centre of the array given, which for a brain-cropped array
is the brain's own mid-line). The rest of the brain, mass effect included, stays as scanned, and the target is
empty. Cases whose mirrored region would bring tumour back (a tumour across the mid-line) give none.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["HealedBox", "heal", "healed_box"]

#: voxels the tumour's region is widened by before it is replaced (the faint border of the oedema goes with it)
MARGIN = 3
#: at most this fraction of the tumour's voxels may lie in the mirror image of the replaced region
MAX_OVERLAP = 0.001

HealedBox = tuple[tuple[slice, slice, slice], NDArray[Any]]


def _region(wt: NDArray[Any], margin: int) -> NDArray[np.bool_] | None:
    from scipy import ndimage

    wt = np.asarray(wt, dtype=bool)
    if not wt.any():
        return None
    region = ndimage.binary_dilation(wt, iterations=margin) if margin else wt
    if int((region[::-1] & wt).sum()) > MAX_OVERLAP * int(wt.sum()):
        return None  # the tissue that would fill it holds tumour
    return region


def healed_box(image: NDArray[Any], wt: NDArray[Any], margin: int = MARGIN) -> HealedBox | None:
    """The healed values of ``image`` ``(C, x, y, z)`` inside the bounding box of the replaced region: ``(box,
    values (C, *box))``, or None when the case gives no tumour-free brain. Small next to the image: what a
    training set keeps per case."""
    region = _region(wt, margin)
    if region is None:
        return None
    idx = np.argwhere(region)
    lo, hi = idx.min(0), idx.max(0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    nx = image.shape[1]
    # the mirror of x in [a, b) is nx - 1 - x: the source columns [nx - b, nx - a), reversed
    mirror_x = slice(nx - int(hi[0]), nx - int(lo[0]))
    index = (slice(None), *box)
    here = np.asarray(image[index])
    mirrored = np.asarray(image[:, mirror_x, box[1], box[2]])[:, ::-1]
    values = np.where(region[box][None], mirrored, here).astype(here.dtype)
    return box, values  # type: ignore[return-value]


def heal(image: NDArray[Any], wt: NDArray[Any], margin: int = MARGIN) -> NDArray[Any] | None:
    """A copy of ``image`` ``(C, x, y, z)`` with the tumour healed, or None (see the module's docstring)."""
    found = healed_box(image, wt, margin)
    if found is None:
        return None
    box, values = found
    out = np.array(image, copy=True)
    index = (slice(None), *box)
    out[index] = values
    return out


def paste(patch: NDArray[Any], lo: tuple[int, ...] | list[int], healed: HealedBox) -> NDArray[Any]:
    """Write the healed values into ``patch`` ``(C, *size)``, a window of the case starting at ``lo``
    (in place; returned)."""
    box, values = healed
    dst: list[Any] = [slice(None)]
    src: list[Any] = [slice(None)]
    for b, start, n in zip(box, lo, patch.shape[1:], strict=True):
        a, e = max(b.start, start), min(b.stop, start + n)
        if e <= a:
            return patch
        dst.append(slice(a - start, e - start))
        src.append(slice(a - b.start, e - b.start))
    patch[tuple(dst)] = values[tuple(src)]
    return patch
