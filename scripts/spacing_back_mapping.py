"""Issue 13: bring the probabilities from the model's grid back to the input's by trilinear resampling (what
`predict` does) or by nearest neighbour, then threshold: which agrees better with the truth?

The case is resampled (images trilinear, labels nearest, pixel edges aligned) to each grid; `predict`'s own
pipeline runs with either back-mapping; Dice against the resampled truth.

    python scripts/spacing_back_mapping.py [CASE ...]       (default: three shared real cases)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bratsseg.data import resample
from bratsseg.engine import predict as predict_module
from bratsseg.engine.predict import predict
from bratsseg.io.discovery import find_case
from bratsseg.labels import labels_to_regions
from bratsseg.metrics.overlap import dice

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats"
CASES = ("BraTS2021_00006", "Brats18_TCIA10_628_1", "BraTS19_CBICA_ASK_1")
GRIDS = {"1 x 1 x 3 mm": (1.0, 1.0, 1 / 3), "0.5 x 0.5 x 1 mm": (2.0, 2.0, 1.0)}


def resample_case(case_dir: Path, out: Path, factors: tuple[float, ...]) -> Path:
    out.mkdir(parents=True)
    for path in sorted(case_dir.iterdir()):
        img = nib.load(path)
        seg = "seg" in path.name
        data = ndimage.zoom(np.asarray(img.dataobj, dtype=np.float32), factors, order=0 if seg else 1,
                            grid_mode=True, mode="grid-constant")  # fmt: skip
        shift = np.eye(4)
        shift[:3, 3] = (1 / np.asarray(factors) - 1) / 2
        affine = img.affine @ shift @ np.diag([*(1 / np.asarray(factors)), 1.0])
        nib.save(nib.Nifti1Image(data.astype(np.uint8 if seg else np.float32), affine), out / path.name)
    return out


def nearest(x: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Nearest neighbour with the same pixel-centre alignment as :func:`bratsseg.data.resample.resize`."""
    out = np.asarray(x, dtype=np.float32)
    lead = out.ndim - len(size)
    for i, m in enumerate(size):
        n = out.shape[lead + i]
        idx = np.minimum(np.floor((np.arange(m) + 0.5) * n / m).astype(np.intp), n - 1)
        out = out.take(idx, axis=lead + i)
    return out


def main(argv: list[str]) -> int:
    names = argv or list(CASES)
    real_resize = resample.resize
    results: dict[str, dict[str, list[list[float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for grid, factors in GRIDS.items():
            for name in names:
                folder = resample_case(SHARED / name, Path(tmp) / grid.split()[0] / name, factors)
                case = find_case(folder)
                truth = labels_to_regions(np.asarray(nib.load(case.seg).dataobj), case.convention)
                for method in ("trilinear", "nearest"):
                    calls: list[tuple[int, ...]] = []

                    def back(
                        x: np.ndarray, size: tuple[int, ...], method: str = method, calls: list = calls
                    ) -> np.ndarray:
                        calls.append(size)  # the first call resamples the image, the second the probabilities
                        return nearest(x, size) if method == "nearest" and len(calls) == 2 else real_resize(x, size)

                    predict_module.resize = back  # type: ignore[assignment]
                    try:
                        out = predict([folder], Path(tmp) / "out" / method, overwrite=True).written[0]
                    finally:
                        predict_module.resize = real_resize  # type: ignore[assignment]
                    pred = labels_to_regions(np.asarray(nib.load(out).dataobj), case.convention)
                    scores = [dice(pred[r], truth[r]) for r in range(3)]
                    results.setdefault(grid, {}).setdefault(method, []).append(scores)
                    print(f"{grid:18} {name:24} {method:10} " + " ".join(f"{v:.4f}" for v in scores), flush=True)
    print("\nmean Dice WT / TC / ET")
    for grid, methods in results.items():
        for method, rows in methods.items():
            print(f"{grid:18} {method:10} " + " / ".join(f"{v:.4f}" for v in np.mean(rows, axis=0)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
