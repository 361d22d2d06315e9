"""PoseGAN (camera localization by pose-to-image translation): G renders an image from a camera pose, D tells
real from generated images and estimates the pose of any image with its linear pose head.

``FAMILY`` is its registry entry (kind ``posegan``): config :class:`PoseGANConfig` with the paper's presets
(``posegan``, ``configA``, ``configB``, ``configC``), builder :func:`build_model`, trained on image <-> pose pairs
by :func:`pose2rgbd.methods.posegan.recipe.prepare`, served by the localize engine (D's pose head); G is served
by the render engine as well (RGB only). Importing this package imports torch.
"""

from __future__ import annotations

from pose2rgbd.methods.posegan.config import PRESETS, PoseGANConfig, preset_config
from pose2rgbd.methods.posegan.net import Discriminator, Generator, PoseGAN, build_model
from pose2rgbd.models.registry import ModelFamily, Recipe


def _recipe() -> Recipe:
    """The training recipe, imported when training starts (this module does not import the trainer)."""
    from pose2rgbd.methods.posegan.recipe import prepare

    return prepare


FAMILY = ModelFamily(
    kind="posegan",
    config_cls=PoseGANConfig,
    build=build_model,
    presets=PRESETS,
    default_preset="posegan",
    data="image_to_pose",
    engine="localize",
    train=_recipe,
    description="PoseGAN: pose -> image generator and a discriminator whose pose head localizes the camera",
)

__all__ = [
    "FAMILY",
    "PRESETS",
    "Discriminator",
    "Generator",
    "PoseGAN",
    "PoseGANConfig",
    "build_model",
    "preset_config",
]
