"""`bratsseg export`, `prune`, `quantize` and `compress`: smaller and faster models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bratsseg.cli.common import threads_arg as _threads
from bratsseg.errors import BratsSegError


def _check_export(model_dir: Path, out: Path, args: argparse.Namespace) -> None:
    """Compare an exported file with its PyTorch model on two odd-sized inputs; print the result."""
    from bratsseg.compress.onnx_export import onnx_parity
    from bratsseg.models.files import load_model
    from bratsseg.models.onnx_format import read_onnx_card

    model, _ = load_model(model_dir)
    dims, channels = model.config.spatial_dims, model.config.in_channels
    shapes = [(1, channels, *[37, 45, 29][:dims]), (2, channels, *[64, 48, 32][:dims])]
    diff = onnx_parity(model, out, shapes)
    graph = read_onnx_card(out).compression[-1].settings["graph"]
    compared = "probabilities" if graph == "whole-case" else "logits"
    print(
        f"{out}: {graph} graph, {out.stat().st_size / 1e6:.2f} MB, onnx.checker passed, "
        f"max |ONNX - PyTorch| on the {compared} = {diff:.2e}"
    )
    tolerance = args.tolerance if args.tolerance is not None else (0.2 if args.fp16 else 1e-2)
    if diff > tolerance:
        raise BratsSegError(f"ONNX output differs from PyTorch by {diff:.2e} (tolerance {tolerance:g})", out)


def cmd_export(args: argparse.Namespace) -> int:
    from bratsseg.compress.onnx_export import export_checked

    checks = export_checked(
        model_dir=args.model,
        out=args.output,
        opset=args.opset,
        weights_dtype="float16" if args.fp16 else "float32",
        whole_case=False if args.network_only else None,
        tolerance=args.tolerance,
    )
    for check in checks:
        print(check.line())
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from bratsseg.compress.prune import conv_sparsity
    from bratsseg.engine.pruning import prune_model
    from bratsseg.models.unet import count_parameters

    ratio = None if args.ratio is None else [float(r) for r in args.ratio.split(",")]
    dtype = "float16" if args.fp16 else "float32"
    out, pruned = prune_model(
        model_dir=args.model,
        out=args.output,
        sparsity=args.sparsity,
        ratio=ratio,
        weights_dtype=dtype,
        finetune_epochs=args.finetune_epochs,
        finetune_steps=args.finetune_steps,
        data=args.data,
        distill_weight=args.distill,
    )
    print(
        f"{out}: widths {list(pruned.config.widths)}, {count_parameters(pruned):,} parameters "
        f"({count_parameters(pruned, nonzero=True):,} non-zero, conv sparsity {conv_sparsity(pruned):.1%}), "
        f"{dtype} weights"
    )
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from bratsseg.compress.quantize import int8_operators, quantize_int8
    from bratsseg.data.cache import open_cache

    cases = open_cache(args.data)
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in cases if c.case_id in wanted]
    out = quantize_int8(
        fp32_onnx=args.model, out=args.output, cases=cases[: args.max_cases], calibrate_method=args.calibration
    )
    ops = int8_operators(out)
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB, calibrated on {min(len(cases), args.max_cases)} case(s)")
    print("runs in int8: " + ", ".join(f"{k} x{v}" for k, v in ops["int8"].items()))
    print("stays in float: " + ", ".join(f"{k} x{v}" for k, v in ops["float"].items()))
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from bratsseg.engine.compress_study import StudyConfig, compress_study
    from bratsseg.runtime import tune_allocator

    tune_allocator()
    config = StudyConfig(
        sparsities=tuple(args.sparsity),
        ratios=tuple(args.ratio),
        precisions=tuple(args.precision),
        finetune_epochs=args.finetune_epochs,
        finetune_steps=args.finetune_steps,
        distill_weight=args.distill,
        threads=args.threads,
        split=args.split,
    )
    rows = compress_study(
        args.model, args.data, args.output, config, progress=lambda n: print(f"variant {n}", file=sys.stderr)
    )
    print((args.output / "compress.md").read_text())
    print(f"{args.output}: compress.csv, compress.md, compress.json, pareto.png ({len(rows)} variants)")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="export a model folder to ONNX (the whole inference in one graph where it can; checked)"
    )
    p.add_argument("model", type=Path, help="model folder")
    p.add_argument("-o", "--output", type=Path, required=True, help=".onnx file")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--tolerance", type=float, default=None, help="largest |ONNX - PyTorch| difference allowed")
    p.add_argument("--fp16", action="store_true", help="store the weights in float16 (half the file, fp32 compute)")
    p.add_argument(
        "--network-only",
        action="store_true",
        help="only the network (pooling, upsampling, sigmoid left to the predictor), not the whole-case graph",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("prune", help="prune a model: global magnitude (zeros) or encoder-decoder pairs (smaller)")
    p.add_argument("model", type=Path, help="model folder")
    p.add_argument("-o", "--output", type=Path, required=True, help="new model folder")
    p.add_argument("--sparsity", type=float, help="global magnitude pruning: fraction of conv weights zeroed")
    p.add_argument("--ratio", help="pair pruning: fraction of channels removed, one value or one per stage (a,b,..)")
    p.add_argument("--fp16", action="store_true", help="store the weights in float16 (half the file)")
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune afterwards (needs --data)")
    p.add_argument("--finetune-steps", type=int, default=50, help="steps per fine-tuning epoch (default 50)")
    p.add_argument("--distill", type=float, default=0.5, metavar="W",
                   help="fine-tuning: weight of the unpruned model's probabilities as a second target "
                   "(knowledge distillation; 0: the labels alone; default 0.5)")  # fmt: skip
    p.add_argument("--data", type=Path, help="training cache, for fine-tuning")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("quantize", help="int8 ONNX (static QDQ, per-channel) calibrated on cached cases")
    p.add_argument("model", type=Path, help=".onnx file made by `bratsseg export`")
    p.add_argument("--data", type=Path, required=True, help="cache of training cases for calibration")
    p.add_argument("-o", "--output", type=Path, required=True, help="int8 .onnx file")
    p.add_argument("--cases", help="calibration case ids (comma-separated; default: every cached case)")
    p.add_argument("--max-cases", type=int, default=8)
    p.add_argument("--calibration", choices=["minmax", "percentile"], default="minmax")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("compress", help="the compression study: pruning x precision grid, one table + Pareto figure")
    p.add_argument("model", type=Path, help="model folder (trained with a validation split)")
    p.add_argument("--data", type=Path, required=True, help="cache folder")
    p.add_argument("-o", "--output", type=Path, required=True, help="study folder")
    p.add_argument("--sparsity", type=float, nargs="*", default=[0.5, 0.7, 0.9], help="global sparsities")
    p.add_argument("--ratio", type=float, nargs="*", default=[0.25, 0.5], help="pair-pruning ratios")
    p.add_argument("--precision", nargs="*", default=["fp32", "fp16", "int8"], choices=["fp32", "fp16", "int8"])
    p.add_argument("--finetune-epochs", type=int, default=0, help="also fine-tune each pair-pruned model")
    p.add_argument("--finetune-steps", type=int, default=50)
    p.add_argument(
        "--distill",
        type=float,
        default=0.5,
        metavar="W",
        help="fine-tuning: weight of the unpruned model's probabilities as a second target (default 0.5)",
    )
    p.add_argument("--threads", type=_threads, default=2, help="CPU threads for the latency column (default 2)")
    p.add_argument("--split", default="val")
    p.set_defaults(func=cmd_compress)
