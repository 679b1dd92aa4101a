"""BCE-with-logits + soft Dice on the overlapping region channels (WT, TC, ET).

Not MONAI's ``DiceCELoss``: its cross-entropy is a softmax over channels, wrong for overlapping regions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bratsseg.errors import BratsSegError


def soft_dice_loss(
    logits: Tensor,
    target: Tensor,
    batch_dice: bool = False,
    smooth: float = 1e-5,
    channel_weights: Tensor | None = None,
) -> Tensor:
    """``1 - mean soft Dice`` of sigmoid(logits) against 0/1 ``target``, both ``(B, C, *spatial)``.

    Per sample and channel by default; ``batch_dice`` pools the batch per channel first (as nnU-Net does),
    so that a 2-D slice without tumour does not give a Dice of 0 or 1 by itself. ``channel_weights`` ``(C,)``:
    the channels' Dice averaged with these weights instead of equally.
    """
    prob = torch.sigmoid(logits.float())
    target = target.float()
    dims = tuple(range(2, logits.ndim))
    if batch_dice:
        dims = (0, *dims)
    intersection = (prob * target).sum(dims)
    denominator = prob.sum(dims) + target.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    if channel_weights is None:
        return 1 - dice.mean()
    w = channel_weights.to(dice.device, dice.dtype)
    return 1 - ((dice * w).sum(-1) / w.sum()).mean()


class RegionLoss(nn.Module):
    """``bce_weight * BCE + dice_weight * (1 - soft Dice)`` on region logits ``(B, 3, *spatial)``.

    ``region_weights`` (WT, TC, ET): each region's BCE and Dice terms weighted so (normalised to a mean of 1);
    equal weights give the plain loss, computed as before.

    With deep supervision, pass a list of logits (full resolution first); the targets are downsampled
    (max-pooled, so thin structures survive) to each size and the terms weighted 1, 1/2, 1/4, ... normalised.
    """

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        batch_dice: bool = False,
        region_weights: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        if bce_weight < 0 or dice_weight < 0 or bce_weight + dice_weight == 0:
            raise BratsSegError(f"loss weights must be >= 0 and not both 0, got bce {bce_weight}, dice {dice_weight}")
        weights = [float(w) for w in region_weights]
        if min(weights) < 0 or sum(weights) == 0:
            raise BratsSegError(f"region loss weights must be >= 0 and not all 0, got {weights}")
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.batch_dice = batch_dice
        # None: equal weights, the plain loss (bit for bit what it was before the option)
        self.region_weights = None if len(set(weights)) == 1 else torch.tensor(weights) * len(weights) / sum(weights)

    def single(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.shape != target.shape:
            raise BratsSegError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
        loss = logits.new_zeros((), dtype=torch.float32)
        w = self.region_weights
        if self.bce_weight:
            if w is None:
                bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
            else:
                per_voxel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
                shape = (1, -1) + (1,) * (logits.ndim - 2)
                bce = (per_voxel * w.to(per_voxel.device).view(shape)).mean()
            loss = loss + self.bce_weight * bce
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, self.batch_dice, channel_weights=w)
        return loss

    def forward(self, logits: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        if isinstance(logits, Tensor):
            return self.single(logits, target)
        weights = [0.5**i for i in range(len(logits))]
        total = sum(weights)
        loss = logits[0].new_zeros((), dtype=torch.float32)
        for w, out in zip(weights, logits, strict=True):
            t = target if out.shape[2:] == target.shape[2:] else _downsample_target(target, out.shape[2:])
            loss = loss + (w / total) * self.single(out, t)
        return loss


def _downsample_target(target: Tensor, size: Sequence[int]) -> Tensor:
    pool = F.adaptive_max_pool3d if target.ndim == 5 else F.adaptive_max_pool2d
    return pool(target.float(), tuple(size))
