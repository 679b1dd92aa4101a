"""Opening a predictor for a command: where the engine decides whether a plain model folder is exported to ONNX
on the fly (``--backend onnx``), which neither ``inference`` nor ``compress`` decides for itself."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bratsseg.inference.loading import ONNX_IN_FOLDER, load_predictor
from bratsseg.inference.predictor import Predictor
from bratsseg.models.card import FAST


def open_predictor(
    path: str | Path, device: str = "cpu", threads: int | None = None, backend: str = "auto", mode: str = FAST
) -> Predictor:
    """:func:`~bratsseg.inference.predictor.load_predictor`, plus ``backend="onnx"`` on a model folder without a
    ``model.onnx``: the folder is exported to a temporary file (the session keeps the graph in memory)."""
    path = Path(path)
    if backend == "onnx" and path.is_dir() and not (path / ONNX_IN_FOLDER).is_file():
        from bratsseg.compress.onnx_export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            return load_predictor(export_onnx(path, Path(tmp) / ONNX_IN_FOLDER), device, threads, backend, mode)
    return load_predictor(path, device, threads, backend, mode)
