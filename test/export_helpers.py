"""Shared by test_export.py and test_engine_backends.py: tiny servable checkpoints (render and localize kinds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pose2rgbd.geometry import PinholeCamera, T_from_tq
from pose2rgbd.models import DepthNormalizer, ImageToPose, ModelBase, ModelFamily, PoseNormalizer, save_checkpoint
from pose2rgbd.testing.ground_plane import look_down_pose

SIZE = 64  # the smallest Pose2RGBD output size


def pose2rgbd_checkpoint(tmp: Path, preset: str, *, seed: int = 0) -> Path:
    """A tiny untrained Pose2RGBD model (narrow channels) with non-trivial BatchNorm statistics."""
    from pose2rgbd.methods.pose2rgbd import build_model, preset_config

    torch.manual_seed(seed)
    mc = preset_config(
        preset, size=SIZE, outputs="rgbd", encoding="6dof-quat",
        dense_channels=16, trunk_channels=[16, 16, 8, 8, 8, 8, 8], bottleneck_channels=8,
    )  # fmt: skip
    T = np.stack([look_down_pose(x, y, z) for x in (-100, 100) for y in (-100, 100) for z in (5, 60)])
    model = build_model(mc, DepthNormalizer(1.0, 200.0), PoseNormalizer.fit(T, "6dof-quat"))
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # trained-looking statistics, so BN folding has work to do
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return save_checkpoint(
        tmp / f"{preset}.pt",
        model,
        dataset_fingerprint="fp-test",
        camera=PinholeCamera.from_fov(SIZE, SIZE, 90.0),
        world_frame="map",
    )


@dataclass
class ToyLocConfig:
    size: int = 16


class ToyLocalizer(ImageToPose, ModelBase):
    """A small conv net: image -> normalized 6dof-quat pose and a confidence."""

    kind = "toy-export-localize"

    def __init__(self, config: ToyLocConfig) -> None:
        super().__init__()
        self.config = config
        self.init_pose_normalization("6dof-quat")
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, 8)

    @property
    def input_hw(self) -> tuple[int, int]:
        return (self.config.size, self.config.size)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.head(self.features(images).mean(dim=(2, 3)))
        return {"pose": torch.tanh(y[:, :7]), "confidence": torch.sigmoid(y[:, 7]), "unused": y}

    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self(batch["image"])

    def get_loss_dict(self, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"pose_mse": ((outputs["pose"] - batch["pose"]) ** 2).mean()}


LOC_FAMILY = ModelFamily(
    kind="toy-export-localize", config_cls=ToyLocConfig, build=ToyLocalizer, data="image_to_pose", engine="localize"
)


def localize_checkpoint(tmp: Path) -> Path:
    torch.manual_seed(0)
    model = LOC_FAMILY.build(ToyLocConfig())
    T = T_from_tq(np.array([[-10.0, -20, 5], [10, 20, 50]]), np.array([[0, 0, 0, 1.0], [1.0, 0, 0, 0]]))
    model.set_pose_normalizer(PoseNormalizer.fit(T, "6dof-quat"))
    return save_checkpoint(tmp / "loc.pt", model, dataset_fingerprint="fp", camera=None, world_frame="odom")
