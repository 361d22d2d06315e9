"""An analytic stand-in for a trained checkpoint (tests and benchmarks of the serving path, no training).

:func:`make_ground_plane_checkpoint` returns a :class:`~pose2rgbd.models.LoadedCheckpoint` of model kind
``ground-plane`` (a stand-in that :mod:`pose2rgbd.models.registry` resolves by name without listing it, so its
saved checkpoints load anywhere): a :class:`GroundPlaneModel` with the ``PoseToImage`` transforms that renders
what a camera at the (denormalized) pose sees of the flat ground ``z = 0``: exact metric z-depth (``+inf`` above
the horizon), a colour that depends on the ground position, and confidence 1 below the horizon. It saves and
loads like any checkpoint and serves through the render engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pose2rgbd.config import help_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.mount import mount_matrix
from pose2rgbd.models.base import ModelBase
from pose2rgbd.models.checkpoint import LoadedCheckpoint
from pose2rgbd.models.interfaces import PoseToImage
from pose2rgbd.models.normalization import PoseNormalizer
from pose2rgbd.models.registry import ModelFamily

KIND = "ground-plane"


@dataclass
class GroundPlaneConfig:
    """The analytic ground-plane renderer (no trainable weights except an optional timing convolution)."""

    size: int = help_field(64, "square output resolution")
    hfov_deg: float = help_field(90.0, "horizontal field of view (degrees)")
    work_channels: int = help_field(0, "channels of a convolution run for timing realism (0: none)")

    def __post_init__(self) -> None:
        if self.size < 1 or self.work_channels < 0 or not 0.0 < self.hfov_deg < 180.0:
            raise ConfigError("ground-plane config: size >= 1, work_channels >= 0, hfov in (0, 180)")


class GroundPlaneModel(PoseToImage, ModelBase):
    """Renders the ground plane ``z = 0`` for 6dof-quat poses (see the module docstring)."""

    kind = KIND

    def __init__(self, config: GroundPlaneConfig) -> None:
        super().__init__()
        self.config = config
        self.init_pose_normalization("6dof-quat")
        self.camera = PinholeCamera.from_fov(config.size, config.size, config.hfov_deg)
        rays = torch.tensor(self.camera.rays().reshape(-1, 3), dtype=torch.float32)  # (HW, 3), z = 1
        self.rays: torch.Tensor
        self.register_buffer("rays", rays, persistent=False)
        c = int(config.work_channels)
        self.work = nn.Conv2d(c, c, 3, padding=1) if c else None

    @property
    def image_hw(self) -> tuple[int, int]:
        return (self.camera.height, self.camera.width)

    @property
    def has_rgb(self) -> bool:
        return True

    @property
    def has_depth(self) -> bool:
        return True

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        lo = self.pose_min.float()
        span = (self.pose_max - self.pose_min).float()
        p = (x.float() + 1.0) * 0.5 * span + lo  # (B, 7): t, q_xyzw
        t, q = p[:, :3], p[:, 3:7]
        q = q / q.norm(dim=1, keepdim=True)
        qx, qy, qz, qw = q.unbind(1)
        R = torch.stack(
            [
                1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw),
                2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw),
                2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy),
            ],
            dim=1,
        ).view(-1, 3, 3)  # fmt: skip
        d = torch.einsum("bij,nj->bni", R, self.rays)  # world ray per pixel (B, HW, 3)
        dz = d[..., 2]
        depth = torch.where(dz < -1e-6, -t[:, 2:3] / dz.clamp(max=-1e-6), torch.full_like(dz, float("inf")))
        hit = t[:, None, :2] + depth.clamp(max=1e4)[..., None] * d[..., :2]
        rgb = torch.stack(
            [
                torch.sin(hit[..., 0] * 0.3),
                torch.cos(hit[..., 1] * 0.3),
                torch.sin((hit[..., 0] + hit[..., 1]) * 0.1),
            ],
            dim=1,
        )
        rgb = torch.where(torch.isfinite(depth)[:, None], rgb, torch.ones_like(rgb))
        h, w = self.image_hw
        out = {
            "rgb": rgb.view(-1, 3, h, w),
            "depth": depth.view(-1, 1, h, w),
            "confidence": torch.isfinite(depth).float().view(-1, 1, h, w),
        }
        if self.work is not None:
            z = torch.zeros(x.shape[0], self.work.in_channels, h, w, device=x.device)
            out["rgb"] = out["rgb"] + 0.0 * self.work(z)[:, :3]
        return out

    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self(batch["pose"])

    def get_loss_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"rgb_mse": ((outputs["rgb"] - batch["rgb"]) ** 2).mean()}


FAMILY = ModelFamily(
    kind=KIND,
    config_cls=GroundPlaneConfig,
    build=GroundPlaneModel,
    presets={"default": {}},
    default_preset="default",
    data="pose_to_image",
    engine="render",
    description="analytic ground-plane renderer (tests and benchmarks of the serving path)",
)


def area_pose_normalizer(extent_m: float, altitude_m: tuple[float, float]) -> PoseNormalizer:
    """A 6dof-quat pose normalizer over x, y in [-extent, extent], z in ``altitude_m`` and the full quaternion
    range (w >= 0): the stand-in models' training extremes."""
    lo = np.array([-extent_m, -extent_m, altitude_m[0], -1.0, -1.0, -1.0, 0.0])
    hi = np.array([extent_m, extent_m, altitude_m[1], 1.0, 1.0, 1.0, 1.0])
    return PoseNormalizer("6dof-quat", lo, hi)


