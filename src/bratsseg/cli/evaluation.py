"""`bratsseg evaluate`, `sweep` and `compare`: scores, thresholds and tables of results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bratsseg.cli.common import add_naming_args
from bratsseg.errors import BratsSegError

if TYPE_CHECKING:
    from bratsseg.metrics.tables import EvaluationSummary


def _print_summary(summary: EvaluationSummary, out: Path) -> None:
    metrics = summary.metrics
    print(f"{out}: {summary.n_cases} case(s), empty-mask policy {summary.policy}")
    lesion = summary.info.get("lesion_wise")
    lesion_on = isinstance(lesion, dict) and lesion.get("computed")
    extra = f"{'LW Dice':>9}{'LW HD95':>9}{'TP/FP/FN':>10}" if lesion_on else ""
    print(f"{'region':<8}{'Dice':>8}{'IoU':>8}{'HD95 mm':>10}{'sens':>8}{'spec':>8}{extra}")
    for region, m in metrics.items():
        lw = ""
        if lesion_on:
            counts = "/".join(f"{m[k]['mean'] * m[k]['n']:.0f}" for k in ("lesion_tp", "lesion_fp", "lesion_fn"))
            lw = f"{m['lesion_dice']['mean']:>9.3f}{m['lesion_hd95']['mean']:>9.2f}{counts:>10}"
        print(
            f"{region:<8}{m['dice']['mean']:>8.3f}{m['iou']['mean']:>8.3f}{m['hd95']['mean']:>10.2f}"
            f"{m['sensitivity']['mean']:>8.3f}{m['specificity']['mean']:>8.4f}{lw}"
        )
    if lesion_on:
        assert isinstance(lesion, dict)
        print(f"LW: BraTS 2023+ lesion-wise means ({lesion['name']} rules); TP/FP/FN: lesions over all cases")
    elif isinstance(lesion, dict):
        print(f"lesion-wise metrics not computed: {lesion.get('reason')}")


def _lesion_rules(args: argparse.Namespace) -> str | None:
    return None if args.no_lesion else str(args.lesion_rules)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from bratsseg.engine.evaluate import evaluate_files, evaluate_model

    if args.pred is not None:
        if args.ref is None:
            raise BratsSegError("--pred needs --ref (the raw dataset with ground truth)")
        summary = evaluate_files(
            pred_dir=args.pred,
            ref_root=args.ref,
            out_dir=args.output,
            policy=args.policy,
            lesion=_lesion_rules(args),
            convention=args.convention,
            naming=args.naming,
        )
        _print_summary(summary, args.output)
        for problem in summary.problems:
            print(f"problem: {problem}", file=sys.stderr)
        return 1 if summary.problems else 0
    if args.model is None or args.data is None:
        raise BratsSegError("give --model and --data (a cache), or --pred and --ref (label-map files)")
    from bratsseg.runtime import tune_allocator

    tune_allocator()
    from bratsseg.engine.distributed import inference_context, shutdown_distributed
    from bratsseg.engine.predict import parse_thresholds

    split = args.split if args.split in ("val", "all") else args.split.split(",")
    try:
        summary = evaluate_model(
            model=args.model,
            cache=args.data,
            out_dir=args.output,
            split=split,
            thresholds=parse_thresholds(args.threshold),
            policy=args.policy,
            device=args.device,
            save_probabilities=args.save_probabilities,
            mode=args.mode,
            lesion=_lesion_rules(args),
        )
        if inference_context(args.device).is_main:
            _print_summary(summary, args.output)
    finally:
        shutdown_distributed()
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from bratsseg.engine.evaluate import sweep_model
    from bratsseg.runtime import tune_allocator

    tune_allocator()
    split = args.split if args.split in ("val", "all") else args.split.split(",")
    result = sweep_model(
        model=args.model,
        cache=args.data,
        out_dir=args.output,
        split=split,
        metric=args.metric,
        policy=args.policy,
        apply=args.apply,
    )
    g, p = result.best_global, result.best_per_region
    key = f"mean_{args.metric}"
    print(f"{args.output}: swept 101 thresholds on {result.n_cases} case(s) by mean {args.metric.upper()}")
    print(
        f"best global threshold {g.threshold:.2f}: {key} {g.score:.4f} "
        + " ".join(f"{r} {v:.3f}" for r, v in g.per_region.items())
    )
    print(
        "best per-region thresholds "
        + " ".join(f"{r} {t:.2f}" for r, t in p.thresholds.items())
        + f": {key} {p.score:.4f}"
    )
    from bratsseg.metrics.sweep import noise_warnings

    for warning in noise_warnings({"global": g.threshold, **p.thresholds}, result.n_cases):
        print(warning, file=sys.stderr)
    if args.apply:
        print(f"stored the {args.apply} thresholds in {args.model}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bratsseg.metrics.tables import compare_results

    print(compare_results(results=args.results, paired=args.paired).text())
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="Dice, IoU, HD95, sensitivity, specificity and BraTS lesion-wise Dice/HD95 per case and region"
    )
    p.add_argument("--model", type=Path, help="model folder (e.g. RUN/best) or exported .onnx file")
    p.add_argument("--data", type=Path, help="cache folder")
    p.add_argument("--split", default="val", help="val (the model's validation cases), all, or id1,id2,...")
    p.add_argument("--pred", type=Path, help="folder of label maps <case_id>.nii.gz from any tool")
    p.add_argument("--ref", type=Path, help="raw dataset root with ground-truth segmentations (with --pred)")
    add_naming_args(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="results folder")
    p.add_argument("--threshold", help="0.5 for every region, or WT=0.5,TC=0.4,ET=0.45 (default: the model's)")
    p.add_argument("--policy", choices=["brats", "nan"], default="brats", help="empty-mask policy (default brats)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--save-probabilities", action="store_true", help="also write probabilities/<case>.npy")
    p.add_argument("--mode", default="fast", help="a prediction mode of the model's card (fast, accurate)")
    p.add_argument(
        "--lesion-rules",
        default="BraTS-GLI",
        choices=["BraTS-GLI", "BraTS-SSA", "BraTS-PED", "BraTS-MEN", "BraTS-MET"],
        help="the challenge whose lesion-wise parameters to use (dilation, minimum lesion volume; default BraTS-GLI)",
    )
    p.add_argument("--no-lesion", action="store_true", help="skip the lesion-wise metrics (faster)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sweep", help="IoU and Dice at 101 thresholds; best global and per-region thresholds")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--metric", choices=["iou", "dice"], default="iou")
    p.add_argument("--policy", choices=["brats", "nan"], default="brats")
    p.add_argument("--apply", choices=["global", "per-region"], help="store the chosen thresholds in the model")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("compare", help="one table of several evaluate results (e.g. 2-D vs 3-D)")
    p.add_argument("results", type=Path, nargs="+", help="folders written by `bratsseg evaluate`")
    p.add_argument(
        "--paired",
        action="store_true",
        help="also each result minus the first, case by case: mean Dice difference, 95%% bootstrap interval",
    )
    p.set_defaults(func=cmd_compare)
