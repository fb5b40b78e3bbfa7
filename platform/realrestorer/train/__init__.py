"""Training: the two stages of the recipe on Ray Train with DeepSpeed ZeRO (`realrestorer.train.stages.train_stage`)."""

from realrestorer.train.config import STAGES, StageConfig, TrainConfig

__all__ = ["STAGES", "StageConfig", "TrainConfig"]
