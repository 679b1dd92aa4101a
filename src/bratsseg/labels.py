"""Label conventions and the label <-> region conversion.

BraTS label maps hold 0 (background), a necrotic / non-enhancing core label, an oedema label and an
enhancing-tumour label whose value depends on the edition (4 up to 2021, 3 from 2023). The network works
on three overlapping regions, always in this order::

    WT (whole tumour)  = {necrotic, oedema, enhancing}
    TC (tumour core)   = {necrotic, enhancing}
    ET (enhancing)     = {enhancing}

Nothing else in the package hard-codes 3 or 4: it asks a :class:`LabelConvention`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bratsseg.errors import BratsSegError

REGIONS: tuple[str, str, str] = ("WT", "TC", "ET")
#: Canonical modality names, in the order the network sees them.
MODALITIES: tuple[str, str, str, str] = ("flair", "t1", "t1ce", "t2")


@dataclass(frozen=True)
class LabelConvention:
    """The integer value of each tumour class in a label map of one BraTS edition."""

    name: str
    necrotic: int = 1
    edema: int = 2
    enhancing: int = 4

    def __post_init__(self) -> None:
        values = (self.necrotic, self.edema, self.enhancing)
        if len(set(values)) != 3 or any(not 0 < v < 256 for v in values):
            raise BratsSegError(
                f"label convention {self.name!r}: tumour labels must be three distinct values in 1..255, got {values}"
            )

    @property
    def labels(self) -> tuple[int, int, int, int]:
        """All valid values, background first."""
        return (0, self.necrotic, self.edema, self.enhancing)

    def region_labels(self) -> dict[str, tuple[int, ...]]:
        """The labels each region is made of."""
        return {
            "WT": (self.necrotic, self.edema, self.enhancing),
            "TC": (self.necrotic, self.enhancing),
            "ET": (self.enhancing,),
        }


BRATS2021 = LabelConvention("brats2021", necrotic=1, edema=2, enhancing=4)
BRATS2023 = LabelConvention("brats2023", necrotic=1, edema=2, enhancing=3)
#: the Medical Segmentation Decathlon's Task01 and nnU-Net's BraTS conversions: 1 oedema, 2 non-enhancing, 3 enhancing
MSD = LabelConvention("msd", necrotic=2, edema=1, enhancing=3)

CONVENTIONS: dict[str, LabelConvention] = {c.name: c for c in (BRATS2021, BRATS2023, MSD)}


#: The one label colour scheme of the viewer, the figures and the report: necrosis / non-enhancing core red,
#: oedema green, enhancing tumour yellow (the colours BraTS viewers use). A region is drawn in the colour of the
#: label it adds: WT (over TC) oedema green, TC (over ET) necrosis red, ET yellow.
LABEL_COLOURS = {"NCR": "#ff3b30", "ED": "#34c759", "ET": "#ffd60a"}
REGION_COLOURS = {"WT": LABEL_COLOURS["ED"], "TC": LABEL_COLOURS["NCR"], "ET": LABEL_COLOURS["ET"]}


def colour_rgb(hex_colour: str) -> tuple[int, int, int]:
    """``"#ff3b30"`` -> ``(255, 59, 48)``."""
    return (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16))


def get_convention(name: str | LabelConvention) -> LabelConvention:
    """Look a convention up by name (``brats2021``, ``brats2023`` or ``msd``); a convention passes through."""
    if isinstance(name, LabelConvention):
        return name
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise BratsSegError(f"unknown label convention {name!r}; known: {', '.join(sorted(CONVENTIONS))}") from None


def invalid_labels(labels: NDArray[np.integer], convention: LabelConvention) -> list[int]:
    """The values in ``labels`` that the convention does not know, sorted (empty when all are valid)."""
    flat = np.asarray(labels).ravel()
    if flat.size == 0:
        return []
    lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and hi < 256:
        present = np.flatnonzero(np.bincount(flat.astype(np.intp, copy=False), minlength=256))
    else:
        present = np.unique(flat)
    return [int(v) for v in present if int(v) not in convention.labels]


def labels_to_regions(labels: NDArray[np.integer], convention: LabelConvention) -> NDArray[np.bool_]:
    """Label map ``(*spatial)`` -> region masks ``(3, *spatial)`` in the order WT, TC, ET.

    Raises :class:`BratsSegError` for values outside the convention.
    """
    labels = np.asarray(labels)
    bad = invalid_labels(labels, convention)
    if bad:
        raise BratsSegError(
            f"label values {bad} are not in convention {convention.name!r} (valid: {list(convention.labels)})"
        )
    et = labels == convention.enhancing
    tc = et | (labels == convention.necrotic)
    wt = tc | (labels == convention.edema)
    return np.stack([wt, tc, et])


def regions_to_labels(regions: NDArray[np.generic], convention: LabelConvention) -> NDArray[np.uint8]:
    """Region masks ``(3, *spatial)`` (WT, TC, ET; bool or 0/1) -> label map ``(*spatial)``, uint8.

    ET where ET, else necrotic where TC, else oedema where WT, as BraTS post-processing does. On nested
    masks (ET inside TC inside WT) this is the exact inverse of :func:`labels_to_regions`.
    """
    regions = np.asarray(regions)
    if regions.ndim < 1 or regions.shape[0] != 3:
        raise BratsSegError(f"expected region masks of shape (3, ...), got {regions.shape}")
    wt, tc, et = (regions[i].astype(bool, copy=False) for i in range(3))
    out = np.zeros(wt.shape, dtype=np.uint8)
    out[wt] = convention.edema
    out[tc] = convention.necrotic
    out[et] = convention.enhancing
    return out


# A compact on-disk form of the three regions: one uint8 per voxel, bit i set where region i is present.
def pack_regions(regions: NDArray[np.generic]) -> NDArray[np.uint8]:
    """Region masks ``(3, *spatial)`` -> bit-packed uint8 ``(*spatial)`` (bit 0 WT, bit 1 TC, bit 2 ET)."""
    regions = np.asarray(regions)
    out = regions[0].astype(np.uint8)
    out |= regions[1].astype(np.uint8) << 1
    out |= regions[2].astype(np.uint8) << 2
    return out


def unpack_regions(packed: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Inverse of :func:`pack_regions`: ``(*spatial)`` uint8 -> ``(3, *spatial)`` bool."""
    packed = np.asarray(packed)
    return np.stack([(packed & (1 << i)) != 0 for i in range(3)])


def region_voxel_counts(regions: NDArray[np.generic]) -> dict[str, int]:
    """Voxels in each region of ``(3, *spatial)`` masks."""
    return {name: int(np.count_nonzero(regions[i])) for i, name in enumerate(REGIONS)}
