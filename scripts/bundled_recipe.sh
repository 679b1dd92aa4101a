#!/usr/bin/env bash
# The bundled model's recipe: 5-fold cross-validation on every labelled case in DATA, then the same recipe on all
# of them, then the bundle (scripts/make_bundled_model.py writes model.json with the out-of-fold results).
# Resumable: a fold whose evaluation is already written is skipped; an interrupted training resumes (train --resume).
#   bash scripts/bundled_recipe.sh [DATA] [WORK]       (defaults ../shared/data/brats and runs/bundled)
# A training ablation is the same cross-validation with some settings changed, without the final all-case model:
#   CV_ONLY=1 EXTRA="--set augment.gamma_prob=0" bash scripts/bundled_recipe.sh DATA runs/ablation-name
# (then scripts/cv_training_ablation.py pools it beside the bundle's own cross-validation).
# INIT_FROM=MODEL (a model folder with folds/fold0..4) starts each fold from that model's fold (and the all-case run
# from the model itself): more steps for a trained recipe, e.g.
#   CV_ONLY=1 INIT_FROM=src/bratsseg/models/bundled/brats3d EXTRA="--set epochs=10 --set lr=1e-3" bash ... runs/abl-more
# FOLDS="0 1" runs only those folds of an ablation (implies CV_ONLY; cv_training_ablation.py takes NAME=WORK@0,1).
# Another seed on the same folds (an ensemble member; scripts/ensemble_oof.py scores the average out of fold):
#   CV_ONLY=1 EXTRA="--set seed=1 --set split_seed=0" bash scripts/bundled_recipe.sh DATA runs/abl-seed
set -euo pipefail
DATA="${1:-../shared/data/brats}"
WORK="${2:-runs/bundled}"
THREADS="${THREADS:-2}"
mkdir -p "$WORK"
# strata: the low-grade cases, then the BraTS 2019 cases, then the BraTS 2021 cases, each dealt evenly over the folds
R=(--set downsample=2 --set "patch_size=[64,64,64]" --set epochs=20 --set steps_per_epoch=100
   --set model.skip=add --set model.top_convs=1 --set model.deep_supervision=true --set batch_dice=true
   --set "stratify=[Brats18_TCIA10_628_1,Brats18_TCIA13_623_1]"
   --set "strata=[[BraTS19_CBICA_ASK_1,BraTS19_CBICA_BHQ_1],[BraTS2021_00000,BraTS2021_00002,BraTS2021_00005,BraTS2021_00006,BraTS2021_00014,BraTS2021_00024]]")
# shellcheck disable=SC2206  # EXTRA is a list of --set arguments, split on spaces on purpose
R+=(${EXTRA:-})
bratsseg preprocess "$DATA" -o "$WORK/cache" --workers "$THREADS"
# shellcheck source=scripts/recipe_common.sh
source "$(dirname "$0")/recipe_common.sh"
FOLDS="${FOLDS:-0 1 2 3 4}"
[ "$FOLDS" = "0 1 2 3 4" ] || CV_ONLY=1
for f in $FOLDS; do
  if [ ! -f "$WORK/eval/fold$f/per_case.csv" ]; then
    init=(); [ -n "${INIT_FROM:-}" ] && init=(--set "init_from=$INIT_FROM/folds/fold$f")
    train_resumable "$WORK/fold$f" --set fold=$f "${init[@]}"
    bratsseg evaluate --model "$WORK/fold$f/last" --data "$WORK/cache" --split val --save-probabilities \
      -o "$WORK/eval/fold$f"
  fi
done
init=(); [ -n "${INIT_FROM:-}" ] && init=(--set "init_from=$INIT_FROM")
finish_recipe "${init[@]}"
