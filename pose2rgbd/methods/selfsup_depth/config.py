"""Self-supervised depth + ego-motion configuration (one schema for the CLI, YAML files and checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass

from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.errors import ConfigError

POSE_SOURCES: tuple[str, ...] = ("posenet", "essential", "metric")


@dataclass
class SelfSupDepthConfig:
    """Depth network + relative-pose source trained by view synthesis between neighbouring frames."""

    width: int = help_field(128, "network input / depth width in pixels (a multiple of 32)")
    height: int = help_field(96, "network input / depth height in pixels (a multiple of 32)")
    stride: int = help_field(
        0,
        "neighbouring frames are this many dataset frames before / after the target; 0: automatic, the smallest "
        "stride whose measured image motion (optical flow) reaches target_motion_px, so that there is parallax to "
        "learn depth from (with too little, the depth collapses to the far plane)",
    )
    target_motion_px: float = help_field(3.0, "stride 0: image motion (pixels) between a frame and its neighbours")
    max_stride: int = help_field(10, "stride 0: the largest stride chosen")
    pose_source: str = help_field(
        "posenet",
        "relative pose used for view synthesis: posenet (a learned pose network, SfMLearner) | essential "
        "(rotation and translation direction from tracked features + essential matrix with RANSAC, OpenCV; the "
        "translation length from the pose network; the pose network where RANSAC fails) | metric (fixed metric "
        "poses: structure from motion aligned to the GPS by a Sim(3), pose2rgbd.methods.selfsup_depth.metric; the "
        "pose network only where SfM has no pose; needs GPS poses)",
    )
    metric_poses: str = help_field(
        "",
        "pose_source metric: the metric poses file (.npz, written by `convert video --depth selfsup`); empty: "
        "computed at the start of training (COLMAP on the dataset's frames, aligned to its GPS poses)",
    )
    metric_unit_m: float = help_field(
        0.0,
        "pose_source metric: metres per network depth unit; 0: automatic (the median depth of the triangulated "
        "points is 10 units, inside min_depth .. max_depth)",
    )
    sparse_weight: float = ranged_field(
        0.1,
        "pose_source metric: weight of the sparse metric depth term (robust log-depth error at the triangulated "
        "points, each weighted by its track length and reprojection error)",
        0.0,
        100.0,
    )
    sparse_points: int = help_field(256, "pose_source metric: triangulated points per training frame, at most")
    channels: list[int] = help_field([16, 32, 64, 96, 128], "encoder widths of the depth network (5 levels)")
    pose_channels: list[int] = help_field([16, 32, 64, 128, 128], "encoder widths of the pose network")
    scales: int = help_field(4, "output scales of the depth network used in the loss (1-4)")
    ssim_weight: float = ranged_field(0.85, "photometric loss = w * (1 - SSIM) / 2 + (1 - w) * L1", 0.0, 1.0)
    smoothness_weight: float = ranged_field(1e-3, "edge-aware disparity smoothness weight", 0.0, 1.0)
    automask: bool = help_field(True, "auto-masking: ignore pixels an unwarped source frame explains as well")
    min_depth: float = help_field(0.1, "smallest depth the network can output (network units)")
    max_depth: float = help_field(100.0, "largest depth the network can output (network units)")
    velocity_weight: float = ranged_field(
        0.0,
        "GPS-to-scale (velocity) loss weight: |‖t‖ - GPS distance| per frame pair; > 0 makes the network metric "
        "(needs GPS-derived dataset poses); 0 (default): unscaled, scale fitted afterwards, which did better in a "
        "short CPU probe (docs/results.md, 'g2s velocity loss')",
        0.0,
        100.0,
    )
    gps_window_s: float = help_field(2.0, "velocity loss: GPS speed from positions +- this many seconds apart")
    essential_width: int = help_field(320, "essential pose source: image width for feature tracking")

    def __post_init__(self) -> None:
        if self.width % 32 or self.height % 32 or not 32 <= self.width <= 1024 or not 32 <= self.height <= 1024:
            raise ConfigError(f"model.width / model.height must be multiples of 32 in [32, 1024], got "
                              f"{self.width}x{self.height}")  # fmt: skip
        if self.stride < 0:
            raise ConfigError(f"model.stride must be >= 1, or 0 (automatic), got {self.stride}")
        if not self.target_motion_px > 0 or self.max_stride < 1:
            raise ConfigError("model.target_motion_px must be > 0 and model.max_stride >= 1")
        if self.pose_source not in POSE_SOURCES:
            raise ConfigError(f"model.pose_source {self.pose_source!r} is not one of {list(POSE_SOURCES)}")
        if len(self.channels) != 5 or any(int(c) <= 0 for c in self.channels):
            raise ConfigError("model.channels: give 5 positive widths")
        if len(self.pose_channels) < 3 or any(int(c) <= 0 for c in self.pose_channels):
            raise ConfigError("model.pose_channels: give at least 3 positive widths")
        if not 1 <= self.scales <= 4:
            raise ConfigError(f"model.scales must be in [1, 4], got {self.scales}")
        if not 0 < self.min_depth < self.max_depth:
            raise ConfigError(
                f"model.min_depth / max_depth: need 0 < min < max, got {self.min_depth}, {self.max_depth}"
            )
        if self.gps_window_s <= 0:
            raise ConfigError("model.gps_window_s must be > 0")
        if self.metric_unit_m < 0 or self.sparse_points < 0:
            raise ConfigError("model.metric_unit_m and model.sparse_points must be >= 0")
        if self.essential_width < 64:
            raise ConfigError("model.essential_width must be >= 64")


PRESETS: dict[str, dict[str, object]] = {
    "small": {},
    "tiny": {"channels": [8, 16, 24, 32, 48], "pose_channels": [8, 16, 32, 32], "width": 64, "height": 64},
}
