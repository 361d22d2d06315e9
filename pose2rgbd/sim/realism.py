"""Sensor realism for the synthetic world: what real cameras and depth sensors do that a ray caster does not.

Off by default (``SimConfig.realism.enabled``), so every clean export stays byte-identical. When on, each
exported frame goes through :class:`SensorRealism`:

* **depth holes** where a real sensor gets no return: at grazing angles (the angle between the viewing ray and
  the surface normal beyond ``grazing_deg``; normals from the depth map's own gradients, so depth edges lose their
  "flying pixels" too), on glass (a seeded share of building facade patches, fixed in the world so every frame
  agrees) and on the sky; beyond ``max_range_m`` the sensor **saturates** (also invalid in a dataset; the
  16-bit export writes the type's maximum there and 0 in the holes, the codes real sensors use);
* **repeated frames**: with ``repeat_prob`` a frame is a byte-identical copy of the previous one (a camera driver
  that re-sends its last buffer), stamped and posed as the new frame;
* **exposure changes**: a slow random walk of the log gain plus occasional steps, pulled back towards the target
  exposure every frame (``exposure_reversion``: an auto exposure that settles; 0 gives the free walk of earlier
  versions), applied to the RGB with clipping;
* **JPEG artefacts**: RGB encoded and decoded at ``jpeg_quality`` (OpenCV);
* **a world frame that is not z-up** (``world_up: y``, as many SLAM and NeRF tools write): for the posed-images
  export only (:func:`pose2rgbd.sim.export_posed.export_posed_images`); datasets and bags stay in the ENU map
  frame that REP-103 / REP-105 and the GPS datum need.

Everything is seeded from the config's seed and the route, so the same config gives the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry import PinholeCamera

WORLD_UPS = ("z", "y")
GLASS_CELL_M = (6.0, 6.0, 3.0)  # facade patches (x, y, z extent) that are glass or not as a whole
GLASS_MIN_Z_M = 3.0  # no glass at street level (shop fronts would be; the renderer's boxes have no doors)


@dataclass
class RealismConfig:
    """Real-sensor effects of the simulator's exports (module :mod:`pose2rgbd.sim.realism`)."""

    enabled: bool = help_field(False, "apply the effects below to the exported frames (off: the clean renders)")
    grazing_deg: float = ranged_field(
        80.0, "no depth return where the viewing ray meets the surface beyond this angle from its normal", 45.0, 90.0
    )
    glass_share: float = ranged_field(0.15, "share of building facade patches that are glass (no depth)", 0.0, 1.0)
    max_range_m: float = ranged_field(120.0, "depth sensor range: farther returns saturate (invalid)", 1.0, 1e5)
    repeat_prob: float = ranged_field(0.03, "probability that a frame repeats the previous one, byte-identical", 0, 1)
    exposure_drift: float = ranged_field(0.03, "std of the per-frame random walk of the log exposure gain", 0.0, 0.5)
    exposure_step_prob: float = ranged_field(0.02, "probability of an exposure step per frame", 0.0, 1.0)
    exposure_step: float = ranged_field(0.35, "size of an exposure step (log gain, either sign)", 0.0, 2.0)
    exposure_reversion: float = ranged_field(
        0.1,
        "auto exposure: share of the log gain's offset from its target taken back per frame, so drift and steps "
        "decay as a camera's auto exposure settles (0: a free random walk, which took the mean grey of one survey "
        "from 102 to 234; 0.1: a step's half-life is 6.6 frames)",
        0.0,
        1.0,
    )
    jpeg_quality: int = ranged_field(80, "JPEG quality the RGB goes through (0: none)", 0, 100)
    world_up: str = help_field(
        "z", "world up axis of the posed-images export: z (ENU) | y (as SLAM / NeRF tools often write)"
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            if "range" not in f.metadata:
                continue
            lo, hi = f.metadata["range"]
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ConfigError(f"realism.{f.name} must be within [{lo}, {hi}], got {v!r}")
        if self.jpeg_quality != int(self.jpeg_quality):
            raise ConfigError(f"realism.jpeg_quality must be an integer, got {self.jpeg_quality!r}")
        if self.world_up not in WORLD_UPS:
            raise ConfigError(f"realism.world_up must be one of {list(WORLD_UPS)}, got {self.world_up!r}")


def world_up_rotation(world_up: str) -> np.ndarray:
    """``(4, 4)`` T_out_enu: the ENU world expressed in a frame whose up axis is ``world_up`` (y: x stays east,
    y = up, z = south; a proper rotation)."""
    if world_up not in WORLD_UPS:
        raise ConfigError(f"world_up must be one of {list(WORLD_UPS)}, got {world_up!r}")
    T = np.eye(4)
    if world_up == "y":
        T[:3, :3] = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]
    return T


