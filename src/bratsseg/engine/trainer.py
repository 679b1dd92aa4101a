"""The training loop: read top to bottom. One code path for 1 process or N under ``torchrun``.

:func:`train` is four calls: open the :class:`RunFolder`, :func:`build` everything the run computes with (data,
model, optimiser, schedule; resumed or fine-tuned), then :func:`train_epoch` and :func:`end_epoch` until done.

A run folder holds::

    config.yaml       the resolved TrainConfig
    split.json        train / validation case ids
    metrics.jsonl     one JSON line per epoch
    checkpoint.pt     everything needed to resume (model, optimiser, scheduler, scaler, RNG, counters)
    last/  best/      model folders (weights.safetensors + model.json) for evaluation and prediction
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from bratsseg.atomic import remove_stale_temporaries, write_json_atomic, write_text_atomic
from bratsseg.data.cache import CachedCase, open_cache
from bratsseg.data.priors import load_prior
from bratsseg.data.sampling import PatchDataset
from bratsseg.data.splits import kfold_split, subsample_cases
from bratsseg.engine.checkpoint import load_checkpoint, save_checkpoint
from bratsseg.engine.config import TrainConfig, dump_yaml, from_dict, to_dict
from bratsseg.engine.distributed import DistContext, init_distributed
from bratsseg.errors import BratsSegError
from bratsseg.inference.cascade import refine_in_box
from bratsseg.inference.sliding import predict_probabilities
from bratsseg.labels import REGIONS
from bratsseg.losses import RegionLoss
from bratsseg.metrics.overlap import dice_per_region
from bratsseg.models.card import InferenceSettings, ModelCard, Preprocessing, Refinement, Training
from bratsseg.models.files import load_model, save_model
from bratsseg.models.unet import UNet, count_parameters, memory_format

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.jsonl"
# Settings that may change when a run is resumed; everything else must match the stored config.
RESUMABLE_CHANGES = {"epochs", "val_every", "checkpoint_every_s", "num_workers"}


@dataclass
class TrainState:
    """Counters saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # steps done in the current epoch
    global_step: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    loss_sum: float = 0.0  # over the current epoch so far
    loss_count: int = 0
    data_wait_s: float = 0.0
    step_s: float = 0.0
    train_seconds: float = 0.0


@dataclass
class TrainResult:
    run_dir: Path
    state: TrainState
    finished: bool  # False when stopped early by a time or step limit (resume to continue)
    last_val: dict[str, float] = field(default_factory=dict)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during :func:`train`: the run stopped at a step boundary and saved its checkpoint."""

    def __init__(self, run_dir: Path, step: int) -> None:
        super().__init__(f"{run_dir}: interrupted at step {step}; checkpoint saved")
        self.run_dir = run_dir
        self.step = step


def epoch_line(record: dict[str, Any], total_epochs: int, total_steps: int, label: str = "") -> str:
    """One readable line per epoch: ``fold 1/5 epoch 3/20 step 300/2000 loss 0.4123 val WT 0.812 TC 0.701 ET
    0.650 (mean 0.721, best) 41.2 s``."""
    text = f"{label + ' ' if label else ''}epoch {record['epoch']}/{total_epochs} step {record['global_step']}/"
    text += f"{total_steps} loss {record['train_loss']:.4f}"
    if "val_dice" in record:
        val = " ".join(f"{g} {v:.3f}" for g, v in record["val_dice"].items())
        text += f" val {val} (mean {record['val_mean_dice']:.3f}{', best' if record['best'] else ''})"
    return text + f" {record['epoch_seconds']:.1f} s"


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine or poly decay to 0 at ``total_steps``."""
    warm = min(config.warmup_steps, max(config.total_steps - 1, 0))
    if step < warm:
        return (step + 1) / (warm + 1)
    t = min(1.0, (step - warm) / max(1, config.total_steps - warm))
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    return float((1 - t) ** 0.9)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def resolve_run_config(run_dir: Path, config: TrainConfig | None, resume: bool) -> TrainConfig:
    """The config of a new run, or the stored config of a resumed one (with only harmless changes allowed)."""
    stored_path = run_dir / CONFIG_FILE
    if not resume or not stored_path.is_file():
        return config or TrainConfig()
    stored: TrainConfig = from_dict(TrainConfig, yaml.safe_load(stored_path.read_text()))
    if config is None:
        return stored
    old, new = to_dict(stored), to_dict(config)
    changed = sorted(k for k in new if new[k] != old[k])
    refused = [k for k in changed if k not in RESUMABLE_CHANGES]
    if refused:
        raise BratsSegError(
            f"cannot resume with changed settings {refused} (only {sorted(RESUMABLE_CHANGES)} may change)", stored_path
        )
    return config


