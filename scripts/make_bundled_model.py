"""Package a trained model as the model bundled in bratsseg, with its cross-validation results written in.

    python scripts/make_bundled_model.py RUN/last --cv-eval CV_EVAL_DIR --cache CACHE \
        [-o src/bratsseg/models/bundled/brats3d] [--threshold-from-cv] [--postprocessing-from-cv] [--recipe TEXT]

``CV_EVAL_DIR`` holds one ``bratsseg evaluate --split val --save-probabilities`` folder per fold
(``fold0``, ``fold1``, ...): every case is scored once, by the fold model that did not train on it. From those
out-of-fold probabilities the script computes, and stores in the card's ``bundle.cross_validation``:

- the pooled table at threshold 0.5 (mean / median Dice and mean HD95 per region), per fold and per case;
- the threshold sweep on the pooled probabilities, and the *nested* estimate: each fold binarised at the global
  threshold the other folds' sweep chose, so no number is chosen on the cases it scores;
- ET Dice on the cases with fewer than 5,000 true ET voxels (the low-grade ones);
- post-processing candidates, each nested the same way: nested regions (what ``predict`` writes), and nnU-Net's
  small-ET rule with its volume threshold chosen per fold on the other folds.

With ``--threshold-from-cv`` the pooled sweep's best global threshold replaces 0.5; with
``--postprocessing-from-cv`` the post-processing is shipped only if its nested estimate beats the one without.
Then it writes the bundle: ``weights.safetensors`` (float16), ``model.onnx`` (float16 weights) and ``model.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bratsseg.compress.onnx_export import export_onnx
from bratsseg.data.cache import CachedCase, open_cache
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.labels import REGIONS
from bratsseg.metrics.distance import hd95
from bratsseg.metrics.overlap import dice_per_region
from bratsseg.metrics.sweep import SweepAccumulator
from bratsseg.metrics.tables import read_per_case
from bratsseg.models.card import Postprocessing
from bratsseg.models.files import load_model, save_model

SMALL_ET_VOXELS = 5000
ET_VOLUMES_MM3 = (0, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000)


class OutOfFold:
    """Every case's out-of-fold probabilities (float16 on the cropped grid), its truth, spacing and fold."""

    def __init__(self, cv_eval: Path, cache: Path) -> None:
        self.folds = sorted(p for p in cv_eval.iterdir() if (p / "per_case.csv").is_file())
        by_id = {c.case_id: c for c in open_cache(cache)}
        self.rows: list[dict[str, Any]] = []
        self.cases: list[CachedCase] = []
        self.fold_of: list[str] = []
        self.probs: list[Path] = []
        for fold in self.folds:
            self.rows += read_per_case(fold / "per_case.csv")
            for npy in sorted((fold / "probabilities").glob("*.npy")):
                self.cases.append(by_id[npy.stem])
                self.fold_of.append(fold.name)
                self.probs.append(npy)
        ids = [c.case_id for c in self.cases]
        if len(set(ids)) != len(ids) or len(ids) != len(self.rows) // len(REGIONS):
            raise SystemExit("a case appears in more than one fold's results, or lacks its probabilities")
        self.truth = [c.regions() for c in self.cases]
        self.et_voxels = [int(t[2].sum()) for t in self.truth]

    def probabilities(self, i: int) -> np.ndarray:
        return np.load(self.probs[i]).astype(np.float32)

    def inside(self, fold: str) -> np.ndarray:
        return np.array([f == fold for f in self.fold_of])


