"""The device budget: bratsseg on the runtime install (ONNX Runtime alone, no PyTorch) against the full install and
MONAI SegResNet, all measured in this run.

Two fresh virtual environments are made from this checkout (or reused with --runtime-venv / --full-venv):
``pip install .`` (the runtime) and ``pip install torch==2.13.0 '.[train]'`` (the full install). For each row:

- installed size: the environment's site-packages, without pip and setuptools (the venv's own tools);
- import time: a fresh interpreter importing what the row needs, minus an empty interpreter's start-up;
- process wall time: a whole cold process segmenting one real case (NIfTI in, NIfTI out; files in the page
  cache: one warm-up run first), median of --repeats, the four rows' processes interleaved round by round;
  SegResNet's row is a process that imports PyTorch and MONAI, reads and crops the same case and runs
  SegResNet's forward on it (no thresholding, no writing);
- peak RSS of that process (the kernel's ru_maxrss).

Targets (issue 14): runtime installed size <= 250 MB, one-case process <= 1.0 s on 2 threads, peak RSS <= 500 MB;
(issue 31) the accurate mode (5 fold models, mirrored) on the runtime install at most 600 MB peak RSS.

    python benchmarks/runtime_bench.py [CASE] [--threads 2] [--repeats 5] [--json docs/runtime_bench.json]
    python benchmarks/runtime_bench.py --render [--write docs/results/speed.md]     (the block from the JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_CASE, measured_block_main, median_process, median_processes  # noqa: E402

JSON_OUT = ROOT / "docs" / "runtime_bench.json"
BEGIN, END = (
    "<!-- runtime-bench: begin (benchmarks/runtime_bench.py --render --write docs/results/speed.md) -->",
    ("<!-- runtime-bench: end -->"),
)
VENV_TOOLS = ("pip", "setuptools", "pkg_resources", "_distutils_hack")
TARGETS = {"installed_mb": 250.0, "process_s": 1.0, "peak_rss_mb": 500.0}
ACCURATE_PEAK_MB = 600.0  # issue 31: the accurate mode within a device's memory

SEGRESNET = """
import sys, numpy as np, torch
from monai.networks.nets import SegResNet
from bratsseg.data.preprocess import crop_and_normalise
from bratsseg.io.discovery import find_case
from bratsseg.io.nifti import load_case
torch.set_num_threads(int(sys.argv[2]))
image = crop_and_normalise(load_case(find_case(sys.argv[1]), load_seg=False).image, 2).image
x = torch.from_numpy(np.pad(image, [(0, 0)] + [(0, (-s) % 8) for s in image.shape[1:]]))[None]
net = SegResNet(blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), init_filters=16, in_channels=4, out_channels=3).eval()
with torch.inference_mode():
    net(x)
