"""Exact 2x (or kx) down- and up-sampling between the full grid and a coarse inference grid.

A model with ``inference.downsample = k`` sees the z-scored, cropped image average-pooled by ``k`` along each
spatial axis (zero-padded at the far end up to a multiple of ``k``) and its logits are resampled back
trilinearly to the full grid. Training patches are pooled by the same function, so the network sees at
training time exactly what it sees at inference time.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from bratsseg.padding import crop_to, pad_to_multiple, padding_to_multiple


def pool(x: Tensor, k: int) -> Tensor:
    """``(B, C, X, Y, Z)`` -> ``(B, C, ceil(X/k), ceil(Y/k), ceil(Z/k))`` block means (padding counts as 0)."""
    if k == 1:
        return x
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
    padded = [s + p for s, p in zip(size, padding_to_multiple(size, k), strict=True)]
    up = F.interpolate(x, size=padded, mode="trilinear", align_corners=False)
    return crop_to(up, size)


def resize(x: Tensor, size: tuple[int, ...]) -> Tensor:
    """``(C, X, Y, Z)`` -> ``(C, *size)`` by trilinear interpolation (pixel centres aligned as in nnU-Net's
    resampling of images and probabilities)."""
    if tuple(x.shape[1:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=tuple(size), mode="trilinear", align_corners=False)[0]


def resampled_shape(shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]) -> tuple[int, ...]:
    """The grid size that covers ``shape`` voxels of ``spacing`` mm with voxels of ``target`` mm."""
    return tuple(max(1, round(s * sp / t)) for s, sp, t in zip(shape, spacing, target, strict=True))
