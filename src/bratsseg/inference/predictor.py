"""Predictors: a model plus what it needs to turn a cropped, z-scored image into region probabilities.

This module needs neither PyTorch nor ONNX Runtime: the PyTorch predictor is
:class:`bratsseg.inference.torch_predictor.TorchPredictor`, the ONNX Runtime one
:class:`bratsseg.inference.onnx_predictor.OnnxPredictor`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.labels import REGIONS
from bratsseg.models.card import ModelCard

if TYPE_CHECKING:
    from bratsseg.data.cache import CachedCase


class Predictor:
    """What evaluation, sweeps and prediction need: the model card and region probabilities of a case.

    Subclasses set ``card``, ``device`` and ``backend`` and implement :meth:`probabilities`.
    """

    card: ModelCard
    device: Any = "cpu"  # a torch.device for PyTorch predictors
    backend: str  # what runs the network: "torch" or "onnxruntime"

    @property
    def spatial_dims(self) -> int:
        return self.card.architecture.spatial_dims

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.card.thresholds)

    def probabilities(self, image: NDArray[Any]) -> NDArray[np.float32]:
        """``(4, x, y, z)`` preprocessed image -> ``(3, x, y, z)`` float32 region probabilities."""
        raise NotImplementedError

    def add_probabilities(self, image: NDArray[Any], total: NDArray[np.float32], weight: float) -> NDArray[np.float32]:
        """Add ``weight`` times :meth:`probabilities` to ``total`` in place (an ensemble's running mean, without
        a second whole-case array per member where a subclass can avoid it); return this model's own
        whole-tumour probabilities ``(x, y, z)``."""
        probs = self.probabilities(image)
        whole = probs[0].copy()
        probs *= np.float32(weight)
        total += probs
        return whole


def mirror_flips(axes: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every subset of the spatial ``axes``, the empty one first: the flips of mirrored test-time augmentation
    (``2 ** len(axes)`` passes, as nnU-Net does it)."""
    out: list[tuple[int, ...]] = [()]
    for a in axes:
        out += [(*s, a) for s in out]
    return out


def probabilities_on_original_grid(predictor: Predictor, case: CachedCase) -> NDArray[np.float32]:
    """``(3, X, Y, Z)`` region probabilities of a cached case on its original (uncropped) grid, 0 outside the crop."""
    return np.asarray(case.uncrop(predictor.probabilities(case.image)), dtype=np.float32)


def binarize(probs: NDArray[np.floating], thresholds: dict[str, float]) -> NDArray[np.bool_]:
    """``(3, ...)`` probabilities -> masks, region ``r`` positive where ``p > thresholds[r]``."""
    t = np.array([thresholds[r] for r in REGIONS], dtype=np.float64).reshape(3, *([1] * (probs.ndim - 1)))
    return np.asarray(probs > t)
