"""Does a retrained bundle beat the shipped one on the same cases, each case scored by a model that did not see it?

    python scripts/retrain_compare.py --old OLD_BUNDLE --new NAME=NEW_BUNDLE [--new NAME2=RUN2/bundle_choices.json]
        --cache RUN/cache [--write docs/results/accuracy.md]
    python scripts/retrain_compare.py --render --write docs/results/accuracy.md   # the block from docs/retrain44.json

``NEW_BUNDLE`` is made by ``bratsseg crossval`` + ``bratsseg bundle`` on more cases (or is that run's
``RUN/bundle_choices.json``, there before the all-case model is); its card holds every case's
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
from bratsseg.docblocks import named_path
from bratsseg.engine.cascade import fold_of_cases
from bratsseg.inference.loading import load_predictor
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.inference.predictor import binarize
from bratsseg.labels import REGIONS
from bratsseg.metrics.overlap import dice_per_region
from bratsseg.metrics.paired import paired_bootstrap
from bratsseg.models.card import read_card


def new_scores(new: Path) -> dict[str, dict[str, float]]:
    """Each case's nested out-of-fold Dice: from a bundle's card, or from a run's ``bundle_choices.json`` (written
    by ``bratsseg bundle`` as soon as every fold is evaluated, before the all-case model is done)."""
    if new.suffix == ".json":
        cv = json.loads(new.read_text())["choices"]["cv"]
    else:
        cv = read_card(new).bundle["cross_validation"]
    return dict(cv["nested_final"]["per_case_dice"])


def old_scores(old: Path, cache: Path, threads: int) -> dict[str, dict[str, float]]:
    card = read_card(old)
    fold_of = fold_of_cases(sorted((old / "folds").iterdir()))
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


BEGIN = "<!-- retrain44: begin (scripts/retrain_compare.py --render --write docs/results/accuracy.md) -->"
END = "<!-- retrain44: end -->"
JSON_OUT = Path(__file__).resolve().parents[1] / "docs" / "retrain44.json"


GROUPS = ("all", "new to the old bundle", "the old bundle's training cases (its folds, out of fold)")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if not (args.old and args.new and args.cache):
        raise SystemExit("give --old, --new NAME=PATH (repeatable) and --cache (or --render)")
    news = {name: new_scores(path) for name, path in args.new}
    ids_all = sorted(next(iter(news.values())))
    if any(sorted(n) != ids_all for n in news.values()):
        raise SystemExit("every --new must score the same cases")
    old = old_scores(args.old, args.cache, args.threads)
    seen = set(read_card(args.old).training.train_cases)
    groups = dict(zip(GROUPS, (ids_all, sorted(set(ids_all) - seen), sorted(set(ids_all) & seen)), strict=True))
    result: dict[str, Any] = {"cases": len(ids_all), "old_trained_on": len(seen & set(ids_all)), "variants": {}}
    for name, new in news.items():
        rows = {}
        for group, ids in groups.items():
            a = np.array([np.mean([new[c][g] for g in REGIONS]) for c in ids])
            b = np.array([np.mean([old[c][g] for g in REGIONS]) for c in ids])
            rows[group] = {
                "cases": len(ids),
                "new": {g: float(np.mean([new[c][g] for c in ids])) for g in REGIONS},
                "old": {g: float(np.mean([old[c][g] for c in ids])) for g in REGIONS},
                "new_mean": float(a.mean()),
                "old_mean": float(b.mean()),
                "difference": paired_bootstrap(a, b),
            }
        result["variants"][name] = {"groups": rows, "per_case": new}
    result["per_case_old"] = old
    return result


def render(result: dict[str, Any]) -> str:
    lines = [
        BEGIN,
        f"Each of the {result['cases']} cases scored by a model that did not see it (`python "
        "scripts/retrain_compare.py`): a recipe cross-validated on all of them, nested (the fold that left the case "
        "out, at the threshold and with the post-processing the other folds chose), against the shipped bundle "
        f"(trained on {result['old_trained_on']} of them: those by its fold model that left them out, at its shipped "
        "threshold and post-processing, chosen on them, in its favour; the others by its all-case model). Mean Dice; "
        "the difference of the mean over the regions, new minus shipped, with its 95% paired bootstrap interval:",
        "",
        "| recipe | cases | n | new WT / TC / ET | shipped WT / TC / ET | new - shipped (mean of 3) | cases ahead / "
        "behind |",
        "|---|---|---|---|---|---|---|",
    ]
    for recipe, variant in result["variants"].items():
        for name, g in variant["groups"].items():
            d = g["difference"]
            shown = name.replace("old bundle", "shipped bundle")
            lines.append(
                f"| {recipe} | {shown} | {g['cases']} | " + " / ".join(f"{g['new'][r]:.3f}" for r in REGIONS) + " | "
                + " / ".join(f"{g['old'][r]:.3f}" for r in REGIONS)
                + f" | {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | {d['ahead']} / {d['behind']} |"
            )  # fmt: skip
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path)
    parser.add_argument(
        "--new", type=named_path, action="append", default=[], help="NAME=BUNDLE or NAME=RUN/bundle_choices.json"
    )
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    from bratsseg.docblocks import measured_block_main

    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
