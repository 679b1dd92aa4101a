"""Synthetic BraTS-layout cases written as real NIfTI files.

A head-like skull-stripped brain (cortex, white matter, ventricles) holding a tumour with a necrotic
centre, an enhancing rim and surrounding oedema, in four MRI contrasts (FLAIR, T1, T1ce, T2) with a
smooth bias field and Rician noise, on a non-identity affine. Used by tests and the built-in demo; no
claim is made that a model trained on it works on real scans.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from bratsseg.errors import BratsSegError
from bratsseg.io.discovery import MODALITIES, Case, Naming, find_case, get_naming
from bratsseg.labels import get_convention

#: Named sizes: (shape, spacing in mm).
SIZES: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "tiny": ((48, 48, 32), (3.5, 3.5, 4.5)),
    "small": ((96, 96, 64), (1.75, 1.75, 2.2)),
    "full": ((240, 240, 155), (1.0, 1.0, 1.0)),
}

# Mean intensity of each tissue in each modality (FLAIR, T1, T1ce, T2), roughly as in BraTS scans.
_TISSUE = {
    "csf": (120.0, 200.0, 210.0, 1100.0),
    "gm": (450.0, 450.0, 470.0, 500.0),
    "wm": (350.0, 600.0, 620.0, 300.0),
    "edema": (800.0, 380.0, 400.0, 900.0),
    "enhancing": (650.0, 420.0, 1200.0, 700.0),
    "necrotic": (300.0, 250.0, 280.0, 1000.0),
}


def gaussian_blur(image: NDArray[Any], sigma: float, truncate: float = 4.0) -> NDArray[np.float32]:
    """Separable Gaussian smoothing with mirrored borders: ``scipy.ndimage.gaussian_filter``'s definition
    (radius ``int(truncate * sigma + 0.5)``, mode ``reflect``) in numpy, so the runtime install needs no SciPy."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    out = np.asarray(image, dtype=np.float64)
    for axis in range(out.ndim):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, wi in enumerate(w):
            acc += wi * np.take(padded, np.arange(i, i + n), axis=axis)
        out = acc
    return out.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], coarse: int = 5) -> NDArray[np.float32]:
    """Low-frequency noise in [-1, 1] on ``shape``: a sum of random separable cosines of up to ``coarse / 2``
    cycles across the volume (cheap on full-size volumes, unlike upsampling a random grid)."""
    axes = [np.linspace(0, 2 * np.pi, int(s), dtype=np.float32) for s in shape]
    out = np.zeros(tuple(int(s) for s in shape), dtype=np.float32)
    terms = 6
    for _ in range(terms):
        f = rng.uniform(0.3, coarse / 2, size=3)
        phase = rng.uniform(0, 2 * np.pi, size=3)
        cx, cy, cz = (np.cos(f[i] * axes[i] + phase[i]).astype(np.float32) for i in range(3))
        out += cx[:, None, None] * cy[None, :, None] * cz[None, None, :]
    out /= terms
    return out