@dataclass
class RunFolder:
    """The files of one training run (see the module docstring); only rank 0 writes."""

    root: Path
    is_main: bool = True

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    @property
    def split_file(self) -> Path:
        return self.root / SPLIT_FILE

    def prepare(self, ctx: DistContext, resume: bool) -> None:
        """Create the folder (clearing what a killed writer left); refuse to start over an existing run."""
        if self.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.root)
        ctx.barrier()  # every rank sees the folder as rank 0 left it before reading from it
        if not resume and self.checkpoint.exists():
            raise BratsSegError(
                "already holds a training run; pass --resume to continue it or choose another folder", self.root
            )

    def read_split(self) -> dict[str, list[str]] | None:
        return json.loads(self.split_file.read_text()) if self.split_file.is_file() else None

    def write_start(self, config: TrainConfig, train_ids: list[str], val_ids: list[str]) -> None:
        if self.is_main:
            write_text_atomic(self.root / CONFIG_FILE, dump_yaml(config))
            split = {"train": train_ids, "val": val_ids, "folds": config.folds, "fold": config.fold}
            write_json_atomic(self.split_file, split)

    def drop_metrics_after(self, epoch: int) -> None:
        """On resume: forget the lines of epochs the checkpoint does not hold (written before a save that failed
        or was killed), so that each epoch has one line."""
        path = self.root / METRICS_FILE
        if not self.is_main or not path.is_file():
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("epoch", 0) <= epoch]
        if len(kept) != len(lines):
            write_text_atomic(path, "".join(line + "\n" for line in kept))

    def append_metrics(self, record: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.root / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")

    def save_models(self, model: UNet, card: ModelCard, is_best: bool) -> None:
        if self.is_main:
            save_model(self.root / "last", model, card)
            if is_best:
                save_model(self.root / "best", model, card)


def split_cases(
    cases: list[CachedCase], config: TrainConfig, run: RunFolder
) -> tuple[list[CachedCase], list[CachedCase]]:
    """Train and validation cases: from the run's ``split.json`` if present, else a new seeded k-fold split."""
    by_id = {c.case_id: c for c in cases}
    split = run.read_split()
    if split is None:
        seed = config.seed if config.split_seed is None else config.split_seed
        split = kfold_split(sorted(by_id), config.folds, config.fold, seed, config.stratify, config.strata)
        if config.train_fraction < 1.0:  # the validation cases stay those of the fold
            groups = ([config.stratify] if config.stratify else []) + list(config.strata)
            split["train"] = subsample_cases(split["train"], config.train_fraction, seed, groups)
    missing = [i for i in split["train"] + split["val"] if i not in by_id]
    if missing:
        raise BratsSegError(f"cases of this run's split are not in the cache: {missing}", run.split_file)
    return [by_id[i] for i in split["train"]], [by_id[i] for i in split["val"]]


def cache_preprocessing(cases: list[CachedCase], where: str | Path) -> Preprocessing:
    """The preprocessing the cache was actually built with (its cases must agree), for the model card, and the
    spacing the network trains at when every case has the same one (``predict`` resamples other inputs to it)."""
    found = {json.dumps(c.meta.get("preprocess", {}), sort_keys=True) for c in cases}
    if len(found) != 1:
        raise BratsSegError(f"cached cases were preprocessed with different settings: {sorted(found)}", where)
    stored = json.loads(found.pop())
    return Preprocessing(
        **{k: v for k, v in stored.items() if k in ("margin", "image_dtype")}, spacing=common_spacing(cases)
    )


def common_spacing(cases: list[CachedCase]) -> tuple[float, float, float] | None:
    """The voxel spacing all ``cases`` share (to 0.1%), or None when they differ."""
    if not cases:
        return None
    first = np.array(cases[0].spacing)
    same = all(np.allclose(c.spacing, first, rtol=1e-3) for c in cases)
    return (float(first[0]), float(first[1]), float(first[2])) if same else None


@torch.no_grad()
def validate(
    model: UNet, cases: list[CachedCase], config: TrainConfig, ctx: DistContext
) -> list[tuple[str, dict[str, float]]]:
    """Dice per region at threshold 0.5 on whole validation cases; each case done once, by one rank."""
    model.eval()
    mine = cases[ctx.rank :: ctx.world_size]
    results = []
    use_amp = config.amp and ctx.device.type == "cuda"

    def probabilities(x: NDArray[np.float32]) -> NDArray[np.float32]:
        image = torch.from_numpy(x).to(ctx.device)
        with torch.autocast("cuda", enabled=use_amp):
            probs = predict_probabilities(
                model,
                image,
                config.model.spatial_dims,
                config.val_roi,
                config.val_overlap,
                downsample=config.downsample,
            )
        return np.asarray(probs.float().cpu().numpy())

    for case in mine:
        image = np.asarray(case.image, dtype=np.float32)
        if config.prior:  # a refinement stage refines the previous stage's probabilities around the tumour
            prior = np.array(load_prior(config.prior, case), dtype=np.float32)
            probs = refine_in_box(probabilities, image, prior, Refinement())
        else:
            probs = probabilities(image)
        results.append((case.case_id, dice_per_region(probs > 0.5, case.regions())))
    model.train()
    gathered = [r for part in ctx.gather(results) for r in part]
    return sorted(gathered)


@dataclass
class Run:
    """Everything a training run computes with, built by :func:`build`."""

    config: TrainConfig
    ctx: DistContext
    folder: RunFolder
    train_cases: list[CachedCase]
    val_cases: list[CachedCase]
    dataset: PatchDataset
    model: UNet
    net: nn.Module  # the model, wrapped in DDP under torchrun
    layout: torch.memory_format
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: RegionLoss
    card: ModelCard
    state: TrainState = field(default_factory=TrainState)
    teacher: nn.Module | None = None  # distillation: the model whose probabilities are a second target

    def loss(self, outputs: Tensor | list[Tensor], image: Tensor, target: Tensor) -> Tensor:
        """The region loss, blended with the distillation term when the run has a teacher."""
        loss = self.loss_fn(outputs, target)
        if self.teacher is None:
            return loss
        with torch.no_grad(), torch.autocast("cuda", enabled=self.use_amp):
            soft = torch.sigmoid(self.teacher(image).float())
        student = outputs[0] if isinstance(outputs, list) else outputs
        a = self.config.distill_weight
        return (1 - a) * loss + a * F.binary_cross_entropy_with_logits(student.float(), soft)

    @property
    def use_amp(self) -> bool:
        return self.config.amp and self.ctx.device.type == "cuda"

    def save_checkpoint(self) -> None:
        if self.ctx.is_main:
            save_checkpoint(
                {
                    "format": "bratsseg-checkpoint",
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "rng_torch": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    "state": asdict(self.state),
                    "config": to_dict(self.config),
                },
                self.folder.checkpoint,
            )

    def load_checkpoint(self) -> None:
        ckpt = load_checkpoint(self.folder.checkpoint, map_location=self.ctx.device)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng_torch"].cpu())
        if ckpt["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng_cuda"]])
        self.state = TrainState(**ckpt["state"])


