"""BCE-with-logits + soft Dice on the overlapping region channels (WT, TC, ET).

Not MONAI's ``DiceCELoss``: its cross-entropy is a softmax over channels, wrong for overlapping regions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bratsseg.errors import BratsSegError


def soft_dice_loss(logits: Tensor, target: Tensor, batch_dice: bool = False, smooth: float = 1e-5) -> Tensor:
    """``1 - mean soft Dice`` of sigmoid(logits) against 0/1 ``target``, both ``(B, C, *spatial)``.

    Per sample and channel by default; ``batch_dice`` pools the batch per channel first (as nnU-Net does),
    so that a 2-D slice without tumour does not give a Dice of 0 or 1 by itself.
    """
    prob = torch.sigmoid(logits.float())
    target = target.float()
    dims = tuple(range(2, logits.ndim))
    if batch_dice:
        dims = (0, *dims)
    intersection = (prob * target).sum(dims)
    denominator = prob.sum(dims) + target.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return 1 - dice.mean()


class RegionLoss(nn.Module):
    """``bce_weight * BCE + dice_weight * (1 - soft Dice)`` on region logits ``(B, 3, *spatial)``.

    With deep supervision, pass a list of logits (full resolution first); the targets are downsampled
    (max-pooled, so thin structures survive) to each size and the terms weighted 1, 1/2, 1/4, ... normalised.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, batch_dice: bool = False) -> None:
        super().__init__()
        if bce_weight < 0 or dice_weight < 0 or bce_weight + dice_weight == 0:
            raise BratsSegError(f"loss weights must be >= 0 and not both 0, got bce {bce_weight}, dice {dice_weight}")
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.batch_dice = batch_dice

    def single(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.shape != target.shape:
            raise BratsSegError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.bce_weight:
            loss = loss + self.bce_weight * F.binary_cross_entropy_with_logits(logits.float(), target.float())
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, self.batch_dice)
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
