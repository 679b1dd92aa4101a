"""`bratsseg demo`: the whole job on built-in synthetic data, in a few minutes on 2 CPU cores.

Synthetic cases -> preprocess -> train a small 3-D U-Net -> sweep the threshold -> compression study (pair
pruning, global pruning, fp16, ONNX, int8) -> prune and export the model (float16 ONNX) -> segment a held-out
case (BraTS 2023 naming, so its labels come out as 0/1/2/3) with it -> score it -> ``report.md`` with the
tables and figures.
Every step calls the same library function as the corresponding command.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bratsseg.labels import REGIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    cases: int = 12  # synthetic training + validation cases (with 6, four training cases overfit: WT Dice 0.3)
    size: str = "small"  # synthetic size (96 x 96 x 64 voxels)
    epochs: int = 6  # 120 steps: the pipeline, not accuracy (benchmarks/demo_bench.py times the whole demo)
    steps_per_epoch: int = 20
    threads: int = 2
    seed: int = 0


def run_demo(out: str | Path, config: DemoConfig | None = None, say: Callable[[str], Any] = print) -> Path:
    """Run the demo into ``out`` and return the report's path."""
    from bratsseg.compress.onnx_export import export_onnx
    from bratsseg.data.preprocess import preprocess_dataset
    from bratsseg.data.synthetic import make_synthetic_case, make_synthetic_dataset
    from bratsseg.engine.compress_study import StudyConfig, compress_study, markdown_table
    from bratsseg.engine.config import load_train_config
    from bratsseg.engine.evaluate import apply_thresholds, evaluate_files, sweep_model
    from bratsseg.engine.predict import predict
    from bratsseg.engine.pruning import prune_model
    from bratsseg.engine.trainer import train
    from bratsseg.metrics.sweep import noise_warnings
    from bratsseg.viz import plots

    config = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    times: dict[str, float] = {}

    def step(name: str) -> Callable[[], None]:
        t0 = time.perf_counter()
        say(f"[demo] {name} ...")
        return lambda: times.__setitem__(name, time.perf_counter() - t0)

    done = step("synthetic data")
    raw, held_out_root = out / "data", out / "held_out"
    make_synthetic_dataset(raw, config.cases, naming="brats2021", size=config.size, seed=config.seed)
    held = make_synthetic_case(held_out_root, "Demo-HeldOut-00001", "brats2023", size=config.size, seed=999)
    done()

    done = step("preprocess")
    cache = out / "cache"
    preprocess_dataset(raw, cache)
    done()

    done = step("train")
    run = out / "run"
    train_config = load_train_config(
        None,
        [
            "model.widths=[8,16,32,64]",
            "patch_size=[64,64,48]",
            f"epochs={config.epochs}",
            f"steps_per_epoch={config.steps_per_epoch}",
            "folds=4",
            "warmup_steps=5",
            "lr=0.01",
            "num_workers=0",
            "val_every=2",
            f"seed={config.seed}",
        ],
    )
    result = train(
        cache, run, train_config, resume=(run / "checkpoint.pt").exists(), device="cpu", progress=True, label="[demo]"
    )
    plots.plot_training(run, out / "training.png")
    done()

    done = step("threshold sweep")
    model = run / "best"
    sweep = sweep_model(model, cache, out / "sweep", "val")
    apply_thresholds(model, sweep, "global")
    plots.plot_sweeps([out / "sweep"], out / "sweep.png")
    done()

    done = step("compression study")
    study = out / "compress"
    study_config = StudyConfig(sparsities=(0.5,), ratios=(0.5,), threads=config.threads, latency_repeats=3)
    rows = compress_study(model, cache, study, study_config)
    done()

    done = step("prune 50% (global magnitude) and export to ONNX with float16 weights")
    prune_model(model, out / "model-pruned", sparsity=0.5)
    trimmed = export_onnx(out / "model-pruned", out / "model-pruned.onnx", weights_dtype="float16")
    done()

    done = step("predict the held-out case")
    report = predict([held.folder], out / "predictions", trimmed, threads=config.threads, overwrite=True)
    scores = evaluate_files(out / "predictions", held_out_root, out / "held_out_scores")
    held_cache = out / "held_out_cache"
    preprocess_dataset(held_out_root, held_cache)
    plots.plot_case(held_cache / held.case_id, out / "held_out.png", report.written[0])
    done()

    g = sweep.to_dict()["best_global"]
    metrics = scores.metrics
    timing = report.mean_timings()
    lines = [
        "# bratsseg demo report",
        "",
        f"Synthetic BraTS-like cases ({config.cases} for training/validation, {config.size} size), a 3-D U-Net "
        f"{list(train_config.model.widths)} trained for {result.state.global_step} steps on "
        f"{config.threads} CPU threads. Everything here is synthetic: the numbers show the pipeline works, "
        "not how well it segments real tumours (see the README for real-data results).",
        "",
        "## Training",
        "",
        f"Validation Dice at the last epoch: {_fmt(result.last_val)}. Curves: `training.png`.",
        "",
        "![training](training.png)",
        "",
        "## Threshold sweep",
        "",
        f"Best global threshold {g['threshold']:.2f} (mean IoU {g['mean_iou']:.3f}); stored in the model. "
        f"Best per-region thresholds {_fmt(sweep.best_per_region.thresholds, 2)}."
        + "".join(
            f" **{w[0].upper()}{w[1:]}.**"
            for w in noise_warnings({"global": g["threshold"], **sweep.best_per_region.thresholds}, sweep.n_cases)
        ),
        "",
        "![sweep](sweep.png)",
        "",
        "## Compression",
        "",
        f"Each variant evaluated on the same validation cases; latency is network seconds per case at "
        f"{config.threads} threads. Pareto figure: `compress/pareto.png`.",
        "",
        markdown_table(rows),
        "![pareto](compress/pareto.png)",
        "",
        "## Prediction on a held-out case",
        "",
        f"`{held.case_id}` (BraTS 2023 naming: labels 0/1/2/3) segmented on ONNX Runtime by the model with 50% of "
        f"its convolution weights pruned (global magnitude) and float16 weights, `model-pruned.onnx` "
        f"({trimmed.stat().st_size / 1e6:.2f} MB): "
        f"`predictions/{held.case_id}.nii.gz`. Dice against its synthetic truth: "
        + ", ".join(f"{r} {metrics[r]['dice']['mean']:.3f}" for r in REGIONS)
        + f". Seconds per stage: {_fmt(timing, 3)}.",
        "",
        "![held-out case](held_out.png)",
        "",
        "## Time per demo step (s)",
        "",
        "| step | seconds |",
        "|---|---|",
        *(f"| {k} | {v:.1f} |" for k, v in times.items()),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    from bratsseg.viewer.report import write_report

    write_report(out)  # report.html: the same, with every table and figure, in one self-contained page
    (out / "demo.json").write_text(json.dumps({"seconds": times, "val_dice": result.last_val}, indent=1))
    return path


def _fmt(values: dict[str, Any], digits: int = 3) -> str:
    return ", ".join(f"{k} {float(v):.{digits}f}" for k, v in values.items()) or "none"
