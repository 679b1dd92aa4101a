"""Describing raw cases (and cached ones) without preprocessing them: what `bratsseg info` prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bratsseg.errors import BratsSegError
from bratsseg.io.discovery import Case, discover_cases
from bratsseg.io.nifti import (
    check_case_files,
    check_labels,
    check_same_grid,
    header_essentials,
    open_nifti,
    read_array,
)
from bratsseg.labels import REGIONS, labels_to_regions, region_voxel_counts


def describe_case(case: Case) -> dict[str, Any]:
    """Naming, convention, grid (shape, spacing, orientation) and, with a segmentation, voxel counts
    per label and per region. Reads headers and the segmentation only; checks the grids agree."""
    paths = list(case.files)
    imgs = [open_nifti(p) for p in paths]
    check_same_grid(paths, imgs)
    hdr = header_essentials(imgs[0])
    out: dict[str, Any] = {
        "case_id": case.case_id,
        "folder": str(case.folder),
        "naming": case.naming.name,
        "convention": case.convention.name,
        "shape": hdr["shape"],
        "spacing": hdr["zooms"],
        "orientation": hdr["axcodes"],
        "dtype": hdr["dtype"],
        "has_seg": case.seg is not None,
    }
    if case.seg is not None:
        labels = check_labels(read_array(imgs[-1], case.seg, dtype=np.int64), case, case.seg)
        values, counts = np.unique(labels, return_counts=True)
        out["label_voxels"] = {str(int(v)): int(n) for v, n in zip(values, counts, strict=True)}
        out["region_voxels"] = region_voxel_counts(labels_to_regions(labels, case.convention))
    return out


def describe_raw(path: str | Path, check: bool = False) -> dict[str, Any]:
    """Every raw case under ``path`` (a dataset root or a case folder) and every problem found. ``check`` also
    reads every voxel of every file and reports each problem the loader would raise (truncated files, NaN ...)."""
    root = Path(path)
    discovery = discover_cases(root)
    cases, problems = [], [str(p) for p in discovery.problems]
    for case in discovery.cases:
        found = check_case_files(case) if check else []
        problems += found
        if found:
            continue
        try:
            cases.append(describe_case(case))
        except BratsSegError as err:
            problems.append(str(err))
    return {"path": str(root), "kind": "raw", "cases": cases, "problems": problems}


def format_description(info: dict[str, Any]) -> str:
    """A plain-text table of a description (:func:`describe_raw`, or :func:`bratsseg.data.info.describe`)."""
    cases = info["cases"]
    lines = [f"{info['path']}: {len(cases)} case(s) ({info['kind']}), {len(info['problems'])} problem(s)"]
    header = ["case", "naming", "convention", "shape", "spacing (mm)", "orient", "seg", *REGIONS, "labels"]
    rows = []
    for c in cases:
        regions = c.get("region_voxels", {})
        labels = c.get("label_voxels")
        rows.append(
            [
                c["case_id"],
                c["naming"],
                c["convention"],
                "x".join(str(s) for s in c["shape"]),
                "x".join(f"{z:.2f}" for z in c["spacing"]),
                c["orientation"],
                "yes" if c["has_seg"] else "no",
                *(str(regions.get(r, "-")) for r in REGIONS),
                " ".join(f"{k}:{v}" for k, v in labels.items()) if labels else "-",
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    lines.extend(f"problem: {p}" for p in info["problems"])
    return "\n".join(lines)
