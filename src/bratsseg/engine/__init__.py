"""The workflows under the commands: training (loop, checkpoints, torchrun context), evaluation and threshold
sweeps over cases, prediction of raw cases, and opening the right predictor for a model.

The names below are imported on first use: prediction (:mod:`bratsseg.engine.predict`) runs without PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bratsseg.engine.config import TrainConfig, load_train_config
    from bratsseg.engine.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_train_config", "train"]


def __getattr__(name: str) -> Any:
    if name in ("TrainConfig", "load_train_config"):
        from bratsseg.engine import config

        return getattr(config, name)
    if name in ("TrainResult", "train"):
        from bratsseg.engine import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'bratsseg.engine' has no attribute {name!r}")