def model_card(config: TrainConfig, train_cases: list[CachedCase], preprocessing: Preprocessing) -> ModelCard:
    """The card every model folder of the run carries: the cache's real preprocessing, and inference settings
    equal to those the run validated with."""
    conventions = sorted({c.convention.name for c in train_cases})
    return ModelCard(
        architecture=config.model,
        convention=conventions[0] if len(conventions) == 1 else "brats2021",
        preprocessing=preprocessing,
        inference=InferenceSettings(config.val_roi, config.val_overlap, config.downsample),
        training=Training(config=to_dict(config)),
    )


def build(data: str | Path, folder: RunFolder, config: TrainConfig, ctx: DistContext, resume: bool) -> Run:
    """Data, model, optimiser, schedule and card of a run; restored from its checkpoint when resuming, started
    from ``config.init_from``'s weights when fine-tuning."""
    train_cases, val_cases = split_cases(open_cache(data), config, folder)
    samples_per_epoch = config.steps_per_epoch * config.batch_size * ctx.world_size
    dataset = PatchDataset(
        train_cases,
        config.patch_size,
        samples_per_epoch,
        config.fg_fraction,
        config.augment,
        config.seed,
        config.downsample,
        priors=config.prior,
        prior_box=(Refinement().box_threshold, Refinement().margin),
        free_fraction=config.free_fraction,
        region_weights=config.fg_region_weights,
    )
    torch.manual_seed(config.seed)
    # DDP's gradient buckets are contiguous: channels-last parameters there make every step copy gradients
    # between layouts (and PyTorch warns); channels-last is a single-process CPU speed-up
    layout = torch.contiguous_format if ctx.distributed else memory_format(config.model.spatial_dims, ctx.device)
    model = UNet(config.model).to(ctx.device).to(memory_format=layout)  # type: ignore[call-overload]
    optimizer = build_optimizer(model, config)
    run = Run(
        config=config,
        ctx=ctx,
        folder=folder,
        train_cases=train_cases,
        val_cases=val_cases,
        dataset=dataset,
        model=model,
        net=model,
        layout=layout,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config)),
        scaler=torch.amp.GradScaler("cuda", enabled=config.amp and ctx.device.type == "cuda"),
        loss_fn=RegionLoss(config.bce_weight, config.dice_weight, config.batch_dice, config.region_loss_weights),
        card=model_card(config, train_cases, cache_preprocessing(train_cases + val_cases, data)),
    )
    resuming = resume and folder.checkpoint.exists()
    if resuming:
        run.load_checkpoint()
        folder.drop_metrics_after(run.state.epoch)
        log.info("resumed %s at epoch %d, step %d", folder.root, run.state.epoch, run.state.global_step)
    elif resume:
        log.info("nothing to resume in %s: starting a new run", folder.root)
    if config.init_from and not resuming:
        start, start_card = load_model(config.init_from)
        if start.config != config.model:
            raise BratsSegError(
                f"init_from model has architecture {start.config.to_dict()}, the run wants {config.model.to_dict()}",
                config.init_from,
            )
        seen = sorted(set(start_card.training.train_cases) & {c.case_id for c in val_cases})
        if seen:  # its validation would score cases the starting weights learned: not a held-out estimate
            raise BratsSegError(f"init_from model was trained on this run's validation cases {seen}", config.init_from)
        model.load_state_dict(start.state_dict())
    if config.teacher:
        run.teacher = load_teacher(config, [c.case_id for c in val_cases], ctx.device, layout)
    folder.write_start(config, [c.case_id for c in train_cases], [c.case_id for c in val_cases])
    if ctx.is_main:
        log.info(
            "training %d-D U-Net %s (%d parameters) on %d cases, validating on %d, device %s x %d",
            config.model.spatial_dims,
            list(config.model.widths),
            count_parameters(model),
            len(train_cases),
            len(val_cases),
            ctx.device,
            ctx.world_size,
        )
    if ctx.distributed:
        run.net = DistributedDataParallel(model)
    return run


