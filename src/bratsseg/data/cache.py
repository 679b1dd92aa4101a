"""The on-disk cache of preprocessed cases, read back memory-mapped.

Layout, one folder per case under the cache root::

    CACHE/<case_id>/image.npy    (4, x, y, z) float16, z-scored over the brain, 0 outside
    CACHE/<case_id>/regions.npy  (x, y, z) uint8, bit 0 WT, bit 1 TC, bit 2 ET (absent without segmentation)
    CACHE/<case_id>/meta.json    crop box, original grid and header, convention, normalisation, counts

A case folder is written under a temporary name and renamed into place when complete, so a folder
with the final name is always whole; half-written hidden ``.*.tmp*`` folders are removed by the next run.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.atomic import atomic_dir, write_json_atomic
from bratsseg.data.geometry import BBox, as_bbox, uncrop
from bratsseg.errors import BratsSegError
from bratsseg.labels import LabelConvention, get_convention, regions_to_labels, unpack_regions

FORMAT_VERSION = 1
IMAGE_FILE = "image.npy"
REGIONS_FILE = "regions.npy"
META_FILE = "meta.json"
DATASET_FILE = "dataset.json"  # at the cache root: how it was made
TMP_PREFIX = ".tmp-"  # the temporaries of older versions


def _save_npy(path: Path, array: NDArray[Any]) -> None:
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())


def write_cached_case(
    root: str | Path, case_id: str, image: NDArray[Any], packed_regions: NDArray[np.uint8] | None, meta: dict[str, Any]
) -> Path:
    """Write one case folder atomically (temporary folder, then rename) and return its path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / case_id
    with atomic_dir(final) as tmp:
        _save_npy(tmp / IMAGE_FILE, image)
        if packed_regions is not None:
            _save_npy(tmp / REGIONS_FILE, packed_regions)
        write_json_atomic(tmp / META_FILE, {**meta, "format_version": FORMAT_VERSION})
    return final


def remove_partial_writes(root: str | Path) -> list[Path]:
    """Delete the temporary folders a killed run left behind; return what was removed."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and (p.name.startswith(TMP_PREFIX) or (p.name.startswith(".") and ".tmp" in p.name)):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def read_meta(case_dir: str | Path) -> dict[str, Any] | None:
    """The metadata of a complete cached case of the current format, or None."""
    path = Path(case_dir) / META_FILE
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        return None
    if not (Path(case_dir) / IMAGE_FILE).is_file():
        return None
    if meta.get("has_seg") and not (Path(case_dir) / REGIONS_FILE).is_file():
        return None
    return meta


@dataclass(frozen=True)
class CachedCase:
    """One preprocessed case; arrays are memory-mapped on first access."""

    path: Path
    meta: dict[str, Any]

    def __getstate__(self) -> dict[str, Any]:
        # never pickle the memory maps (loader workers re-open them)
        return {"path": self.path, "meta": self.meta}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "path", state["path"])
        object.__setattr__(self, "meta", state["meta"])

    @classmethod
    def open(cls, path: str | Path) -> CachedCase:
        meta = read_meta(path)
        if meta is None:
            raise BratsSegError("not a complete bratsseg cache folder (no readable meta.json of this format)", path)
        return cls(Path(path), meta)

    @property
    def case_id(self) -> str:
        return str(self.meta["case_id"])

    @property
    def convention(self) -> LabelConvention:
        return get_convention(self.meta["convention"])

    @property
    def has_seg(self) -> bool:
        return bool(self.meta["has_seg"])

    @property
    def bbox(self) -> BBox:
        return as_bbox(self.meta["bbox"])

    @property
    def grid(self) -> dict[str, Any]:
        """The header of the grid the cached arrays are cropped from: the input's own, or the grid it was
        resampled to (``bratsseg preprocess --spacing``)."""
        return dict(self.meta.get("grid") or self.meta["original_header"])

    @property
    def original_shape(self) -> tuple[int, int, int]:
        """The shape of :attr:`grid` (the input's own shape unless the case was resampled)."""
        x, y, z = self.grid["shape"][:3]
        return int(x), int(y), int(z)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """The voxel size of :attr:`grid` in mm."""
        x, y, z = self.grid["zooms"][:3]
        return float(x), float(y), float(z)

    @cached_property
    def image(self) -> NDArray[np.float16]:
        """``(4, x, y, z)`` float16, memory-mapped read-only."""
        return np.load(self.path / IMAGE_FILE, mmap_mode="r")

    @cached_property
    def packed_regions(self) -> NDArray[np.uint8]:
        """``(x, y, z)`` uint8 bit-packed regions, memory-mapped read-only."""
        if not self.has_seg:
            raise BratsSegError(f"case {self.case_id} has no segmentation", self.path)
        return np.load(self.path / REGIONS_FILE, mmap_mode="r")

    def regions(self) -> NDArray[np.bool_]:
        """``(3, x, y, z)`` WT/TC/ET masks on the cropped grid."""
        return unpack_regions(np.asarray(self.packed_regions))

    def labels(self) -> NDArray[np.uint8]:
        """The label map on the cropped grid, in the case's own convention."""
        return regions_to_labels(self.regions(), self.convention)

    def uncrop(self, array: NDArray[Any], fill: float = 0) -> NDArray[Any]:
        """Put a ``(..., x, y, z)`` array on the cropped grid back onto the original grid, exactly."""
        return uncrop(array, self.bbox, self.original_shape, fill=fill)


def open_cache(root: str | Path) -> list[CachedCase]:
    """Every complete case in a cache root, sorted by case id."""
    root = Path(root)
    if not root.is_dir():
        raise BratsSegError("no such cache folder", root)
    cases = [
        CachedCase(p, meta)
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith(".") and (meta := read_meta(p)) is not None
    ]
    if not cases:
        raise BratsSegError("no preprocessed cases here; run `bratsseg preprocess` first", root)
    return cases
