# Sourced by the recipes (bundled_recipe.sh, refine_recipe.sh); expects WORK, THREADS and the settings array R.
# train_resumable RUN [--set ...]: train into RUN from WORK/cache, resuming a run that an interruption left there.
train_resumable() {
  local run="$1"
  shift
  local resume=()
  [ -d "$run" ] && resume=(--resume)
  bratsseg train --data "$WORK/cache" -o "$run" --threads "$THREADS" "${R[@]}" "$@" "${resume[@]}"
}
# finish_recipe [--set ...]: stop after the cross-validation when CV_ONLY is set, else train on every case (WORK/all).
finish_recipe() {
  if [ -n "${CV_ONLY:-}" ]; then
    echo "cross-validation done: $WORK/eval"
    return 0
  fi
  [ -d "$WORK/all/last" ] || train_resumable "$WORK/all" --set fold=-1 "$@"
  echo "recipe done: $WORK"
}
