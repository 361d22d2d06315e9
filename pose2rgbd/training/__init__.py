"""Training: a generic trainer (model contract of :mod:`pose2rgbd.models.base`), callbacks, splits, and the
training driver ``train(method, ...)`` and the entry point ``train_model``. Importing this
package imports torch."""

from pose2rgbd.training.callbacks import CheckpointCallback, CSVLogger, ProgressBar, TensorBoardLogger
from pose2rgbd.training.config import SPLITS, TrainConfig
from pose2rgbd.training.splits import Split, make_split
from pose2rgbd.training.train import (
    RecipeContext,
    TrainingSetup,
    TrainResult,
    fit_checkpoint_depth_uncertainty,
    recalibrate_checkpoint,
    split_for,
    train,
    train_model,
)
from pose2rgbd.training.trainer import Callback, Trainer, seed_everything

__all__ = [
    "SPLITS",
    "CSVLogger",
    "Callback",
    "CheckpointCallback",
    "ProgressBar",
    "RecipeContext",
    "Split",
    "TensorBoardLogger",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingSetup",
    "fit_checkpoint_depth_uncertainty",
    "make_split",
    "recalibrate_checkpoint",
    "seed_everything",
    "split_for",
    "train",
    "train_model",
]
