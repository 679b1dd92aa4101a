"""Pruning a trained U-Net: global magnitude pruning (zeros) and encoder-decoder pair pruning (a smaller net).

Global magnitude pruning ranks the absolute values of every convolution weight of the network jointly and
zeroes the smallest fraction ``p`` (``torch.nn.utils.prune.global_unstructured``), made permanent. The
tensors keep their shapes: zeros only pay off once the file is compressed or stored sparsely.

Pair pruning removes channels. A channel group is the output of one convolution; the groups of U-Net stage
``i`` are (see :mod:`bratsseg.models.unet`)::

    A_i   encoder[i][0] output            B_i   encoder[i][1] output = the skip tied to decoder[i]
    U_i   decoder[i].up output            D1_i  decoder[i].convs[0] output
    D2_i  decoder[i].convs[1] output (feeds decoder[i-1].up, or the head)

Every group of stage ``i`` keeps the same number of channels, ``round(width_i * (1 - ratio_i))``, so the result
is an ordinary :class:`UNet` with smaller widths in its config. Which channels a group keeps is decided per
group by an importance score: a channel's scale after instance normalisation (``|gamma|``; for the
un-normalised ``U_i``, the L1 norm of its filter) times the L1 norm of the weights that read it in every
consumer. The skip channels ``B_i`` are read by the next encoder stage *and* by the mirrored decoder stage,
so an encoder filter and the decoder's input channels tied to it are removed together.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from bratsseg.errors import BratsSegError
from bratsseg.models.unet import UNet, UNetConfig

CONV_TYPES = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def conv_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, "weight")`` of every convolution and transposed convolution."""
    return [(m, "weight") for m in model.modules() if isinstance(m, CONV_TYPES)]


def global_magnitude_prune(model: UNet, amount: float) -> UNet:
    """A copy of ``model`` with the smallest-magnitude fraction ``amount`` of all convolution weights set to
    zero, ranked jointly across layers; the pruning is made permanent (plain tensors, no masks)."""
    if not 0.0 <= amount < 1.0:
        raise BratsSegError(f"sparsity must be in [0, 1), got {amount}")
    pruned = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    params = conv_weights(pruned)  # global_unstructured flattens them with .view: channels-last would not do
    if amount > 0:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
        for module, name in params:
            prune.remove(module, name)
    return pruned


def conv_sparsity(model: nn.Module) -> float:
    """Fraction of convolution weights that are exactly zero."""
    total = zeros = 0
    for module, name in conv_weights(model):
        w = getattr(module, name)
        total += w.numel()
        zeros += int((w == 0).sum())
    return zeros / total if total else 0.0


# ---- encoder-decoder pair (structured) pruning ----


def _reads(conv: Any, lo: int, n: int) -> Tensor:
    """L1 norm of the weights with which ``conv`` reads its input channels ``lo .. lo + n - 1``."""
    w = conv.weight.detach().abs()
    if isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d)):  # (in, out, *k)
        return w[lo : lo + n].flatten(1).sum(1)
    return w[:, lo : lo + n].transpose(0, 1).flatten(1).sum(1)  # (out, in, *k)


def _out_l1(conv: Any) -> Tensor:
    w = conv.weight.detach().abs()
    if isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return w.transpose(0, 1).flatten(1).sum(1)
    return w.flatten(1).sum(1)


_Z = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.0005, 0.9995, 1000))  # N(0, 1) quantiles


def _act_stats(norm: Any, channels: int, slope: float) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of each channel after normalisation and LeakyReLU, taking the normalised
    values as N(0, 1): ``LeakyReLU(gamma * z + beta)``. A channel with a large ``beta`` against its ``gamma``
    is nearly constant: it carries little information, but its mean still shifts a consumer without
    normalisation (the head), which :func:`pair_prune` compensates in that consumer's bias."""
    weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
    gamma = torch.ones(channels) if weight is None else weight.detach()
    beta = torch.zeros(channels) if bias is None else bias.detach()
    act = torch.nn.functional.leaky_relu(gamma[:, None] * _Z[None] + beta[:, None], slope)
    return act.mean(1), act.std(1)


