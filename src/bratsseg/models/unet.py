"""One explicit U-Net for 2-D or 3-D inputs, with per-stage widths in a frozen config.

Anatomy (``L`` = number of levels = ``len(widths)``)::

    encoder[0]      2 x (conv3 -> norm -> act), stride 1          widths[0]   full resolution
    encoder[i]      conv3 stride 2 -> norm -> act, conv3 -> ...    widths[i]   1 / 2**i      (i = 1 .. L-1)
    decoder[i]      transposed conv2 stride 2 (widths[i+1] -> widths[i]), concat skip encoder[i],
                    2 x (conv3 -> norm -> act)                     widths[i]   (i = L-2 .. 0)
    head            conv1 -> 3 logits (WT, TC, ET)
    aux_heads[i]    conv1 on decoder[i] outputs, i = 1 .. L-2, when deep supervision is on

Two options make the finest level, where most of the time goes on a CPU, about twice as cheap:
``skip="add"`` adds the skip to the upsampled features instead of concatenating them (the decoder's first
convolution reads ``widths[i]`` channels, not twice that), and ``top_convs=1`` gives ``encoder[0]`` and
``decoder[0]`` one convolution each instead of two.

``decoder[i]`` mirrors ``encoder[i]``: the skip connection ties their widths, so structured pruning
addresses the pair by one index. The model knows nothing of files or data.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bratsseg.errors import BratsSegError
from bratsseg.models.config import UNetConfig
from bratsseg.padding import crop_to, pad_to_multiple


def _conv(dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    return nn.Conv3d if dims == 3 else nn.Conv2d


def _norm(kind: str, dims: int, channels: int) -> nn.Module:
    if kind == "instance":
        return (nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d)(channels, affine=True)
    if kind == "batch":
        return (nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d)(channels)
    return nn.GroupNorm(min(8, channels) if channels % min(8, channels) == 0 else 1, channels)


class ConvNormAct(nn.Sequential):
    def __init__(self, cfg: UNetConfig, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(
            _conv(cfg.spatial_dims)(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
            _norm(cfg.norm, cfg.spatial_dims, cout),
            nn.LeakyReLU(cfg.negative_slope, inplace=True),
        )


class EncoderStage(nn.Sequential):
    def __init__(self, cfg: UNetConfig, cin: int, cout: int, downsample: bool, convs: int = 2) -> None:
        first = ConvNormAct(cfg, cin, cout, stride=2 if downsample else 1)
        super().__init__(first, *([ConvNormAct(cfg, cout, cout)] if convs == 2 else []))


class DecoderStage(nn.Module):
    """Upsample the deeper features, merge the mirrored encoder stage's output (concatenate, or add), convolve
    once or twice."""

    def __init__(self, cfg: UNetConfig, cdeep: int, cskip: int, convs: int = 2) -> None:
        super().__init__()
        up = nn.ConvTranspose3d if cfg.spatial_dims == 3 else nn.ConvTranspose2d
        self.add = cfg.skip == "add"
        self.up = up(cdeep, cskip, kernel_size=2, stride=2, bias=False)
        first = ConvNormAct(cfg, cskip if self.add else 2 * cskip, cskip)
        self.convs = nn.Sequential(first, *([ConvNormAct(cfg, cskip, cskip)] if convs == 2 else []))

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        up = self.up(deep)
        return self.convs(up + skip if self.add else torch.cat([up, skip], dim=1))


class UNet(nn.Module):
    """U-Net on ``(B, in_channels, H, W[, D])``; returns logits ``(B, 3, H, W[, D])`` of the WT, TC, ET regions.

    Any spatial size is accepted: the input is zero-padded up to a multiple of :attr:`UNetConfig.divisor`
    and the output cropped back. With deep supervision, in training mode, returns a list: full-resolution
    logits first, then lower-resolution ones (from ``decoder[1]``, ``decoder[2]``, ...) for the loss.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or UNetConfig()
        w = cfg.widths
        self.encoder = nn.ModuleList(
            EncoderStage(
                cfg,
                cfg.in_channels if i == 0 else w[i - 1],
                w[i],
                downsample=i > 0,
                convs=cfg.top_convs if i == 0 else 2,
            )
            for i in range(cfg.levels)
        )
        self.decoder = nn.ModuleList(
            DecoderStage(cfg, w[i + 1], w[i], convs=cfg.top_convs if i == 0 else 2) for i in range(cfg.levels - 1)
        )
        conv = _conv(cfg.spatial_dims)
        self.head = conv(w[0], cfg.out_channels, kernel_size=1)
        self.aux_heads = nn.ModuleList(
            conv(w[i], cfg.out_channels, kernel_size=1) for i in range(1, cfg.levels - 1) if cfg.deep_supervision
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=self.config.negative_slope)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.config.prior_channels:  # a refinement starts as the identity on the previous stage
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        cfg = self.config
        if x.ndim != cfg.spatial_dims + 2 or x.shape[1] != cfg.in_channels:
            raise BratsSegError(
                f"expected input (B, {cfg.in_channels}, {'H, W, D' if cfg.spatial_dims == 3 else 'H, W'}), "
                f"got {tuple(x.shape)}"
            )
        size = x.shape[2:]
        padded = pad_to_multiple(x, cfg.divisor)
        out = self.forward_padded(padded)
        if padded is not x:
            if isinstance(out, list):
                out[0] = crop_to(out[0], size)
            else:
                out = crop_to(out, size)
        return out

    def forward_padded(self, x: Tensor) -> Tensor | list[Tensor]:
        """The network proper, for inputs whose spatial sizes are multiples of :attr:`UNetConfig.divisor`
        (what ONNX export traces: no shape-dependent Python branches)."""
        cfg = self.config
        prior = x[:, -cfg.prior_channels :] if cfg.prior_channels else x
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        outputs = []
        for i in reversed(range(cfg.levels - 1)):
            x = self.decoder[i](x, skips[i])
            if self.training and cfg.deep_supervision and 1 <= i <= len(self.aux_heads):
                outputs.append(self.aux_heads[i - 1](x))
        logits = self.head(x)
        if cfg.prior_channels:
            logits = logits + prior_logit(prior)
        if self.training and cfg.deep_supervision:
            return [logits, *reversed(outputs)]
        return logits


