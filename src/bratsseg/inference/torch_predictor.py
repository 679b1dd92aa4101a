"""The PyTorch predictor: a :class:`~bratsseg.models.unet.UNet` run by :mod:`bratsseg.inference.sliding`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bratsseg.inference.predictor import Predictor
from bratsseg.inference.sliding import predict_probabilities
from bratsseg.models.card import ModelCard
from bratsseg.models.files import load_model
from bratsseg.models.unet import UNet, memory_format


class TensorPredictor(Predictor):
    """A predictor whose network maps a ``(B, C_in, *spatial)`` tensor to logits (:meth:`logits_batch`); pooling,
    sliding windows, upsampling, mirroring and the sigmoid are :func:`predict_probabilities`'s, in PyTorch."""

    device: torch.device = torch.device("cpu")

    def logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *spatial)`` -> ``(B, 3, *spatial)`` logits."""
        raise NotImplementedError

    def probabilities(self, image: NDArray[Any]) -> NDArray[np.float32]:
        settings = self.card.inference
        x = torch.from_numpy(np.asarray(image, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            probs = predict_probabilities(
                self.logits_batch,
                x,
                self.spatial_dims,
                settings.roi_size,
                settings.overlap,
                downsample=settings.downsample,
                mirror_axes=settings.mirror_axes,
            )
        return probs.cpu().numpy()


class TorchPredictor(TensorPredictor):
    """A PyTorch U-Net with its model card (thresholds, inference settings). The card's architecture is the
    model's own (a pruned network under its source's card gets its own widths)."""

    backend = "torch"

    def __init__(self, model: UNet, card: ModelCard | None = None, device: str | torch.device = "cpu") -> None:
        self.card = (card or ModelCard()).replace(architecture=model.config)
        self.memory_format = memory_format(self.spatial_dims, device)
        self.model = model.to(device).to(memory_format=self.memory_format).eval()  # type: ignore[call-overload]
        self.device = torch.device(device)

    @classmethod
    def from_dir(cls, path: str | Path, device: str | torch.device = "cpu") -> TorchPredictor:
        model, card = load_model(path, device)
        return cls(model, card, device)

    def logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x.contiguous(memory_format=self.memory_format))
        assert isinstance(out, torch.Tensor)
        return out.contiguous()  # the usual layout again: resampling and numpy downstream expect it
