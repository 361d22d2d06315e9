"""Pinhole camera intrinsics in the REP-103 optical frame (x right, y down, z forward)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pose2rgbd.errors import GeometryError


@dataclass(frozen=True)
class PinholeCamera:
    """Ideal pinhole: pixel (u, v) = (fx * x / z + cx, fy * y / z + cy); pixel centres at integer + 0.5.

    (cx, cy) follow the OpenCV / ROS CameraInfo convention where pixel centres are integers; we use the
    same convention: pixel (col, row) has its centre at (u, v) = (col, row).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.fx <= 0 or self.fy <= 0:
            raise GeometryError(f"camera: invalid intrinsics {self}")

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float) -> PinholeCamera:
        fx = (width / 2.0) / np.tan(np.deg2rad(hfov_deg) / 2.0)
        return cls(width, height, float(fx), float(fx), (width - 1) / 2.0, (height - 1) / 2.0)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> PinholeCamera:
        """Intrinsics for the same camera resized to ``width x height`` (pixel-centre aware)."""
        sx, sy = width / self.width, height / self.height
        return PinholeCamera(
            width, height, self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5
        )

    def rays(self) -> np.ndarray:
        """``(H, W, 3)`` ray directions in the optical frame with z = 1."""
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        return np.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy, np.ones_like(u)], axis=-1)

    def backproject(self, depth: np.ndarray) -> np.ndarray:
        """z-depth ``(H, W)`` -> ``(H, W, 3)`` points in the optical frame."""
        d = np.asarray(depth, dtype=np.float64)
        if d.shape != (self.height, self.width):
            raise GeometryError(f"depth shape {d.shape} does not match camera {self.height}x{self.width}")
        return self.rays() * d[..., None]

    def project(self, p_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(..., 3)`` optical-frame points -> (``(..., 2)`` pixel coords (u, v), ``(...,)`` z)."""
        p = np.asarray(p_cam, dtype=np.float64)
        z = p[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([self.fx * p[..., 0] / z + self.cx, self.fy * p[..., 1] / z + self.cy], axis=-1)
        return uv, z

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PinholeCamera:
        try:
            return cls(
                int(d["width"]),
                int(d["height"]),
                float(d["fx"]),
                float(d["fy"]),
                float(d["cx"]),
                float(d["cy"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise GeometryError(f"camera intrinsics: {e!r} in {d}") from e