"""


def run_venv(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def make_venv(path: Path, full: bool) -> Path:
    """A fresh environment with this checkout installed (non-editable, the bundled model included)."""
    run_venv([sys.executable, "-m", "venv", str(path)])
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    if full:
        run_venv([*pip, "torch==2.13.0"])  # the CPU build
    run_venv([*pip, f"{ROOT}[train]" if full else str(ROOT)])
    return path


def site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python3*/site-packages"))
    if not found:
        raise SystemExit(f"{venv}: no site-packages")
    return found[0]


def installed_mb(venv: Path) -> float:
    total = 0
    for entry in site_packages(venv).iterdir():
        name = entry.name.split("-")[0].lower()
        if name in VENV_TOOLS or entry.name.startswith("distutils-precedence"):
            continue
        files = [entry] if entry.is_file() else [f for f in entry.rglob("*") if f.is_file() and not f.is_symlink()]
        total += sum(f.stat().st_size for f in files)
    return total / 1e6


def import_seconds(python: str, modules: str, env: dict[str, str], repeats: int) -> float:
    empty = median_process([python, "-c", "pass"], env, repeats)[0]
    return median_process([python, "-c", f"import {modules}"], env, repeats)[0] - empty


def measure(args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        runtime = args.runtime_venv or make_venv(tmp_path / "runtime", full=False)
        full = args.full_venv or make_venv(tmp_path / "full", full=True)
        print(f"environments ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        rt_python, full_python = str(runtime / "bin" / "python"), str(full / "bin" / "python")
        probe = [rt_python, "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"]
        if subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip() != "True":
            raise SystemExit(f"{runtime}: PyTorch is installed in the runtime environment")
        out = tmp_path / "out"

        def predict_cmd(venv: Path, *extra: str) -> list[str]:
            bratsseg = str(venv / "bin" / "bratsseg")
            return [bratsseg, "predict", str(args.case), "-o", str(out), "--threads", str(args.threads),
                    "--overwrite", *extra]  # fmt: skip

        rows = []
        specs = [
            ("bratsseg, runtime install (ONNX Runtime)", runtime, "bratsseg.cli.main, bratsseg.engine.predict, "
             "onnxruntime", predict_cmd(runtime)),
            ("bratsseg, full install (ONNX Runtime, the default)", full, "bratsseg.cli.main, bratsseg.engine.predict, "
             "onnxruntime", predict_cmd(full)),
            ("bratsseg, full install, --backend torch", full, "bratsseg.cli.main, bratsseg.engine.predict, torch, "
             "bratsseg.inference.torch_predictor", predict_cmd(full, "--backend", "torch")),
            ("MONAI SegResNet forward (full install + MONAI)", full, "torch, monai.networks.nets",
             [full_python, "-c", SEGRESNET, str(args.case), str(args.threads)]),
            ("bratsseg, runtime install, --mode accurate (5 folds, mirrored)", runtime, "bratsseg.cli.main, "
             "bratsseg.engine.predict, onnxruntime", predict_cmd(runtime, "--mode", "accurate")),
        ]  # fmt: skip
        timings = median_processes([cmd for *_, cmd in specs], env, args.repeats)  # interleaved
        for (label, venv, modules, _), (wall, rss) in zip(specs, timings, strict=True):
            python = str(venv / "bin" / "python")
            row = {
                "row": label,
                "installed_mb": round(installed_mb(venv), 1),
                "import_s": round(import_seconds(python, modules, env, args.repeats), 3),
                "process_s": round(wall, 3),
                "peak_rss_mb": round(rss, 1),
            }
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    return {
        "case": Path(args.case).name,
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
        "targets": TARGETS,
    }


def render(result: dict[str, Any]) -> str:
    rows = result["rows"]
    ours, full, torch_row, seg, *more = rows
    accurate = more[0] if more else None
    lines = [
        BEGIN,
        f"Measured by `python benchmarks/runtime_bench.py` on {result['date']} ({result['machine']}; case "
        f"{result['case']}, {result['threads']} threads, median of {result['repeats']} cold processes):",
        "",
        "| | installed MB | import s | whole `predict` process s | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['row']} | {r['installed_mb']:.0f} | {r['import_s']:.2f} | {r['process_s']:.2f} | "
                     f"{r['peak_rss_mb']:.0f} |")  # fmt: skip
    met = {k: ("met" if ours[k] <= v else "NOT met") for k, v in result["targets"].items()}
    lines += [
        "",
        f"Runtime install against the full one: {full['installed_mb'] / ours['installed_mb']:.1f}x smaller, "
        f"{full['process_s'] / ours['process_s']:.2f}x the speed of its default (the same ONNX graph) and "
        f"{torch_row['process_s'] / ours['process_s']:.1f}x that of its PyTorch backend, "
        f"{torch_row['peak_rss_mb'] / ours['peak_rss_mb']:.1f}x less memory than the PyTorch backend; "
        f"a whole case in {seg['process_s'] / ours['process_s']:.1f}x less time than a process that only runs "
        f"SegResNet's forward. Targets: installed <= {result['targets']['installed_mb']:.0f} MB {met['installed_mb']}, "
        f"process <= {result['targets']['process_s']:.1f} s {met['process_s']}, "
        f"peak RSS <= {result['targets']['peak_rss_mb']:.0f} MB {met['peak_rss_mb']}."
        + (
            ""
            if accurate is None
            else f" Accurate mode: {accurate['process_s']:.1f} s, peak RSS <= {ACCURATE_PEAK_MB:.0f} MB "
            f"{'met' if accurate['peak_rss_mb'] <= ACCURATE_PEAK_MB else 'NOT met'} "
            "(one fold model in memory at a time)."
        ),
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", type=Path, nargs="?", default=DEFAULT_CASE, help="a BraTS case folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runtime-venv", type=Path, help="reuse this runtime-only environment")
    parser.add_argument("--full-venv", type=Path, help="reuse this full environment")
    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
