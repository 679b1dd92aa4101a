"""Overlap and distance metrics on region masks, following the BraTS conventions for empty masks."""

from bratsseg.metrics.overlap import dice, dice_per_region

__all__ = ["dice", "dice_per_region"]
