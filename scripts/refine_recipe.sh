#!/usr/bin/env bash
# The refinement stage's recipe (issue 12: a full-resolution second stage around the tumour, a cascade):
#   1. the first stage's out-of-fold probabilities of every case (each case by the bundled fold model that left it
#      out: bratsseg.engine.cascade.write_priors), as nnU-Net trains its 3d_cascade;
#   2. 5-fold cross-validation on the bundle's folds (same split settings, checked against each fold model's card):
#      train the refinement, attach it to that fold's first stage (one model folder), evaluate it on the fold;
#   3. the same recipe on all cases (WORK/all/last), unless CV_ONLY is set.
# Resumable: a fold whose evaluation is written is skipped; an interrupted training resumes.
#   bash scripts/refine_recipe.sh [DATA] [WORK]       (defaults ../shared/data/brats and runs/refine)
set -euo pipefail
DATA="${1:-../shared/data/brats}"
WORK="${2:-runs/refine}"
FIRST="${FIRST:-src/bratsseg/models/bundled/brats3d}"   # the first stage: a model folder with folds/fold0..4
THREADS="${THREADS:-2}"
mkdir -p "$WORK"
R=(--set "patch_size=[64,64,64]" --set epochs=12 --set steps_per_epoch=100 --set val_every=12
   --set model.skip=add --set model.top_convs=1 --set "model.widths=[8,16,32,64]"
   --set model.in_channels=7 --set model.prior_channels=3 --set "prior=$WORK/priors"
   --set "stratify=[Brats18_TCIA10_628_1,Brats18_TCIA13_623_1]"
   --set "strata=[[BraTS19_CBICA_ASK_1,BraTS19_CBICA_BHQ_1],[BraTS2021_00000,BraTS2021_00002,BraTS2021_00005,BraTS2021_00006,BraTS2021_00014,BraTS2021_00024]]")
# shellcheck disable=SC2206  # EXTRA is a list of --set arguments, split on spaces on purpose
R+=(${EXTRA:-})
bratsseg preprocess "$DATA" -o "$WORK/cache" --workers "$THREADS"
python -c "
import sys
from bratsseg.engine.cascade import write_priors
write_priors(sys.argv[1], [f'{sys.argv[2]}/folds/fold{k}' for k in range(5)], sys.argv[3], threads=int(sys.argv[4]))
" "$WORK/cache" "$FIRST" "$WORK/priors" "$THREADS"
# train_resumable RUN [--set ...]: train into RUN from WORK/cache, resuming a run that an interruption left there;
# finish_recipe: stop after the cross-validation when CV_ONLY is set, else train on every case (WORK/all)
train_resumable() {
  local run="$1"
  shift
  local resume=()
  [ -d "$run" ] && resume=(--resume)
  bratsseg train --data "$WORK/cache" -o "$run" --threads "$THREADS" "${R[@]}" "$@" "${resume[@]}"
}
finish_recipe() {
  if [ -n "${CV_ONLY:-}" ]; then
    echo "cross-validation done: $WORK/eval"
    return 0
  fi
  [ -d "$WORK/all/last" ] || train_resumable "$WORK/all" --set fold=-1 "$@"
  echo "recipe done: $WORK"
}
for f in 0 1 2 3 4; do
  if [ ! -f "$WORK/eval/fold$f/per_case.csv" ]; then
    train_resumable "$WORK/fold$f" --set fold=$f
    python -c "
import json, sys
from bratsseg.engine.cascade import attach_refinement
from bratsseg.models.card import read_card
first, run, out = sys.argv[1:4]
val = json.load(open(f'{run}/split.json'))['val']
if sorted(val) != sorted(read_card(first).training.val_cases):
    sys.exit(f'{run}: its validation cases {val} are not those of the first stage {first}')
attach_refinement(first, f'{run}/last', out)
" "$FIRST/folds/fold$f" "$WORK/fold$f" "$WORK/cascade/fold$f"
    bratsseg evaluate --model "$WORK/cascade/fold$f" --data "$WORK/cache" --split val --save-probabilities \
      -o "$WORK/eval/fold$f"
  fi
done
finish_recipe
