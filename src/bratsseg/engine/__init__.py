"""The workflows under the commands: training (loop, checkpoints, torchrun context), evaluation and threshold
sweeps over cases, prediction of raw cases, and opening the right predictor for a model."""

from bratsseg.engine.config import TrainConfig, load_train_config
from bratsseg.engine.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_train_config", "train"]
