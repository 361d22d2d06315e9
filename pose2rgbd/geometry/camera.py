"""Pinhole camera intrinsics in the REP-103 optical frame (x right, y down, z forward)."""

from __future__ import annotations

import math
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
        bad = [k for k in ("fx", "fy", "cx", "cy") if not math.isfinite(float(getattr(self, k)))]
        if bad:
            raise GeometryError(
                f"camera: {', '.join(f'{k} is {getattr(self, k)}' for k in bad)}; intrinsics must be finite numbers "
                "(pixels): fix the camera (manifest.yaml 'camera', or the source's calibration)"
            )
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

    def is_resized(self, other: PinholeCamera) -> bool:
        """Whether ``other`` is this camera at another size: its intrinsics scaled to this size (:meth:`scaled`) are
        these, to a relative 1e-6."""
        at = other.scaled(self.width, self.height)
        return bool(np.allclose([at.fx, at.fy, at.cx, at.cy], [self.fx, self.fy, self.cx, self.cy], rtol=1e-6))

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

    def camera_info_yaml(self, name: str = "pose2rgbd") -> str:
        """This camera as a ROS camera calibration file (the YAML that ``camera_calibration_parsers`` and
        ``camera_info_manager`` read; no distortion: ``plumb_bob`` with zero coefficients)."""
        fx, fy, cx, cy = (repr(float(v)) for v in (self.fx, self.fy, self.cx, self.cy))
        return (
            f"image_width: {self.width}\nimage_height: {self.height}\ncamera_name: {name}\n"
            f"camera_matrix:\n  rows: 3\n  cols: 3\n  data: [{fx}, 0.0, {cx}, 0.0, {fy}, {cy}, 0.0, 0.0, 1.0]\n"
            "distortion_model: plumb_bob\n"
            "distortion_coefficients:\n  rows: 1\n  cols: 5\n  data: [0.0, 0.0, 0.0, 0.0, 0.0]\n"
            "rectification_matrix:\n  rows: 3\n  cols: 3\n  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]\n"
            f"projection_matrix:\n  rows: 3\n  cols: 4\n"
            f"  data: [{fx}, 0.0, {cx}, 0.0, 0.0, {fy}, {cy}, 0.0, 0.0, 0.0, 1.0, 0.0]\n"
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PinholeCamera:
        try:
            return cls(
                _whole_pixels(d["width"], "width"),
                _whole_pixels(d["height"], "height"),
                float(d["fx"]),
                float(d["fy"]),
                float(d["cx"]),
                float(d["cy"]),
            )
        except GeometryError:
            raise  # already says what is wrong
        except KeyError as e:
            raise GeometryError(f"camera intrinsics: missing key {e} in {d}") from e
        except (TypeError, ValueError) as e:
            raise GeometryError(f"camera intrinsics: {e} in {d}") from e


def _whole_pixels(v: Any, key: str) -> int:
    """An image size in pixels: a whole number (``64`` or ``64.0``), never truncated (``64.9`` is refused)."""
    if isinstance(v, bool):
        raise GeometryError(f"camera {key} is {v!r}; give a whole number of pixels")
    if isinstance(v, (int, np.integer)):
        return int(v)
    try:
        f = float(v)
    except (TypeError, ValueError) as e:
        raise GeometryError(f"camera {key} is {v!r}; give a whole number of pixels") from e
    if not (math.isfinite(f) and f.is_integer()):
        raise GeometryError(
            f"camera {key} is {v!r}, not a whole number of pixels; give the image's {key} in pixels (it is never "
            "rounded or truncated)"
        )
    return int(f)


def depth_to_points(
    camera: PinholeCamera, depth: np.ndarray, valid: np.ndarray | None = None, *, stride: int = 1
) -> np.ndarray:
    """Organized optical-frame points ``(ceil(H / stride), ceil(W / stride), 3)`` float32 of every ``stride``-th
    pixel (rows and columns 0, stride, 2 stride, ...): ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``, ``z`` =
    the depth (REP-118 z-depth in metres). NaN where ``valid`` ``(H, W)`` is false or the depth is not a finite
    number > 0 (all three coordinates). Vectorized: one broadcast per axis, no per-point Python."""
    d = np.asarray(depth)
    if d.shape != (camera.height, camera.width):
        raise GeometryError(f"depth shape {d.shape} does not match camera {camera.height}x{camera.width}")
    s = int(stride)
    if s < 1:
        raise GeometryError(f"stride must be >= 1, got {stride}")
    z = d[::s, ::s].astype(np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(z) & (z > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)[::s, ::s]
    z = np.where(ok, z, np.nan)
    u = np.arange(0, camera.width, s, dtype=np.float64)
    v = np.arange(0, camera.height, s, dtype=np.float64)
    out = np.empty((*z.shape, 3), dtype=np.float32)
    out[..., 0] = (u - camera.cx)[None, :] * z / camera.fx
    out[..., 1] = (v - camera.cy)[:, None] * z / camera.fy
    out[..., 2] = z
    return out