def load_teacher(config: TrainConfig, val_ids: list[str], device: torch.device, layout: torch.memory_format) -> UNet:
    """The distillation teacher, in evaluation mode, refused when it saw this run's validation cases (its
    probabilities would carry them into the student) or reads other inputs."""
    assert config.teacher is not None
    teacher, card = load_model(config.teacher)
    channels = (teacher.config.in_channels, teacher.config.out_channels)
    if channels != (config.model.in_channels, config.model.out_channels):
        raise BratsSegError("the teacher reads or predicts other channels than the model it teaches", config.teacher)
    seen = sorted(set(card.training.train_cases) & set(val_ids))
    if seen:
        raise BratsSegError(f"the teacher was trained on this run's validation cases {seen}", config.teacher)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.to(device).to(memory_format=layout).eval()  # type: ignore[call-overload]


def train_epoch(run: Run, should_stop: Callable[[], bool], bar: Any = None) -> bool:
    """The remaining steps of the current epoch; checkpoints every ``checkpoint_every_s``. Returns True when
    ``should_stop`` (a time or step limit, agreed by every rank) ended it early."""
    config, ctx, state = run.config, run.ctx, run.state
    run.dataset.set_epoch(state.epoch)
    b, w, r = config.batch_size, ctx.world_size, ctx.rank
    indices = [(s * w + r) * b + k for s in range(state.step_in_epoch, config.steps_per_epoch) for k in range(b)]
    loader = DataLoader(Subset(run.dataset, indices), batch_size=b, shuffle=False, num_workers=config.num_workers)
    last_checkpoint = t_wait = time.monotonic()
    for image, target in loader:
        t_data = time.monotonic()
        image = image.to(ctx.device, non_blocking=True).contiguous(memory_format=run.layout)
        target = target.to(ctx.device, non_blocking=True)
        with torch.autocast("cuda", enabled=run.use_amp):
            outputs = run.net(image)
        loss = run.loss(outputs, image, target)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        t_end = time.monotonic()

        state.global_step += 1
        state.step_in_epoch += 1
        state.loss_sum += float(loss.detach())
        state.loss_count += 1
        state.data_wait_s += t_data - t_wait
        state.step_s += t_end - t_wait
        state.train_seconds += t_end - t_wait
        t_wait = t_end
        if bar is not None:
            bar.update(1)
            bar.set_postfix(epoch=state.epoch + 1, loss=f"{state.loss_sum / state.loss_count:.4f}")
        if ctx.any(should_stop()):
            return True
        if time.monotonic() - last_checkpoint > config.checkpoint_every_s:
            run.save_checkpoint()
            last_checkpoint = time.monotonic()
    return False


