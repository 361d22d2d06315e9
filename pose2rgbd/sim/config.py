"""``SimConfig``: everything the synthetic world, its flights and its exports depend on (one seed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pose2rgbd.config import from_dict, help_field, to_dict
from pose2rgbd.errors import ConfigError
from pose2rgbd.sim.flight import DEFAULT_ROUTES, DEFAULT_START_NS, ROUTES
from pose2rgbd.sim.realism import RealismConfig

GPS_OFFSET_HELP = (
    "GPS clock offset d in seconds: a fix stamped t was measured at camera-clock time t - d "
    "(an estimator must find d and correct GPS stamps to t - d); 0 = synchronized"
)


@dataclass
class SimConfig:
    """Synthetic UAV world + flights + exports. Same config (same seed) -> identical outputs."""

    seed: int = help_field(0, "seed of the city layout, flight jitter and sensor noise")
    world_size_m: float = help_field(300.0, "side of the square city in metres (fields extend beyond)")
    width: int = help_field(256, "image width in pixels")
    height: int = help_field(256, "image height in pixels")
    hfov_deg: float = help_field(75.0, "horizontal field of view of the pinhole camera, degrees")
    camera_rate_hz: int = help_field(30, "camera frame rate: 24 or 30 Hz")
    camera_pitch_deg: float = help_field(40.0, "camera mount pitch below the horizontal, degrees")
    shadows: bool = help_field(True, "render hard sun shadows")
    stabilized: bool = help_field(
        False, "gimbal-stabilized camera: no tilt into the acceleration, +-0.3 deg roll/pitch jitter; base_link "
        "is then the stabilized camera carrier (body position and yaw), the mount stays static"
    )  # fmt: skip
    routes: list[str] = help_field(list(DEFAULT_ROUTES), f"routes to fly, survey first; any of {list(ROUTES)}")
    survey_duration_s: float = help_field(360.0, "duration of the survey route, seconds (360 s: whole rosette)")
    route_duration_s: float = help_field(90.0, "duration of each held-out route, seconds")
    frames: int = help_field(0, "if > 0: frames per route at the camera rate (overrides the durations)")
    dataset_stride: int = help_field(1, "dataset export keeps every k-th camera frame (bag and video keep all)")
    datum_lat_deg: float = help_field(44.43, "latitude of the world origin (city centre), degrees")
    datum_lon_deg: float = help_field(26.10, "longitude of the world origin, degrees")
    datum_alt_m: float = help_field(80.0, "ellipsoidal altitude of the ground at the world origin, metres")
    start_time_ns: int = help_field(DEFAULT_START_NS, "epoch time of the first camera frame, ns")
    gps_rate_hz: float = help_field(10.0, "GPS fix rate, Hz")
    gps_noise_h_m: float = help_field(0.3, "GPS horizontal noise std, metres (per axis)")
    gps_noise_v_m: float = help_field(0.5, "GPS vertical noise std, metres")
    gps_noise_tau_s: float = help_field(0.0, "GPS noise correlation time, s (first-order Gauss-Markov; 0 = white)")
    gps_time_offset_s: float = help_field(0.0, GPS_OFFSET_HELP)
    gps_status: int = help_field(0, "NavSatStatus.status of valid fixes (0 FIX, 1 SBAS_FIX, 2 GBAS_FIX)")
    gps_service: int = help_field(1, "NavSatStatus.service (1 GPS, 2 GLONASS, 4 COMPASS, 8 GALILEO)")
    gps_covariance: bool = help_field(True, "fill position_covariance (diagonal from the noise) or mark it unknown")
    gps_dropouts: int = help_field(0, "number of GPS outages (NO_FIX messages, status -1, NaN position)")
    gps_dropout_s: float = help_field(1.0, "duration of each GPS outage, seconds")
    odom_rate_hz: float = help_field(50.0, "rate of /odom and /tf, Hz")
    bag_storage: str = help_field("mcap", "rosbag2 storage: mcap or sqlite3")
    compressed: bool = help_field(False, "bag images as /camera/image_raw/compressed (jpeg) instead of raw rgb8")
    jpeg_quality: int = help_field(90, "JPEG quality of compressed bag images")
    ground_truth_topics: bool = help_field(True, "bag also has /ground_truth/depth and /ground_truth/pose")
    bag_routes: list[str] = help_field(["survey"], "routes written as bags (one bag directory per route)")
    video_routes: list[str] = help_field(["survey"], "routes written as MP4 + GPS CSV (one per route)")
    posed_routes: list[str] = help_field(
        ["survey"], "routes written as posed images (transforms.json + images + 16-bit depth, one folder per route)"
    )
    realism: RealismConfig = field(
        default_factory=RealismConfig,
        metadata={"help": "real-sensor effects of the dataset and posed-images exports (docs/sim.md)"},
    )

    def __post_init__(self) -> None:
        if isinstance(self.realism, dict):  # SimConfig(realism={...}); from_dict builds the dataclass itself
            self.realism = from_dict(RealismConfig, self.realism, where="realism")
        if self.camera_rate_hz not in (24, 30):
            raise ConfigError(f"camera_rate_hz must be 24 or 30, got {self.camera_rate_hz}")
        if self.width < 8 or self.height < 8:
            raise ConfigError(f"image size must be at least 8x8, got {self.width}x{self.height}")
        if not 10.0 <= self.hfov_deg <= 150.0:
            raise ConfigError(f"hfov_deg must be within [10, 150], got {self.hfov_deg}")
        if not self.routes:
            raise ConfigError("routes: give at least one route")
        for name in [*self.routes, *self.bag_routes, *self.video_routes, *self.posed_routes]:
            if name not in ROUTES:
                raise ConfigError(f"unknown route {name!r}; choose from {list(ROUTES)}")
        if len(set(self.routes)) != len(self.routes):
            raise ConfigError(f"routes: duplicates in {self.routes}")
        if self.bag_storage not in ("mcap", "sqlite3"):
            raise ConfigError(f"bag_storage must be 'mcap' or 'sqlite3', got {self.bag_storage!r}")
        if self.dataset_stride < 1:
            raise ConfigError(f"dataset_stride must be >= 1, got {self.dataset_stride}")
        if self.frames < 0:
            raise ConfigError(f"frames must be >= 0, got {self.frames}")
        for name in ("gps_rate_hz", "odom_rate_hz", "survey_duration_s", "route_duration_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("gps_noise_h_m", "gps_noise_v_m", "gps_noise_tau_s", "gps_dropout_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

    def duration_of(self, route: str) -> float:
        """Seconds flown on ``route`` (from ``frames`` when set)."""
        if self.frames > 0:
            return max(self.frames - 1, 1) / self.camera_rate_hz
        return self.survey_duration_s if route == "survey" else self.route_duration_s

    def frames_of(self, route: str) -> int | None:
        return self.frames if self.frames > 0 else None


def sim_config_dict(cfg: SimConfig) -> dict[str, Any]:
    """The config as ``sim_config.yaml`` and a dataset's manifest (``extra.sim_config``) record it. Keys that came
    after the first exports are left out while they do not change anything (``realism`` while it is off,
    ``posed_routes`` at its default), so a run that uses neither writes the files, and so the dataset fingerprint,
    of a run before they existed; reading the record back gives the same config."""
    d = to_dict(cfg)
    if not cfg.realism.enabled:
        d.pop("realism")
    if cfg.posed_routes == SimConfig().posed_routes:
        d.pop("posed_routes")
    return d