def synthetic_affine(shape: Sequence[int], spacing: Sequence[float], rotation_deg: float = 4.0) -> NDArray[np.float64]:
    """An LPS-like affine with the given spacing, a small rotation about the z axis and an offset origin."""
    t = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    flip = np.diag([-1.0, -1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = rot @ flip @ np.diag(spacing)
    centre = (np.asarray(shape) - 1) / 2
    aff[:3, 3] = -aff[:3, :3] @ centre + np.array([3.0, -17.0, 12.0])
    return aff


def synthetic_volumes(
    shape: Sequence[int], rng: np.random.Generator, enhancing: bool = True
) -> tuple[NDArray[np.int16], NDArray[np.uint8]]:
    """``(4, X, Y, Z)`` int16 images in :data:`MODALITIES` order and a label map with 1 = necrotic,
    2 = oedema, 3 = enhancing (an internal code; callers map it to a convention)."""
    shape = tuple(int(s) for s in shape)
    axes = [np.linspace(-1, 1, s, dtype=np.float32) for s in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    # Brain: an ellipsoid with a bumpy surface.
    r_brain = np.sqrt((x / 0.82) ** 2 + (y / 0.9) ** 2 + (z / 0.85) ** 2) * (1 + 0.06 * _smooth_noise(rng, shape))
    brain = r_brain < 1.0
    wm = brain & (r_brain < 0.78 + 0.08 * _smooth_noise(rng, shape, 7))
    gm = brain & ~wm
    ventricles = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        ventricles |= ((x - side * 0.12) / 0.08) ** 2 + (y / 0.3) ** 2 + ((z - 0.05) / 0.15) ** 2 < 1
    # Tumour: centred in one hemisphere, away from the ventricles.
    centre = np.array([rng.choice([-1, 1]) * rng.uniform(0.3, 0.45), rng.uniform(-0.35, 0.35), rng.uniform(-0.2, 0.3)])
    radius = rng.uniform(0.17, 0.26)
    d = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / radius
    d = d * (1 + 0.18 * _smooth_noise(rng, shape, 6))
    labels = np.zeros(shape, dtype=np.uint8)
    labels[brain & (d < 1.5 + 0.3 * _smooth_noise(rng, shape, 6))] = 2
    if enhancing:
        labels[brain & (d < 1.0)] = 3
        labels[brain & (d < 0.6)] = 1
    else:
        labels[brain & (d < 0.8)] = 1
    # Intensities per tissue, modality by modality.
    images = np.zeros((len(MODALITIES), *shape), dtype=np.float32)
    masks = {
        "wm": wm & ~ventricles,
        "gm": gm & ~ventricles,
        "csf": brain & ventricles,
        "edema": labels == 2,
        "enhancing": labels == 3,
        "necrotic": labels == 1,
    }
    for m in range(len(MODALITIES)):
        img = np.zeros(shape, dtype=np.float32)
        for name, mask in masks.items():
            img[mask] = _TISSUE[name][m]
        img = gaussian_blur(img, 0.7)  # partial-volume blur
        bias = 1 + 0.12 * _smooth_noise(rng, shape, 3)
        sigma = 0.04 * _TISSUE["wm"][m]
        noisy = np.hypot(img * bias + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
        images[m] = np.where(brain, np.maximum(noisy, 1.0), 0.0) * rng.uniform(0.8, 1.25)
    return np.round(images).astype(np.int16), labels


def make_synthetic_case(
    out_dir: str | Path,
    case_id: str = "Synth_000",
    naming: str | Naming = "brats2021",
    size: str = "small",
    seed: int = 0,
    with_seg: bool = True,
    enhancing: bool = True,
    compress: bool = True,
) -> Case:
    """Write one synthetic case into ``out_dir/<case_id>/`` in the given naming and return it.

    ``size`` is one of :data:`SIZES`; labels follow the naming's convention (ET = 4 for ``brats2021``,
    3 for ``brats2023``).
    """
    if size not in SIZES:
        raise BratsSegError(f"unknown synthetic size {size!r}; known: {', '.join(SIZES)}")
    nm = get_naming(naming)
    conv = get_convention(nm.convention)
    shape, spacing = SIZES[size]
    rng = np.random.default_rng(seed)
    images, internal = synthetic_volumes(shape, rng, enhancing=enhancing)
    seg = np.zeros_like(internal)
    seg[internal == 1] = conv.necrotic
    seg[internal == 2] = conv.edema
    seg[internal == 3] = conv.enhancing
    affine = synthetic_affine(shape, spacing)
    folder = Path(out_dir) / case_id
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".nii.gz" if compress else ".nii"
    volumes = [(m, images[i]) for i, m in enumerate(MODALITIES)] + ([("seg", seg)] if with_seg else [])
    for mod, data in volumes:
        img = nib.Nifti1Image(data, affine)
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
        nib.save(img, folder / nm.filename(case_id, mod, ext))
    return find_case(folder)


def make_synthetic_dataset(
    out_dir: str | Path,
    n: int,
    naming: str | Naming = "brats2021",
    size: str = "small",
    seed: int = 0,
    prefix: str | None = None,
) -> list[Case]:
    """Write ``n`` synthetic cases with different seeds; every fifth has no enhancing tumour (low-grade-like)."""
    nm = get_naming(naming)
    prefix = prefix or ("Synth" if nm.name == "brats2021" else "Synth-GLI")
    return [
        make_synthetic_case(
            out_dir, f"{prefix}{nm.separator}{i:03d}", nm, size=size, seed=seed + i, enhancing=(i % 5 != 4)
        )
        for i in range(n)
    ]
