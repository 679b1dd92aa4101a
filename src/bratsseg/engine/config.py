"""Training configuration: a frozen dataclass that round-trips through YAML, with ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from bratsseg.data.sampling import AugmentConfig
from bratsseg.errors import BratsSegError
from bratsseg.models.unet import UNetConfig


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
    fg_fraction: float = 0.5
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    folds: int = 5
    fold: int = 0  # -1: train on every case, no validation
    stratify: tuple[str, ...] = ()  # case ids of a minority stratum (e.g. low-grade) spread one per fold
    seed: int = 0
    val_every: int = 1  # epochs
    val_roi: tuple[int, ...] | None = None  # sliding-window size at validation; None: the whole case at once
    val_overlap: float = 0.25
    amp: bool = True  # automatic mixed precision, CUDA only
    num_workers: int = 1
    checkpoint_every_s: float = 120.0
    init_from: str | None = None  # a model folder whose weights start the run (same architecture): fine-tuning

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
        if not -1 <= self.fold < self.folds:
            raise BratsSegError(f"fold must be -1 or in 0..{self.folds - 1}, got {self.fold}")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


# ---- generic dataclass <-> dict, used for every config of the package ----


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain JSON/YAML values; tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise BratsSegError(f"config {where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise BratsSegError(f"config {where}: expected a list, got {value!r}")
        (item,) = get_args(tp)[:1]
        return tuple(_coerce(item, v, where) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise BratsSegError(f"config {where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[Any], data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from plain values, checking names and types; missing keys take defaults."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise BratsSegError(f"unknown config key(s) {[f'{where}{k}' for k in unknown]}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}{k}") for k, v in data.items()}
    return cls(**kwargs)


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
