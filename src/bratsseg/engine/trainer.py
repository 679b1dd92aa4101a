"""The training loop: read top to bottom. One code path for 1 process or N under ``torchrun``.

A run folder holds::

    config.yaml       the resolved TrainConfig
    split.json        train / validation case ids
    metrics.jsonl     one JSON line per epoch
    checkpoint.pt     everything needed to resume (model, optimiser, scheduler, scaler, RNG, counters)
    last/  best/      model folders (weights.safetensors + model.json) for evaluation and prediction
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from bratsseg.data.cache import CachedCase, open_cache, write_json_atomic
from bratsseg.data.sampling import PatchDataset
from bratsseg.data.splits import kfold_split
from bratsseg.engine.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from bratsseg.engine.config import TrainConfig, dump_yaml, from_dict, to_dict
from bratsseg.engine.distributed import DistContext, init_distributed
from bratsseg.errors import BratsSegError
from bratsseg.inference.sliding import predict_probabilities
from bratsseg.labels import REGIONS
from bratsseg.losses import RegionLoss
from bratsseg.metrics.overlap import dice_per_region
from bratsseg.models.files import default_model_meta, load_model, save_model
from bratsseg.models.unet import UNet, count_parameters, memory_format

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
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
    stored_path = run_dir / "config.yaml"
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


def split_cases(
    cases: list[CachedCase], config: TrainConfig, run_dir: Path
) -> tuple[list[CachedCase], list[CachedCase]]:
    """Train and validation cases: from the run's ``split.json`` if present, else a new seeded k-fold split."""
    by_id = {c.case_id: c for c in cases}
    path = run_dir / "split.json"
    if path.is_file():
        split = json.loads(path.read_text())
    else:
        split = kfold_split(sorted(by_id), config.folds, config.fold, config.seed, config.stratify)
    missing = [i for i in split["train"] + split["val"] if i not in by_id]
    if missing:
        raise BratsSegError(f"cases of this run's split are not in the cache: {missing}", path)
    return [by_id[i] for i in split["train"]], [by_id[i] for i in split["val"]]


@torch.no_grad()
def validate(
    model: UNet, cases: list[CachedCase], config: TrainConfig, ctx: DistContext
) -> list[tuple[str, dict[str, float]]]:
    """Dice per region at threshold 0.5 on whole validation cases; each case done once, by one rank."""
    model.eval()
    mine = cases[ctx.rank :: ctx.world_size]
    results = []
    use_amp = config.amp and ctx.device.type == "cuda"
    for case in mine:
        image = torch.from_numpy(np.asarray(case.image, dtype=np.float32)).to(ctx.device)
        with torch.autocast("cuda", enabled=use_amp):
            probs = predict_probabilities(
                model,
                image,
                config.model.spatial_dims,
                config.val_roi,
                config.val_overlap,
                downsample=config.downsample,
            )
        pred = (probs > 0.5).cpu().numpy()
        results.append((case.case_id, dice_per_region(pred, case.regions())))
    model.train()
    gathered = [r for part in ctx.gather(results) for r in part]
    return sorted(gathered)


def _state_dict_for_checkpoint(
    model: UNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    state: TrainState,
    config: TrainConfig,
) -> dict[str, Any]:
    return {
        "format": "bratsseg-checkpoint",
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "state": asdict(state),
        "config": to_dict(config),
    }


