"""Pose2RGBD networks (paper Sec. 2): configs + presets, the model contract, checkpoints, output conversion.

Importing this package imports torch.
"""

from pose2rgbd.errors import CheckpointError
from pose2rgbd.models.base import ModelBase, count_parameters
from pose2rgbd.models.checkpoint import LoadedCheckpoint, load_checkpoint, read_checkpoint_dict, save_checkpoint
from pose2rgbd.models.config import PAPER_PARAMETERS, PRESETS, ModelConfig, preset_config
from pose2rgbd.models.convert import outputs_to_numpy
from pose2rgbd.models.net import Pose2RGBDNet, build_model
from pose2rgbd.models.normalization import DepthNormalizer, slice_targets

__all__ = [
    "PAPER_PARAMETERS",
    "PRESETS",
    "CheckpointError",
    "DepthNormalizer",
    "LoadedCheckpoint",
    "ModelBase",
    "ModelConfig",
    "Pose2RGBDNet",
    "build_model",
    "count_parameters",
    "load_checkpoint",
    "outputs_to_numpy",
    "preset_config",
    "read_checkpoint_dict",
    "save_checkpoint",
    "slice_targets",
]
