"""Out-of-fold value of an ensemble: fold k's models from several trainings of the same recipe on the same folds
(another seed: ``--set seed=1 --set split_seed=0``), averaged, and each scored on fold k's validation cases.

The bundled accurate mode averages the five fold models, and each case was in the training set of four of them,
so the fold ensemble's own gain cannot be measured on these cases. Two trainings of the same fold, each blind to
that fold's validation cases, can: their average is an ensemble of independently trained networks, scored out of
fold. Each member folder is a bundle (``folds/foldK``) or a recipe work folder (``foldK/last``):

    bratsseg crossval ../shared/data/brats --strata scripts/strata_shared22.csv --no-final -o runs/abl-seed --fold 0 \\
        --set seed=1 --set split_seed=0
    python scripts/ensemble_oof.py --cache runs/abl-seed/cache --folds 0 1 -o runs/abl-ens \\
        --member src/bratsseg/models/bundled/brats3d --member runs/abl-seed
    python scripts/ensemble_oof.py --cache runs/abl-seed/cache --folds 0 1 -o runs/abl-one \\
        --member src/bratsseg/models/bundled/brats3d              # the same folds, one member (the baseline)

Each output folder holds ``eval/foldK`` as ``bratsseg evaluate --split val --save-probabilities`` writes it, so
``scripts/cv_training_ablation.py --variant "NAME=OUT@0,1"`` pools it beside the other rows. The ensemble is
scored at the first member's card (threshold, post-processing), as its fold model would be.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bratsseg.data.cache import open_cache
from bratsseg.engine.evaluate import evaluate_predictor
from bratsseg.errors import BratsSegError
from bratsseg.inference.ensemble import EnsemblePredictor
from bratsseg.inference.loading import load_predictor


def fold_model(member: Path, fold: int) -> Path:
    """Fold ``fold``'s model in a bundle (``folds/foldK``) or a recipe work folder (``foldK/last``)."""
    for candidate in (member / "folds" / f"fold{fold}", member / f"fold{fold}" / "last"):
        if (candidate / "model.json").is_file():
            return candidate
    raise BratsSegError(f"no model for fold {fold} (looked for folds/fold{fold} and fold{fold}/last)", member)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", type=Path, action="append", required=True, help="a bundle or recipe folder")
    parser.add_argument("--folds", type=int, nargs="+", required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    by_id = {c.case_id: c for c in open_cache(args.cache)}
    for fold in args.folds:
        out = args.output / "eval" / f"fold{fold}"
        if (out / "per_case.csv").is_file():
            print(f"fold {fold}: already scored in {out}")
            continue
        members = [load_predictor(fold_model(m, fold), threads=args.threads) for m in args.member]
        val = [list(m.card.training.val_cases) for m in members]
        if any(v != val[0] for v in val) or not val[0]:
            raise BratsSegError(f"fold {fold}'s members were validated on different cases: {val}", args.member[0])
        ensemble = EnsemblePredictor(members, members[0].card)
        summary = evaluate_predictor(ensemble, [by_id[i] for i in val[0]], out, save_probabilities=True)
        print(f"fold {fold}: {len(val[0])} cases, {summary.info['network_seconds_per_case']:.2f} s per case -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
