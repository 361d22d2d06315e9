"""An analytic stand-in for a trained checkpoint (tests and benchmarks of the serving path, no training).

:func:`make_ground_plane_checkpoint` returns an object that follows the ``LoadedCheckpoint`` contract of
:mod:`pose2rgbd.models`; its model renders what a camera at the (denormalized) pose sees of the flat
ground ``z = 0``: exact metric z-depth (``+inf`` above the horizon), a colour that depends on the ground
position, and confidence 1 below the horizon. Use it with ``postprocess=ground_plane_postprocess``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.encoding import PoseNormalizer


@dataclass
class StubModelConfig:
    preset: str = "base"
    outputs: str = "rgbd"
    encoding: str = "6dof-quat"
    size: int = 64


@dataclass
class StubCheckpoint:
    model: Any
    model_config: StubModelConfig
    pose_normalizer: PoseNormalizer
    camera: PinholeCamera
    depth_normalizer: Any = None
    dataset_fingerprint: str = "stub"
    depth_kind: str = "metric"
    world_frame: str = "map"
    extra: dict[str, Any] = field(default_factory=dict)


def _build_module(normalizer: PoseNormalizer, camera: PinholeCamera, work_channels: int) -> Any:
    import torch
    from torch import nn

    class GroundPlane(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("lo", torch.tensor(normalizer.minimum, dtype=torch.float32))
            self.register_buffer("span", torch.tensor(normalizer.span, dtype=torch.float32))
            rays = torch.tensor(camera.rays().reshape(-1, 3), dtype=torch.float32)  # (HW, 3), z = 1
            self.register_buffer("rays", rays)
            # some convolution work so that timing resembles a small network (0: none)
            self.work = nn.Conv2d(work_channels, work_channels, 3, padding=1) if work_channels else None
            self.hw = (camera.height, camera.width)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            p = (x.float() + 1.0) * 0.5 * self.span + self.lo  # type: ignore[operator]  # (B, 7): t, q_xyzw
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
            h, w = self.hw
            out = {
                "rgb": rgb.view(-1, 3, h, w),
                "depth": depth.view(-1, 1, h, w),
                "confidence": torch.isfinite(depth).float().view(-1, 1, h, w),
            }
            if self.work is not None:
                z = torch.zeros(x.shape[0], self.work.in_channels, h, w, device=x.device)
                out["rgb"] = out["rgb"] + 0.0 * self.work(z)[:, :3]
            return out

    return GroundPlane()


def ground_plane_postprocess(outputs: dict[str, Any], depth_normalizer: Any) -> dict[str, np.ndarray | None]:
    """``outputs_to_numpy`` for the stub: rgb [-1, 1] -> uint8, depth already metres."""
    rgb = outputs["rgb"].detach().float().cpu().numpy().transpose(0, 2, 3, 1)
    return {
        "rgb": np.clip((rgb + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8),
        "depth": outputs["depth"].detach().float().cpu().numpy()[:, 0].astype(np.float32),
        "confidence": outputs["confidence"].detach().float().cpu().numpy()[:, 0].astype(np.float32),
    }


def make_ground_plane_checkpoint(
    size: int = 64,
    *,
    hfov_deg: float = 90.0,
    extent_m: float = 100.0,
    altitude_m: tuple[float, float] = (5.0, 60.0),
    work_channels: int = 0,
) -> StubCheckpoint:
    """A ``LoadedCheckpoint``-like object whose model renders the ground plane (see module docstring).

    The pose normalizer spans x, y in [-extent, extent], z in ``altitude_m`` and the full quaternion range.
    """
    lo = np.array([-extent_m, -extent_m, altitude_m[0], -1.0, -1.0, -1.0, 0.0])
    hi = np.array([extent_m, extent_m, altitude_m[1], 1.0, 1.0, 1.0, 1.0])
    normalizer = PoseNormalizer("6dof-quat", lo, hi)
    camera = PinholeCamera.from_fov(size, size, hfov_deg)
    return StubCheckpoint(
        model=_build_module(normalizer, camera, work_channels).eval(),
        model_config=StubModelConfig(size=size),
        pose_normalizer=normalizer,
        camera=camera,
    )


def look_down_pose(x: float, y: float, z: float, yaw: float = 0.0) -> np.ndarray:
    """T_world_cam of a camera at (x, y, z) looking straight down (optical z = -world z), image top = yaw."""
    c, s = np.cos(yaw), np.sin(yaw)
    # optical x (right) and y (down) in the world: rotate about world z by yaw
    R = np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])  # columns: optical x, y, z in the world
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = [x, y, z]
    return T
