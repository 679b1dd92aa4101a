"""Exact 2x (or kx) down- and up-sampling between the full grid and a coarse inference grid.

A model with ``inference.downsample = k`` sees the z-scored, cropped image average-pooled by ``k`` along each
spatial axis (zero-padded at the far end up to a multiple of ``k``) and its logits are resampled back
trilinearly to the full grid. Training patches are pooled by the same function, so the network sees at
training time exactly what it sees at inference time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.padding import crop_to, pad_to_multiple, padding_to_multiple

if TYPE_CHECKING:
    from torch import Tensor


def pool(x: Tensor, k: int) -> Tensor:
    """``(B, C, X, Y, Z)`` -> ``(B, C, ceil(X/k), ceil(Y/k), ceil(Z/k))`` block means (padding counts as 0)."""
    if k == 1:
        return x
    import torch.nn.functional as F

    return F.avg_pool3d(pad_to_multiple(x, k), k)


def pool_regions(regions: Tensor, k: int) -> Tensor:
    """Binary ``(B, 3, ...)`` region masks on the coarse grid: a coarse voxel is in a region when at least half
    of its ``k**3`` fine voxels are."""
    if k == 1:
        return regions
    return (pool(regions.float(), k) >= 0.5).to(regions.dtype)


def upsample(x: Tensor, size: tuple[int, ...], k: int) -> Tensor:
    """Inverse of :func:`pool` for logits: trilinear to the padded full size, then crop to ``size``."""
    if k == 1:
        return x
    import torch.nn.functional as F

    padded = [s + p for s, p in zip(size, padding_to_multiple(size, k), strict=True)]
    up = F.interpolate(x, size=padded, mode="trilinear", align_corners=False)
    return crop_to(up, size)


def pool_array(x: NDArray[Any], k: int) -> NDArray[np.float32]:
    """:func:`pool` in numpy, for ``(B, C, X, Y, Z)`` arrays (no PyTorch needed)."""
    if k == 1:
        return np.asarray(x, dtype=np.float32)
    p = pad_to_multiple(np.asarray(x, dtype=np.float32), k)
    b, c, *spatial = p.shape
    blocks = p.reshape(b, c, spatial[0] // k, k, spatial[1] // k, k, spatial[2] // k, k)
    return np.asarray(blocks.mean(axis=(3, 5, 7), dtype=np.float32))


def upsample_array(x: NDArray[Any], size: tuple[int, ...], k: int) -> NDArray[np.float32]:
    """:func:`upsample` in numpy, for ``(B, C, *coarse)`` arrays."""
    if k == 1:
        return np.asarray(x, dtype=np.float32)
    padded = tuple(s + p for s, p in zip(size, padding_to_multiple(size, k), strict=True))
    return crop_to(resize(x, padded), size)


def _linear_axis(a: NDArray[np.float32], axis: int, out_size: int) -> NDArray[np.float32]:
    """Linear interpolation of ``a`` along ``axis`` to ``out_size`` samples, pixel centres aligned
    (PyTorch's ``align_corners=False``: source ``(i + 0.5) * n / m - 0.5``, clamped at the edges)."""
    n = a.shape[axis]
    if n == out_size:
        return a
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (n / out_size) - 0.5
    src = np.clip(src, 0.0, n - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    shape = [1] * a.ndim
    shape[axis] = out_size
    w = (src - i0).astype(np.float32).reshape(shape)
    lo = a.take(i0, axis=axis)
    hi = a.take(i1, axis=axis)
    hi -= lo
    hi *= w
    lo += hi
    return lo


def resize(x: NDArray[Any], size: tuple[int, ...]) -> NDArray[np.float32]:
    """``(..., X, Y, Z)`` float array -> ``(..., *size)`` by (separable, hence exactly) trilinear interpolation
    with pixel centres aligned, as PyTorch's ``interpolate(mode="trilinear", align_corners=False)`` and nnU-Net's
    resampling of images and probabilities do; in numpy, so prediction needs no PyTorch."""
    out = np.asarray(x, dtype=np.float32)
    lead = out.ndim - len(size)
    if tuple(out.shape[lead:]) == tuple(size):
        return out
    for i, m in enumerate(size):
        out = _linear_axis(out, lead + i, int(m))
    return out


def resampled_shape(shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]) -> tuple[int, ...]:
    """The grid size that covers ``shape`` voxels of ``spacing`` mm with voxels of ``target`` mm."""
    return tuple(max(1, round(s * sp / t)) for s, sp, t in zip(shape, spacing, target, strict=True))
