"""`bratsseg info`: describe a raw dataset (:mod:`bratsseg.io.info`) or a bratsseg cache, whichever ``path`` is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bratsseg.data.cache import DATASET_FILE, META_FILE, read_meta
from bratsseg.io.info import describe_raw


def describe_cache_case(case_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    hdr = meta.get("grid") or meta["original_header"]
    out = {
        "case_id": meta["case_id"],
        "folder": str(case_dir),
        "naming": meta["naming"],
        "convention": meta["convention"],
        "shape": hdr["shape"],
        "cropped_shape": meta["cropped_shape"],
        "spacing": hdr["zooms"],
        "orientation": hdr["axcodes"],
        "dtype": "float16 (cached)",
        "has_seg": meta["has_seg"],
    }
    if "grid" in meta:
        out["resampled_from"] = {k: meta["original_header"][k] for k in ("shape", "zooms")}
    for key in ("label_voxels", "region_voxels"):
        if key in meta:
            out[key] = meta[key]
    return out


def describe(path: str | Path, check: bool = False) -> dict[str, Any]:
    """Every case under ``path`` (raw dataset, case folder, or a bratsseg cache) and every problem found;
    ``check``: read every voxel of a raw dataset (see :func:`~bratsseg.io.info.describe_raw`)."""
    root = Path(path)
    if root.is_dir() and ((root / DATASET_FILE).is_file() or (root / META_FILE).is_file()):
        dirs = [root] if (root / META_FILE).is_file() else sorted(p for p in root.iterdir() if p.is_dir())
        cases = [describe_cache_case(d, m) for d in dirs if not d.name.startswith(".") and (m := read_meta(d))]
        return {"path": str(root), "kind": "cache", "cases": cases, "problems": []}
    return describe_raw(root, check)
