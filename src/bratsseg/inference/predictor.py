"""Predictors: a trained model plus what it needs to turn a cached image into region probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bratsseg.data.cache import CachedCase
from bratsseg.errors import BratsSegError
from bratsseg.inference.sliding import predict_probabilities
from bratsseg.labels import REGIONS
from bratsseg.models.files import load_model
from bratsseg.models.unet import UNet, memory_format


class Predictor:
    """What evaluation, sweeps and prediction need: model-file settings and region probabilities of a case.

    Subclasses set ``meta``, ``spatial_dims`` and ``device`` and implement :meth:`logits_batch`.
    """

    meta: dict[str, Any]
    spatial_dims: int
    device: torch.device = torch.device("cpu")
    backend: str  # what runs the network: "torch" or "onnxruntime"

    @property
    def thresholds(self) -> dict[str, float]:
        return {r: float(self.meta.get("thresholds", {}).get(r, 0.5)) for r in REGIONS}

    def logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *spatial)`` -> ``(B, 3, *spatial)`` logits."""
        raise NotImplementedError

    def probabilities(self, image: NDArray[Any]) -> NDArray[np.float32]:
        """``(4, x, y, z)`` preprocessed image -> ``(3, x, y, z)`` float32 region probabilities."""
        inference = self.meta.get("inference", {})
        x = torch.from_numpy(np.asarray(image, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            probs = predict_probabilities(
                self.logits_batch,
                x,
                self.spatial_dims,
                inference.get("roi_size"),
                float(inference.get("overlap", 0.5)),
                downsample=int(inference.get("downsample", 1)),
            )
        return probs.cpu().numpy()


class TorchPredictor(Predictor):
    """A PyTorch U-Net with its model-file settings (thresholds, sliding-window size)."""

    backend = "torch"

    def __init__(self, model: UNet, meta: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.spatial_dims = model.config.spatial_dims
        self.memory_format = memory_format(self.spatial_dims, device)
        self.model = model.to(device).to(memory_format=self.memory_format).eval()  # type: ignore[call-overload]
        self.meta = meta
        self.device = torch.device(device)

    @classmethod
    def from_dir(cls, path: str | Path, device: str | torch.device = "cpu") -> TorchPredictor:
        model, meta = load_model(path, device)
        return cls(model, meta, device)

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


ONNX_IN_FOLDER = "model.onnx"


def load_predictor(
    path: str | Path, device: str = "cpu", threads: int | None = None, backend: str = "auto"
) -> Predictor:
    """A predictor for a model folder or an ``.onnx`` file.

    ``backend``: ``torch`` (a model folder on PyTorch), ``onnx`` (ONNX Runtime: the ``.onnx`` file, the folder's
    ``model.onnx``, or the folder exported to a temporary file), or ``auto``: ONNX Runtime for an ``.onnx``
    file or a folder that holds a ``model.onnx`` (as the bundled model does) on the CPU, else PyTorch.
    """
    path = Path(path)
    if backend not in ("auto", "torch", "onnx"):
        raise BratsSegError(f"backend must be auto, torch or onnx, got {backend!r}")
    if path.suffix == ".onnx" or (backend != "torch" and path.is_dir() and (path / ONNX_IN_FOLDER).is_file()):
        if backend == "torch":
            raise BratsSegError("--backend torch needs a model folder, not an .onnx file", path)
        if device != "cpu" and backend == "auto" and path.is_dir():  # ONNX Runtime here is CPU-only
            return TorchPredictor.from_dir(path, device)
        from bratsseg.inference.onnx_predictor import OnnxPredictor

        return OnnxPredictor(path if path.suffix == ".onnx" else path / ONNX_IN_FOLDER, threads)
    if backend == "onnx":
        import tempfile

        from bratsseg.compress.onnx_export import export_onnx
        from bratsseg.inference.onnx_predictor import OnnxPredictor

        with tempfile.TemporaryDirectory() as tmp:  # the session keeps the graph in memory
            return OnnxPredictor(export_onnx(path, Path(tmp) / ONNX_IN_FOLDER), threads)
    return TorchPredictor.from_dir(path, device)
