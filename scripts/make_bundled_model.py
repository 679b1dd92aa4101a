"""Package a trained model as the model bundled in bratsseg, with its cross-validation results written in.

    python scripts/make_bundled_model.py RUN/last --cv-eval CV_EVAL_DIR --cache CACHE \
        [-o src/bratsseg/models/bundled/brats3d] [--threshold-from-cv]

``CV_EVAL_DIR`` holds one ``bratsseg evaluate --split val --save-probabilities`` folder per fold
(``fold0``, ``fold1``, ...): every case is scored once, by the fold model that did not train on it. The script
pools them (mean Dice and HD95 per region over all cases, and per fold), sweeps the threshold on the pooled
out-of-fold probabilities, and writes the bundle: ``weights.safetensors`` (float16), ``model.onnx`` (float16
weights, float32 compute) and ``model.json`` with a ``bundle`` section holding all of that. With
``--threshold-from-cv`` the pooled sweep's best global threshold replaces 0.5.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bratsseg.compress.onnx_export import export_onnx
from bratsseg.data.cache import open_cache
from bratsseg.labels import REGIONS
from bratsseg.metrics.sweep import SweepAccumulator
from bratsseg.metrics.tables import read_per_case
from bratsseg.models.files import load_model, save_model


def pool_folds(cv_eval: Path, cache: Path) -> dict:
    rows, per_fold, folds = [], {}, sorted(p for p in cv_eval.iterdir() if (p / "per_case.csv").is_file())
    by_id = {c.case_id: c for c in open_cache(cache)}
    acc = SweepAccumulator(policy="brats")
    fold_of: list[str] = []  # the fold of each case added to acc, in order
    for fold in folds:
        fold_rows = read_per_case(fold / "per_case.csv")
        rows += fold_rows
        per_fold[fold.name] = {
            "cases": sorted({r["case_id"] for r in fold_rows}),
            "dice": {g: float(np.mean([r["dice"] for r in fold_rows if r["region"] == g])) for g in REGIONS},
        }
        for npy in sorted((fold / "probabilities").glob("*.npy")):
            case = by_id[npy.stem]
            acc.add(case.case_id, np.load(npy).astype(np.float32), case.regions())
            fold_of.append(fold.name)
    cases = sorted({r["case_id"] for r in rows})
    if len(cases) != len(rows) // len(REGIONS):
        raise SystemExit("a case appears in more than one fold's results")
    pooled = {}
    for g in REGIONS:
        dice = np.array([r["dice"] for r in rows if r["region"] == g])
        hd95 = np.array([r["hd95"] for r in rows if r["region"] == g])
        pooled[g] = {
            "dice_mean": float(dice.mean()),
            "dice_std": float(dice.std()),
            "dice_median": float(np.median(dice)),
            "hd95_mean": float(hd95.mean()),
        }
    sweep = acc.result("dice")
    # nested: each fold's cases binarised at the global threshold that the *other* folds' sweep chose, so the
    # estimate does not choose the threshold on the cases it scores
    dice = np.stack(acc.dice)  # (cases, 3, thresholds)
    nested_dice = np.zeros((len(fold_of), len(REGIONS)))
    nested_t = {}
    for fold in folds:
        inside = np.array([f == fold.name for f in fold_of])
        k = int(np.argmax(dice[~inside].mean(axis=(0, 1))))
        nested_t[fold.name] = float(acc.thresholds[k])
        nested_dice[inside] = dice[inside, :, k]
    return {
        "n_cases": len(cases),
        "folds": len(folds),
        "threshold": 0.5,
        "pooled": pooled,
        "per_fold": per_fold,
        "sweep_best_global": {k: sweep["best_global"][k] for k in ("threshold", "mean_dice", "per_region")},
        "sweep_best_per_region": sweep["best_per_region"],
        "nested_threshold": {
            "thresholds": nested_t,
            "per_region": {g: float(nested_dice[:, r].mean()) for r, g in enumerate(REGIONS)},
            "mean_dice": float(nested_dice.mean()),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--cv-eval", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, default=Path("src/bratsseg/models/bundled/brats3d"))
    parser.add_argument("--threshold-from-cv", action="store_true")
    parser.add_argument("--recipe", default="", help="the commands that trained the model (stored verbatim)")
    args = parser.parse_args()
    cv = pool_folds(args.cv_eval, args.cache)
    model, meta = load_model(args.model)
    if args.threshold_from_cv:
        t = float(cv["sweep_best_global"]["threshold"])
        meta["thresholds"] = dict.fromkeys(REGIONS, t)
        meta["threshold_source"] = {"chosen_by": "pooled out-of-fold sweep (global, Dice)", "cases": cv["n_cases"]}
    meta["bundle"] = {
        "description": "bratsseg's bundled 3-D U-Net: BraTS-format MRI in, WT/TC/ET regions out; "
        "network on a 2x coarser grid, probabilities resampled back exactly",
        "trained_on": meta.get("training", {}).get("train_cases", []),
        "cross_validation": cv,
        "recipe": args.recipe,
        "caveat": "trained on 14 public BraTS cases only; cross-validated on the same 14; not a medical device",
    }
    out = save_model(args.output, model, meta, weights_dtype="float16")
    export_onnx(out, out / "model.onnx", weights_dtype="float16")
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(json.dumps({g: round(v["dice_mean"], 3) for g, v in cv["pooled"].items()}), f"{size:.2f} MB in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
