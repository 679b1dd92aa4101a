"""The `bratsseg` command: argument parsing, logging and error reporting only.

Each sub-command calls one library function. Heavy imports happen inside the handlers so that
`bratsseg --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bratsseg.cli.common import threads_arg as _threads
from bratsseg.errors import BratsSegError
from bratsseg.extras import require

log = logging.getLogger("bratsseg")

#: commands that need more than the runtime install (``predict``, ``info``, ``evaluate``, ``view``, ``report``,
#: ``synth``, ``preprocess`` and ``compare`` run on numpy, nibabel and ONNX Runtime alone)
NEEDS_TRAIN_EXTRA: dict[str, tuple[str, ...]] = {
    "demo": ("torch", "monai", "matplotlib", "yaml"),
    "train": ("torch", "yaml"),
    "crossval": ("torch", "yaml"),
    "bundle": ("torch", "onnx", "yaml"),
    "sweep": ("torch",),
    "export": ("torch", "onnx"),
    "prune": ("torch",),
    "quantize": ("torch", "onnx"),
    "compress": ("torch", "onnx", "matplotlib"),
    "plot": ("matplotlib",),
}


class _NoBar:
    """What :func:`_progress` gives where stderr is not a terminal (tqdm would be silent there anyway)."""

    def update(self, n: int = 1) -> None:
        pass

    def reset(self, total: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(desc: str, total: int | None = None) -> Any:
    """A tqdm bar over cases on a terminal (silent when stderr is not one): ``update(n)``, ``reset(total=n)``,
    ``close()``. Off a terminal tqdm is not even imported (25 ms of a device's start-up)."""
    if not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm  # not tqdm.auto: it looks for IPython, 25 ms of every command's start-up

    return tqdm(total=total, desc=desc, unit="case", disable=None, file=sys.stderr)


def cmd_info(args: argparse.Namespace) -> int:
    from bratsseg.data.info import describe
    from bratsseg.io.info import format_description

    info = describe(args.path, check=args.check)
    print(json.dumps(info, indent=1) if args.json else format_description(info))
    return 1 if info["problems"] else 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from bratsseg.data.preprocess import PreprocessConfig, preprocess_dataset
    from bratsseg.io.discovery import discover_cases

    n_cases = len(discover_cases(args.raw, args.convention).cases)
    bar = _progress("preprocess", n_cases)
    try:
        report = preprocess_dataset(
            args.raw,
            args.output,
            PreprocessConfig(margin=args.margin, spacing=_spacing(args.spacing)),
            workers=args.workers,
            convention=args.convention,
            overwrite=args.overwrite,
            progress=bar.update,
        )
    finally:
        bar.close()
    print(
        f"{args.output}: {len(report.written)} case(s) written, {len(report.skipped)} already cached, "
        f"{len(report.failed)} failed"
    )
    for message in report.failed:
        print(f"failed: {message}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_synth(args: argparse.Namespace) -> int:
    from bratsseg.data.synthetic import make_synthetic_dataset

    cases = make_synthetic_dataset(args.output, args.n, naming=args.naming, size=args.size, seed=args.seed)
    print(f"{args.output}: wrote {len(cases)} synthetic case(s) in {args.naming} naming ({args.size})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from bratsseg.engine.config import load_train_config
    from bratsseg.engine.trainer import train
    from bratsseg.runtime import tune_allocator

    tune_allocator()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = None
    if args.config or args.set or not args.resume:
        config = load_train_config(args.config, args.set)
    from bratsseg.engine.distributed import init_distributed, shutdown_distributed

    try:
        result = train(
            args.data,
            args.output,
            config,
            resume=args.resume,
            device=args.device,
            time_limit_s=args.time_limit * 60 if args.time_limit else None,
            max_steps=args.max_steps,
            progress=True,
        )
        if init_distributed(args.device).is_main:
            status = "finished" if result.finished else "stopped early (continue with --resume)"
            val = ", ".join(f"{k} {v:.3f}" for k, v in result.last_val.items()) or "no validation this session"
            print(
                f"{args.output}: {status} after {result.state.epoch} epoch(s), {result.state.global_step} steps; "
                f"last validation Dice: {val}"
            )
    finally:
        shutdown_distributed()
    return 0


def _print_summary(summary: dict[str, object], out: Path) -> None:
    metrics = summary["metrics"]
    assert isinstance(metrics, dict)
    print(f"{out}: {summary['n_cases']} case(s), empty-mask policy {summary['policy']}")
    lesion = summary.get("lesion_wise")
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
        summary = evaluate_files(args.pred, args.ref, args.output, args.policy, lesion=_lesion_rules(args))
        _print_summary(summary, args.output)
        for problem in summary.get("problems", []):
            print(f"problem: {problem}", file=sys.stderr)
        return 1 if summary.get("problems") else 0
    if args.model is None or args.data is None:
        raise BratsSegError("give --model and --data (a cache), or --pred and --ref (label-map files)")
    from bratsseg.runtime import tune_allocator

    tune_allocator()
    from bratsseg.engine.distributed import inference_context, shutdown_distributed
    from bratsseg.engine.predict import parse_thresholds

    split = args.split if args.split in ("val", "all") else args.split.split(",")
    try:
        summary = evaluate_model(
            args.model,
            args.data,
            args.output,
            split,
            parse_thresholds(args.threshold),
            args.policy,
            args.device,
            save_probabilities=args.save_probabilities,
            mode=args.mode,
            lesion=_lesion_rules(args),
        )
        if inference_context(args.device).is_main:
            _print_summary(summary, args.output)
    finally:
        shutdown_distributed()
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from bratsseg.engine.distributed import inference_context, shutdown_distributed
    from bratsseg.engine.predict import parse_thresholds, predict

    thresholds = parse_thresholds(args.threshold)
    model = args.model
    try:
        ctx = inference_context(args.device)
        bar = _progress("predict")
        try:
            report = predict(
                args.inputs,
                args.output,
                model,
                args.device,
                args.threads or None,
                thresholds,
                args.save_probabilities,
                args.overwrite,
                args.convention,
                progress=bar.update,
                backend=args.backend,
                on_start=lambda n: bar.reset(total=n),
                background=args.background,
                mode=args.mode,
                all_components=args.all_components,
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
    for message in report.skipped:
        print(f"skipped: {message}", file=sys.stderr)
    for message in report.failed:
        print(f"failed: {message}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    from bratsseg.engine.evaluate import sweep_model
    from bratsseg.runtime import tune_allocator

    tune_allocator()
    split = args.split if args.split in ("val", "all") else args.split.split(",")
    result = sweep_model(args.model, args.data, args.output, split, args.metric, args.policy, args.apply)
    g, p = result["best_global"], result["best_per_region"]
    key = f"mean_{args.metric}"
    print(f"{args.output}: swept 101 thresholds on {result['n_cases']} case(s) by mean {args.metric.upper()}")
    print(
        f"best global threshold {g['threshold']:.2f}: {key} {g[key]:.4f} "
        + " ".join(f"{r} {v:.3f}" for r, v in g["per_region"].items())
    )
    print(
        "best per-region thresholds "
        + " ".join(f"{r} {t:.2f}" for r, t in p["thresholds"].items())
        + f": {key} {p[key]:.4f}"
    )
    if args.apply:
        print(f"stored the {args.apply} thresholds in {args.model}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bratsseg.compress.onnx_export import export_onnx
    from bratsseg.models.onnx_format import read_onnx_card

    whole = False if args.network_only else None
    dtype = "float16" if args.fp16 else "float32"
    out = export_onnx(args.model, args.output, opset=args.opset, weights_dtype=dtype, whole_case=whole)
    _check_export(args.model, out, args)
    refinement = read_onnx_card(out).refinement
    if refinement is not None:  # a cascade: its second stage goes where the loader looks for it, beside the file
        second = export_onnx(
            Path(args.model) / refinement.model,
            out.parent / refinement.model / "model.onnx",
            opset=args.opset,
            weights_dtype=dtype,
            whole_case=whole,
        )
        _check_export(Path(args.model) / refinement.model, second, args)
    return 0


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


def cmd_prune(args: argparse.Namespace) -> int:
    from bratsseg.compress.prune import conv_sparsity
    from bratsseg.engine.pruning import prune_model
    from bratsseg.models.unet import count_parameters

    ratio = None if args.ratio is None else [float(r) for r in args.ratio.split(",")]
    dtype = "float16" if args.fp16 else "float32"
    out, pruned = prune_model(
        args.model, args.output, args.sparsity, ratio, dtype, args.finetune_epochs, args.finetune_steps, args.data
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
    out = quantize_int8(args.model, args.output, cases[: args.max_cases], calibrate_method=args.calibration)
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
        threads=args.threads,
        split=args.split,
    )
    rows = compress_study(
        args.model, args.data, args.output, config, progress=lambda n: print(f"variant {n}", file=sys.stderr)
    )
    print((args.output / "compress.md").read_text())
    print(f"{args.output}: compress.csv, compress.md, compress.json, pareto.png ({len(rows)} variants)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from bratsseg.demo import DemoConfig, run_demo
    from bratsseg.runtime import tune_allocator

    tune_allocator()
    t0 = time.perf_counter()
    report = run_demo(args.output, DemoConfig(threads=args.threads))
    out = args.output
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s. Everything is in {out}/:")
    print(f"  report      {report} and {out}/report.html (one self-contained page)")
    print(f"  models      {out}/run/best (PyTorch), {out}/model-pruned.onnx (pruned, fp16 ONNX)")
    print(f"  prediction  {out}/predictions/")
    print(f"  figures     {out}/training.png, {out}/sweep.png, {out}/compress/pareto.png, {out}/held_out.png")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bratsseg.metrics.tables import compare_table

    if args.paired and len(args.results) < 2:
        raise BratsSegError("--paired compares the first result with the others: give two or more")
    folders = [d if d.is_dir() else d.parent for d in args.results]
    # each result by its folder's name, or by the path as given where two share a name (fold2 of two runs)
    short = [f.name for f in folders]
    names = short if len(set(short)) == len(short) else [str(f) for f in folders]
    twice = [f for f, n in zip(folders, names, strict=True) if names.count(n) > 1]
    if twice:
        raise BratsSegError("this results folder is given twice", twice[0])
    summaries = {}
    for name, d, folder in zip(names, args.results, folders, strict=True):
        f = d if not d.is_dir() else folder / "summary.json"
        try:
            summaries[name] = json.loads(f.read_text())
        except (OSError, ValueError) as err:
            raise BratsSegError(f"cannot read results ({err})", f) from err
    print(compare_table(summaries))
    if args.paired:
        from bratsseg.metrics.paired import paired_per_case, paired_table
        from bratsseg.metrics.tables import read_per_case

        csvs = [folder / "per_case.csv" for folder in folders]
        rows = []
        for f in csvs:
            try:
                rows.append(read_per_case(f))
            except (OSError, ValueError, KeyError) as err:
                raise BratsSegError(f"cannot read per-case results ({err})", f) from err
        diffs = [paired_per_case(rows[0], r, f) for r, f in zip(rows[1:], csvs[1:], strict=True)]
        print(paired_table(names[1:], diffs, names[0]))
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    import time
    import webbrowser

    from bratsseg.viewer.server import build_page, start_server

    page = build_page(args.case, args.pred, truth=args.truth)
    server, url = start_server(page, args.port)
    print(f"{page.title}: {url}  (serving only this case's files on 127.0.0.1; Ctrl-C stops it)", flush=True)
    if not args.no_browser:
        webbrowser.open(url)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()


def cmd_report(args: argparse.Namespace) -> int:
    from bratsseg.viewer.report import write_report

    print(write_report(args.results, args.output))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from bratsseg.viz import plots

    if args.kind == "sweep":
        out = plots.plot_sweeps(args.inputs, args.output, args.metric)
    elif args.kind == "boxplot":
        out = plots.plot_boxplots(args.inputs, args.output, args.metric)
    elif args.kind == "training":
        out = plots.plot_training(args.inputs[0], args.output)
    else:
        pred = args.inputs[1] if len(args.inputs) > 1 else None
        out = plots.plot_case(args.inputs[0], args.output, pred, args.slice)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from bratsseg import __version__

    parser = argparse.ArgumentParser(
        prog="bratsseg", description="Brain-tumour segmentation of BraTS-format MRI with small, fast U-Nets."
    )
    parser.add_argument("--version", action="version", version=f"bratsseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="the whole job on built-in synthetic data (a few minutes, no download)")
    p.add_argument("-o", "--output", type=Path, default=Path("bratsseg-demo"), help="folder (default bratsseg-demo)")
    p.add_argument("--threads", type=_threads, default=2, help="CPU threads (default 2)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="describe the cases in a case folder, dataset root or cache")
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--check", action="store_true", help="read every voxel: find truncated files, NaN, empty images (slower)"
    )
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("preprocess", help="crop, z-score and cache a BraTS dataset for training and evaluation")
    p.add_argument("raw", type=Path, help="a case folder or a dataset root of case folders")
    p.add_argument("-o", "--output", type=Path, required=True, help="cache folder")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--margin", type=int, default=2, help="voxels kept around the brain box (default 2)")
    p.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        metavar="MM",
        help="resample every case to this voxel size first: one value (isotropic) or three (default: each case's "
        "own grid; give it when the cases' spacings differ, as nnU-Net does)",
    )
    p.add_argument("--convention", choices=["brats2021", "brats2023"], help="override the naming's convention")
    p.add_argument("--overwrite", action="store_true", help="redo cases already cached")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("train", help="train a 2-D or 3-D U-Net on a preprocessed cache (also under torchrun)")
    p.add_argument("--data", type=Path, required=True, help="cache folder made by `bratsseg preprocess`")
    p.add_argument("-o", "--output", type=Path, required=True, help="run folder")
    p.add_argument("--config", type=Path, help="YAML file of TrainConfig settings")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set lr=1e-3 --set model.widths=[8,16,32,64]",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=_threads, help="CPU threads for PyTorch (default: PyTorch's choice)")
    p.add_argument("--time-limit", type=float, metavar="MINUTES", help="stop (resumably) after this long")
    p.add_argument("--max-steps", type=int, help="stop (resumably) after this many steps in all")
    p.set_defaults(func=cmd_train)

    from bratsseg.cli import workflow

    workflow.add_parsers(sub)

    p = sub.add_parser(
        "evaluate", help="Dice, IoU, HD95, sensitivity, specificity and BraTS lesion-wise Dice/HD95 per case and region"
    )
    p.add_argument("--model", type=Path, help="model folder (e.g. RUN/best) or exported .onnx file")
    p.add_argument("--data", type=Path, help="cache folder")
    p.add_argument("--split", default="val", help="val (the model's validation cases), all, or id1,id2,...")
    p.add_argument("--pred", type=Path, help="folder of label maps <case_id>.nii.gz from any tool")
    p.add_argument("--ref", type=Path, help="raw dataset root with ground-truth segmentations (with --pred)")
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

    p = sub.add_parser("predict", help="segment raw cases: <case_id>.nii.gz label maps on each input's grid")
    p.add_argument(
        "inputs", type=Path, nargs="+", help="case folders and dataset roots (any number), or one case's four files"
    )
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
    p.add_argument("--convention", choices=["brats2021", "brats2023"], help="override the naming's convention")
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

    p = sub.add_parser("sweep", help="IoU and Dice at 101 thresholds; best global and per-region thresholds")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--metric", choices=["iou", "dice"], default="iou")
    p.add_argument("--policy", choices=["brats", "nan"], default="brats")
    p.add_argument("--apply", choices=["global", "per-region"], help="store the chosen thresholds in the model")
    p.set_defaults(func=cmd_sweep)

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
    p.add_argument("--threads", type=_threads, default=2, help="CPU threads for the latency column (default 2)")
    p.add_argument("--split", default="val")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("compare", help="one table of several evaluate results (e.g. 2-D vs 3-D)")
    p.add_argument("results", type=Path, nargs="+", help="folders written by `bratsseg evaluate`")
    p.add_argument(
        "--paired",
        action="store_true",
        help="also each result minus the first, case by case: mean Dice difference, 95%% bootstrap interval",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("view", help="look at a case and its labels in 3-D in the browser (NiiVue, offline)")
    p.add_argument("case", type=Path, help="a case folder (its four modalities, and its segmentation if any)")
    p.add_argument("--pred", type=Path, help="a predicted label map, or a folder holding <case_id>.nii.gz")
    p.add_argument("--truth", action="store_true", help="show the case's segmentation too (beside the prediction)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="print the URL only")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("report", help="one self-contained HTML page of a results folder (evaluate, compress, demo)")
    p.add_argument("results", type=Path, help="a folder of bratsseg results")
    p.add_argument("-o", "--output", type=Path, help="the HTML file (default RESULTS/report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("plot", help="figures from results files (no network is run)")
    p.add_argument(
        "kind",
        choices=["sweep", "boxplot", "training", "case"],
        help="sweep: SWEEP_DIR...; boxplot: EVAL_DIR...; training: RUN; case: CACHE/CASE [PRED]",
    )
    p.add_argument("inputs", type=Path, nargs="+")
    p.add_argument("-o", "--output", type=Path, required=True, help="PNG file")
    p.add_argument("--metric", default=None, help="iou or dice (sweep), a per_case.csv column (boxplot)")
    p.add_argument("--slice", type=int, help="axial slice for `case` (default: most tumour)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("synth", help="write synthetic BraTS-layout cases (for trying bratsseg without data)")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("-n", type=int, default=4, help="number of cases (default 4)")
    p.add_argument("--naming", choices=["brats2021", "brats2023"], default="brats2021")
    p.add_argument("--size", choices=["tiny", "small", "full"], default="small")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)
    return parser


def _spacing(values: list[float] | None) -> tuple[float, float, float] | None:
    """``--spacing``: one size (isotropic) or three, in mm."""
    if values is None:
        return None
    if len(values) not in (1, 3):
        raise BratsSegError(f"--spacing takes one or three sizes in mm, got {len(values)}")
    x, y, z = values * 3 if len(values) == 1 else values
    return float(x), float(y), float(z)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM ends the command like Ctrl-C does, so temporary files are removed on the way out."""
    raise KeyboardInterrupt


def _interrupted_message(err: KeyboardInterrupt, args: argparse.Namespace) -> str:
    """What Ctrl-C kept and the exact command that goes on."""
    import shlex

    from bratsseg.engine.trainer import TrainingInterrupted

    if not isinstance(err, TrainingInterrupted):
        return "interrupted"
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    if args.command == "train" and "--resume" not in argv:
        argv.append("--resume")
    return f"interrupted: {err}. Go on with:\n  bratsseg {shlex.join(argv)}"


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if getattr(args, "metric", "") is None:
        args.metric = "dice" if args.kind == "boxplot" else "iou"
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        require(f"bratsseg {args.command}", *NEEDS_TRAIN_EXTRA.get(args.command, ()))
        return int(args.func(args))
    except BratsSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(_interrupted_message(err, args), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
