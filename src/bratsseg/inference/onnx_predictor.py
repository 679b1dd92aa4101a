"""A predictor on ONNX Runtime: the same interface as :class:`TorchPredictor`, no PyTorch model needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bratsseg.errors import BratsSegError
from bratsseg.inference.predictor import Predictor
from bratsseg.models.onnx_format import INPUT_NAME, read_onnx_card
from bratsseg.padding import crop_to, pad_to_multiple


class OnnxPredictor(Predictor):
    """Region probabilities from an exported ``.onnx`` file on ONNX Runtime's CPU execution provider."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.card = read_onnx_card(self.path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise BratsSegError(f"ONNX Runtime cannot load the model ({err})", self.path) from err
        self.divisor = self.card.architecture.divisor

    def logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> logits, padding the spatial sizes up to the divisor and cropping back."""
        size = x.shape[2:]
        arr = pad_to_multiple(x.detach().cpu().numpy().astype(np.float32, copy=False), self.divisor)
        out = self.session.run(None, {INPUT_NAME: arr})[0]
        return torch.from_numpy(np.ascontiguousarray(crop_to(out, size)))
