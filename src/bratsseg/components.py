"""26-connected components of a 3-D mask, and its holes, in numpy alone (the runtime install has no SciPy).

Every voxel starts with its own flat index as label; each pass takes the minimum label over the 3x3x3
neighbourhood (separable: three axes, two ``np.minimum`` each), then the minimum along each straight run of the
mask on each axis (one ``np.minimum.reduceat`` per axis, so a label crosses a whole run at once), then follows
labels to the label of the voxel they name until nothing changes (each label is the flat index of a voxel of the
same component, so ``label[label]`` is a valid shortcut). Tumour masks converge in 2-4 passes. The result equals
``scipy.ndimage.label`` with a 3x3x3 structure, numbering included (``tests/test_components.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


def _box_min(lab: NDArray[np.int32]) -> NDArray[np.int32]:
    """The minimum over each voxel's 3x3x3 neighbourhood (edges: the neighbours that exist)."""
    out = lab
    for axis in range(lab.ndim):
        src = out
        out = src.copy()
        lo = [slice(None)] * lab.ndim
        hi = [slice(None)] * lab.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        np.minimum(out[tuple(hi)], src[tuple(lo)], out=out[tuple(hi)])
        np.minimum(out[tuple(lo)], src[tuple(hi)], out=out[tuple(lo)])
    return out


def _runs(mask: NDArray[np.bool_], axis: int) -> tuple[NDArray[np.bool_], NDArray[np.intp], NDArray[np.intp]]:
    """The straight runs of ``mask`` along ``axis``: the moved mask, where each run begins in the order of
    ``moved[moved]``, and each masked voxel's run. The mask does not change between passes: computed once."""
    inside = np.moveaxis(mask, axis, -1)
    before = np.zeros(inside.shape, dtype=bool)
    before[..., 1:] = inside[..., :-1]
    starts = (inside & ~before)[inside]  # in the order of ``labels[inside]``: True where a run begins
    return inside, np.flatnonzero(starts), np.cumsum(starts) - 1


def _run_min(
    lab: NDArray[np.int32], axis: int, runs: tuple[NDArray[np.bool_], NDArray[np.intp], NDArray[np.intp]]
) -> None:
    """In place: every straight run of the mask along ``axis`` (``runs`` from :func:`_runs`) takes its minimum
    label."""
    inside, starts, run_of = runs
    labels = np.moveaxis(lab, axis, -1)
    labels[inside] = np.minimum.reduceat(labels[inside], starts)[run_of]


