"""Turning a trained model into smaller or faster ones: global magnitude and encoder-decoder pair pruning
(:mod:`~bratsseg.compress.prune`), ONNX export (:mod:`~bratsseg.compress.onnx_export`), int8 static quantisation
(:mod:`~bratsseg.compress.quantize`): transforms of a model only. What trains or evaluates (fine-tuning after
pruning, the study that measures every variant side by side) is the engine's (:mod:`bratsseg.engine.pruning`,
:mod:`bratsseg.engine.compress_study`)."""

from bratsseg.compress.onnx_export import export_onnx, onnx_parity

__all__ = ["export_onnx", "onnx_parity"]
