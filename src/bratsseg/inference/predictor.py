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
from bratsseg.models.files import load_model
from bratsseg.models.unet import UNet


class TorchPredictor:
    """A PyTorch U-Net with its model-file settings (thresholds, sliding-window size)."""

    def __init__(self, model: UNet, meta: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.model = model.to(device).eval()
        self.meta = meta
        self.device = torch.device(device)

    @classmethod
    def from_dir(cls, path: str | Path, device: str | torch.device = "cpu") -> TorchPredictor:
        model, meta = load_model(path, device)
        return cls(model, meta, device)

    @property
    def spatial_dims(self) -> int:
        return self.model.config.spatial_dims

    @property
    def thresholds(self) -> dict[str, float]:
        return {r: float(self.meta.get("thresholds", {}).get(r, 0.5)) for r in REGIONS}

    def probabilities(self, image: NDArray[Any]) -> NDArray[np.float32]:
        """``(4, x, y, z)`` preprocessed image -> ``(3, x, y, z)`` float32 region probabilities."""
        inference = self.meta.get("inference", {})
        x = torch.from_numpy(np.asarray(image, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            probs = predict_probabilities(
                self.model, x, self.spatial_dims, inference.get("roi_size"), float(inference.get("overlap", 0.5))
            )
        return probs.cpu().numpy()


def probabilities_on_original_grid(predictor: Any, case: CachedCase) -> NDArray[np.float32]:
    """``(3, X, Y, Z)`` region probabilities of a cached case on its original (uncropped) grid, 0 outside the crop."""
    return np.asarray(case.uncrop(predictor.probabilities(case.image)), dtype=np.float32)


def binarize(probs: NDArray[np.floating], thresholds: dict[str, float]) -> NDArray[np.bool_]:
    """``(3, ...)`` probabilities -> masks, region ``r`` positive where ``p > thresholds[r]``."""
    t = np.array([thresholds[r] for r in REGIONS], dtype=np.float64).reshape(3, *([1] * (probs.ndim - 1)))
    return np.asarray(probs > t)


def load_predictor(path: str | Path, device: str = "cpu", threads: int | None = None) -> Any:
    """A :class:`TorchPredictor` for a model folder, an ``OnnxPredictor`` for an ``.onnx`` file."""
    path = Path(path)
    if path.suffix == ".onnx":
        from bratsseg.inference.onnx_predictor import OnnxPredictor

        return OnnxPredictor(path, threads)
    return TorchPredictor.from_dir(path, device)
