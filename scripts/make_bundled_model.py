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

from bratsseg.compress.onnx_export import export_onnx
from bratsseg.engine.crossval import OutOfFold, choose_volume, cross_validate, shipped_hd95
from bratsseg.labels import REGIONS
from bratsseg.models.card import Postprocessing
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
    args = parser.parse_args()
    oof = OutOfFold(args.cv_eval, args.cache)
    cv = cross_validate(oof)
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
