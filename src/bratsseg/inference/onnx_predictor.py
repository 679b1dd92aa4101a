"""A predictor on ONNX Runtime: the same interface as :class:`TorchPredictor`, no PyTorch model needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bratsseg.compress.onnx_export import INPUT_NAME, read_onnx_meta
from bratsseg.errors import BratsSegError
from bratsseg.inference.predictor import Predictor


class OnnxPredictor(Predictor):
    """Region probabilities from an exported ``.onnx`` file on ONNX Runtime's CPU execution provider."""

    backend = "onnxruntime"

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
