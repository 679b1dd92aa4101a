"""Where a bundle loses the whole tumour on cases it never saw: under- or over-segmented, at the border or whole
lobes, and how the missed and the extra voxels look in each modality (issue 31).

    python scripts/wt_errors.py --model MODEL --cache CACHE [--cases id1,id2,...] [-o docs/wt_errors.json]

For every case: true and predicted WT volume (cm^3), the false-negative and false-positive volumes, the share of
each within 2 voxels of the other mask's border (a boundary disagreement) against farther away (a lobe missed or
invented), and the mean z-scored intensity of FLAIR, T1, T1ce and T2 over the true positives, the false negatives
and the false positives (what the network takes for oedema and what it does not). The model runs as ``predict``
does (its threshold and post-processing) on the cached, z-scored image.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from bratsseg.data.cache import open_cache
from bratsseg.inference.loading import load_predictor
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.inference.predictor import binarize
from bratsseg.labels import MODALITIES


def near(mask: np.ndarray, other: np.ndarray, voxels: int = 2) -> np.ndarray:
    """Voxels of ``mask`` within ``voxels`` of ``other`` (``other`` dilated)."""
    return mask & ndimage.binary_dilation(other, iterations=voxels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--cases", help="comma-separated case ids (default: every case the model did not train on)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/wt_errors.json"))
    args = parser.parse_args()
    predictor = load_predictor(args.model, threads=args.threads)
    seen = set(predictor.card.training.train_cases)
    wanted = set(args.cases.split(",")) if args.cases else None
    rows: list[dict[str, Any]] = []
    for case in open_cache(args.cache):
        if (wanted is not None and case.case_id not in wanted) or (wanted is None and case.case_id in seen):
            continue
        image = np.asarray(case.image, dtype=np.float32)
        probs = predictor.probabilities(image)
        pred = postprocess_regions(binarize(probs, predictor.thresholds), case.spacing, predictor.card.postprocessing,
                                   image)[0]  # fmt: skip
        truth = case.regions()[0]
        voxel = float(np.prod(case.spacing)) / 1000
        tp, fn, fp = truth & pred, truth & ~pred, pred & ~truth
        row = {
            "case": case.case_id,
            "true_cm3": float(truth.sum()) * voxel,
            "pred_cm3": float(pred.sum()) * voxel,
            "fn_cm3": float(fn.sum()) * voxel,
            "fp_cm3": float(fp.sum()) * voxel,
            "fn_at_border": float(near(fn, pred).sum() / max(fn.sum(), 1)),
            "fp_at_border": float(near(fp, truth).sum() / max(fp.sum(), 1)),
            "dice": float(2 * tp.sum() / max(truth.sum() + pred.sum(), 1)),
            "intensity": {
                part: {m: float(image[i][mask].mean()) if mask.any() else None for i, m in enumerate(MODALITIES)}
                for part, mask in (("tp", tp), ("fn", fn), ("fp", fp))
            },
        }
        rows.append(row)
        print(f"{case.case_id}: WT Dice {row['dice']:.3f}, true {row['true_cm3']:.0f} cm3, missed {row['fn_cm3']:.0f} "
              f"({row['fn_at_border']:.0%} at the border), extra {row['fp_cm3']:.0f} ({row['fp_at_border']:.0%})",
              file=sys.stderr)  # fmt: skip
    summary = {
        "cases": len(rows),
        "dice": float(np.mean([r["dice"] for r in rows])),
        "fn_cm3": float(np.mean([r["fn_cm3"] for r in rows])),
        "fp_cm3": float(np.mean([r["fp_cm3"] for r in rows])),
        "fn_at_border": float(np.mean([r["fn_at_border"] for r in rows])),
        "fp_at_border": float(np.mean([r["fp_at_border"] for r in rows])),
        "under_segmented_cases": sum(r["pred_cm3"] < r["true_cm3"] for r in rows),
        "fn_flair_minus_tp_flair": float(np.nanmean([
            r["intensity"]["fn"]["flair"] - r["intensity"]["tp"]["flair"] for r in rows
            if r["intensity"]["fn"]["flair"] is not None and r["intensity"]["tp"]["flair"] is not None])),
    }  # fmt: skip
    args.output.write_text(json.dumps({"model": str(args.model), "summary": summary, "cases": rows}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
