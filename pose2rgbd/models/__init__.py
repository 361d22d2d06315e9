"""Model core: the model contract, the model registry, checkpoints, normalizers, serving interfaces, device.

Generic only: each model kind lives in ``pose2rgbd.methods.<kind>`` and is found through
:mod:`pose2rgbd.models.registry`. Importing this package imports torch.
"""

from pose2rgbd.errors import CheckpointError
from pose2rgbd.models.base import ModelBase, count_parameters
from pose2rgbd.models.checkpoint import (
    CHECKPOINT_VERSION,
    Expectations,
    LoadedCheckpoint,
    load_checkpoint,
    read_checkpoint_dict,
    save_checkpoint,
    save_for_inference,
    save_loaded,
)
from pose2rgbd.models.interfaces import ImageToPose, PoseNormalization, PoseToImage
from pose2rgbd.models.normalization import DepthNormalizer, PoseNormalizer
from pose2rgbd.models.registry import ModelFamily, family_names, get_family, register_family

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "DepthNormalizer",
    "Expectations",
    "ImageToPose",
    "LoadedCheckpoint",
    "ModelBase",
    "ModelFamily",
    "PoseNormalization",
    "PoseNormalizer",
    "PoseToImage",
    "count_parameters",
    "family_names",
    "get_family",
    "load_checkpoint",
    "read_checkpoint_dict",
    "register_family",
    "save_checkpoint",
    "save_for_inference",
    "save_loaded",
]
