"""`bratsseg compress`: every trimmed variant of a trained model, measured side by side on validation cases.

Variants: the model itself; global magnitude pruning at each sparsity; encoder-decoder pair pruning at each
ratio (optionally fine-tuned with the training loop); and, for the model and each pair-pruned one, float16
weights, ONNX Runtime float32 and ONNX Runtime int8 (static QDQ, per-channel, calibrated on training cases).
Each goes through the same :func:`~bratsseg.engine.evaluate.evaluate_predictor` and the same latency
measurement, and one table plus a Pareto figure come out.
"""

from __future__ import annotations

import csv
import logging
import statistics
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bratsseg.compress.onnx_export import export_onnx
from bratsseg.compress.prune import (
    conv_flops,
    conv_sparsity,
    global_magnitude_prune,
    pair_prune,
    pair_prune_refusal,
)
from bratsseg.data.cache import CachedCase, open_cache, write_json_atomic
from bratsseg.engine.evaluate import evaluate_predictor, select_cases
from bratsseg.errors import BratsSegError
from bratsseg.inference.predictor import Predictor, TorchPredictor, load_predictor
from bratsseg.labels import REGIONS
from bratsseg.models.files import WEIGHTS_FILE, load_model, read_model_meta, save_model
from bratsseg.models.unet import UNet, count_parameters

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class StudyConfig:
    """The grid of :func:`compress_study`."""

    sparsities: tuple[float, ...] = (0.5, 0.7, 0.9)  # global magnitude pruning
    ratios: tuple[float, ...] = (0.25, 0.5)  # pair pruning, every stage
    precisions: tuple[str, ...] = PRECISIONS
    finetune_epochs: int = 0  # > 0: also fine-tune each pair-pruned model for this many epochs
    finetune_steps: int = 50  # steps per fine-tuning epoch
    threads: int = 2  # CPU threads for the latency measurement
    latency_repeats: int = 3
    calibration_cases: int = 8  # training cases for int8 calibration
    split: str = "val"

    def __post_init__(self) -> None:
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise BratsSegError(f"precisions must be among {PRECISIONS}, got {bad}")