@dataclass
class SensorFrame:
    """One frame as the sensor delivered it."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres, NaN where the sensor gave no valid value (holes and saturation)
    saturated: np.ndarray  # (H, W) bool: beyond the range (a subset of the NaN pixels)
    repeated: bool  # a byte-identical copy of the previous frame
    jpeg: bytes | None = None  # the sensor's JPEG of ``rgb`` (``rgb`` is its decoding) when jpeg_quality > 0


def surface_normals(depth: np.ndarray, camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals ``(H, W, 3)`` in the camera frame from the depth map's gradients (central differences of the
    back-projected points; NaN where a neighbour has no finite depth) and the unit viewing rays ``(H, W, 3)``.
    Written by hand: a cross product of two finite differences, which no library call does on a depth map."""
    rays = camera.rays().astype(np.float64)  # z = 1
    P = rays * np.where(np.isfinite(depth), depth, np.nan)[..., None]
    dx = np.full_like(P, np.nan)
    dy = np.full_like(P, np.nan)
    dx[:, 1:-1] = P[:, 2:] - P[:, :-2]
    dy[1:-1] = P[2:] - P[:-2]
    n = np.cross(dx, dy)
    with np.errstate(invalid="ignore", divide="ignore"):
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        r = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    return n, r


class SensorRealism:
    """The effects of :class:`RealismConfig` on one route's frames, in order (the state: previous frame,
    exposure gain, random numbers)."""

    def __init__(self, cfg: RealismConfig, camera: PinholeCamera, seed: int) -> None:
        self.cfg = cfg
        self.camera = camera
        self.seed = int(seed)
        self.rng = np.random.default_rng([self.seed, 0x5E45])
        self.log_gain = 0.0
        self.prev: SensorFrame | None = None

    def frame(self, rgb: np.ndarray, depth: np.ndarray, T_world_cam: np.ndarray) -> SensorFrame:
        """The sensor's version of a clean render ``rgb`` (uint8) / ``depth`` (metres, +inf sky) at pose
        ``T_world_cam`` (ENU world, optical camera frame)."""
        c = self.cfg
        # draw every random number of this frame first, so a repeat does not shift the later frames' noise
        repeat = self.rng.random() < c.repeat_prob
        drift = self.rng.normal(0.0, c.exposure_drift)
        step = self.rng.random() < c.exposure_step_prob
        sign = 1.0 if self.rng.random() < 0.5 else -1.0
        settled = (1.0 - c.exposure_reversion) * self.log_gain  # auto exposure pulls the gain back to its target
        self.log_gain = float(np.clip(settled + drift + (sign * c.exposure_step if step else 0.0), -1.5, 1.5))
        if repeat and self.prev is not None:
            p = self.prev
            out = SensorFrame(p.rgb.copy(), p.depth.copy(), p.saturated.copy(), True, p.jpeg)
            self.prev = out
            return out
        d, saturated = self._depth(np.asarray(depth, dtype=np.float32), np.asarray(T_world_cam, dtype=np.float64))
        img, jpeg = self._rgb(np.asarray(rgb, dtype=np.uint8))
        out = SensorFrame(img, d, saturated, False, jpeg)
        self.prev = out
        return out

    def _rgb(self, rgb: np.ndarray) -> tuple[np.ndarray, bytes | None]:
        """The exposed image and, with JPEG, the encoded bytes (the image is then their decoding)."""
        img = np.clip(rgb.astype(np.float32) * np.float32(np.exp(self.log_gain)), 0, 255).round().astype(np.uint8)
        if self.cfg.jpeg_quality > 0:
            import cv2

            ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(self.cfg.jpeg_quality)])
            if not ok:
                raise ConfigError("realism: OpenCV could not JPEG-encode a frame")
            dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            if dec is None:
                raise ConfigError("realism: OpenCV could not decode its own JPEG")
            return np.ascontiguousarray(dec[..., ::-1]), bytes(buf)
        return img, None

    def _depth(self, depth: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.cfg
        finite = np.isfinite(depth)
        n, r = surface_normals(depth, self.camera)
        cos = np.abs(np.einsum("hwk,hwk->hw", n, r))
        grazing = finite & ~(cos >= np.cos(np.radians(c.grazing_deg)))  # NaN normals (depth edges) count too
        # glass: vertical surfaces above street level in seeded facade patches, fixed in the world
        Xw = (self.camera.rays() * np.where(finite, depth, 0.0)[..., None]) @ T[:3, :3].T + T[:3, 3]
        nz = np.abs(n @ T[2, :3])  # the normal's world-up component
        cell = np.floor(Xw / np.asarray(GLASS_CELL_M)).astype(np.int64)
        h = (cell[..., 0] * 73856093) ^ (cell[..., 1] * 19349663) ^ (cell[..., 2] * 83492791) ^ (self.seed * 2654435761)
        glass = finite & (nz < 0.3) & (Xw[..., 2] > GLASS_MIN_Z_M) & ((h % 1000) < c.glass_share * 1000)
        saturated = finite & (depth > c.max_range_m) & ~grazing & ~glass
        out = np.where(finite & ~grazing & ~glass & ~saturated, depth, np.float32(np.nan)).astype(np.float32)
        return out, saturated