PRIOR_EPS = 1e-4  # a previous stage's probabilities are clipped to [eps, 1 - eps] before their logit (+-9.2)


def prior_logit(p: Tensor) -> Tensor:
    """The logit of a previous stage's probabilities, clipped so that 0 and 1 stay finite."""
    p = p.float().clamp(PRIOR_EPS, 1 - PRIOR_EPS)
    return torch.log(p) - torch.log1p(-p)


def memory_format(spatial_dims: int, device: str | torch.device) -> torch.memory_format:
    """The memory layout that runs a model fastest: channels-last for 3-D on the CPU (oneDNN's convolutions
    then skip a reorder per layer: 1.1-1.4x at inference, 1.4x in training on 2 cores), the default otherwise."""
    if spatial_dims == 3 and torch.device(device).type == "cpu":
        return torch.channels_last_3d
    return torch.contiguous_format


def count_parameters(model: nn.Module, nonzero: bool = False) -> int:
    """Number of parameters (or of non-zero parameter values)."""
    if nonzero:
        return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()))


def slicewise_forward(model: nn.Module, volume: Tensor, batch_size: int = 32) -> Tensor:
    """Run a 2-D model over every axial slice of ``(C, X, Y, Z)`` (last axis = axial in BraTS' LPS grid),
    ``batch_size`` slices at a time; returns ``(out_channels, X, Y, Z)``."""
    if volume.ndim != 4:
        raise BratsSegError(f"expected a volume (C, X, Y, Z), got {tuple(volume.shape)}")
    slices = volume.permute(3, 0, 1, 2)  # (Z, C, X, Y)
    outs = [model(slices[i : i + batch_size]) for i in range(0, slices.shape[0], batch_size)]
    return torch.cat(outs).permute(1, 2, 3, 0)