def _bbox(mask: NDArray[np.bool_]) -> tuple[slice, ...]:
    """The bounding box of a non-empty ``mask``, as slices."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _scipy_label() -> object | None:
    """SciPy's ``ndimage.label`` where SciPy is installed (the full install: ``bundle`` labels thousands of masks),
    else None (the runtime install: the numpy labelling below, which gives the same labels)."""
    try:
        from scipy.ndimage import label
    except ImportError:
        return None
    return label


def _box_labels(mask: NDArray[np.bool_], fast: bool = True) -> tuple[tuple[slice, ...], NDArray[np.int32], int]:
    """The labelling of :func:`label_components` on the bounding box of a non-empty ``mask``:
    ``(box, labels inside the box, n)``; by SciPy where installed and ``fast``, else in numpy (the same labels)."""
    box = _bbox(mask)
    sub = mask[box]
    scipy_label = _scipy_label() if fast else None
    if scipy_label is not None:
        labels, n = scipy_label(sub, structure=np.ones((3,) * sub.ndim, dtype=bool))  # type: ignore[operator]
        return box, labels.astype(np.int32, copy=False), int(n)
    outside = ~sub
    big = sub.size  # the label of "not in the mask"; entry ``big`` of ``ext`` points to itself
    lab = np.where(sub, np.arange(sub.size, dtype=np.int32).reshape(sub.shape), np.int32(big))
    runs = {axis: _runs(sub, axis) for axis in reversed(range(sub.ndim))}
    ext = np.empty(sub.size + 1, dtype=np.int32)
    ext[-1] = big
    while True:
        new = _box_min(lab)
        new[outside] = big
        for axis, axis_runs in runs.items():
            _run_min(new, axis, axis_runs)
        while True:  # pointer jumping
            ext[:-1] = new.ravel()
            jumped = ext[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, lab):
            break
        lab = new
    roots, inverse = np.unique(lab[sub], return_inverse=True)
    sub_labels = np.zeros(sub.shape, dtype=np.int32)
    sub_labels[sub] = inverse.astype(np.int32).ravel() + 1
    return box, sub_labels, len(roots)


def label_components(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int32], int]:
    """``(labels, n)``: 0 outside ``mask``, 1..n for its 26-connected components numbered by their first voxel in
    C order, as ``scipy.ndimage.label(mask, np.ones((3, 3, 3)))`` gives."""
    mask = np.asarray(mask, dtype=bool)
    labels = np.zeros(mask.shape, dtype=np.int32)
    if not mask.any():
        return labels, 0
    box, sub_labels, n = _box_labels(mask, fast=False)  # numpy alone; the work happens on the bounding box only
    labels[box] = sub_labels
    return labels, n


def keep_components(
    mask: NDArray[np.bool_], spacing: Sequence[float], min_mm3: float = 0.0, largest_only: bool = False
) -> NDArray[np.bool_]:
    """``mask`` with one labelling: without its 26-connected components smaller than ``min_mm3`` except the largest
    (so the mask is never emptied), or only its largest with ``largest_only`` (the first in C order among equals).
    ``mask`` itself when nothing is removed."""
    if not (largest_only or min_mm3 > 0) or not mask.any():
        return mask
    mask = np.asarray(mask, dtype=bool)
    box, labels, n = _box_labels(mask)  # the bounding box only: a tumour's box is a small part of a brain's
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:] * float(np.prod(spacing))
    keep = sizes >= min_mm3 if not largest_only else np.zeros(n, dtype=bool)
    keep[int(np.argmax(sizes))] = True
    if keep.all():
        return mask
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = np.concatenate([[False], keep])[labels]
    return out


def remove_small_components(
    mask: NDArray[np.bool_], spacing: Sequence[float], min_mm3: float, keep_largest: bool = False
) -> NDArray[np.bool_]:
    """``mask`` without its 26-connected components smaller than ``min_mm3`` (a copy; ``mask`` when none is
    removed or ``min_mm3 <= 0``). ``keep_largest``: the largest component stays whatever its size, so that a
    mask is never emptied (the first in C order among equals)."""
    if keep_largest:
        return keep_components(mask, spacing, min_mm3)
    if min_mm3 <= 0 or not mask.any():
        return mask
    labels, n = label_components(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:] * float(np.prod(spacing))
    small = sizes < min_mm3
    if not small.any():
        return mask
    return np.concatenate([[False], ~small])[labels]


def largest_component(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``mask``'s largest 26-connected component (the first in C order among equals); ``mask`` itself when it
    has at most one."""
    return keep_components(mask, (1.0, 1.0, 1.0), largest_only=True)


def fill_holes(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``mask`` with its holes filled: every background voxel that no path of face-neighbours (6-connected)
    through the background joins to the outside becomes foreground, as ``scipy.ndimage.binary_fill_holes``
    does. The outside is reached run by run (``np.maximum.reduceat`` along each axis's straight runs of
    background, as :func:`label_components` does for labels) on the mask's bounding box grown by one voxel.
    ``mask`` itself when it has no hole."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    box = _bbox(mask)
    background = np.pad(~mask[box], 1, constant_values=True)  # the grown border is outside
    reached = np.zeros(background.shape, dtype=np.int8)
    for axis in range(reached.ndim):  # the grown box's faces
        face: list[slice | int] = [slice(None)] * reached.ndim
        for end in (0, -1):
            face[axis] = end
            reached[tuple(face)] = 1
    runs = [_runs(background, axis) for axis in range(background.ndim)]
    while True:
        before = int(reached.sum())
        for axis, (inside, starts, run_of) in enumerate(runs):
            moved = np.moveaxis(reached, axis, -1)
            moved[inside] = np.maximum.reduceat(moved[inside], starts)[run_of]
        if int(reached.sum()) == before:
            break
    holes = background & (reached == 0)
    if not holes.any():
        return mask
    out = mask.copy()
    out[box] |= holes[(slice(1, -1),) * mask.ndim]
    return out
