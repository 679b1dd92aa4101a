"""A predictor on ONNX Runtime: the same interface as :class:`TorchPredictor`, no PyTorch model needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bratsseg.compress.onnx_export import INPUT_NAME, read_onnx_meta
from bratsseg.errors import BratsSegError
from bratsseg.inference.sliding import predict_probabilities
from bratsseg.labels import REGIONS


class OnnxPredictor:
    """Region probabilities from an exported ``.onnx`` file on ONNX Runtime's CPU execution provider."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.meta: dict[str, Any] = read_onnx_meta(self.path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise BratsSegError(f"ONNX Runtime cannot load the model ({err})", self.path) from err
        self.divisor = int(self.meta["divisor"])
        self.spatial_dims = int(self.meta["architecture"]["spatial_dims"])

    @property
    def thresholds(self) -> dict[str, float]:
        return {r: float(self.meta.get("thresholds", {}).get(r, 0.5)) for r in REGIONS}

    def logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> logits, padding the spatial sizes up to the divisor and cropping back."""
        size = x.shape[2:]
        pad = [(-s) % self.divisor for s in size]
        arr = x.detach().cpu().numpy().astype(np.float32, copy=False)
        if any(pad):
            arr = np.pad(arr, [(0, 0), (0, 0), *[(0, p) for p in pad]])
        out = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(arr)})[0]
        keep = tuple([slice(None), slice(None), *(slice(0, s) for s in size)])
        return torch.from_numpy(np.ascontiguousarray(out[keep]))

    def probabilities(self, image: NDArray[Any]) -> NDArray[np.float32]:
        """``(4, x, y, z)`` preprocessed image -> ``(3, x, y, z)`` float32 region probabilities."""
        inference = self.meta.get("inference", {})
        x = torch.from_numpy(np.asarray(image, dtype=np.float32))
        probs = predict_probabilities(
            self.logits_batch, x, self.spatial_dims, inference.get("roi_size"), float(inference.get("overlap", 0.5))
        )
        return probs.numpy()