def mean_dice(scores: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    s = scores if mask is None else scores[mask]
    return {g: float(s[:, r].mean()) for r, g in enumerate(REGIONS)}


def pooled_at_half(oof: OutOfFold) -> dict[str, Any]:
    out = {}
    for g in REGIONS:
        dice = np.array([r["dice"] for r in oof.rows if r["region"] == g])
        hd = np.array([r["hd95"] for r in oof.rows if r["region"] == g])
        out[g] = {
            "dice_mean": float(dice.mean()),
            "dice_std": float(dice.std()),
            "dice_median": float(np.median(dice)),
            "hd95_mean": float(hd.mean()),
        }
    return out


def sweep(oof: OutOfFold) -> tuple[dict[str, Any], dict[str, float], np.ndarray]:
    """The pooled sweep, the nested threshold of each fold, and each case's Dice at its nested threshold."""
    acc = SweepAccumulator(policy="brats")
    for i, case in enumerate(oof.cases):
        acc.add(case.case_id, oof.probabilities(i), oof.truth[i])
    result = acc.result("dice")
    dice = np.stack(acc.dice)  # (cases, 3, thresholds)
    nested_t: dict[str, float] = {}
    for fold in oof.folds:
        inside = oof.inside(fold.name)
        nested_t[fold.name] = float(acc.thresholds[int(np.argmax(dice[~inside].mean(axis=(0, 1))))])
    best = float(result["best_global"]["threshold"])
    return {**result, "best": best}, nested_t, dice


def postprocessing_study(oof: OutOfFold, nested_t: dict[str, float]) -> dict[str, Any]:
    """Each fold at its nested threshold, then: as is; nested regions; nested regions + the small-ET rule with
    the volume chosen on the other folds (each setting scored on cases that did not choose it)."""
    n = len(oof.cases)
    # binarise every case at every fold's threshold once: the volume choice of fold f uses the other folds'
    # cases at f's threshold
    plain = np.zeros((len(oof.folds), n, 3))
    nested = np.zeros((len(oof.folds), n, 3))
    et_removed = np.zeros((len(oof.folds), n))  # ET Dice if ET is relabelled as necrosis
    et_volume = np.zeros((len(oof.folds), n))
    for i, case in enumerate(oof.cases):
        probs = oof.probabilities(i)
        voxel_mm3 = float(np.prod(case.spacing))
        for k, fold in enumerate(oof.folds):
            pred = probs > nested_t[fold.name]
            d = dice_per_region(pred, oof.truth[i])
            plain[k, i] = [d[g] for g in REGIONS]
            d = dice_per_region(
                postprocess_regions(pred, case.spacing, Postprocessing(nested_regions=True)), oof.truth[i]
            )
            nested[k, i] = [d[g] for g in REGIONS]
            et_removed[k, i] = 1.0 if not oof.truth[i][2].any() else 0.0
            et_volume[k, i] = pred[2].sum() * voxel_mm3
    own = np.array([[f.name for f in oof.folds].index(f) for f in oof.fold_of])  # each case's own fold index

    def scores(k: np.ndarray, table: np.ndarray) -> np.ndarray:
        return table[k, np.arange(n)]

    with_rule = scores(own, nested).copy()
    volumes: dict[str, float] = {}
    for k, fold in enumerate(oof.folds):
        others = ~oof.inside(fold.name)
        best_v, best_et = 0.0, -1.0
        for v in ET_VOLUMES_MM3:
            small = (et_volume[k] > 0) & (et_volume[k] < v)
            et = np.where(small, et_removed[k], nested[k, :, 2])[others].mean()
            if et > best_et + 1e-12:
                best_v, best_et = float(v), float(et)
        volumes[fold.name] = best_v
        mine = oof.inside(fold.name)
        small = (et_volume[k] > 0) & (et_volume[k] < best_v)
        with_rule[mine, 2] = np.where(small, et_removed[k], nested[k, :, 2])[mine]
    # the volume for the shipped model: chosen on all cases at the shipped (pooled) threshold is done by the
    # caller; here the nested choices and their scores
    small_et = np.array(oof.et_voxels) < SMALL_ET_VOXELS
    rows = {}
    for name, s in (
        ("nested threshold", scores(own, plain)),
        ("+ nested regions", scores(own, nested)),
        ("+ small-ET rule", with_rule),
    ):
        rows[name] = {
            "per_region": mean_dice(s),
            "mean_dice": float(s.mean()),
            "small_et_dice": float(s[small_et, 2].mean()) if small_et.any() else None,
            "per_case": {c.case_id: dict(zip(REGIONS, map(float, s[i]), strict=True)) for i, c in enumerate(oof.cases)},
        }
    return {"rows": rows, "nested_volumes_mm3": volumes, "candidates_mm3": list(ET_VOLUMES_MM3)}


def choose_volume(oof: OutOfFold, threshold: float) -> float:
    """The small-ET volume that maximises pooled ET Dice at ``threshold`` (for the shipped model)."""
    vols, as_is, removed = [], [], []
    for i, case in enumerate(oof.cases):
        pred = postprocess_regions(oof.probabilities(i) > threshold, case.spacing, Postprocessing(nested_regions=True))
        vols.append(pred[2].sum() * float(np.prod(case.spacing)))
        as_is.append(dice_per_region(pred, oof.truth[i])["ET"])
        removed.append(1.0 if not oof.truth[i][2].any() else 0.0)
    v_arr, a_arr, r_arr = np.array(vols), np.array(as_is), np.array(removed)
    best = max(ET_VOLUMES_MM3, key=lambda v: (np.where((v_arr > 0) & (v_arr < v), r_arr, a_arr).mean(), -v))
    return float(best)


def shipped_hd95(oof: OutOfFold, threshold: float, post: Postprocessing) -> dict[str, float]:
    """Mean HD95 per region with the shipped threshold and post-processing (chosen on these cases: the pooled row)."""
    out = {g: [] for g in REGIONS}
    for i, case in enumerate(oof.cases):
        pred = postprocess_regions(oof.probabilities(i) > threshold, case.spacing, post)
        for r, g in enumerate(REGIONS):
            out[g].append(hd95(pred[r], oof.truth[i][r], case.spacing))
    return {g: float(np.mean(v)) for g, v in out.items()}


def cross_validate(cv_eval: Path, cache: Path) -> dict[str, Any]:
    oof = OutOfFold(cv_eval, cache)
    result, nested_t, dice = sweep(oof)
    nested = np.zeros((len(oof.cases), 3))
    for fold in oof.folds:
        inside = oof.inside(fold.name)
        k = int(np.argmin(np.abs(np.array(result["thresholds"]) - nested_t[fold.name])))
        nested[inside] = dice[inside, :, k]
    half = {r["case_id"]: {} for r in oof.rows}
    for r in oof.rows:
        half[r["case_id"]][r["region"]] = float(r["dice"])
    small = np.array(oof.et_voxels) < SMALL_ET_VOXELS
    per_fold = {
        f.name: {
            "cases": sorted(c.case_id for c, w in zip(oof.cases, oof.fold_of, strict=True) if w == f.name),
            "dice": mean_dice(np.array([[half[c.case_id][g] for g in REGIONS] for c in oof.cases]), oof.inside(f.name)),
        }
        for f in oof.folds
    }
    return {
        "n_cases": len(oof.cases),
        "folds": len(oof.folds),
        "threshold": 0.5,
        "pooled": pooled_at_half(oof),
        "per_fold": per_fold,
        "per_case": {
            c.case_id: {"fold": oof.fold_of[i], "et_voxels": oof.et_voxels[i], "dice": half[c.case_id]}
            for i, c in enumerate(oof.cases)
        },
        "sweep_best_global": {k: result["best_global"][k] for k in ("threshold", "mean_dice", "per_region")},
        "sweep_best_per_region": result["best_per_region"],
        "nested_threshold": {
            "thresholds": nested_t,
            "per_region": mean_dice(nested),
            "mean_dice": float(nested.mean()),
        },
        "small_et": {
            "voxels_below": SMALL_ET_VOXELS,
            "cases": [c.case_id for c, s in zip(oof.cases, small, strict=True) if s],
            "et_dice_at_0.5": float(
                np.mean([half[c.case_id]["ET"] for c, s in zip(oof.cases, small, strict=True) if s])
            )
            if small.any()
            else None,
        },
        "postprocessing": postprocessing_study(oof, nested_t),
        "_oof": oof,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--cv-eval", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, default=Path("src/bratsseg/models/bundled/brats3d"))
    parser.add_argument("--threshold-from-cv", action="store_true")
    parser.add_argument("--postprocessing-from-cv", action="store_true")
    parser.add_argument("--recipe", default="", help="the commands that trained the model (stored verbatim)")
    args = parser.parse_args()
    cv = cross_validate(args.cv_eval, args.cache)
    oof: OutOfFold = cv.pop("_oof")
    model, card = load_model(args.model)
    threshold = 0.5
    if args.threshold_from_cv:
        threshold = float(cv["sweep_best_global"]["threshold"])
        source = {"chosen_by": "pooled out-of-fold sweep (global, Dice)", "cases": cv["n_cases"]}
        card = card.replace(thresholds=dict.fromkeys(REGIONS, threshold), threshold_source=source)
    post = Postprocessing()
    rows = cv["postprocessing"]["rows"]
    if args.postprocessing_from_cv:
        base = rows["nested threshold"]["mean_dice"]
        if rows["+ nested regions"]["mean_dice"] >= base:
            post = Postprocessing(nested_regions=True)
            if rows["+ small-ET rule"]["mean_dice"] > rows["+ nested regions"]["mean_dice"]:
                post = Postprocessing(nested_regions=True, et_min_volume_mm3=choose_volume(oof, threshold))
        card = card.replace(postprocessing=post)
    cv["shipped"] = {
        "threshold": threshold,
        "postprocessing": {"nested_regions": post.nested_regions, "et_min_volume_mm3": post.et_min_volume_mm3},
        "hd95_pooled": shipped_hd95(oof, threshold, post),
    }
    n = len(card.training.train_cases)
    card = card.replace(
        bundle={
            "description": "bratsseg's bundled 3-D U-Net: BraTS-format MRI in, WT/TC/ET regions out; "
            "network on a 2x coarser grid, probabilities resampled back exactly",
            "trained_on": list(card.training.train_cases),
            "cross_validation": cv,
            "recipe": args.recipe,
            "caveat": f"trained on {n} public BraTS cases only; cross-validated on the same {n}; not a medical device",
        }
    )
    out = save_model(args.output, model, card, weights_dtype="float16")
    export_onnx(out, out / "model.onnx", weights_dtype="float16")
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(json.dumps({g: round(v["dice_mean"], 3) for g, v in cv["pooled"].items()}), f"{size:.2f} MB in {out}")
    print("nested rows:", json.dumps({k: round(v["mean_dice"], 4) for k, v in rows.items()}), "shipped:", post)
    return 0


if __name__ == "__main__":
    sys.exit(main())
