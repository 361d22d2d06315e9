"""Hybrid warp-and-fill (beyond the paper): the nearest training RGB-D frames warped into the query pose, filled
and corrected by a network.

``FAMILY`` is its registry entry (kind ``hybrid``): config :class:`HybridConfig` (presets ``hybrid``,
``hybrid-lite``, ``hybrid-fast``, the default, and ``hybrid-subpixel``), builder :func:`build_model`, trained on pose ->
image pairs with depth by :func:`pose2rgbd.methods.hybrid.recipe.prepare`, served by the render engine (the whole
model has no ONNX graph; its network part runs in ONNX Runtime with ``engine.backend onnxruntime``). Importing this
package imports torch.
"""

from __future__ import annotations

from typing import Any

from pose2rgbd.methods.hybrid.config import BEFORE_DEFAULTS, DEFAULT_PRESET, PRESETS, HybridConfig
from pose2rgbd.methods.hybrid.net import HybridNet, build_model
from pose2rgbd.methods.hybrid.network import FillUNet
from pose2rgbd.methods.hybrid.stored import migrate_store
from pose2rgbd.methods.hybrid.warp import splat_keyframes
from pose2rgbd.models.registry import ModelFamily, Recipe


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint written before a setting existed keeps what it was trained with (``BEFORE_DEFAULTS``); one
    with its keyframe store as buffers has it moved to where a bundle keeps its keyframes
    (:func:`~pose2rgbd.methods.hybrid.stored.migrate_store`: read as ArrayKeyframes, the same renders)."""
    mc = dict(data["model_config"])
    for key, value in BEFORE_DEFAULTS.items():
        mc.setdefault(key, value)
    return migrate_store({**data, "model_config": mc})


def _recipe() -> Recipe:
    """The training recipe, imported when training starts (this module does not import the trainer)."""
    from pose2rgbd.methods.hybrid.recipe import prepare

    return prepare


FAMILY = ModelFamily(
    kind="hybrid",
    config_cls=HybridConfig,
    build=build_model,
    presets=PRESETS,
    default_preset=DEFAULT_PRESET,
    data="pose_to_image",
    engine="render",
    train=_recipe,
    migrate=migrate,
    description="hybrid warp-and-fill: nearest training RGB-D frames warped into the pose, filled by a network",
    train_defaults={"lr": 1e-3},  # at the trainer's 0.01 its fill does not learn (recipe.HIGH_LR, docs/results.md)
)

__all__ = ["FAMILY", "PRESETS", "FillUNet", "HybridConfig", "HybridNet", "build_model", "splat_keyframes"]
