"""Model folders: ``weights.safetensors`` (tensors only: loading runs no code) and ``model.json`` (the model card,
:mod:`bratsseg.models.card`). Loading weights needs PyTorch and safetensors, nothing of the NIfTI stack."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bratsseg.atomic import atomic_dir
from bratsseg.errors import BratsSegError
from bratsseg.models.card import CARD_FILE, WEIGHT_DTYPES, ModelCard, read_card, write_card
from bratsseg.models.unet import UNet

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = CARD_FILE


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


def save_model(
    path: str | Path, model: nn.Module, card: ModelCard | None = None, weights_dtype: str = "float32"
) -> Path:
    """Write a model folder atomically (a temporary folder renamed into place) and return it.

    The card's architecture and weights dtype are set from ``model`` and ``weights_dtype``, so they always
    describe the weights beside them. ``weights_dtype="float16"`` stores floating-point tensors in half
    precision (half the file); they are loaded back as float32 (see :func:`load_model`), so normalisation and
    the sigmoid stay in float32.
    """
    if weights_dtype not in WEIGHT_DTYPES:
        raise BratsSegError(f"weights_dtype must be float32 or float16, got {weights_dtype!r}")
    inner = getattr(model, "module", model)
    if not isinstance(inner, UNet):
        raise BratsSegError(f"can only save a bratsseg UNet, got {type(inner).__name__}")
    card = (card or ModelCard(architecture=inner.config)).replace(
        architecture=inner.config, weights_dtype=weights_dtype
    )
    state = clean_state_dict(model)
    if weights_dtype == "float16":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE))
        write_card(tmp, card)
    return Path(path)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, ModelCard]:
    """The model (in eval mode) and its card from a model folder."""
    path = Path(path)
    card = read_card(path)
    model = UNet(card.architecture)
    try:
        state = load_file(str(path / WEIGHTS_FILE), device=str(device))
    except FileNotFoundError:
        raise BratsSegError(f"model folder has no {WEIGHTS_FILE}", path) from None
    except Exception as err:
        raise BratsSegError(f"cannot read {WEIGHTS_FILE} ({type(err).__name__}: {err})", path) from err
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    expected = model.state_dict()
    wrong = [k for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise BratsSegError(
            f"weights do not fit the architecture in {CARD_FILE}: {len(wrong)} tensors differ in shape, e.g. {k} "
            f"{list(state[k].shape)} in {WEIGHTS_FILE} vs {list(expected[k].shape)} in {CARD_FILE}",
            path,
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BratsSegError(
            f"weights do not fit the architecture in {CARD_FILE}: missing {missing[:3]}, unexpected {unexpected[:3]}",
            path,
        )
    return model.to(device).eval(), card
