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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bratsseg.atomic import write_json_atomic
from bratsseg.compress.onnx_export import export_onnx
from bratsseg.compress.prune import (
    conv_flops,
    conv_sparsity,
    global_magnitude_prune,
    pair_prune,
    pair_prune_refusal,
)
from bratsseg.data.cache import CachedCase, open_cache
from bratsseg.engine.evaluate import evaluate_predictor, select_cases
from bratsseg.engine.pruning import finetune
from bratsseg.errors import BratsSegError
from bratsseg.inference.loading import load_predictor
from bratsseg.inference.predictor import Predictor
from bratsseg.inference.torch_predictor import TorchPredictor
from bratsseg.labels import REGIONS
from bratsseg.metrics.tables import compression_markdown as markdown_table
from bratsseg.models.card import ModelCard
from bratsseg.models.files import WEIGHTS_FILE, load_model, save_model
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
    distill_weight: float = 0.5  # fine-tuning: weight of the unpruned model's probabilities (distillation)
    threads: int = 2  # CPU threads for the latency measurement
    latency_repeats: int = 3
    calibration_cases: int = 8  # training cases for int8 calibration
    split: str = "val"

    def __post_init__(self) -> None:
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise BratsSegError(f"precisions must be among {PRECISIONS}, got {bad}")


