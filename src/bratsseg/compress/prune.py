"""Pruning a trained U-Net: global magnitude pruning (zeros) and encoder-decoder pair pruning (a smaller net).

Global magnitude pruning ranks the absolute values of every convolution weight of the network jointly and
zeroes the smallest fraction ``p`` (``torch.nn.utils.prune.global_unstructured``), made permanent. The
tensors keep their shapes: zeros only pay off once the file is compressed or stored sparsely.

Pair pruning removes channels. A channel group is the output of one convolution; the groups of U-Net stage
``i`` are (see :mod:`bratsseg.models.unet`)::

    encoder[i][j] outputs           the last one, B_i, is the skip tied to decoder[i]
    U_i   decoder[i].up output      with added skips (``skip="add"``) summed with B_i: one group with it
    decoder[i].convs[j] outputs     the last one feeds decoder[i-1].up, or the head (and an auxiliary head)

Every group of stage ``i`` keeps the same number of channels, ``round(width_i * (1 - ratio_i))``, so the result
is an ordinary :class:`UNet` with smaller widths in its config, of the same layout (concatenated or added skips,
one or two convolutions at the finest level). Which channels a group keeps is decided per group by an
importance score: a channel's scale after instance normalisation (``|gamma|``; for the un-normalised ``U_i``,
the L1 norm of its filter) times the L1 norm of the weights that read it in every consumer. The skip channels
``B_i`` are read by the next encoder stage *and* by the mirrored decoder stage, so an encoder filter and the
decoder's input channels tied to it are removed together; with added skips the upsampled channel they are
added to goes with them (the two scores, each divided by its mean, summed).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
    return None


@dataclass(frozen=True)
class PairPlan:
    """Which channels of each group :func:`pair_prune` keeps (indices into the original model's channels).

    ``encoder[i][j]``: the output of ``encoder[i][j]`` (the last one is the skip ``B_i``); ``up[i]``: the output
    of ``decoder[i].up`` (with added skips the same channels as ``B_i``: they are summed); ``decoder[i][j]``: the
    output of ``decoder[i].convs[j]``.
    """

    widths: tuple[int, ...]
    encoder: tuple[tuple[Tensor, ...], ...]
    up: tuple[Tensor, ...]
    decoder: tuple[tuple[Tensor, ...], ...]


def _normalised(score: Tensor) -> Tensor:
    return score / score.mean().clamp_min(1e-12)


def pair_plan(model: UNet, ratio: float | Sequence[float]) -> PairPlan:
    """The channels :func:`pair_prune` keeps, scored as the module docstring says."""
    cfg = model.config
    refusal = pair_prune_refusal(cfg)
    if refusal:
        raise BratsSegError(refusal)
    levels = cfg.levels
    ratios = stage_ratios(ratio, levels)
    widths = tuple(max(1, round(w * (1 - r))) for w, r in zip(cfg.widths, ratios, strict=True))
    enc: Any = model.encoder
    dec: Any = model.decoder
    add = cfg.skip == "add"
    slope = cfg.negative_slope

    def spread(block: Any, w: int) -> Tensor:  # block = ConvNormAct
        return _act_stats(block[1], w, slope)[1]

    encoder: list[tuple[Tensor, ...]] = []
    up: list[Tensor] = []
    decoder: list[tuple[Tensor, ...]] = []
    for i in range(levels):
        w, k = cfg.widths[i], widths[i]
        stage = [_keep(spread(enc[i][j], w) * _reads(enc[i][j + 1][0], 0, w), k) for j in range(len(enc[i]) - 1)]
        # B_i: read by the next encoder stage and by the mirrored decoder stage (skip), or by the deepest up
        if i == levels - 1:
            encoder.append((*stage, _keep(spread(enc[i][-1], w) * _reads(dec[i - 1].up, 0, w), k)))
            continue
        skip_reads = _reads(dec[i].convs[0][0], 0 if add else w, w)
        score_b = spread(enc[i][-1], w) * (_reads(enc[i + 1][0][0], 0, w) + skip_reads)
        score_u = _out_l1(dec[i].up) * _reads(dec[i].convs[0][0], 0, w)
        if add:  # the upsampled and the skip channel are summed: they go together
            keep_b = keep_u = _keep(_normalised(score_b) + _normalised(score_u), k)
        else:
            keep_b, keep_u = _keep(score_b, k), _keep(score_u, k)
        encoder.append((*stage, keep_b))
        up.append(keep_u)
        convs = dec[i].convs
        stage = [_keep(spread(convs[j], w) * _reads(convs[j + 1][0], 0, w), k) for j in range(len(convs) - 1)]
        consumer = model.head if i == 0 else dec[i - 1].up
        reads = _reads(consumer, 0, w)
        if cfg.deep_supervision and i >= 1 and i - 1 < len(model.aux_heads):
            reads = reads + _reads(model.aux_heads[i - 1], 0, w)
        decoder.append((*stage, _keep(spread(convs[-1], w) * reads, k)))
    return PairPlan(widths, tuple(encoder), tuple(up), tuple(decoder))


def pair_prune(model: UNet, ratio: float | Sequence[float]) -> UNet:
    """A smaller :class:`UNet`: in every stage ``i`` a fraction ``ratio[i]`` of the channels of each group (see
    the module docstring) removed, the skip channels of an encoder stage together with the decoder inputs
    tied to them (and, with added skips, with the upsampled channels they are added to). Works on every layout
    the trainer makes (concatenated or added skips, one or two convolutions at the finest level). Returns a new
    model whose config holds the smaller widths, with the kept weights copied."""
    cfg = model.config
    plan = pair_plan(model, ratio)
    levels = cfg.levels
    enc: Any = model.encoder
    dec: Any = model.decoder
    small = UNet(replace(cfg, widths=plan.widths))
    senc: Any = small.encoder
    sdec: Any = small.decoder
    for i in range(levels):
        previous = torch.arange(cfg.in_channels) if i == 0 else plan.encoder[i - 1][-1]
        for j, kept in enumerate(plan.encoder[i]):
            _copy_block(enc[i][j], senc[i][j], kept, previous)
            previous = kept
    for i in range(levels - 1):
        deeper = plan.encoder[levels - 1][-1] if i == levels - 2 else plan.decoder[i + 1][-1]
        _copy_conv(dec[i].up, sdec[i].up, plan.up[i], deeper)
        w = cfg.widths[i]
        previous = plan.up[i] if cfg.skip == "add" else torch.cat([plan.up[i], w + plan.encoder[i][-1]])
        for j, kept in enumerate(plan.decoder[i]):
            _copy_block(dec[i].convs[j], sdec[i].convs[j], kept, previous)
            previous = kept
    all_out = torch.arange(cfg.out_channels)
    slope = cfg.negative_slope
    _copy_conv(model.head, small.head, all_out, plan.decoder[0][-1])
    _compensate(model.head, small.head, dec[0].convs[-1], plan.decoder[0][-1], slope)
    for j, aux in enumerate(model.aux_heads):
        _copy_conv(aux, small.aux_heads[j], all_out, plan.decoder[j + 1][-1])
        _compensate(aux, small.aux_heads[j], dec[j + 1].convs[-1], plan.decoder[j + 1][-1], slope)
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
