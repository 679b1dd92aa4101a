"""Model files: a folder with ``weights.safetensors`` (tensors only: loading runs no code) and ``model.json``
(architecture widths, label convention, preprocessing, thresholds, inference settings, provenance)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bratsseg.data.preprocess import PreprocessConfig
from bratsseg.errors import BratsSegError
from bratsseg.io.discovery import MODALITIES
from bratsseg.labels import REGIONS
from bratsseg.models.unet import UNet, UNetConfig

MODEL_FORMAT = "bratsseg-model"
MODEL_FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "model.json"


def clean_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors without DDP's ``module.`` or torch.compile's ``_orig_mod.`` prefixes, contiguous."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    out = {}
    for k, v in inner.state_dict().items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v.detach().cpu().contiguous()
    return out


def default_model_meta(config: UNetConfig, convention: str = "brats2021") -> dict[str, Any]:
    return {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "architecture": config.to_dict(),
        "convention": convention,
        "modalities": list(MODALITIES),
        "regions": list(REGIONS),
        "preprocessing": {**PreprocessConfig().__dict__, "normalisation": "zscore over brain voxels"},
        "thresholds": {r: 0.5 for r in REGIONS},
        "inference": {"roi_size": None, "overlap": 0.5, "downsample": 1},
        "training": {},
    }


def save_model(
    path: str | Path, model: nn.Module, meta: dict[str, Any] | None = None, weights_dtype: str = "float32"
) -> Path:
    """Write a model folder atomically (a temporary folder renamed into place) and return it.

    ``weights_dtype="float16"`` stores floating-point tensors in half precision (half the file); they are
    loaded back as float32 (see :func:`load_model`), so normalisation and the sigmoid stay in float32.
    """
    if weights_dtype not in ("float32", "float16"):
        raise BratsSegError(f"weights_dtype must be float32 or float16, got {weights_dtype!r}")
    path = Path(path)
    inner = getattr(model, "module", model)
    if not isinstance(inner, UNet):
        raise BratsSegError(f"can only save a bratsseg UNet, got {type(inner).__name__}")
    meta = {**default_model_meta(inner.config), **(meta or {})}
    meta["architecture"] = inner.config.to_dict()
    meta["weights_dtype"] = weights_dtype
    state = clean_state_dict(model)
    if weights_dtype == "float16":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=1))
        old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_model_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise BratsSegError(f"not a bratsseg model folder (no {CONFIG_FILE})", path) from None
    except ValueError as err:
        raise BratsSegError(f"{CONFIG_FILE} is not valid JSON ({err})", path) from err
    if meta.get("format") != MODEL_FORMAT:
        raise BratsSegError(f"{CONFIG_FILE} is not a {MODEL_FORMAT} file", path)
    return dict(meta)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, dict[str, Any]]:
    """The model (in eval mode) and its metadata from a model folder."""
    path = Path(path)
    meta = read_model_meta(path)
    model = UNet(UNetConfig.from_dict(meta["architecture"]))
    try:
        state = load_file(str(path / WEIGHTS_FILE), device=str(device))
    except FileNotFoundError:
        raise BratsSegError(f"model folder has no {WEIGHTS_FILE}", path) from None
    except Exception as err:
        raise BratsSegError(f"cannot read {WEIGHTS_FILE} ({type(err).__name__}: {err})", path) from err
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BratsSegError(
            f"weights do not fit the architecture in {CONFIG_FILE}: missing {missing[:3]}, unexpected {unexpected[:3]}",
            path,
        )
    return model.to(device).eval(), meta
