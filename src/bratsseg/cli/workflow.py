"""`bratsseg crossval` and `bratsseg bundle`: make a model like the bundled one on any labelled dataset."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bratsseg.cli.common import say, threads_arg


def cmd_crossval(args: argparse.Namespace) -> int:
    from bratsseg.engine.workflow import crossval
    from bratsseg.runtime import tune_allocator

    tune_allocator()
    from bratsseg.engine.distributed import shutdown_distributed

    try:
        result = crossval(
            data=args.data,
            run_dir=args.output,
            recipe=args.recipe,
            overrides=args.set,
            strata_file=args.strata,
            fold=args.fold,
            final=not args.no_final,
            workers=args.workers,
            device=args.device,
            threads=args.threads,
            max_steps=args.max_steps,
            say=say,
            progress=True,
        )
    finally:
        shutdown_distributed()
    if os.environ.get("RANK", "0") != "0":
        return 0  # rank 0 reports
    if result.complete:
        print(f"{args.output}: cross-validation complete; make the model with: bratsseg bundle {args.output} -o MODEL")
    else:
        pending = [k for k in result.folds_pending if k not in result.folds_busy]
        busy = ", ".join(f"fold {k} ({who})" for k, who in result.folds_busy.items())
        print(
            f"{args.output}: folds done {result.folds_done or 'none'}"
            + (f"; in work elsewhere: {busy}" if busy else "")
            + (f"; still to do: {pending}" if pending else "")
            + ("" if result.final_done else "; all-case model not trained yet")
            + ". Run the same command again to go on."
        )
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from bratsseg.engine.bundle import make_bundle

    result = make_bundle(run_dir=args.run, output=args.output, threads=args.threads, overwrite=args.overwrite, say=say)
    print(result.summary_line())
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "crossval",
        help="k-fold cross-validation of a recipe on labelled cases, then the all-case model (resumable)",
        description="Preprocess DATA into RUN/cache, deal the cases into stratified folds, train and evaluate every "
        "fold out of fold (probabilities saved), then train on every case; where the recipe has a fine-tuning stage "
        "(brats3d-cpu does), every network is fine-tuned before it is evaluated. Rerun the same command after any "
        "interruption; --fold K runs one fold (several machines may share RUN). Then: bratsseg bundle RUN -o MODEL.",
    )
    p.add_argument("data", type=Path, nargs="*", help="dataset roots of labelled cases (optional when resuming)")
    p.add_argument("-o", "--output", type=Path, required=True, help="run folder (RUN)")
    p.add_argument(
        "--recipe",
        help="a shipped recipe (brats3d-cpu: the bundled model's, the default; brats3d-gpu) or a recipe YAML file",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe setting (finetune.KEY=VALUE: the fine-tuning stage's; finetune=null: none)",
    )
    p.add_argument("--strata", type=Path, help="CSV of case_id,group (default: size class and naming prefix)")
    p.add_argument("--fold", type=int, help="run this fold only (then the all-case model if every fold is done)")
    p.add_argument("--no-final", action="store_true", help="stop after the folds (no all-case model)")
    p.add_argument("--workers", type=int, default=1, help="preprocessing processes (default 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=threads_arg, help="CPU threads for PyTorch (default: PyTorch's choice)")
    p.add_argument("--max-steps", type=int, help="stop each training after this many steps (a smoke test)")
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser(
        "bundle",
        help="a model folder from a finished crossval run: threshold and post-processing chosen out of fold, "
        "fast and accurate modes, ONNX graphs, card with the cross-validation tables",
    )
    p.add_argument("run", type=Path, help="a `bratsseg crossval` run folder")
    p.add_argument("-o", "--output", type=Path, required=True, help="model folder to write")
    p.add_argument("--threads", type=threads_arg, default=2, help="CPU threads (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.set_defaults(func=cmd_bundle)


__all__ = ["add_parsers", "sys"]
