"""Pose2RGBD (paper Sec. 2): f(camera pose) -> RGB / depth / RGBD, Base and Slice-S networks.

``FAMILY`` is its registry entry (kind ``pose2rgbd``): config :class:`Pose2RGBDConfig` with the paper's presets,
builder :func:`build_model`, trained on pose -> image pairs by :func:`pose2rgbd.methods.pose2rgbd.recipe.prepare`,
served by the render engine. Importing this package imports torch.
"""

from __future__ import annotations

from typing import Any

import torch

from pose2rgbd.methods.pose2rgbd.config import PAPER_PARAMETERS, PRESETS, Pose2RGBDConfig, preset_config
from pose2rgbd.methods.pose2rgbd.net import Pose2RGBDNet, build_model
from pose2rgbd.methods.pose2rgbd.slices import slice_targets
from pose2rgbd.models.normalization import DepthNormalizer, PoseNormalizer
from pose2rgbd.models.registry import DatasetPolicy, ModelFamily, Recipe


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 checkpoint dict (normalizers stored next to the weights) -> the version-2 layout (the
    normalizers as the model's ``pose_min`` / ``pose_max`` / ``depth_range`` buffers)."""
    mc = data["model_config"]
    pn = PoseNormalizer.from_dict(data["pose_normalizer"])
    encoding = mc.get("encoding", Pose2RGBDConfig.encoding)
    if pn.kind != encoding:
        raise ValueError(f"pose normalizer is {pn.kind!r} but the model expects {encoding!r}")
    state = dict(data["state_dict"])
    state["pose_min"] = torch.as_tensor(pn.minimum, dtype=torch.float64)
    state["pose_max"] = torch.as_tensor(pn.maximum, dtype=torch.float64)
    if data.get("depth_normalizer") is not None:
        dn = DepthNormalizer.from_dict(data["depth_normalizer"])
        state["depth_range"] = torch.tensor([dn.min_m, dn.max_m], dtype=torch.float64)
    out = {k: v for k, v in data.items() if k not in ("pose_normalizer", "depth_normalizer")}
    out["state_dict"] = state
    out["model_kind"] = "pose2rgbd"
    out["version"] = 2
    return out


# Settings older checkpoints kept in train_config and the Pose2RGBD model config holds now.
MOVED_FROM_TRAIN: tuple[str, ...] = ("depth_max", "depth_max_percentile")


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint dict of any version -> the current layout: the depth range settings, once train settings
    (``train_config.depth_max`` / ``depth_max_percentile``), are model settings (``model_config``)."""
    mc = dict(data["model_config"])
    tc = dict(data.get("train_config") or {})
    for key in MOVED_FROM_TRAIN:
        if key in tc:
            value = tc.pop(key)
            mc.setdefault(key, value)
    return {**data, "model_config": mc, "train_config": tc}


def _recipe() -> Recipe:
    """The training recipe, imported when training starts (this module does not import the trainer)."""
    from pose2rgbd.methods.pose2rgbd.recipe import prepare

    return prepare


def _dataset_policy() -> DatasetPolicy:
    from pose2rgbd.methods.pose2rgbd.recipe import fit_to_dataset

    return fit_to_dataset


FAMILY = ModelFamily(
    kind="pose2rgbd",
    config_cls=Pose2RGBDConfig,
    build=build_model,
    presets=PRESETS,
    default_preset="slice10",
    data="pose_to_image",
    engine="render",
    train=_recipe,
    fit_dataset=_dataset_policy,
    description="Pose2RGBD (Base / Slice-S): camera pose -> RGB / depth / RGBD images",
    upgrade_v1=upgrade_v1,
    migrate=migrate,
)

__all__ = [
    "FAMILY",
    "MOVED_FROM_TRAIN",
    "PAPER_PARAMETERS",
    "PRESETS",
    "Pose2RGBDConfig",
    "Pose2RGBDNet",
    "build_model",
    "migrate",
    "preset_config",
    "slice_targets",
    "upgrade_v1",
]