def make_ground_plane_checkpoint(
    size: int = 64,
    *,
    hfov_deg: float = 90.0,
    extent_m: float = 100.0,
    altitude_m: tuple[float, float] = (5.0, 60.0),
    work_channels: int = 0,
) -> LoadedCheckpoint:
    """An in-memory checkpoint whose model renders the ground plane (see module docstring).

    The pose normalizer spans x, y in [-extent, extent], z in ``altitude_m`` and the full quaternion range.
    """
    model = GroundPlaneModel(GroundPlaneConfig(size=size, hfov_deg=hfov_deg, work_channels=work_channels))
    model.set_pose_normalizer(area_pose_normalizer(extent_m, altitude_m))
    return LoadedCheckpoint(
        path=None,
        model=model.eval(),
        family=FAMILY,
        model_config=model.config,
        dataset_fingerprint="stub",
        camera=model.camera,
    )


def render_ground_plane(ck: LoadedCheckpoint, T_world_cam: np.ndarray) -> dict[str, np.ndarray | None]:
    """The ground plane's images for ``(N, 4, 4)`` poses, straight through the model's transforms."""
    model = ck.model
    if not isinstance(model, GroundPlaneModel):
        raise ConfigError(f"render_ground_plane needs a ground-plane checkpoint, got kind {ck.kind!r}")
    with torch.inference_mode():
        x, _ = model.poses_to_input(T_world_cam)
        return model.outputs_to_arrays(model(x))


def look_down_pose(x: float, y: float, z: float, yaw: float = 0.0) -> np.ndarray:
    """T_world_cam of a camera at (x, y, z) looking straight down (optical z = -world z), image top = yaw."""
    c, s = np.cos(yaw), np.sin(yaw)
    # optical x (right) and y (down) in the world: rotate about world z by yaw
    R = np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])  # columns: optical x, y, z in the world
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = [x, y, z]
    return T


def forward_pose(
    x: float, y: float, z: float, *, yaw: float = 0.0, pitch_deg: float = 30.0, roll: float = 0.0
) -> np.ndarray:
    """T_world_cam of a camera at (x, y, z) (world z up) heading ``yaw``, looking ``pitch_deg`` below the horizon,
    rolled ``roll`` radians about its optical axis: the camera mount's matrix with the world as its base."""
    return mount_matrix([np.degrees(roll), pitch_deg, np.degrees(yaw)], [x, y, z])
