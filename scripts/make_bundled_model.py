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
With ``--refine`` (a ``scripts/refine_recipe.sh`` work folder) each model gets its full-resolution refinement
stage (``refine/`` beside its weights; the card's ``refinement``), the tables are the cascade's, and
``--coarse-cv-eval`` adds the ``coarse`` mode: the first stage alone, at its own out-of-fold threshold.
Then it writes the bundle: ``weights.safetensors`` (float16), ``model.onnx`` (the whole-case graph, float16
weights; one per fold too, for the accurate mode on ONNX Runtime alone) and ``model.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from bratsseg.compress.onnx_export import export_model_folder
from bratsseg.engine.crossval import OutOfFold, choose_volume, cross_validate, shipped_hd95
from bratsseg.labels import REGIONS
from bratsseg.models.card import Mode, Postprocessing, Refinement
from bratsseg.models.files import load_model, save_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--cv-eval", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, default=Path("src/bratsseg/models/bundled/brats3d"))
    parser.add_argument("--threshold-from-cv", action="store_true")
    parser.add_argument("--postprocessing-from-cv", action="store_true")
    parser.add_argument("--recipe", default="", help="the commands that trained the model (stored verbatim)")
    parser.add_argument("--folds", type=Path, help="the recipe's work folder: ship fold0..N/last as the accurate mode")
    parser.add_argument(
        "--accurate-cv-eval", type=Path, help="out-of-fold results with mirroring: the accurate mode's threshold"
    )
    parser.add_argument(
        "--accurate-mirror", default="0", help="the accurate mode's mirror axes, e.g. 0 (left-right) or 012"
    )
    parser.add_argument(
        "--refine",
        type=Path,
        help="scripts/refine_recipe.sh's work folder: its all/last refines the model, its foldK/last refines foldK "
        "(then --cv-eval and --accurate-cv-eval are the cascade's out-of-fold results)",
    )
    parser.add_argument(
        "--coarse-cv-eval",
        type=Path,
        help="with --refine: the first stage's own out-of-fold results; ships the 'coarse' mode (no refinement) "
        "at their threshold and keeps their cross-validation in the card beside the cascade's",
    )
    args = parser.parse_args()
    oof = OutOfFold(args.cv_eval, args.cache)
    cv = cross_validate(oof)
    model, card = load_model(args.model)
    if card.preprocessing.spacing is None:  # a model trained before the card recorded it: the cache's own
        from bratsseg.data.cache import open_cache
        from bratsseg.engine.trainer import common_spacing

        spacing = common_spacing([c for c in open_cache(args.cache) if c.case_id in set(card.training.train_cases)])
        card = card.replace(preprocessing=dataclasses.replace(card.preprocessing, spacing=spacing))
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
    folds = sorted(p / "last" for p in args.folds.glob("fold*") if (p / "last").is_dir()) if args.folds else []
    if folds:
        acc_threshold = threshold
        if args.accurate_cv_eval:
            acc = cross_validate(OutOfFold(args.accurate_cv_eval, args.cache))
            acc_threshold = float(acc["sweep_best_global"]["threshold"])
            cv["accurate_mode_threshold"] = {
                "threshold": acc_threshold,
                "chosen_by": "pooled out-of-fold sweep, mirrored",
            }
        accurate = Mode(
            members=tuple(f"folds/{p.parent.name}" for p in folds),
            mirror_axes=tuple(int(a) for a in args.accurate_mirror),
            thresholds=dict.fromkeys(REGIONS, acc_threshold),
            description=f"the {len(folds)} cross-validation fold models averaged, each mirrored along axes "
            f"{args.accurate_mirror} ({len(folds) * 2 ** len(args.accurate_mirror)} network passes)",
        )
        card = card.replace(modes={"accurate": accurate})
    refinement = Refinement() if args.refine else None
    if refinement is not None:
        card = card.replace(refinement=refinement)
        if args.coarse_cv_eval:
            coarse = cross_validate(OutOfFold(args.coarse_cv_eval, args.cache))
            coarse_threshold = float(coarse["sweep_best_global"]["threshold"])
            modes = dict(card.modes)
            modes["coarse"] = Mode(
                thresholds=dict.fromkeys(REGIONS, coarse_threshold),
                refine=False,
                description="the first stage alone (no refinement): one network pass on the 2x coarser grid",
            )
            card = card.replace(modes=modes, bundle={**card.bundle, "first_stage_cross_validation": coarse})
        card.bundle["description"] += (
            "; a second, full-resolution network refines the box around the tumour (refine/, a cascade)"
        )
    out = save_model(args.output, model, card, weights_dtype="float16")  # replaces the folder: first
    for fold in folds:
        fold_model, fold_card = load_model(fold)
        if refinement is not None:
            fold_card = fold_card.replace(refinement=refinement)
        save_model(out / "folds" / fold.parent.name, fold_model, fold_card, weights_dtype="float16")
    if args.refine and refinement is not None:
        stages = [(out, args.refine / "all" / "last")]
        stages += [(out / "folds" / f.parent.name, args.refine / f.parent.name / "last") for f in folds]
        for first, second in stages:
            refiner, refiner_card = load_model(second)
            save_model(first / refinement.model, refiner, refiner_card, weights_dtype="float16")
    export_model_folder(out)  # model.onnx (whole-case graph, float16 weights) for the model and each fold
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    print(json.dumps({g: round(v["dice_mean"], 3) for g, v in cv["pooled"].items()}), f"{size:.2f} MB in {out}")
    print("nested rows:", json.dumps({k: round(v["mean_dice"], 4) for k, v in rows.items()}), "shipped:", post)
    return 0


if __name__ == "__main__":
    sys.exit(main())