def _keep(score: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` highest scores, in increasing channel order."""
    return torch.sort(torch.topk(score, k).indices).values


def stage_ratios(ratio: float | Sequence[float], levels: int) -> list[float]:
    ratios = [float(ratio)] * levels if isinstance(ratio, (int, float)) else [float(r) for r in ratio]
    if len(ratios) != levels:
        raise BratsSegError(f"give one ratio or one per stage ({levels}), got {len(ratios)}")
    if not all(0.0 <= r < 1.0 for r in ratios):
        raise BratsSegError(f"pruning ratios must be in [0, 1), got {ratios}")
    return ratios


def pair_prune_refusal(cfg: UNetConfig) -> str | None:
    """Why :func:`pair_prune` cannot prune a model of this architecture, or None when it can."""
    if cfg.norm == "group":
        return "pair pruning supports instance or batch norm (group norm ties channels in groups)"
    if cfg.skip != "concat" or cfg.top_convs != 2:
        return (
            "pair pruning supports the classic layout only (skip='concat', top_convs=2); this model has "
            f"skip={cfg.skip!r}, top_convs={cfg.top_convs}: use global magnitude pruning, or retrain narrower widths"
        )
    return None


def pair_prune(model: UNet, ratio: float | Sequence[float]) -> UNet:
    """A smaller :class:`UNet`: in every stage ``i`` a fraction ``ratio[i]`` of the channels of each group (see
    the module docstring) removed, the skip channels of an encoder stage together with the decoder inputs
    tied to them. Returns a new model whose config holds the smaller widths, with the kept weights copied."""
    cfg = model.config
    refusal = pair_prune_refusal(cfg)
    if refusal:
        raise BratsSegError(refusal)
    levels = cfg.levels
    ratios = stage_ratios(ratio, levels)
    widths = [max(1, round(w * (1 - r))) for w, r in zip(cfg.widths, ratios, strict=True)]
    enc: Any = model.encoder
    dec: Any = model.decoder

    keep_a: dict[int, Tensor] = {}
    keep_b: dict[int, Tensor] = {}
    keep_u: dict[int, Tensor] = {}
    keep_d1: dict[int, Tensor] = {}
    keep_d2: dict[int, Tensor] = {}
    slope = cfg.negative_slope
    spread = lambda block, w: _act_stats(block[1], w, slope)[1]  # noqa: E731  block = ConvNormAct
    for i in range(levels):
        w = cfg.widths[i]
        # A_i: read by encoder[i][1]
        score = spread(enc[i][0], w) * _reads(enc[i][1][0], 0, w)
        keep_a[i] = _keep(score, widths[i])
        # B_i: read by the next encoder stage and by the mirrored decoder stage (skip), or by the deepest up
        reads = torch.zeros(w)
        if i < levels - 1:
            reads += _reads(enc[i + 1][0][0], 0, w) + _reads(dec[i].convs[0][0], w, w)
        else:
            reads += _reads(dec[i - 1].up, 0, w)
        keep_b[i] = _keep(spread(enc[i][1], w) * reads, widths[i])
        if i == levels - 1:
            continue
        keep_u[i] = _keep(_out_l1(dec[i].up) * _reads(dec[i].convs[0][0], 0, w), widths[i])
        score = spread(dec[i].convs[0], w) * _reads(dec[i].convs[1][0], 0, w)
        keep_d1[i] = _keep(score, widths[i])
        consumer = model.head if i == 0 else dec[i - 1].up
        reads = _reads(consumer, 0, w)
        if cfg.deep_supervision and i >= 1 and i - 1 < len(model.aux_heads):
            reads = reads + _reads(model.aux_heads[i - 1], 0, w)
        keep_d2[i] = _keep(spread(dec[i].convs[1], w) * reads, widths[i])

    small = UNet(replace(cfg, widths=tuple(widths)))
    all_in = torch.arange(cfg.in_channels)
    all_out = torch.arange(cfg.out_channels)
    senc: Any = small.encoder
    sdec: Any = small.decoder
    for i in range(levels):
        _copy_block(enc[i][0], senc[i][0], keep_a[i], all_in if i == 0 else keep_b[i - 1])
        _copy_block(enc[i][1], senc[i][1], keep_b[i], keep_a[i])
    for i in range(levels - 1):
        deeper = keep_b[levels - 1] if i == levels - 2 else keep_d2[i + 1]
        _copy_conv(dec[i].up, sdec[i].up, keep_u[i], deeper)
        w = cfg.widths[i]
        _copy_block(dec[i].convs[0], sdec[i].convs[0], keep_d1[i], torch.cat([keep_u[i], w + keep_b[i]]))
        _copy_block(dec[i].convs[1], sdec[i].convs[1], keep_d2[i], keep_d1[i])
    _copy_conv(model.head, small.head, all_out, keep_d2[0])
    _compensate(model.head, small.head, dec[0].convs[1], keep_d2[0], slope)
    for j, aux in enumerate(model.aux_heads):
        _copy_conv(aux, small.aux_heads[j], all_out, keep_d2[j + 1])
        _compensate(aux, small.aux_heads[j], dec[j + 1].convs[1], keep_d2[j + 1], slope)
    return small.train(model.training)


@torch.no_grad()
def _compensate(src_head: Any, dst_head: Any, block: Any, kept: Tensor, slope: float) -> None:
    """Fold the mean activation of the removed input channels of a head (a 1x1 convolution with a bias and no
    normalisation after it) into its bias, so that removing them does not shift every logit."""
    if dst_head.bias is None:
        return
    channels = src_head.weight.shape[1]
    removed = torch.ones(channels, dtype=torch.bool)
    removed[kept] = False
    mean, _ = _act_stats(block[1], channels, slope)
    w = src_head.weight.detach().flatten(2).sum(2)  # (out, in)
    dst_head.bias += (w[:, removed] * mean[removed]).sum(1)


@torch.no_grad()
def _copy_conv(src: Any, dst: Any, out_idx: Tensor, in_idx: Tensor) -> None:
    w = src.weight
    if isinstance(src, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
        dst.weight.copy_(w[in_idx][:, out_idx])
    else:
        dst.weight.copy_(w[out_idx][:, in_idx])
    if src.bias is not None:
        dst.bias.copy_(src.bias[out_idx])


@torch.no_grad()
def _copy_block(src: Any, dst: Any, out_idx: Tensor, in_idx: Tensor) -> None:
    """Copy a ConvNormAct: the convolution's kept filters and inputs, the normalisation's kept channels."""
    _copy_conv(src[0], dst[0], out_idx, in_idx)
    s_norm, d_norm = src[1], dst[1]
    for name in ("weight", "bias", "running_mean", "running_var"):
        t = getattr(s_norm, name, None)
        if t is not None:
            getattr(d_norm, name).copy_(t[out_idx])


# ---- cost ----


def conv_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Floating-point operations (2 per multiply-add) of the convolutions in one forward pass on an input of
    ``input_shape`` (``(B, C, *spatial)``); normalisation and activations are not counted."""
    total = 0

    def hook(module: Any, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        k = int(torch.tensor(module.weight.shape[2:]).prod())
        if isinstance(module, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
            total += 2 * inputs[0].numel() * module.weight.shape[1] * k
        else:
            total += 2 * output.numel() * module.weight.shape[1] * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, CONV_TYPES)]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(*input_shape))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total
