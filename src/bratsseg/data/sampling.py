"""Training samples from the cache: 3-D patches or 2-D axial slices, foreground oversampling, augmentation.

Every sample is a pure function of ``(seed, epoch, index)``, so a resumed run draws exactly the samples an
uninterrupted one would, whatever the number of loader workers or processes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch.utils.data import Dataset

from bratsseg.data.cache import CachedCase
from bratsseg.data.geometry import box_around
from bratsseg.data.healthy import HealedBox, healed_box, paste
from bratsseg.data.priors import load_prior
from bratsseg.data.resample import pool, pool_regions
from bratsseg.errors import BratsSegError
from bratsseg.labels import unpack_regions

log = logging.getLogger(__name__)

MAX_FOREGROUND_POINTS = 20_000  # per case and region: enough to sample from, small in memory


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation applied to training samples (none at validation)."""

    flip_prob: float = 0.5  # per spatial axis
    intensity_prob: float = 0.5  # per sample: per-channel scale and shift
    scale_range: float = 0.1  # intensities multiplied by U(1 - r, 1 + r)
    shift_range: float = 0.1  # then shifted by U(-r, r) (z-score units)
    spatial_prob: float = 0.2  # per sample: a rotation and isotropic zoom
    rotate_deg: float = 15.0
    zoom_range: float = 0.15  # zoom U(1 - r, 1 + r)
    gamma_prob: float = 0.3  # per sample: per-channel gamma on the brain's intensity range, mean and std kept
    gamma_min: float = 0.7
    gamma_max: float = 1.5
    bias_prob: float = 0.3  # per sample: a smooth multiplicative field per channel (scanner inhomogeneity)
    bias_strength: float = 0.3  # coefficients of the log-field's linear and quadratic terms: U(-s, s)
    noise_prob: float = 0.15  # per sample: Gaussian noise with std U(0, noise_std) (z-score units)
    noise_std: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def foreground_points(case: CachedCase, rng: np.random.Generator) -> list[NDArray[np.int32]]:
    """Up to :data:`MAX_FOREGROUND_POINTS` voxel coordinates ``(n, 3)`` of each region (WT, TC, ET)."""
    if not case.has_seg:
        return [np.zeros((0, 3), dtype=np.int32)] * 3
    packed = np.asarray(case.packed_regions)
    points = []
    for bit in range(3):
        coords = np.argwhere(packed & (1 << bit)).astype(np.int32)
        if len(coords) > MAX_FOREGROUND_POINTS:
            coords = coords[rng.choice(len(coords), MAX_FOREGROUND_POINTS, replace=False)]
        points.append(coords)
    return points


def extract(array: NDArray[Any], lo: Sequence[int], size: Sequence[int]) -> NDArray[Any]:
    """``array[..., lo:lo+size]`` on the last ``len(size)`` axes, zero-padded where the window leaves the array."""
    nd = len(size)
    spatial = array.shape[-nd:]
    out = np.zeros((*array.shape[:-nd], *size), dtype=array.dtype)
    src: list[Any] = [Ellipsis]
    dst: list[Any] = [Ellipsis]
    for lo_i, size_i, n in zip(lo, size, spatial, strict=True):
        a, b = max(lo_i, 0), min(lo_i + size_i, n)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - lo_i, b - lo_i))
    out[tuple(dst)] = array[tuple(src)]
    return out


def _corner(centre: int, size: int, n: int) -> int:
    """Window start putting ``centre`` in the middle, kept inside the array when the array is large enough."""
    lo = centre - size // 2
    return min(max(lo, 0), n - size) if n >= size else (n - size) // 2


class PatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Random training samples: 3-D patches (``len(patch_size) == 3``) or 2-D axial slices (``== 2``).

    Item ``i`` of epoch ``e`` is ``(image (4, *patch) float32, regions (3, *patch) float32)``. With
    probability ``fg_fraction`` the patch is centred on a voxel of a region chosen among those the case has,
    uniformly or in proportion to ``region_weights`` (WT, TC, ET), which oversamples the small enhancing tumour;
    otherwise its position is uniform. With
    ``downsample`` k > 1 (3-D), a window k times larger is cut and pooled to ``patch_size`` on the coarse grid
    exactly as inference pools a whole case (:mod:`bratsseg.data.resample`). A fraction ``free_fraction`` of the
    samples come from tumour-free brains made from the cases (:mod:`bratsseg.data.healthy`), with empty targets,
    centred where the tumour was with probability ``fg_fraction``.
    """

    def __init__(
        self,
        cases: Sequence[CachedCase],
        patch_size: Sequence[int],
        samples_per_epoch: int,
        fg_fraction: float = 0.5,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        downsample: int = 1,
        priors: str | Path | None = None,
        prior_box: tuple[float, int] = (0.5, 6),
        free_fraction: float = 0.0,
        region_weights: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        if not cases:
            raise BratsSegError("no training cases")
        if len(patch_size) not in (2, 3):
            raise BratsSegError(f"patch_size must have 2 (slices) or 3 entries, got {list(patch_size)}")
        missing = [c.case_id for c in cases if not c.has_seg]
        if missing:
            raise BratsSegError(f"training cases need a segmentation; these have none: {missing}")
        self.cases = list(cases)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.samples_per_epoch = int(samples_per_epoch)
        self.fg_fraction = fg_fraction
        self.region_weights = tuple(float(w) for w in region_weights)
        if len(self.region_weights) != 3 or min(self.region_weights) < 0 or sum(self.region_weights) == 0:
            raise BratsSegError(
                f"region_weights must be 3 weights (WT, TC, ET) >= 0, not all 0; got {list(region_weights)}"
            )
        self.augment = augment
        self.seed = seed
        self.downsample = int(downsample)
        if self.downsample < 1 or (self.downsample > 1 and len(self.patch_size) != 3):
            raise BratsSegError(f"downsample must be 1, or >= 1 for 3-D patches; got {downsample}")
        self.epoch = 0
        rng = np.random.default_rng([seed, 2**31 - 1])
        self.points = [foreground_points(c, rng) for c in self.cases]
        # a refinement stage: a previous stage's probabilities as extra input channels; the patches not centred on
        # the tumour are centred in the box the refinement will see at inference (around the prior's tumour)
        self.priors = None if priors is None else Path(priors)
        if self.priors is not None and (self.downsample != 1 or len(self.patch_size) != 3):
            raise BratsSegError("a refinement stage (priors) trains on full-resolution 3-D patches (downsample 1)")
        self.boxes: list[tuple[slice, ...] | None] = []
        if self.priors is not None:
            threshold, margin = prior_box
            for case in self.cases:
                self.boxes.append(box_around(np.asarray(load_prior(self.priors, case)[0]) > threshold, margin))
        # tumour-free samples (bratsseg.data.healthy): the healed values of each case that gives a tumour-free brain
        self.free_fraction = float(free_fraction)
        self.healed: list[tuple[int, HealedBox]] = []
        if self.free_fraction > 0:
            if self.priors is not None:
                raise BratsSegError("tumour-free samples (free_fraction) and a refinement stage do not combine")
            for k, case in enumerate(self.cases):
                found = healed_box(case.image, np.asarray(case.packed_regions) & 1)
                if found is not None:
                    self.healed.append((k, found))
            if not self.healed:  # a dataset of bilateral tumours: train on it as it is, and say so
                log.warning(
                    "free_fraction %g: no training case gives a tumour-free brain (every tumour crosses the mid-line); "
                    "training on tumour cases only",
                    self.free_fraction,
                )
                self.free_fraction = 0.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def window(self, index: int) -> tuple[int, list[int], tuple[int, ...], HealedBox | None]:
        """Where item ``index`` of this epoch is cut: ``(case index, corner, size on the full grid, the healed
        values when it is a tumour-free sample)``. The same draws as :meth:`__getitem__`, without cutting."""
        return self._window(np.random.default_rng([self.seed, self.epoch, index]))

    def _window(self, rng: np.random.Generator) -> tuple[int, list[int], tuple[int, ...], HealedBox | None]:
        healed = None
        if self.free_fraction > 0 and rng.random() < self.free_fraction:
            k, healed = self.healed[int(rng.integers(len(self.healed)))]
        else:
            k = int(rng.integers(len(self.cases)))
        case, points = self.cases[k], self.points[k]
        shape = case.image.shape[1:]
        centre = None
        if rng.random() < self.fg_fraction:
            if healed is not None:  # where the tumour was
                centre = np.array([rng.integers(b.start, b.stop) for b in healed[0]])
            else:
                present = [r for r, p in enumerate(points) if len(p)]
                if present:
                    region = points[self._choose_region(present, rng)]
                    centre = region[int(rng.integers(len(region)))]
        if centre is None:
            box = self.boxes[k] if self.boxes else None
            ranges = [(0, n) for n in shape] if box is None else [(b.start, b.stop) for b in box]
            centre = np.array([rng.integers(lo, hi) for lo, hi in ranges])
        # a 2-D sample is a one-voxel-thick patch along the axial (last) axis
        size: tuple[int, ...] = self.patch_size if len(self.patch_size) == 3 else (*self.patch_size, 1)
        size = tuple(s * self.downsample for s in size)
        lo = [_corner(int(c), s, n) for c, s, n in zip(centre, size, shape, strict=True)]
        return k, lo, size, healed

    def _choose_region(self, present: list[int], rng: np.random.Generator) -> int:
        """The region (0 WT, 1 TC, 2 ET) a foreground sample is centred on, among those the case has."""
        weights = np.array([self.region_weights[r] for r in present], dtype=np.float64)
        if np.all(weights == weights[0]):  # uniform (or none of the weighted regions): the draw it always made
            return present[int(rng.integers(len(present)))]
        return present[int(rng.choice(len(present), p=weights / weights.sum()))]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k, lo, size, healed = self._window(rng)
        case = self.cases[k]
        image = extract(case.image, lo, size).astype(np.float32)
        if self.priors is not None:
            prior = extract(load_prior(self.priors, case), lo, size).astype(np.float32)
            image = np.concatenate([image, prior])
        if healed is not None:
            image = paste(image, lo, healed)
            regions = np.zeros((3, *size), dtype=np.float32)
        else:
            regions = unpack_regions(extract(case.packed_regions, lo, size)).astype(np.float32)
        if len(self.patch_size) == 2:
            image, regions = image[..., 0], regions[..., 0]
        img_t, reg_t = torch.from_numpy(image), torch.from_numpy(regions)
        if self.downsample > 1:
            img_t = pool(img_t[None], self.downsample)[0]
            reg_t = pool_regions(reg_t[None], self.downsample)[0]
        if self.augment is not None:
            fixed = 3 if self.priors is not None else 0
            img_t, reg_t = augment_sample(img_t, reg_t, self.augment, rng, fixed_channels=fixed)
        return img_t.contiguous(), reg_t.contiguous()


def augment_sample(
    image: torch.Tensor,
    regions: torch.Tensor,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    fixed_channels: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips, a rotation + zoom, per-channel intensity scale/shift, gamma, a smooth bias field and noise, of one
    ``(C, *spatial)`` sample of z-scored intensities (0 outside the brain, which every intensity change keeps).
    The last ``fixed_channels`` channels (a previous stage's probabilities) move with the image (flips, rotation,
    zoom), but no intensity change touches them."""
    nd = image.ndim - 1
    # draw every random number up front, in a fixed order, so that the draws do not depend on the branches
    flips = rng.random(nd) < cfg.flip_prob
    do_spatial = rng.random() < cfg.spatial_prob
    angles = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg, size=3))
    zoom = rng.uniform(1 - cfg.zoom_range, 1 + cfg.zoom_range)
    do_intensity = rng.random() < cfg.intensity_prob
    channels = image.shape[0] - fixed_channels  # the modalities: the only channels intensity changes touch
    scale = rng.uniform(1 - cfg.scale_range, 1 + cfg.scale_range, size=channels)
    shift = rng.uniform(-cfg.shift_range, cfg.shift_range, size=channels)
    do_gamma = rng.random() < cfg.gamma_prob
    gammas = rng.uniform(cfg.gamma_min, cfg.gamma_max, size=channels)
    do_bias = rng.random() < cfg.bias_prob
    bias_coef = rng.uniform(-cfg.bias_strength, cfg.bias_strength, size=(channels, 2 * nd))
    bias_offset = rng.uniform(1.0, 3.0, size=channels)  # mean/std of the raw intensities, which z-scoring removed
    do_noise = rng.random() < cfg.noise_prob
    noise_std = rng.uniform(0.0, cfg.noise_std)
    noise_seed = int(rng.integers(2**31))

    if do_spatial:
        image, regions = _rotate_zoom(image, regions, angles, zoom)
    axes = [1 + a for a in range(nd) if flips[a]]
    if axes:
        image, regions = image.flip(axes), regions.flip(axes)
    if not (do_intensity or do_gamma or do_bias or do_noise):
        return image, regions
    if fixed_channels:
        fixed, image = image[channels:], image[:channels]
    brain = image.ne(0).any(0, keepdim=True)  # once: every intensity change below keeps the background at 0
    if do_intensity:
        s = torch.as_tensor(scale, dtype=image.dtype).view(-1, *([1] * nd))
        t = torch.as_tensor(shift, dtype=image.dtype).view(-1, *([1] * nd))
        image = torch.where(brain, image * s + t, image)
    if do_gamma:
        image = _gamma(image, brain[0], gammas)
    if do_bias:
        image = torch.where(brain, _bias_field(image, bias_coef, bias_offset), image)
    if do_noise:
        gen = torch.Generator().manual_seed(noise_seed)
        noise = torch.randn(image.shape, generator=gen, dtype=image.dtype) * noise_std
        image = torch.where(brain, image + noise, image)
    if fixed_channels:
        image = torch.cat([image, fixed])
    return image, regions


