"""Whole-case inference: 3-D sliding window or whole volume, 2-D slice by slice.

The names below are imported on first use: :mod:`bratsseg.inference.predictor` and the ONNX Runtime predictor
need no PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bratsseg.inference.sliding import predict_logits, predict_probabilities

__all__ = ["predict_logits", "predict_probabilities"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from bratsseg.inference import sliding

        return getattr(sliding, name)
    raise AttributeError(f"module 'bratsseg.inference' has no attribute {name!r}")
