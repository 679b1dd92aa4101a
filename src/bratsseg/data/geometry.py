"""Bounding boxes, cropping and exact un-cropping on the last three (spatial) axes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.errors import BratsSegError

#: A box as ``((start, stop), (start, stop), (start, stop))``, stop exclusive, one pair per spatial axis.
BBox = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def bbox_of(mask: NDArray[Any], margin: int = 0) -> BBox:
    """The smallest box holding every non-zero voxel of a 3-D ``mask``, grown by ``margin`` and clipped."""
    if mask.ndim != 3:
        raise BratsSegError(f"expected a 3-D mask, got shape {mask.shape}")
    if margin < 0:
        raise BratsSegError(f"margin must be >= 0, got {margin}")
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        if hits.size == 0:
            raise BratsSegError("cannot take the bounding box of an empty mask")
        box.append((max(0, int(hits[0]) - margin), min(mask.shape[axis], int(hits[-1]) + 1 + margin)))
    return tuple(box)  # type: ignore[return-value]


def box_around(mask: NDArray[Any], margin: int) -> tuple[slice, slice, slice] | None:
    """The slices of :func:`bbox_of` ``(mask, margin)``; None when the mask is empty."""
    return bbox_slices(bbox_of(mask, margin)) if np.any(mask) else None


def as_bbox(value: Sequence[Sequence[int]]) -> BBox:
    """A box from JSON (a list of three [start, stop] lists)."""
    pairs = [(int(a), int(b)) for a, b in value]
    if len(pairs) != 3 or any(not 0 <= a < b for a, b in pairs):
        raise BratsSegError(f"invalid bounding box {value!r}")
    return tuple(pairs)  # type: ignore[return-value]


def bbox_slices(box: BBox) -> tuple[slice, slice, slice]:
    return tuple(slice(a, b) for a, b in box)  # type: ignore[return-value]


def bbox_shape(box: BBox) -> tuple[int, int, int]:
    return tuple(b - a for a, b in box)  # type: ignore[return-value]


def crop(array: NDArray[Any], box: BBox) -> NDArray[Any]:
    """``array[..., box]``: a view of the box on the last three axes."""
    index = (Ellipsis, *bbox_slices(box))
    return array[index]


def uncrop(array: NDArray[Any], box: BBox, shape: Sequence[int], fill: float = 0) -> NDArray[Any]:
    """Put a cropped ``(..., x, y, z)`` array back onto the full grid ``shape`` (spatial), ``fill`` elsewhere.

    The exact inverse of :func:`crop` inside the box.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise BratsSegError(f"expected a 3-D spatial shape, got {shape}")
    if any(b > s for (_, b), s in zip(box, shape, strict=True)):
        raise BratsSegError(f"bounding box {box} does not fit in shape {shape}")
    if tuple(array.shape[-3:]) != bbox_shape(box):
        raise BratsSegError(f"array of spatial shape {array.shape[-3:]} does not match box shape {bbox_shape(box)}")
    out = np.full((*array.shape[:-3], *shape), fill, dtype=array.dtype)
    index = (Ellipsis, *bbox_slices(box))
    out[index] = array
    return out
