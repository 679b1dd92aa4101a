"""A whole case, end to end, on the CPU: our bundled model (PyTorch and ONNX Runtime) vs the peers' forward pass.

    python benchmarks/predict_bench.py [CASE_DIR] [--model MODEL] [--threads 2] [--repeats 3] [--no-dynunet]
    python benchmarks/predict_bench.py --render --write docs/results/speed.md   # the block from docs/predict_bench.json

In one process, with the same thread count:
1. ours, end to end: read the 4 NIfTI files, crop + z-score, network, binarise + labels, write the .nii.gz,
   with the seconds of each stage (PyTorch, then ONNX Runtime on the exported model);
2. MONAI SegResNet (the MONAI BraTS tutorial configuration: init_filters 16, blocks_down 1,2,2,4) and
3. an nnU-Net-sized DynUNet (filters 32, 64, 128, 256, 320, 320; 6 stages), forward pass only, untrained
   weights, on the same brain crop at full resolution.
Peak memory is the process's peak resident set size, read after ours ran (before the peers) and at the end.
glibc's allocator is left at its defaults, as in `bratsseg predict`; ``--tune-allocator`` applies the tuning
`bratsseg train` uses (no speed for us, +250 MB peak, but it makes the peers' big 3-D forward passes ~1.7x
faster), so both conditions can be compared.
The targets: ours at most 1.0 s per case, at least 10x faster than SegResNet's forward, under 1 GB.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from common import DEFAULT_CASE, measured_block_main, median_process, median_time

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "predict_bench.json"
BEGIN = "<!-- predict-bench: begin (benchmarks/predict_bench.py --render --write docs/results/speed.md) -->"
END = "<!-- predict-bench: end -->"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def end_to_end(model: Path, case_dir: Path, out: Path, threads: int, repeats: int) -> dict[str, float]:
    from bratsseg.engine.predict import STAGES, predict_case
    from bratsseg.inference.loading import load_predictor
    from bratsseg.io.discovery import find_case

    predictor = load_predictor(model, "cpu", threads)
    case = find_case(case_dir)
    predict_case(predictor, case, out)  # warm-up
    runs = [predict_case(predictor, case, out)[1] for _ in range(repeats)]
    return {k: float(np.median([r[k] for r in runs])) for k in (*STAGES, "total")}


def forward_seconds(net: Any, x: Any, repeats: int) -> float:
    import torch

    net = net.eval()
    with torch.inference_mode():
        net(x)
        return median_time(lambda: net(x), repeats)


def padded(image: np.ndarray, multiple: int) -> Any:
    import torch

    pad = [(0, 0)] + [(0, (-s) % multiple) for s in image.shape[1:]]
    return torch.from_numpy(np.pad(image, pad))[None]


def spacing_rows(case_dir: Path, model: Path, threads: int, repeats: int) -> list[dict[str, Any]]:
    """Whole ``bratsseg predict`` processes on the case as it is and resampled (trilinear) to other grids."""
    import nibabel as nib

    from bratsseg.data.resample import resize
    from bratsseg.io.discovery import find_case

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, factors in (("1 x 1 x 1 mm (as given)", None), ("1 x 1 x 3 mm", (1, 1, 1 / 3)),
                               ("0.5 x 0.5 x 1 mm", (2, 2, 1))):  # fmt: skip
            folder = case_dir
            if factors is not None:
                folder = Path(tmp) / label.split()[0].replace(".", "") / case_dir.name
                folder.mkdir(parents=True)
                for path in find_case(case_dir).images:
                    img = nib.load(path)
                    shape = tuple(max(1, round(s * f)) for s, f in zip(img.shape[:3], factors, strict=True))
                    data = np.round(resize(np.asarray(img.dataobj, dtype=np.float32), shape)).astype(np.int16)
                    affine = img.affine @ np.diag([*(1 / np.asarray(factors, dtype=float)), 1.0])
                    nib.save(nib.Nifti1Image(data, affine), folder / path.name)
            cmd = ["bratsseg", "predict", str(folder), "-o", str(Path(tmp) / "out"), "--model", str(model),
                   "--threads", str(threads), "--overwrite"]  # fmt: skip
            wall, rss = median_process(cmd, dict(os.environ), repeats)
            rows.append({"row": f"whole process, {label}", "seconds": wall, "note": f"peak RSS {rss:.0f} MB"})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", type=Path, nargs="?", default=DEFAULT_CASE, help="a BraTS case folder")
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-dynunet", action="store_true", help="skip the (slow, memory-hungry) DynUNet")
    parser.add_argument("--tune-allocator", action="store_true", help="glibc tuning of `bratsseg train`, for all")
    parser.add_argument(
        "--spacings",
        action="store_true",
        help="also time whole `bratsseg predict` processes (seconds, peak RSS) on the case resampled to 1 x 1 x 3 mm "
        "and to 0.5 x 0.5 x 1 mm (issue 13's anisotropic and sub-millimetre inputs)",
    )
    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from bratsseg.compress.onnx_export import export_onnx
    from bratsseg.data.preprocess import crop_and_normalise
    from bratsseg.engine.predict import STAGES
    from bratsseg.inference.loading import load_predictor
    from bratsseg.io.discovery import find_case
    from bratsseg.io.nifti import load_case
    from bratsseg.models.bundled import default_model_path

    if not args.case.is_dir():
        raise SystemExit(f"no case folder at {args.case} (give one, e.g. from `bratsseg synth`)")
    torch.set_num_threads(args.threads)
    if args.tune_allocator:
        from bratsseg.runtime import tune_allocator

        tune_allocator()
    model = args.model or default_model_path()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ours = end_to_end(model, args.case, Path(tmp) / "torch", args.threads, args.repeats)
        stages = ", ".join(f"{k} {ours[k]:.2f}" for k in STAGES)
        rows.append({"row": "ours, PyTorch, end to end", "seconds": ours["total"], "note": stages})
        shipped = Path(model) / "model.onnx"  # the bundled model carries its ONNX file
        onnx_file = shipped if shipped.is_file() else export_onnx(model, Path(tmp) / "model.onnx")
        ours_onnx = end_to_end(onnx_file, args.case, Path(tmp) / "onnx", args.threads, args.repeats)
        stages = ", ".join(f"{k} {ours_onnx[k]:.2f}" for k in STAGES)
        rows.append({"row": "ours, ONNX Runtime, end to end", "seconds": ours_onnx["total"], "note": stages})
    ours_peak = peak_rss_mb()
    gc.collect()

    margin = load_predictor(model).card.preprocessing.margin
    image = crop_and_normalise(load_case(find_case(args.case), load_seg=False).image, margin).image
    from monai.networks.nets import DynUNet, SegResNet

    segres = SegResNet(blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), init_filters=16, in_channels=4, out_channels=3)
    x = padded(image, 8)
    rows.append({"row": "MONAI SegResNet (BraTS tutorial configuration), forward only", "peer": "segresnet",
                 "seconds": forward_seconds(segres, x, args.repeats), "note": f"input {tuple(x.shape)}"})  # fmt: skip
    del segres
    gc.collect()
    if not args.no_dynunet:
        dyn = DynUNet(
            3, 4, 3, kernel_size=[3] * 6, strides=[1, 2, 2, 2, 2, 2], upsample_kernel_size=[2] * 5,
            filters=[32, 64, 128, 256, 320, 320], res_block=False,
        )  # fmt: skip
        x = padded(image, 32)
        rows.append({"row": "nnU-Net-sized DynUNet (32..320, 6 stages), forward only", "peer": "dynunet",
                     "seconds": forward_seconds(dyn, x, max(1, args.repeats // 2)),
                     "note": f"input {tuple(x.shape)}"})  # fmt: skip
    if args.spacings:
        rows += spacing_rows(args.case, model, args.threads, args.repeats)
    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}",
        "case": args.case.name,
        "crop": list(image.shape[1:]),
        "threads": args.threads,
        "repeats": args.repeats,
        "allocator": "tuned" if args.tune_allocator else "default",
        "rows": rows,
        "ours_peak_rss_mb": ours_peak,
        "end_peak_rss_mb": peak_rss_mb(),
    }


def render(result: dict[str, Any]) -> str:
    rows = result["rows"]
    best = min(r["seconds"] for r in rows if r["row"].startswith("ours"))
    lines = [
        BEGIN,
        f"Measured by `python benchmarks/predict_bench.py` on {result['date']} ({result['machine']}; case "
        f"{result['case']}, brain crop {'x'.join(map(str, result['crop']))}, {result['threads']} threads, median of "
        f"{result['repeats']}, one process, {result['allocator']} glibc allocator):",
        "",
        "| | s per case | against ours (the faster backend) | notes |",
        "|---|---:|---:|---|",
    ]
    for r in rows:
        ratio = f"{r['seconds'] / best:.1f}x slower" if "peer" in r else "-"  # our own whole processes: no ratio
        lines.append(f"| {r['row']} | {r['seconds']:.2f} | {ratio} | {r['note']} |")
    seg = next((r["seconds"] for r in rows if r.get("peer") == "segresnet"), None)
    verdicts = [f"ours <= 1.0 s per case {'met' if best <= 1.0 else 'NOT met'}"]
    if seg is not None:
        verdicts.append(f">= 10x faster than SegResNet's forward {'met' if seg / best >= 10 else 'NOT met'}")
    verdicts.append(f"peak memory < 1 GB {'met' if result['ours_peak_rss_mb'] < 1024 else 'NOT met'}")
    lines += [
        "",
        f"Peak memory of the process after ours ran (libraries included): {result['ours_peak_rss_mb']:.0f} MB; at "
        f"the end, after the peers: {result['end_peak_rss_mb']:.0f} MB. Targets: {'; '.join(verdicts)}.",
        END,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
