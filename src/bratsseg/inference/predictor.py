"""Predictors: a trained model plus what it needs to turn a cached image into region probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bratsseg.data.cache import CachedCase
from bratsseg.inference.sliding import predict_probabilities
from bratsseg.labels import REGIONS
from bratsseg.models.card import ModelCard
from bratsseg.models.files import load_model
from bratsseg.models.unet import UNet, memory_format


class Predictor:
    """What evaluation, sweeps and prediction need: the model card and region probabilities of a case.

    Subclasses set ``card`` and ``device`` and implement :meth:`logits_batch`.
    """

    card: ModelCard
    device: torch.device = torch.device("cpu")
    backend: str  # what runs the network: "torch" or "onnxruntime"

    @property
    def spatial_dims(self) -> int:
        return self.card.architecture.spatial_dims

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.card.thresholds)

    def logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *spatial)`` -> ``(B, 3, *spatial)`` logits."""
        raise NotImplementedError

    def probabilities(self, image: NDArray[Any]) -> NDArray[np.float32]:
        """``(4, x, y, z)`` preprocessed image -> ``(3, x, y, z)`` float32 region probabilities."""
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


class TorchPredictor(Predictor):
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


def probabilities_on_original_grid(predictor: Predictor, case: CachedCase) -> NDArray[np.float32]:
    """``(3, X, Y, Z)`` region probabilities of a cached case on its original (uncropped) grid, 0 outside the crop."""
    return np.asarray(case.uncrop(predictor.probabilities(case.image)), dtype=np.float32)


def binarize(probs: NDArray[np.floating], thresholds: dict[str, float]) -> NDArray[np.bool_]:
    """``(3, ...)`` probabilities -> masks, region ``r`` positive where ``p > thresholds[r]``."""
    t = np.array([thresholds[r] for r in REGIONS], dtype=np.float64).reshape(3, *([1] * (probs.ndim - 1)))
    return np.asarray(probs > t)
