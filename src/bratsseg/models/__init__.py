"""The U-Net (2-D or 3-D), its model card and its model files.

The names below are imported on first use, so that reading a model card (:mod:`bratsseg.models.card`) does not
import PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bratsseg.models.config import UNetConfig
    from bratsseg.models.unet import UNet, count_parameters, slicewise_forward

__all__ = ["UNet", "UNetConfig", "count_parameters", "slicewise_forward"]


def __getattr__(name: str) -> Any:
    if name == "UNetConfig":
        from bratsseg.models.config import UNetConfig

        return UNetConfig
    if name in ("UNet", "count_parameters", "slicewise_forward"):
        from bratsseg.models import unet

        return getattr(unet, name)
    raise AttributeError(f"module 'bratsseg.models' has no attribute {name!r}")