def _gamma(image: torch.Tensor, brain: torch.Tensor, gammas: NDArray[np.float64]) -> torch.Tensor:
    """Per channel: brain intensities mapped to [0, 1], raised to ``gamma``, then given back their mean and std."""
    out = image.clone()
    if not bool(brain.any()):
        return out
    for c, g in enumerate(gammas):
        v = image[c][brain]
        lo, hi = v.min(), v.max()
        if float(hi - lo) < 1e-6:
            continue
        w = ((v - lo) / (hi - lo)).pow(float(g))
        w = (w - w.mean()) / w.std().clamp_min(1e-6) * v.std() + v.mean()
        out[c][brain] = w
    return out


def _bias_field(image: torch.Tensor, coef: NDArray[np.float64], offset: NDArray[np.float64]) -> torch.Tensor:
    """A multiplicative field ``b = exp(sum_a c_a x_a + q_a x_a**2)`` (x in [-1, 1] across the patch) applied to
    the raw intensities: on z-scores ``z * sd + mu`` that is ``z * b + (mu / sd) * (b - 1)``."""
    nd = image.ndim - 1
    axes = [torch.linspace(-1.0, 1.0, n, dtype=image.dtype) for n in image.shape[1:]]
    grids = torch.meshgrid(*axes, indexing="ij")
    c = torch.as_tensor(coef, dtype=image.dtype)
    log_b = torch.zeros_like(image)
    for a in range(nd):
        shape = (-1, *([1] * nd))
        log_b = log_b + c[:, a].view(shape) * grids[a] + c[:, nd + a].view(shape) * grids[a] ** 2
    b = torch.exp(log_b)
    r = torch.as_tensor(offset, dtype=image.dtype).view(-1, *([1] * nd))
    return image * b + r * (b - 1)


def _rotation_matrix(angles: NDArray[np.float64], nd: int) -> NDArray[np.float64]:
    if nd == 2:
        a = angles[0]
        return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rx @ ry @ rz


def _rotate_zoom(
    image: torch.Tensor, regions: torch.Tensor, angles: NDArray[np.float64], zoom: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample about the patch centre: image bilinearly, regions bilinearly then thresholded at 0.5."""
    nd = image.ndim - 1
    theta = np.zeros((nd, nd + 1))
    theta[:, :nd] = _rotation_matrix(angles, nd) / zoom
    # affine_grid orders coordinates (x, y[, z]) = last axis first: reverse the matrix to our axis order
    theta[:, :nd] = theta[::-1, :nd][:, ::-1]
    theta_t = torch.as_tensor(theta, dtype=torch.float32).unsqueeze(0)
    both = torch.cat([image, regions]).unsqueeze(0)
    grid = F.affine_grid(theta_t, list(both.shape), align_corners=False)
    out = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    c = image.shape[0]
    return out[:c], (out[c:] > 0.5).to(regions.dtype)