def train(
    data: str | Path,
    run_dir: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    device: str = "auto",
    time_limit_s: float | None = None,
    max_steps: int | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train a U-Net on the preprocessed cases in ``data``, writing the run into ``run_dir``.

    ``resume`` continues from the run's last complete checkpoint. ``time_limit_s`` / ``max_steps`` stop
    early (after saving a checkpoint) so a long run can be done in pieces.
    """
    started = time.monotonic()
    ctx = init_distributed(device)
    run_dir = Path(run_dir)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)
    ctx.barrier()  # every rank sees the folder as rank 0 left it before reading from it
    ckpt_path = run_dir / CHECKPOINT
    if not resume and ckpt_path.exists():
        raise BratsSegError(
            "already holds a training run; pass --resume to continue it or choose another folder", run_dir
        )
    config = resolve_run_config(run_dir, config, resume)

    # ---- data ----
    train_cases, val_cases = split_cases(open_cache(data), config, run_dir)
    samples_per_epoch = config.steps_per_epoch * config.batch_size * ctx.world_size
    dataset = PatchDataset(
        train_cases,
        config.patch_size,
        samples_per_epoch,
        config.fg_fraction,
        config.augment,
        config.seed,
        config.downsample,
    )

    # ---- model, optimiser, schedule ----
    torch.manual_seed(config.seed)
    layout = memory_format(config.model.spatial_dims, ctx.device)
    model = UNet(config.model).to(ctx.device).to(memory_format=layout)  # type: ignore[call-overload]
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    use_amp = config.amp and ctx.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = RegionLoss(config.bce_weight, config.dice_weight, config.batch_dice)
    state = TrainState()

    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, map_location=ctx.device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng_torch"].cpu())
        if ckpt["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng_cuda"]])
        state = TrainState(**ckpt["state"])
        log.info("resumed %s at epoch %d, step %d", run_dir, state.epoch, state.global_step)
    elif resume:
        log.info("nothing to resume in %s: starting a new run", run_dir)
    if config.init_from and not (resume and ckpt_path.exists()):
        start, _ = load_model(config.init_from)
        if start.config != config.model:
            raise BratsSegError(
                f"init_from model has architecture {start.config.to_dict()}, the run wants {config.model.to_dict()}",
                config.init_from,
            )
        model.load_state_dict(start.state_dict())

    if ctx.is_main:
        (run_dir / "config.yaml").write_text(dump_yaml(config))
        split = {"train": [c.case_id for c in train_cases], "val": [c.case_id for c in val_cases]}
        write_json_atomic(run_dir / "split.json", {**split, "folds": config.folds, "fold": config.fold})
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
    net: nn.Module = DistributedDataParallel(model) if ctx.distributed else model
    conventions = sorted({c.convention.name for c in train_cases})
    meta = default_model_meta(config.model, conventions[0] if len(conventions) == 1 else "brats2021")
    meta["inference"] = {
        "roi_size": list(config.val_roi) if config.val_roi else None,
        "overlap": 0.5,
        "downsample": config.downsample,
    }

    def checkpoint() -> None:
        if ctx.is_main:
            save_checkpoint(_state_dict_for_checkpoint(model, optimizer, scheduler, scaler, state, config), ckpt_path)

    bar = None
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.total_steps, initial=state.global_step, unit="step", disable=None)

    last_val: dict[str, float] = {}
    last_checkpoint = time.monotonic()
    stopped = False
    model.train()
    while state.epoch < config.epochs and not stopped:
        epoch_start = time.monotonic()
        dataset.set_epoch(state.epoch)
        b, w, r = config.batch_size, ctx.world_size, ctx.rank
        indices = [(s * w + r) * b + k for s in range(state.step_in_epoch, config.steps_per_epoch) for k in range(b)]
        loader = DataLoader(Subset(dataset, indices), batch_size=b, shuffle=False, num_workers=config.num_workers)
        t_wait = time.monotonic()
        for image, target in loader:
            t_data = time.monotonic()
            image = image.to(ctx.device, non_blocking=True).contiguous(memory_format=layout)
            target = target.to(ctx.device, non_blocking=True)
            with torch.autocast("cuda", enabled=use_amp):
                outputs = net(image)
            loss = loss_fn(outputs, target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
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
            over_time = time_limit_s is not None and time.monotonic() - started > time_limit_s
            over_steps = max_steps is not None and state.global_step >= max_steps
            if ctx.any(over_time or over_steps):
                stopped = True
                break
            if time.monotonic() - last_checkpoint > config.checkpoint_every_s:
                checkpoint()
                last_checkpoint = time.monotonic()
        if stopped and state.step_in_epoch < config.steps_per_epoch:
            break

        # ---- end of epoch: validate, log, save ----
        record: dict[str, Any] = {
            "epoch": state.epoch + 1,
            "global_step": state.global_step,
            "train_loss": state.loss_sum / max(1, state.loss_count),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": round(time.monotonic() - epoch_start, 3),
            "data_wait_fraction": round(state.data_wait_s / max(state.step_s, 1e-9), 4),
        }
        is_best = False
        if val_cases and ((state.epoch + 1) % config.val_every == 0 or state.epoch + 1 == config.epochs):
            per_case = validate(model, val_cases, config, ctx)
            last_val = {r: float(np.mean([d[r] for _, d in per_case])) for r in REGIONS}
            score = float(np.mean(list(last_val.values())))
            record["val_dice"] = last_val
            record["val_mean_dice"] = score
            record["val_per_case"] = {cid: d for cid, d in per_case}
            if score > state.best_score:
                state.best_score, state.best_epoch, is_best = score, state.epoch + 1, True
        elif not val_cases:
            is_best = True  # no validation: the latest model is the one to use
        record["best"] = is_best
        state.epoch += 1
        state.step_in_epoch = 0
        state.loss_sum, state.loss_count, state.data_wait_s, state.step_s = 0.0, 0, 0.0, 0.0
        if ctx.is_main:
            record["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            meta["training"] = {
                "epoch": state.epoch,
                "global_step": state.global_step,
                "val_dice": last_val,
                "train_cases": [c.case_id for c in train_cases],
                "val_cases": [c.case_id for c in val_cases],
            }
            save_model(run_dir / "last", model, meta)
            if is_best:
                save_model(run_dir / "best", model, meta)
            log.info("epoch %d: %s", state.epoch, {k: v for k, v in record.items() if k != "val_per_case"})
        checkpoint()
        last_checkpoint = time.monotonic()
        ctx.barrier()

    if stopped:
        checkpoint()
    ctx.barrier()
    if bar is not None:
        bar.close()
    return TrainResult(run_dir, state, finished=state.epoch >= config.epochs, last_val=last_val)
