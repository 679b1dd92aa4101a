"""Training configuration: a frozen dataclass that round-trips through YAML, with ``key=value`` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bratsseg.data.sampling import AugmentConfig
from bratsseg.dataclass_io import from_dict, to_dict
from bratsseg.errors import BratsSegError
from bratsseg.models.config import UNetConfig

__all__ = ["TrainConfig", "apply_overrides", "dump_yaml", "from_dict", "load_train_config", "to_dict"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run computes. Stored as ``config.yaml`` in the run."""

    model: UNetConfig = field(default_factory=UNetConfig)
    patch_size: tuple[int, ...] = (96, 96, 96)  # 3 entries for 3-D patches, 2 for 2-D axial slices
    downsample: int = 1  # k > 1: the network works on a grid k times coarser (3-D); patch_size is on that grid
    batch_size: int = 2
    epochs: int = 40
    steps_per_epoch: int = 50
    optimizer: str = "adamw"  # adamw | sgd (Nesterov)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.99  # SGD only
    schedule: str = "cosine"  # cosine | poly (exponent 0.9), after a linear warm-up
    warmup_steps: int = 50
    grad_clip: float = 12.0
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    batch_dice: bool = False
    # the loss's BCE and Dice terms of each region (WT, TC, ET) weighted so (normalised to a mean of 1), e.g.
    # [1, 1, 2] for more weight on the enhancing tumour; equal weights: the plain loss
    region_loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    fg_fraction: float = 0.5
    # the regions (WT, TC, ET) a foreground-centred patch is centred on, in proportion to these weights among those
    # the case has; equal weights: uniformly (which already oversamples the small enhancing tumour)
    fg_region_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # samples from tumour-free brains made from the training cases (the tumour replaced by the mirrored other
    # hemisphere, bratsseg.data.healthy) with empty targets: teaches the network that a brain may hold no tumour
    free_fraction: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    folds: int = 5
    fold: int = 0  # -1: train on every case, no validation
    stratify: tuple[str, ...] = ()  # case ids of a minority stratum (e.g. low-grade) spread one per fold
    strata: tuple[tuple[str, ...], ...] = ()  # further strata (e.g. by year), each dealt evenly after stratify
    seed: int = 0  # weights' initialisation, sampling and augmentation (and the split unless split_seed is set)
    split_seed: int | None = None  # the k-fold split's seed; set it to train another seed on the same folds
    train_fraction: float = 1.0  # < 1: a seeded, stratified subset of the fold's training cases (a learning curve)
    val_every: int = 1  # epochs
    val_roi: tuple[int, ...] | None = None  # sliding-window size at validation; None: the whole case at once
    val_overlap: float = 0.25
    amp: bool = True  # automatic mixed precision, CUDA only
    num_workers: int = 1
    checkpoint_every_s: float = 120.0
    init_from: str | None = None  # a model folder whose weights start the run (same architecture): fine-tuning
    # a refinement stage (cascade): a folder of a previous stage's out-of-fold probabilities per cached case
    # (bratsseg.data.priors), read as extra input channels by a model with prior_channels 3, at full resolution
    prior: str | None = None
    # knowledge distillation (fine-tuning a pruned model): a model folder whose probabilities on each patch are a
    # second target; the loss is (1 - distill_weight) * the region loss + distill_weight * BCE(student, teacher)
    teacher: str | None = None
    distill_weight: float = 0.5

    def __post_init__(self) -> None:
        dims = self.model.spatial_dims
        if len(self.patch_size) != dims:
            raise BratsSegError(
                f"patch_size {list(self.patch_size)} has {len(self.patch_size)} entries but the model is {dims}-D"
            )
        bad = [p for p in self.patch_size if p % self.model.divisor]
        if bad:
            raise BratsSegError(
                f"patch_size {list(self.patch_size)} must be a multiple of {self.model.divisor} "
                f"for a {self.model.levels}-level U-Net"
            )
        if self.downsample < 1 or (self.downsample > 1 and dims != 3):
            raise BratsSegError(f"downsample must be >= 1, and 1 for 2-D models; got {self.downsample}")
        if self.optimizer not in ("adamw", "sgd"):
            raise BratsSegError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "poly"):
            raise BratsSegError(f"schedule must be cosine or poly, got {self.schedule!r}")
        for name in ("batch_size", "epochs", "steps_per_epoch", "folds", "val_every"):
            if getattr(self, name) < 1:
                raise BratsSegError(f"{name} must be >= 1, got {getattr(self, name)}")
        if bool(self.prior) != bool(self.model.prior_channels):
            raise BratsSegError(
                "a refinement stage needs both prior (a folder of a previous stage's probabilities) and "
                f"model.prior_channels 3 with model.in_channels 7; got prior {self.prior!r}, "
                f"model.prior_channels {self.model.prior_channels}"
            )
        if self.prior and self.downsample != 1:
            raise BratsSegError(
                f"a refinement stage runs at full resolution: downsample must be 1, got {self.downsample}"
            )
        if not 0.0 < self.train_fraction <= 1.0:
            raise BratsSegError(f"train_fraction must lie in (0, 1], got {self.train_fraction}")
        if not 0.0 <= self.free_fraction < 1.0:
            raise BratsSegError(f"free_fraction must lie in [0, 1), got {self.free_fraction}")
        for name in ("region_loss_weights", "fg_region_weights"):
            weights = getattr(self, name)
            if min(weights) < 0 or sum(weights) == 0:
                raise BratsSegError(f"{name} must be 3 weights (WT, TC, ET) >= 0, not all 0; got {list(weights)}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise BratsSegError(f"distill_weight must lie in [0, 1], got {self.distill_weight}")
        if not -1 <= self.fold < self.folds:
            raise BratsSegError(f"fold must be -1 or in 0..{self.folds - 1}, got {self.fold}")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML: ``lr=1e-3``, ``model.widths=[8,16,32,64]``)."""
    out = yaml.safe_load(yaml.safe_dump(data))  # deep copy of plain values
    for item in overrides:
        if "=" not in item:
            raise BratsSegError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise BratsSegError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = value
    return out


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then a YAML file, then ``key=value`` overrides."""
    data: dict[str, Any] = to_dict(TrainConfig())
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise BratsSegError(f"cannot read config: {err}", path) from err
        if not isinstance(loaded, dict):
            raise BratsSegError("config file must hold a mapping", path)
        _deep_update(data, loaded)
    data = apply_overrides(data, overrides or [])
    config: TrainConfig = from_dict(TrainConfig, data)
    return config


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def finetune_config(
    base: TrainConfig,
    init_from: str | Path,
    epochs: int,
    steps_per_epoch: int,
    lr_factor: float = 0.5,
    changes: dict[str, Any] | None = None,
) -> TrainConfig:
    """``base``'s training continued from ``init_from``'s weights: the same cases and split, ``epochs`` x
    ``steps_per_epoch`` more steps at ``lr_factor`` times its learning rate (10 warm-up steps at most), with
    ``changes`` (further settings, nested mappings merged) on top. The recipe's fine-tuning stage and the fine-tuning
    of a pruned model both use it."""
    data = to_dict(base)
    _deep_update(data, dict(changes or {}))
    data.update(
        init_from=str(init_from),
        epochs=int(epochs),
        steps_per_epoch=int(steps_per_epoch),
        lr=base.lr * lr_factor,
        warmup_steps=min(10, int(steps_per_epoch)),
    )
    config: TrainConfig = from_dict(TrainConfig, data)
    return config
