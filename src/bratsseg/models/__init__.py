"""The U-Net (2-D or 3-D) and its model files."""

from bratsseg.models.unet import UNet, UNetConfig, count_parameters, slicewise_forward

__all__ = ["UNet", "UNetConfig", "count_parameters", "slicewise_forward"]
