"""Zero-padding of ``(B, C, *spatial)`` arrays at the far end of each spatial axis up to a multiple of ``k``: what
the U-Net (to its divisor), the ONNX predictor, int8 calibration and the coarse grid all need. One implementation
for numpy arrays and torch tensors."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def padding_to_multiple(spatial: tuple[int, ...] | Any, k: int) -> list[int]:
    """Voxels to add at the far end of each axis of ``spatial`` so every size is a multiple of ``k``."""
    return [(-int(s)) % k for s in spatial]


def pad_to_multiple(x: T, k: int) -> T:
    """``x`` (numpy or torch, ``(B, C, *spatial)``) zero-padded so each spatial size is a multiple of ``k``;
    ``x`` itself when nothing is needed. A numpy result is C-contiguous."""
    pad = padding_to_multiple(x.shape[2:], k)  # type: ignore[attr-defined]
    if isinstance(x, np.ndarray):
        out = np.pad(x, [(0, 0), (0, 0), *[(0, p) for p in pad]]) if any(pad) else x
        return np.ascontiguousarray(out)  # type: ignore[return-value]
    if not any(pad):
        return x
    import torch.nn.functional as F

    # F.pad takes (last_lo, last_hi, ..., first_lo, first_hi)
    return F.pad(x, [v for p in reversed(pad) for v in (0, p)])  # type: ignore[arg-type,return-value]


def crop_to(x: T, spatial: tuple[int, ...] | Any) -> T:
    """The inverse of :func:`pad_to_multiple`: ``x[..., :s0, :s1, ...]``."""
    index = (Ellipsis, *[slice(0, int(s)) for s in spatial])
    return x[index]  # type: ignore[index]
