"""`bratsseg plot`: figures drawn from results files, without running a network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bratsseg.errors import BratsSegError
from bratsseg.metrics.tables import read_per_case


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BratsSegError("no such file", path) from None
    except ValueError as err:
        raise BratsSegError(f"not valid JSON ({err})", path) from err


def _label(path: Path) -> str:
    """A short name for a results folder or file: its folder's name."""
    return path.parent.name if path.is_file() else path.name


def plot_sweeps(paths: list[Path], out: Path, metric: str = "iou") -> Path:
    """IoU/Dice against the threshold, one line per ``sweep.json`` (or folder holding one)."""
    from bratsseg.viz.figures import threshold_curves

    sweeps = {}
    for p in paths:
        f = p / "sweep.json" if p.is_dir() else p
        sweeps[_label(f) if f.parent.name else str(f)] = _read_json(f)
    return _save(threshold_curves(sweeps, metric), out)


def plot_boxplots(paths: list[Path], out: Path, metric: str = "dice") -> Path:
    from bratsseg.viz.figures import dice_boxplot

    results = {}
    for p in paths:
        f = p / "per_case.csv" if p.is_dir() else p
        if not f.is_file():
            raise BratsSegError("no such file", f)
        results[_label(f)] = read_per_case(f)
    return _save(dice_boxplot(results, metric), out)


def plot_training(run_or_file: Path, out: Path) -> Path:
    from bratsseg.viz.figures import training_curves

    f = run_or_file / "metrics.jsonl" if run_or_file.is_dir() else run_or_file
    try:
        records = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise BratsSegError("no such file", f) from None
    if not records:
        raise BratsSegError("no epochs recorded yet", f)
    return _save(training_curves(records), out)


def plot_case(cache_case: Path, out: Path, prediction: Path | None = None, z: int | None = None) -> Path:
    """Cross-section of a cached case with its truth, and a prediction: a label-map NIfTI on the original grid
    or a ``.npy`` of ``(3, ...)`` region probabilities on the cached grid."""
    from bratsseg.data.cache import CachedCase
    from bratsseg.data.geometry import crop
    from bratsseg.io.nifti import open_nifti, read_array
    from bratsseg.labels import labels_to_regions
    from bratsseg.viz.figures import cross_section

    case = CachedCase.open(cache_case)
    truth = case.regions() if case.has_seg else None
    pred = None
    if prediction is not None:
        if prediction.suffix == ".npy":
            pred = np.load(prediction) > 0.5
        else:
            labels = read_array(open_nifti(prediction), prediction, np.int64)
            pred = labels_to_regions(crop(labels, case.bbox), case.convention)
    return _save(cross_section(np.asarray(case.image, dtype=np.float32), truth, pred, z, case.case_id), out)


def _save(fig: Any, out: Path) -> Path:
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