def finetune(pruned_dir: Path, cache: str | Path, run_dir: Path, epochs: int, steps: int, source_dir: Path) -> Path:
    """Fine-tune a pruned model folder with the training loop on the training cases of the model it was pruned
    from (``source_dir``, whose run's ``config.yaml`` supplies the other settings); returns the fine-tuned model
    folder (``run_dir/last``)."""
    from bratsseg.engine.config import TrainConfig, load_train_config
    from bratsseg.engine.trainer import train

    model, _ = load_model(pruned_dir)
    source_meta = read_model_meta(source_dir)
    training = source_meta.get("training", {})
    run_config = Path(source_dir).resolve().parent / "config.yaml"
    base = load_train_config(run_config) if run_config.is_file() else TrainConfig(model=model.config)
    config = replace(
        base,
        model=model.config,
        init_from=str(pruned_dir),
        epochs=epochs,
        steps_per_epoch=steps,
        lr=base.lr * 0.5,
        warmup_steps=min(10, steps),
        downsample=int(source_meta.get("inference", {}).get("downsample", base.downsample)),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    if training.get("train_cases"):
        split = {"train": training["train_cases"], "val": training.get("val_cases", [])}
        write_json_atomic(run_dir / "split.json", {**split, "folds": base.folds, "fold": base.fold})
    train(cache, run_dir, config, resume=(run_dir / "checkpoint.pt").exists(), device="cpu")
    return run_dir / "last"


def prune_model(
    model_dir: str | Path,
    out: str | Path,
    sparsity: float | None = None,
    ratio: float | Sequence[float] | None = None,
    weights_dtype: str = "float32",
    finetune_epochs: int = 0,
    finetune_steps: int = 50,
    data: str | Path | None = None,
) -> tuple[Path, UNet]:
    """`bratsseg prune`: one pruned model folder (global magnitude ``sparsity`` or pair ``ratio``), optionally
    fine-tuned on ``data`` and stored in float16; returns the folder and the model."""
    if (sparsity is None) == (ratio is None):
        raise BratsSegError("give exactly one of a global sparsity or a pair-pruning ratio")
    model, meta = load_model(model_dir)
    if sparsity is not None:
        pruned = global_magnitude_prune(model, sparsity)
        meta["compression"] = {"global_sparsity": sparsity}
    else:
        assert ratio is not None
        ratios = [float(ratio)] if isinstance(ratio, (int, float)) else [float(r) for r in ratio]
        pruned = pair_prune(model, ratios[0] if len(ratios) == 1 else ratios)
        meta["compression"] = {"pair_ratio": ratios}
    folder = save_model(out, pruned, meta, weights_dtype=weights_dtype)
    if finetune_epochs:
        if data is None:
            raise BratsSegError("fine-tuning needs the training cache (--data)")
        run_dir = Path(f"{out}-finetune-run")
        tuned, tuned_meta = load_model(
            finetune(folder, data, run_dir, finetune_epochs, finetune_steps, Path(model_dir))
        )
        tuned_meta["compression"] = {**meta["compression"], "finetune_epochs": finetune_epochs}
        tuned_meta["thresholds"] = meta["thresholds"]
        folder = save_model(out, tuned, tuned_meta, weights_dtype=weights_dtype)
        pruned = tuned
    return folder, pruned


def measure_latency(predictor: Predictor, case: CachedCase, repeats: int) -> float:
    """Median seconds of :meth:`Predictor.probabilities` on one cached case (after one warm-up run)."""
    image = np.asarray(case.image, dtype=np.float32)
    predictor.probabilities(image)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.probabilities(image)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def file_sizes(path: Path) -> tuple[int, int]:
    """Bytes of a model (folder: its weights file; or an .onnx file), raw and zlib-compressed (level 6)."""
    f = path / WEIGHTS_FILE if path.is_dir() else path
    data = f.read_bytes()
    return len(data), len(zlib.compress(data, 6))


def network_input_shape(case: CachedCase, meta: dict[str, Any]) -> tuple[int, ...]:
    """``(1, C, ...)`` of what the network sees for ``case``: its cropped grid pooled by ``inference.downsample``."""
    k = int(meta.get("inference", {}).get("downsample", 1))
    channels, *spatial = case.image.shape
    return (1, channels, *(-(-s // k) for s in spatial))


def compress_study(
    model_dir: str | Path,
    cache: str | Path,
    out_dir: str | Path,
    config: StudyConfig | None = None,
    progress: Callable[[str], Any] | None = None,
) -> list[dict[str, Any]]:
    """Build, evaluate and time every variant of the grid; write ``compress.csv``, ``compress.md``,
    ``compress.json`` and ``pareto.png`` into ``out_dir``; return the table rows."""
    config = config or StudyConfig()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    torch.set_num_threads(config.threads)
    base, meta = load_model(model_dir)
    cases = select_cases(cache, config.split, meta)
    train_ids = set(meta.get("training", {}).get("train_cases", []))
    calib = [c for c in open_cache(cache) if c.case_id in train_ids] or list(cases)
    calib = calib[: config.calibration_cases]
    shape = network_input_shape(cases[0], meta)
    variants_dir = out_dir / "variants"
    variants_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    int8_ops: dict[str, Any] = {}

    def record(name: str, method: str, precision: str, path: Path, net: UNet, predictor: Predictor) -> None:
        if progress:
            progress(name)
        raw, packed = file_sizes(path)
        latency = measure_latency(predictor, cases[0], config.latency_repeats)
        result = evaluate_predictor(predictor, cases, None, with_hd95=True)
        metrics = result["metrics"]
        row: dict[str, Any] = {
            "variant": name,
            "method": method,
            "precision": precision,
            "backend": predictor.backend,
            "widths": "-".join(str(w) for w in net.config.widths),
            "parameters": count_parameters(net),
            "nonzero_parameters": count_parameters(net, nonzero=True),
            "file_mb": raw / 1e6,
            "compressed_mb": packed / 1e6,
            "gflops": conv_flops(net, shape) / 1e9,
            "latency_s": latency,
        }
        for r in REGIONS:
            row[f"dice_{r}"] = metrics[r]["dice"]["mean"]
        for r in REGIONS:
            row[f"iou_{r}"] = metrics[r]["iou"]["mean"]
        for r in REGIONS:
            row[f"hd95_{r}"] = metrics[r]["hd95"]["mean"]
        row["mean_dice"] = float(np.mean([row[f"dice_{r}"] for r in REGIONS]))
        rows.append(row)
        log.info("%s: %s", name, row)

    def precisions_of(name: str, method: str, net: UNet, folder: Path) -> None:
        if "fp16" in config.precisions:
            half = save_model(variants_dir / f"{name}-fp16", net, meta, weights_dtype="float16")
            record(f"{name} fp16", method, "fp16", half, load_model(half)[0], TorchPredictor.from_dir(half))
        if "fp32" in config.precisions or "int8" in config.precisions:
            onnx_file = export_onnx(folder, variants_dir / f"{name}.onnx")
            if "fp32" in config.precisions:
                record(
                    f"{name} onnx", method, "fp32", onnx_file, net, load_predictor(onnx_file, threads=config.threads)
                )
            if "int8" in config.precisions:
                from bratsseg.compress.quantize import int8_operators, quantize_int8

                q = quantize_int8(onnx_file, variants_dir / f"{name}-int8.onnx", calib)
                int8_ops[name] = int8_operators(q)
                record(f"{name} int8", method, "int8", q, net, load_predictor(q, threads=config.threads))

    # the model as trained
    folder = save_model(variants_dir / "base", base, meta)
    record("base", "none", "fp32", folder, base, TorchPredictor(base, meta))
    precisions_of("base", "none", base, folder)

    for p in config.sparsities:
        net = global_magnitude_prune(base, p)
        name = f"global-{p:g}"
        folder = save_model(variants_dir / name, net, {**meta, "compression": {"global_sparsity": p}})
        record(name, f"global magnitude {conv_sparsity(net):.0%}", "fp32", folder, net, TorchPredictor(net, meta))

    refusal = pair_prune_refusal(base.config)
    if refusal and config.ratios:
        log.warning("no pair-pruned variants: %s", refusal)
    for r in config.ratios if not refusal else ():
        net = pair_prune(base, r)
        name = f"pair-{r:g}"
        folder = save_model(variants_dir / name, net, {**meta, "compression": {"pair_ratio": r}})
        record(name, f"pair {r:.0%}", "fp32", folder, net, TorchPredictor(net, meta))
        precisions_of(name, f"pair {r:.0%}", net, folder)
        if config.finetune_epochs > 0:
            ft_dir = finetune(
                folder, cache, variants_dir / f"{name}-ft-run", config.finetune_epochs, config.finetune_steps, model_dir
            )
            ft_net, _ = load_model(ft_dir)
            ft_name = f"{name}+ft"
            ft_folder = save_model(
                variants_dir / ft_name,
                ft_net,
                {**meta, "compression": {"pair_ratio": r, "finetune_epochs": config.finetune_epochs}},
            )
            method = f"pair {r:.0%} + fine-tune {config.finetune_epochs}x{config.finetune_steps}"
            record(ft_name, method, "fp32", ft_folder, ft_net, TorchPredictor(ft_net, meta))
            precisions_of(ft_name, method, ft_net, ft_folder)

    base_latency = rows[0]["latency_s"]
    for row in rows:
        row["speedup"] = base_latency / row["latency_s"]
    write_study(
        out_dir,
        rows,
        {
            "model": str(model_dir),
            "cache": str(cache),
            "cases": [c.case_id for c in cases],
            "network_input": list(shape),
            "threads": config.threads,
            "config": asdict(config),
            "int8_operators": int8_ops,
        },
    )
    return rows


COLUMNS = (
    "variant", "method", "precision", "backend", "widths", "parameters", "nonzero_parameters", "file_mb",
    "compressed_mb", "gflops", "latency_s", "speedup", *(f"dice_{r}" for r in REGIONS),
    *(f"iou_{r}" for r in REGIONS), *(f"hd95_{r}" for r in REGIONS), "mean_dice",
)  # fmt: skip


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    head = ["variant", "params", "non-zero", "MB", "MB zipped", "GFLOPs", "s/case", "speed-up", "Dice WT", "TC",
            "ET", "IoU WT", "TC", "ET"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["variant"],
            f"{r['parameters'] / 1e6:.2f} M",
            f"{r['nonzero_parameters'] / 1e6:.2f} M",
            f"{r['file_mb']:.2f}",
            f"{r['compressed_mb']:.2f}",
            f"{r['gflops']:.1f}",
            f"{r['latency_s']:.3f}",
            f"{r['speedup']:.2f}x",
            *(f"{r[f'dice_{g}']:.3f}" for g in REGIONS),
            *(f"{r[f'iou_{g}']:.3f}" for g in REGIONS),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_study(out_dir: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    from bratsseg.viz.figures import pareto

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "compress.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in COLUMNS})
    (out_dir / "compress.md").write_text(markdown_table(rows))
    write_json_atomic(out_dir / "compress.json", {**info, "rows": rows})
    fig = pareto(rows)
    fig.savefig(out_dir / "pareto.png", dpi=120)
