"""Exact 2x (or kx) down- and up-sampling between the full grid and a coarse inference grid.

A model with ``inference.downsample = k`` sees the z-scored, cropped image average-pooled by ``k`` along each
spatial axis (zero-padded at the far end up to a multiple of ``k``) and its logits are resampled back
trilinearly to the full grid. Training patches are pooled by the same function, so the network sees at
training time exactly what it sees at inference time.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def _pad_to_multiple(x: Tensor, k: int) -> Tensor:
    """Zero-pad the last three axes of ``(B, C, X, Y, Z)`` at their far end up to a multiple of ``k``."""
    pads: list[int] = []
    for s in reversed(x.shape[2:]):
        pads += [0, (-s) % k]
    return F.pad(x, pads) if any(pads) else x


def pool(x: Tensor, k: int) -> Tensor:
    """``(B, C, X, Y, Z)`` -> ``(B, C, ceil(X/k), ceil(Y/k), ceil(Z/k))`` block means (padding counts as 0)."""
    if k == 1:
        return x
    return F.avg_pool3d(_pad_to_multiple(x, k), k)


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
    padded = [s + (-s) % k for s in size]
    up = F.interpolate(x, size=padded, mode="trilinear", align_corners=False)
    return up[:, :, : size[0], : size[1], : size[2]]
