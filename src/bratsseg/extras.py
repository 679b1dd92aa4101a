"""What the runtime install lacks: training, compression, export and figures need ``pip install 'bratsseg[train]'``
(PyTorch, MONAI, onnx, matplotlib); ``predict``, ``info`` and ``evaluate --pred/--ref`` need none of them."""

from __future__ import annotations

import importlib.util

from bratsseg.errors import BratsSegError

TRAIN_EXTRA = "pip install 'bratsseg[train]'"
#: import name -> what it is, for the message
TRAIN_MODULES = {"torch": "PyTorch", "monai": "MONAI", "onnx": "onnx", "matplotlib": "matplotlib"}


def missing(*modules: str) -> list[str]:
    """Those of ``modules`` that cannot be imported here."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require(purpose: str, *modules: str) -> None:
    """Raise a one-line :class:`BratsSegError` when any of ``modules`` is not installed."""
    absent = missing(*modules)
    if absent:
        names = " and ".join(TRAIN_MODULES.get(m, m) for m in absent)
        raise BratsSegError(f"{purpose} needs {names}, which this install lacks: {TRAIN_EXTRA}")
