"""int8 on the whole-case ONNX graph: does static quantisation pay on this CPU? (issue 14, item 4)

The bundled model is exported in float32 as a whole-case graph (pooling, network, upsampling, sigmoid in one
ONNX file) and quantised by ONNX Runtime in several ways: QDQ with only the convolutions in int8, QDQ with the
transposed convolutions too, QDQ with ONNX Runtime's default operator list (pooling, resize, add, ... as well),
and the QOperator format (QLinearConv); first convolution and output head in float (as is usual), per-channel int8
weights, uint8 activations, MinMax calibration on 3 real cases. Each variant: file size, the graph's median
seconds on one real case (2 threads, ORT_ENABLE_ALL), the time per operator type from ONNX Runtime's profiler,
and mean Dice per region on 6 other real cases against the float32 graph's (thresholds and nesting as shipped).
The bundled model saw every shared case in training, so only the differences between rows mean anything here.

    python benchmarks/int8_bench.py [--data ../shared/data/brats] [--json docs/int8_bench.json]
    python benchmarks/int8_bench.py --render [--write docs/results/speed.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_BRATS, measured_block_main  # noqa: E402

JSON_OUT = ROOT / "docs" / "int8_bench.json"
BEGIN, END = (
    "<!-- int8-bench: begin (benchmarks/int8_bench.py --render --write docs/results/speed.md) -->",
    ("<!-- int8-bench: end -->"),
)
CALIBRATION = ("BraTS2021_00000", "BraTS19_CBICA_BHQ_1", "Brats18_TCIA13_623_1")
EVALUATION = (
    "BraTS2021_00006",
    "BraTS2021_00014",
    "Brats18_TCIA10_628_1",
    "BraTS19_CBICA_ASK_1",
    "BraTS2021_00024",
    "BraTS2021_00002",
)
TIMED = "BraTS2021_00006"


def load(data: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    from bratsseg.data.geometry import crop
    from bratsseg.data.preprocess import crop_and_normalise
    from bratsseg.io.discovery import find_case
    from bratsseg.io.nifti import load_case
    from bratsseg.labels import labels_to_regions

    case = find_case(data / name)
    loaded = load_case(case)
    assert loaded.labels is not None
    norm = crop_and_normalise(loaded.image, 2)
    return norm.image.astype(np.float32), labels_to_regions(crop(loaded.labels, norm.box), case.convention)


def session(path: Path, threads: int, profile: str | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def op_seconds(path: Path, x: np.ndarray, threads: int, tmp: Path) -> dict[str, float]:
    """Seconds per operator type of one warm run (ONNX Runtime's profiler), largest first.

    Only the last of four runs counts: the first ones pay for fresh memory (page faults in whichever operator
    touches a buffer first, often Pad or Slice, while ONNX Runtime's arena grows), which says nothing about the
    operators."""
    s = session(path, threads, str(tmp / path.stem))
    for _ in range(4):
        s.run(None, {"image": x})
    trace = json.loads(Path(s.end_profiling()).read_text())
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    start, end = runs[-1]["ts"], runs[-1]["ts"] + runs[-1]["dur"]
    totals: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and start <= event["ts"] <= end:
            totals[event["args"]["op_name"]] += event["dur"] / 1e6
    return dict(sorted(((k, round(v, 4)) for k, v in totals.items()), key=lambda kv: -kv[1])[:6])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from bratsseg.compress.onnx_export import export_onnx
    from bratsseg.metrics.overlap import dice
    from bratsseg.models.bundled import default_model_path

    data = {n: load(args.data, n) for n in (*CALIBRATION, *EVALUATION)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        fp32 = export_onnx(default_model_path(), tmp / "fp32.onnx")
        prepared = tmp / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        nodes = onnx.load(str(prepared)).graph.node
        ends = [n.name for n in nodes if n.op_type == "Conv" and ("net_in" in n.input or "net_out" in n.output)]

        class Reader:
            def __init__(self) -> None:
                self.items = iter([data[n][0][None] for n in CALIBRATION])

            def get_next(self) -> dict[str, np.ndarray] | None:
                x = next(self.items, None)
                return None if x is None else {"image": x}

            def rewind(self) -> None:
                pass

        variants: list[tuple[str, dict[str, Any] | None]] = [
            ("float32 (the whole-case graph)", None),
            ("int8 QDQ, convolutions", {"quant_format": QuantFormat.QDQ, "op_types_to_quantize": ["Conv"]}),
            ("int8 QDQ, convolutions + transposed", {"quant_format": QuantFormat.QDQ,
                                                     "op_types_to_quantize": ["Conv", "ConvTranspose"]}),
            ("int8 QDQ, ORT's default operators", {"quant_format": QuantFormat.QDQ}),
            ("int8 QOperator (QLinearConv)", {"quant_format": QuantFormat.QOperator, "op_types_to_quantize": ["Conv"]}),
        ]  # fmt: skip
        root = logging.getLogger()
        root.setLevel(logging.ERROR)  # ORT warns about every float normalisation weight
        x = data[TIMED][0][None]
        for label, settings in variants:
            path = fp32
            if settings is not None:
                path = tmp / f"v{len(rows)}.onnx"
                quantize_static(
                    str(prepared),
                    str(path),
                    Reader(),
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=ends,
                    **settings,
                )
            s = session(path, args.threads)
            s.run(None, {"image": x})
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                s.run(None, {"image": x})
                times.append(time.perf_counter() - t0)
            scores = []
            for name in EVALUATION:
                p = s.run(None, {"image": data[name][0][None]})[0][0] > 0.95
                p[1] |= p[2]
                p[0] |= p[1]  # nested regions, as the bundle
                scores.append([dice(p[i], data[name][1][i]) for i in range(3)])
            row = {
                "row": label,
                "mb": round(os.path.getsize(path) / 1e6, 2),
                "seconds": round(statistics.median(times), 3),
                "dice": [round(float(v), 4) for v in np.mean(scores, axis=0)],
                "top_ops_s": op_seconds(path, x, args.threads, tmp),
            }
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    return {"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "case": TIMED, "rows": rows}


def render(result: dict[str, Any]) -> str:
    base = result["rows"][0]
    lines = [
        BEGIN,
        f"Measured by `python benchmarks/int8_bench.py` on {result['date']} (whole-case graph on {result['case']}, "
        f"{result['threads']} threads; Dice on 6 real cases, differences only: see the script):",
        "",
        "| graph | MB | s | speed vs float32 | Dice WT | Dice TC | Dice ET | slowest operators (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        ops = ", ".join(f"{k} {v:.3f}" for k, v in list(r["top_ops_s"].items())[:4])
        dice = " | ".join(f"{v:.3f}" for v in r["dice"])
        speed = base["seconds"] / r["seconds"]
        lines.append(f"| {r['row']} | {r['mb']:.2f} | {r['seconds']:.3f} | {speed:.2f}x | {dice} | {ops} |")
    fastest = max(result["rows"][1:], key=lambda r: base["seconds"] / r["seconds"])
    keep = base["seconds"] / fastest["seconds"] > 1 and all(
        b - v <= 0.01 for b, v in zip(base["dice"], fastest["dice"], strict=True)
    )
    verdict = "kept" if keep else "not kept: no int8 variant is faster than float32"
    lines += ["", f"Verdict for the bundled model: {verdict} (fastest int8: {fastest['row']}, "
              f"{base['seconds'] / fastest['seconds']:.2f}x).", END]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_BRATS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
