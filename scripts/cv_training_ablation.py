"""Training-time ablation: the bundled recipe's 5-fold cross-validation with one setting changed, pooled exactly as
the bundle's own cross-validation (:func:`bratsseg.engine.crossval.cross_validate`) and set beside it.

Each variant is a ``bratsseg crossval`` run folder of the bundled recipe with ``--set`` overrides and without the
all-case model, on the bundled model's folds (``--strata scripts/strata_shared22.csv``; ``--fold K`` for some):

    bratsseg crossval ../shared/data/brats --strata scripts/strata_shared22.csv --no-final -o runs/abl-noaug \\
        --set augment.gamma_prob=0 --set augment.bias_prob=0 --set augment.noise_prob=0
    python scripts/cv_training_ablation.py --cache runs/abl-noaug/cache \\
        --variant "no gamma, bias-field or noise augmentation=runs/abl-noaug"      # -> docs/training_ablation.json
    python scripts/cv_training_ablation.py --render --write docs/results/accuracy.md

The baseline row is the bundle's cross-validation as stored in its ``model.json`` (the same recipe, the same folds).
Where a variant was stopped after some folds, compare it with the shipped fold models on those folds instead:

    bratsseg evaluate --model src/bratsseg/models/bundled/brats3d/folds/fold0 --data CACHE --split val \
        --save-probabilities -o runs/abl-baseline/eval/fold0            # (and fold1 ...)
    python scripts/cv_training_ablation.py --cache CACHE --no-card-baseline \
        --variant "the bundled recipe (shipped fold models)=runs/abl-baseline" --variant "...=runs/abl-noaug"

``--keep`` adds rows to the stored table (docs/training_ablation.json) instead of replacing it, for a new variant
measured after the run folders of the older rows were removed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bratsseg.engine.crossval import OutOfFold, cross_validate
from bratsseg.labels import REGIONS
from bratsseg.models.bundled import default_model_path
from bratsseg.models.card import read_card

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "training_ablation.json"
BEGIN = "<!-- training-ablation: begin (scripts/cv_training_ablation.py --render --write docs/results/accuracy.md) -->"
END = "<!-- training-ablation: end -->"


def summary(cv: dict[str, Any]) -> dict[str, Any]:
    post = cv["postprocessing"]["rows"]
    return {
        "folds": sorted(cv["per_fold"]),
        "cases": cv["n_cases"],
        "at_0.5": {g: cv["pooled"][g]["dice_mean"] for g in REGIONS},
        "hd95_at_0.5": {g: cv["pooled"][g]["hd95_mean"] for g in REGIONS},
        "nested": cv["nested_threshold"]["per_region"],
        "nested_thresholds": cv["nested_threshold"]["thresholds"],
        "small_et_dice_nested": post["nested threshold"]["small_et_dice"],
    }


def train_minutes(work: Path, folds: list[str] | None = None) -> float | None:
    """Wall minutes of a fold's training (of ``folds``, default all), from its metrics.jsonl: epochs x the median
    epoch's seconds (robust to an epoch slowed by a paused or starved process), averaged over the folds; None
    where missing."""
    totals = []
    for metrics in sorted(work.glob("fold*/metrics.jsonl")):
        if folds and metrics.parent.name not in folds:
            continue
        seconds = [json.loads(line).get("epoch_seconds", 0.0) for line in metrics.read_text().splitlines() if line]
        if seconds:
            totals.append(len(seconds) * statistics.median(seconds) / 60)
    return sum(totals) / len(totals) if totals else None


def _folds_label(folds: list[str], cases: int) -> str:
    ks = [f.removeprefix("fold") for f in folds]
    return f"{'all 5' if len(ks) == 5 else ', '.join(ks)} ({cases})"


def render(result: dict[str, Any]) -> str:
    fold_sets = {tuple(v["folds"]) for v in result["variants"].values()}
    partial = (
        ""
        if fold_sets == {("fold0", "fold1", "fold2", "fold3", "fold4")}
        else (
            " **Some rows were run on only some of the 5 folds** (the folds column; the nested threshold of each "
            "fold is chosen on the other folds of the same row): compare a row only with rows on the same folds. "
            "Those rows are evidence, not the full cross-validation."
        )
    )
    lines = [
        BEGIN,
        "Training variants of the bundled recipe, each cross-validated on the same folds and pooled as the bundle's "
        f"own cross-validation (`python scripts/cv_training_ablation.py`).{partial}",
        "",
        "| recipe | folds (cases) | Dice WT / TC / ET at 0.5 | **nested** Dice WT / TC / ET | nested mean | "
        "ET, small-ET cases (nested) | HD95 WT / TC / ET at 0.5 | training min per fold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        half, nested, hd = v["at_0.5"], v["nested"], v["hd95_at_0.5"]
        small = "-" if v["small_et_dice_nested"] is None else f"{v['small_et_dice_nested']:.3f}"
        minutes = "-" if v.get("train_minutes") is None else f"{v['train_minutes']:.0f}"
        lines.append(
            f"| {name} | {_folds_label(v['folds'], v['cases'])} | {' / '.join(f'{half[g]:.3f}' for g in REGIONS)} | "
            f"**{' / '.join(f'{nested[g]:.3f}' for g in REGIONS)}** | {sum(nested.values()) / 3:.3f} | {small} | "
            f"{' / '.join(f'{hd[g]:.1f}' for g in REGIONS)} | {minutes} |"
        )
    return "\n".join([*lines, END])


def eval_folder(work: Path, folds: list[str]) -> Path:
    """``work/eval``, or a temporary folder linking only ``folds`` of it."""
    if not folds:
        return work / "eval"
    tmp = Path(tempfile.mkdtemp(prefix="cv-folds-"))
    for fold in folds:
        (tmp / fold).symlink_to((work / "eval" / fold).resolve())
    return tmp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=WORK (a crossval run folder), or NAME=WORK@0,1 for only folds 0 and 1 of it",
    )
    parser.add_argument("--cache", type=Path, help="the cache the variants were trained on")
    parser.add_argument(
        "--no-card-baseline",
        action="store_true",
        help="leave out the bundle's own CV row (when the variants cover only some folds, give the shipped fold "
        "models' evaluation on those folds as a --variant instead)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the rows already in --json (measured earlier, their run folders may be gone) and add or "
        "replace only the --variant rows given; without it the table holds exactly the rows measured now",
    )
    from bratsseg.docblocks import measured_block_main

    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if not args.variant or args.cache is None:
        raise SystemExit("give --cache and at least one --variant NAME=WORK (or --render)")
    card = read_card(default_model_path())
    variants: dict[str, Any] = {}
    if args.keep and args.json.is_file():
        variants = dict(json.loads(args.json.read_text())["variants"])
    if not args.no_card_baseline:
        variants["the bundled recipe (as shipped)"] = {
            **summary(card.bundle["cross_validation"]),
            "train_minutes": None,
        }
    for spec in args.variant:
        name, _, target = spec.partition("=")
        work, _, only = target.partition("@")
        folds = [f"fold{k}" for k in only.split(",")] if only else []
        cv = cross_validate(OutOfFold(eval_folder(Path(work), folds), args.cache))
        variants[name] = {**summary(cv), "train_minutes": train_minutes(Path(work), folds)}
        print(name, json.dumps(variants[name]["nested"]), file=sys.stderr)
    return {"variants": variants}


if __name__ == "__main__":
    sys.exit(main())
