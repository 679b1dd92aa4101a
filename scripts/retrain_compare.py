"""Does a retrained bundle beat the shipped one on the same cases, each case scored by a model that did not see it?

    python scripts/retrain_compare.py --old OLD_BUNDLE --new NEW_BUNDLE --cache RUN/cache [-o docs/retrain44.json]

``NEW_BUNDLE`` is made by ``bratsseg crossval`` + ``bratsseg bundle`` on more cases; its card holds every case's
*nested* out-of-fold Dice (``bundle.cross_validation.nested_final.per_case_dice``: the fold model that left the
case out, at the threshold and with the post-processing the other folds chose). ``OLD_BUNDLE`` scores the same
cases unseen: a case it was trained on by its cross-validation fold model that left the case out, any other case
by its all-case model, each at the old bundle's shipped threshold and post-processing (for its own training cases
these were chosen on them: an estimate in the old bundle's favour). Per case the mean Dice over WT, TC and ET;
paired bootstrap intervals of new minus old, on all cases and on the old bundle's unseen and seen ones apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bratsseg.data.cache import open_cache
from bratsseg.inference.loading import load_predictor
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.inference.predictor import binarize
from bratsseg.labels import REGIONS
from bratsseg.metrics.overlap import dice_per_region
from bratsseg.metrics.paired import paired_bootstrap
from bratsseg.models.card import read_card


def old_scores(old: Path, cache: Path, threads: int) -> dict[str, dict[str, float]]:
    card = read_card(old)
    fold_of = {}
    for fold in sorted((old / "folds").iterdir()):
        for cid in read_card(fold).training.val_cases:
            fold_of[cid] = fold
    predictors: dict[Path, Any] = {}
    out = {}
    for case in open_cache(cache):
        where = fold_of.get(case.case_id, old)
        if where not in predictors:
            predictors[where] = load_predictor(where, threads=threads)
        image = np.asarray(case.image, dtype=np.float32)
        probs = predictors[where].probabilities(image)
        pred = postprocess_regions(binarize(probs, card.thresholds), case.spacing, card.postprocessing, image)
        d = dice_per_region(pred, case.regions())
        out[case.case_id] = {g: float(d[g]) for g in REGIONS}
        print(case.case_id, "fold model" if where != old else "all-case model", out[case.case_id], file=sys.stderr)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/retrain44.json"))
    args = parser.parse_args()
    new = read_card(args.new).bundle["cross_validation"]["nested_final"]["per_case_dice"]
    old = old_scores(args.old, args.cache, args.threads)
    seen = set(read_card(args.old).training.train_cases)
    result: dict[str, Any] = {"cases": len(new), "old_trained_on": len(seen & set(new)), "groups": {}}
    for name, ids in (
        ("all", sorted(new)),
        ("new to the old bundle", sorted(set(new) - seen)),
        ("the old bundle's training cases (its folds, out of fold)", sorted(set(new) & seen)),
    ):
        a = np.array([np.mean([new[c][g] for g in REGIONS]) for c in ids])
        b = np.array([np.mean([old[c][g] for g in REGIONS]) for c in ids])
        result["groups"][name] = {
            "cases": len(ids),
            "new": {g: float(np.mean([new[c][g] for c in ids])) for g in REGIONS},
            "old": {g: float(np.mean([old[c][g] for c in ids])) for g in REGIONS},
            "new_mean": float(a.mean()),
            "old_mean": float(b.mean()),
            "difference": paired_bootstrap(a, b),
        }
    result["per_case"] = {"new": new, "old": old}
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    for name, g in result["groups"].items():
        d = g["difference"]
        print(f"{name} ({g['cases']}): new {g['new_mean']:.3f} old {g['old_mean']:.3f} "
              f"diff {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
