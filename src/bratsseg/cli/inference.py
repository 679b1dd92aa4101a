"""`bratsseg predict`: label maps for raw cases."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bratsseg.cli.common import add_naming_args
from bratsseg.cli.common import progress as _progress
from bratsseg.cli.common import threads_arg as _threads
from bratsseg.errors import BratsSegError


def cmd_predict(args: argparse.Namespace) -> int:
    from bratsseg.engine.distributed import inference_context, shutdown_distributed
    from bratsseg.engine.predict import PredictOptions, parse_thresholds, predict

    options = PredictOptions(
        device=args.device,
        threads=args.threads or None,
        backend=args.backend,
        mode=args.mode,
        thresholds=parse_thresholds(args.threshold),
        save_probabilities=args.save_probabilities,
        overwrite=args.overwrite,
        convention=args.convention,
        naming=args.naming,
        background=args.background,
        all_components=args.all_components,
    )
    explicit = {m: getattr(args, m) for m in ("flair", "t1", "t1ce", "t2") if getattr(args, m)}
    inputs: list[Any] = list(args.inputs)
    if explicit:
        from bratsseg.io.discovery import case_from_modalities

        if inputs:
            raise BratsSegError("give either inputs or --flair/--t1/--t1ce/--t2, not both")
        inputs = [case_from_modalities(explicit, args.case_id, args.convention)]
    elif not inputs:
        raise BratsSegError("give case folders, dataset roots or one case's files (or --flair/--t1/--t1ce/--t2)")
    try:
        ctx = inference_context(args.device)
        bar = _progress("predict")
        try:
            report = predict(
                inputs=inputs,
                out_dir=args.output,
                model=args.model,
                options=options,
                progress=bar.update,
                on_start=lambda n: bar.reset(total=n),
            )
        finally:
            bar.close()
        if not ctx.is_main:
            return 0 if report.ok else 1
    finally:
        shutdown_distributed()
    t = report.mean_timings()
    print(
        f"{args.output}: {len(report.written)} case(s) written, {len(report.skipped)} skipped, "
        f"{len(report.failed)} failed"
    )
    if t:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in t.items() if k != "total")
        print(f"seconds per case: {t['total']:.2f} ({stages})")
    for tmp in report.cleaned:
        print(f"removed {tmp}: a temporary file an interrupted run left", file=sys.stderr)
    for message in report.skipped:
        print(f"skipped: {message}", file=sys.stderr)
    for message in report.failed:
        print(f"failed: {message}", file=sys.stderr)
    return 0 if report.ok else 1


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("predict", help="segment raw cases: <case_id>.nii.gz label maps on each input's grid")
    p.add_argument(
        "inputs", type=Path, nargs="*", help="case folders and dataset roots (any number), or one case's four files"
    )
    for modality, name in (("flair", "FLAIR"), ("t1", "T1"), ("t1ce", "T1ce (contrast-enhanced T1)"), ("t2", "T2")):
        p.add_argument(f"--{modality}", type=Path, help=f"the {name} file of one case, under any name")
    p.add_argument("--case-id", help="with --flair/...: the case id (default: the FLAIR file's name)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--model", type=Path, help="model folder or .onnx file (default: the bundled model)")
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="auto (default): ONNX Runtime for .onnx files and folders holding a model.onnx, else PyTorch",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=_threads, help="CPU threads (default: all cores)")
    p.add_argument("--threshold", help="0.5 for every region, or WT=0.5,TC=0.4,ET=0.45 (default: the model's)")
    p.add_argument("--save-probabilities", action="store_true", help="also write <case_id>_probabilities.nii.gz")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    add_naming_args(p)
    p.add_argument("--background", type=float, default=0.0, help="the constant intensity outside the brain (default 0)")
    p.add_argument(
        "--all-components",
        action="store_true",
        help="keep every connected component of each region (multifocal tumours): turns off the model's component "
        "rule, and its enhancing tumour redrawn from T1ce (chosen with the component rule)",
    )
    p.add_argument(
        "--mode",
        default="fast",
        help="a prediction mode of the model's card: fast (default: one network pass, plus the refinement stage "
        "where the model has one) or accurate (the bundled model's fold ensemble with mirroring)",
    )
    p.set_defaults(func=cmd_predict)
