"""Turning a trained model into smaller or faster predictors (so far: ONNX export)."""

from bratsseg.compress.onnx_export import export_onnx, onnx_parity

__all__ = ["export_onnx", "onnx_parity"]
