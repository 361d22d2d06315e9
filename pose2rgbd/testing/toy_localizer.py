"""A stand-in image -> pose checkpoint (tests and benchmarks of the localize engine and node, no training).

:func:`make_toy_localizer_checkpoint` returns a :class:`~pose2rgbd.models.LoadedCheckpoint` of model kind
``toy-localizer`` (a stand-in that :mod:`pose2rgbd.models.registry` resolves by name without listing it, so its
saved checkpoints load anywhere):
a :class:`ToyLocalizerModel`, a tiny network with seeded random weights and the ``ImageToPose`` transforms
(image -> normalized pose + confidence). Its poses depend on the image but mean nothing; it is the image -> pose
counterpart of the ground-plane renderer in :mod:`pose2rgbd.testing.ground_plane`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pose2rgbd.config import help_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.models.base import ModelBase
from pose2rgbd.models.checkpoint import LoadedCheckpoint
from pose2rgbd.models.interfaces import ImageToPose
from pose2rgbd.models.registry import ModelFamily
from pose2rgbd.testing.ground_plane import area_pose_normalizer

KIND = "toy-localizer"


@dataclass
class ToyLocalizerConfig:
    """A tiny image -> pose network (untrained; tests and benchmarks of serving)."""

    size: int = help_field(64, "square input resolution (height = width)")
    channels: int = help_field(8, "channels of the first convolution (doubled by each later one)")
    layers: int = help_field(4, "stride-2 convolutions before the global pooling")

    def __post_init__(self) -> None:
        if self.size < 4 or self.channels < 1 or not 1 <= self.layers <= 8:
            raise ConfigError("toy-localizer config: size >= 4, channels >= 1, layers in [1, 8]")


class ToyLocalizerModel(ImageToPose, ModelBase):
    """Stride-2 3x3 convolutions + ReLU, global average pooling and a linear head: the 7 normalized 6dof-quat
    pose values (tanh) and a confidence (sigmoid)."""

    kind = KIND

    def __init__(self, config: ToyLocalizerConfig) -> None:
        super().__init__()
        self.config = config
        self.init_pose_normalization("6dof-quat")
        blocks: list[nn.Module] = []
        c_in = 3
        for k in range(config.layers):
            c_out = config.channels * 2**k
            blocks += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, 8)

    @property
    def input_hw(self) -> tuple[int, int]:
        return (self.config.size, self.config.size)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.head(self.features(images).mean(dim=(2, 3)))
        return {"pose": torch.tanh(y[:, :7]), "confidence": torch.sigmoid(y[:, 7])}

    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self(batch["image"])

    def get_loss_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"pose_mse": ((outputs["pose"] - batch["pose"]) ** 2).mean()}


FAMILY = ModelFamily(
    kind=KIND,
    config_cls=ToyLocalizerConfig,
    build=ToyLocalizerModel,
    presets={"default": {}},
    default_preset="default",
    data="image_to_pose",
    engine="localize",
    description="tiny untrained image -> pose network (tests and benchmarks of serving)",
)


def make_toy_localizer_checkpoint(
    size: int = 64,
    *,
    channels: int = 8,
    layers: int = 4,
    extent_m: float = 100.0,
    altitude_m: tuple[float, float] = (5.0, 60.0),
    seed: int = 0,
    world_frame: str = "map",
) -> LoadedCheckpoint:
    """An in-memory ``toy-localizer`` checkpoint with seeded random weights. The pose normalizer spans x, y in
    [-extent, extent], z in ``altitude_m`` and the full quaternion range. Save ``ck.model`` with
    :func:`pose2rgbd.models.checkpoint.save_checkpoint` to load it by path."""
    gen = torch.Generator().manual_seed(seed)
    model = ToyLocalizerModel(ToyLocalizerConfig(size=size, channels=channels, layers=layers))
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        model.head.weight.mul_(0.3)  # outputs spread over the pose range instead of saturating the tanh
        model.head.bias.zero_()
    model.set_pose_normalizer(area_pose_normalizer(extent_m, altitude_m))
    return LoadedCheckpoint(
        path=None,
        model=model.eval(),
        family=FAMILY,
        model_config=model.config,
        dataset_fingerprint="stub",
        camera=PinholeCamera.from_fov(size, size, 90.0),
        world_frame=world_frame,
    )
