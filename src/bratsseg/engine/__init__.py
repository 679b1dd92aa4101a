"""Training loop, checkpoints, distributed context."""

from bratsseg.engine.config import TrainConfig, load_train_config
from bratsseg.engine.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_train_config", "train"]