def latency_times(predictor: Predictor, case: CachedCase, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` runs of :meth:`Predictor.probabilities` on one cached case (after one
    warm-up run)."""
    image = np.asarray(case.image, dtype=np.float32)
    predictor.probabilities(image)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.probabilities(image)
        times.append(time.perf_counter() - t0)
    return times


def measure_latency(predictor: Predictor, case: CachedCase, repeats: int) -> float:
    """Median seconds of :meth:`Predictor.probabilities` on one cached case (after one warm-up run)."""
    return statistics.median(latency_times(predictor, case, repeats))


def file_sizes(path: Path) -> tuple[int, int]:
    """Bytes of a model (folder: its weights file; or an .onnx file), raw and zlib-compressed (level 6)."""
    f = path / WEIGHTS_FILE if path.is_dir() else path
    data = f.read_bytes()
    return len(data), len(zlib.compress(data, 6))


def network_input_shape(case: CachedCase, card: ModelCard) -> tuple[int, ...]:
    """``(1, C, ...)`` of what the network sees for ``case``: its cropped grid pooled by ``inference.downsample``."""
    k = card.inference.downsample
    channels, *spatial = case.image.shape
    return (1, channels, *(-(-s // k) for s in spatial))


@dataclass
class Variant:
    """One model of the study, ready to be measured: its file (for size), network (parameters, FLOPs) and
    predictor (Dice, latency)."""

    name: str
    method: str
    precision: str
    path: Path
    net: UNet
    predictor: Predictor
    int8_operators: dict[str, Any] | None = None


def build_variants(
    base: UNet, card: ModelCard, model_dir: Path, cache: str | Path, out: Path, config: StudyConfig,
    calib: Sequence[CachedCase],
) -> Iterator[Variant]:  # fmt: skip
    """Every variant of the grid, in table order, each built only when the previous one has been measured."""

    def precisions(name: str, method: str, net: UNet, folder: Path) -> Iterator[Variant]:
        if "fp16" in config.precisions:
            half = save_model(out / f"{name}-fp16", net, card, weights_dtype="float16")
            yield Variant(f"{name} fp16", method, "fp16", half, load_model(half)[0], TorchPredictor.from_dir(half))
        if "fp32" in config.precisions or "int8" in config.precisions:
            onnx_file = export_onnx(folder, out / f"{name}.onnx")
            if "fp32" in config.precisions:
                yield Variant(
                    f"{name} onnx", method, "fp32", onnx_file, net, load_predictor(onnx_file, threads=config.threads)
                )
            if "int8" in config.precisions:
                from bratsseg.compress.quantize import int8_operators, quantize_int8

                q = quantize_int8(onnx_file, out / f"{name}-int8.onnx", calib)
                yield Variant(
                    f"{name} int8", method, "int8", q, net, load_predictor(q, threads=config.threads), int8_operators(q)
                )

    def variant(name: str, method: str, net: UNet, step_card: ModelCard, trims: bool) -> Iterator[Variant]:
        """The fp32 variant, then (``trims``) its fp16, ONNX and int8 copies."""
        folder = save_model(out / name, net, step_card)
        yield Variant(name, method, "fp32", folder, net, TorchPredictor(net, card))
        if trims:
            yield from precisions(name, method, net, folder)

    yield from variant("base", "none", base, card, trims=True)
    for p in config.sparsities:
        net = global_magnitude_prune(base, p)
        name, method = f"global-{p:g}", f"global magnitude {conv_sparsity(net):.0%}"
        yield from variant(name, method, net, card.with_step("global_magnitude", sparsity=p), trims=False)
    refusal = pair_prune_refusal(base.config)
    if refusal and config.ratios:
        log.warning("no pair-pruned variants: %s", refusal)
    for r in config.ratios if not refusal else ():
        net = pair_prune(base, r)
        name, pair_card = f"pair-{r:g}", card.with_step("pair", ratio=[r])
        yield from variant(name, f"pair {r:.0%}", net, pair_card, trims=True)
        if config.finetune_epochs > 0:
            ft_dir = finetune(
                out / name, cache, out / f"{name}-ft-run", config.finetune_epochs, config.finetune_steps, model_dir,
                config.distill_weight,
            )  # fmt: skip
            ft_net, _ = load_model(ft_dir)
            ft_card = pair_card.with_step(
                "finetune", epochs=config.finetune_epochs, steps_per_epoch=config.finetune_steps
            )
            method = f"pair {r:.0%} + fine-tune {config.finetune_epochs}x{config.finetune_steps}"
            yield from variant(f"{name}+ft", method, ft_net, ft_card, trims=True)


def measure(variant: Variant, cases: Sequence[CachedCase], shape: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """One row of the table: size, parameters, FLOPs, latency and the metrics of :func:`evaluate_predictor`."""
    raw, packed = file_sizes(variant.path)
    net = variant.net
    row: dict[str, Any] = {
        "variant": variant.name,
        "method": variant.method,
        "precision": variant.precision,
        "backend": variant.predictor.backend,
        "widths": "-".join(str(w) for w in net.config.widths),
        "parameters": count_parameters(net),
        "nonzero_parameters": count_parameters(net, nonzero=True),
        "file_mb": raw / 1e6,
        "compressed_mb": packed / 1e6,
        "gflops": conv_flops(net, shape) / 1e9,
    }
    times = latency_times(variant.predictor, cases[0], repeats)
    row["latency_s"] = statistics.median(times)
    row["latency_spread"] = (max(times) - min(times)) / row["latency_s"]  # run to run, relative
    metrics = evaluate_predictor(variant.predictor, cases, None, with_hd95=True, lesion=None).metrics
    for metric in ("dice", "iou", "hd95"):
        for r in REGIONS:
            row[f"{metric}_{r}"] = metrics[r][metric]["mean"]
    row["mean_dice"] = float(np.mean([row[f"dice_{r}"] for r in REGIONS]))
    return row


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
    base, card = load_model(model_dir)
    cases = select_cases(cache, config.split, card)
    train_ids = set(card.training.train_cases)
    calib = ([c for c in open_cache(cache) if c.case_id in train_ids] or list(cases))[: config.calibration_cases]
    shape = network_input_shape(cases[0], card)
    variants_dir = out_dir / "variants"
    variants_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    int8_ops: dict[str, Any] = {}
    for variant in build_variants(base, card, model_dir, cache, variants_dir, config, calib):
        if progress:
            progress(variant.name)
        rows.append(measure(variant, cases, shape, config.latency_repeats))
        if variant.int8_operators is not None:
            int8_ops[variant.name.removesuffix(" int8")] = variant.int8_operators
        log.info("%s: %s", variant.name, rows[-1])

    for row in rows:
        row["speedup"] = rows[0]["latency_s"] / row["latency_s"]
    info = {
        "model": str(model_dir),
        "cache": str(cache),
        "cases": [c.case_id for c in cases],
        "network_input": list(shape),
        "threads": config.threads,
        "config": asdict(config),
        "int8_operators": int8_ops,
    }
    write_study(out_dir, rows, info)
    return rows


COLUMNS = (
    "variant", "method", "precision", "backend", "widths", "parameters", "nonzero_parameters", "file_mb",
    "compressed_mb", "gflops", "latency_s", "latency_spread", "speedup", *(f"dice_{r}" for r in REGIONS),
    *(f"iou_{r}" for r in REGIONS), *(f"hd95_{r}" for r in REGIONS), "mean_dice",
)  # fmt: skip


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