def end_epoch(
    run: Run, epoch_seconds: float, say: Callable[[str], None] | None = None, label: str = ""
) -> dict[str, float]:
    """Validate (when due), log a line to ``metrics.jsonl``, save ``last`` (and ``best``) and a checkpoint.
    Returns the validation Dice (empty when not validated)."""
    config, ctx, state = run.config, run.ctx, run.state
    record: dict[str, Any] = {
        "epoch": state.epoch + 1,
        "global_step": state.global_step,
        "train_loss": state.loss_sum / max(1, state.loss_count),
        "lr": run.optimizer.param_groups[0]["lr"],
        "epoch_seconds": round(epoch_seconds, 3),
        "data_wait_fraction": round(state.data_wait_s / max(state.step_s, 1e-9), 4),
    }
    val: dict[str, float] = {}
    is_best = not run.val_cases  # no validation: the latest model is the one to use
    if run.val_cases and ((state.epoch + 1) % config.val_every == 0 or state.epoch + 1 == config.epochs):
        per_case = validate(run.model, run.val_cases, config, ctx)
        val = {r: float(np.mean([d[r] for _, d in per_case])) for r in REGIONS}
        score = float(np.mean(list(val.values())))
        record.update(val_dice=val, val_mean_dice=score, val_per_case=dict(per_case))
        if score > state.best_score:
            state.best_score, state.best_epoch, is_best = score, state.epoch + 1, True
    record["best"] = is_best
    state.epoch += 1
    state.step_in_epoch = 0
    state.loss_sum, state.loss_count, state.data_wait_s, state.step_s = 0.0, 0, 0.0, 0.0
    record["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run.folder.append_metrics(record)
    training = dataclasses.replace(
        run.card.training,  # config: set by model_card
        epoch=state.epoch,
        global_step=state.global_step,
        val_dice=val,
        train_cases=tuple(c.case_id for c in run.train_cases),
        val_cases=tuple(c.case_id for c in run.val_cases),
    )
    run.card = run.card.replace(training=training)
    run.folder.save_models(run.model, run.card, is_best)
    if ctx.is_main:
        line = epoch_line(record, config.epochs, config.total_steps, label)
        (say or log.info)(line)
    run.save_checkpoint()
    ctx.barrier()
    return val


def train(
    data: str | Path,
    run_dir: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    device: str = "auto",
    time_limit_s: float | None = None,
    max_steps: int | None = None,
    progress: bool = False,
    label: str = "",
) -> TrainResult:
    """Train a U-Net on the preprocessed cases in ``data``, writing the run into ``run_dir``.

    ``resume`` continues from the run's last complete checkpoint. ``time_limit_s`` / ``max_steps`` stop
    early (after saving a checkpoint) so a long run can be done in pieces. ``progress``: a progress bar with ETA
    on a terminal and one readable line per epoch on stderr (``label`` starts it, e.g. ``fold 2/5``); without it
    the lines go to the log. Ctrl-C (or SIGTERM) stops at the next step boundary, saves the checkpoint and raises
    :class:`TrainingInterrupted`; a second Ctrl-C stops at once. A run that fails to start leaves no folder it made.
    """
    started = time.monotonic()
    ctx = init_distributed(device)
    folder = RunFolder(Path(run_dir), ctx.is_main)
    created = not folder.root.exists()
    try:
        folder.prepare(ctx, resume)
        run = build(data, folder, resolve_run_config(folder.root, config, resume), ctx, resume)
    except BaseException:
        if created and ctx.is_main and folder.root.is_dir() and not (folder.root / CHECKPOINT).exists():
            import shutil

            shutil.rmtree(folder.root, ignore_errors=True)
        raise
    interrupted: list[int] = []

    def should_stop() -> bool:
        over_time = time_limit_s is not None and time.monotonic() - started > time_limit_s
        return bool(interrupted) or over_time or (max_steps is not None and run.state.global_step >= max_steps)

    bar = None
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        desc = label or folder.root.name
        bar = tqdm(total=run.config.total_steps, initial=run.state.global_step, unit="step", desc=desc, disable=None)

    def say(text: str) -> None:
        if bar is not None and not bar.disable:
            bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    last_val: dict[str, float] = {}
    stopped = False
    run.model.train()
    with _stop_on_signal(interrupted):
        while run.state.epoch < run.config.epochs and not stopped:
            epoch_start = time.monotonic()
            stopped = train_epoch(run, should_stop, bar)
            if stopped and run.state.step_in_epoch < run.config.steps_per_epoch:
                break
            last_val = end_epoch(run, time.monotonic() - epoch_start, say if progress else None, label) or last_val
        if stopped:
            run.save_checkpoint()
        ctx.barrier()
    if bar is not None:
        bar.close()
    if interrupted:
        raise TrainingInterrupted(folder.root, run.state.global_step)
    return TrainResult(folder.root, run.state, finished=run.state.epoch >= run.config.epochs, last_val=last_val)


@contextlib.contextmanager
def _stop_on_signal(flag: list[int]) -> Iterator[None]:
    """While training: the first SIGINT or SIGTERM appends to ``flag`` (the loop stops at the next step and saves a
    checkpoint); a second one interrupts at once. Outside the main thread nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: object) -> None:
        if flag:
            raise KeyboardInterrupt
        flag.append(signum)
        print("\nstopping at the next step and saving a checkpoint (Ctrl-C again to stop at once)", file=sys.stderr)

    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
