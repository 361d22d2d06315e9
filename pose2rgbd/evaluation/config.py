"""Evaluation settings (``pose2rgbd evaluate``, :func:`pose2rgbd.evaluation.evaluate`): one schema for the
command-line flags, ``--config`` files and keyword arguments of the library call."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pose2rgbd.config import SPLIT_KINDS, help_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.models.device import PRECISION_CHOICES

EVAL_SPLITS = (*SPLIT_KINDS, "all")
POINT_DEPTH = ("auto", "on", "off")


@dataclass
class EvaluateConfig:
    """What :func:`~pose2rgbd.evaluation.evaluate` measures and writes (the checkpoint, dataset and output
    directory are arguments of the call, not settings)."""

    split: str | None = help_field(
        None,
        "test frames: random | route | blocks | every-nth | all (null: the split the checkpoint was trained with, "
        "same seed and fractions: its test frames; all when evaluating on another dataset)",
    )
    baseline: bool = help_field(
        True,
        "also evaluate the training-free baselines on the same test frames: the nearest-pose baseline and, where the "
        "dataset has depth, the reprojection and fused-geometry baselines (each also switched by its own key); they "
        "need training frames. false: none of them",
    )
    rot_weight_m: float | None = help_field(
        None,
        "baseline metres per radian of rotation (null: the median scene depth of the training frames; 10 m/rad "
        "when the dataset has no depth: give the scene's typical distance then)",
    )
    reprojection_frames: int = help_field(
        3,
        "reprojection baseline: warp this many nearest training RGB-D frames into each test pose with their depth "
        "(z-buffered; holes filled from the nearest frame); 0: off. Needs depth in the dataset and baseline true",
    )
    fused_baseline: bool = help_field(
        True,
        "also evaluate the fused-geometry baseline: the training frames' depth fused into one surface (TSDF), "
        "ray-cast at the test pose and coloured from the training frames that see each point (needs depth, Open3D and "
        "baseline true)",
    )
    point_depth: str = help_field(
        "auto",
        "also score depth at points triangulated among the test frames themselves (SIFT matches checked against "
        "the known poses; pose2rgbd.evaluation.point_depth): a yardstick that does not come from the dataset's "
        "depth, with a row for the dataset's own depth against it. auto: where the dataset's depth was estimated "
        "(convert video --depth selfsup / mvs), on, off",
    )
    max_frames: int = help_field(0, "evaluate at most this many test frames, evenly spaced (0: all)")
    grid_rows: int = help_field(4, "rows (test frames) of the qualitative grid")
    fly_frames: int = help_field(120, "frames in the fly-through video")
    fps: float = help_field(10.0, "fly-through frame rate")
    batch_size: int = help_field(16, "poses per forward pass")
    device: str = help_field("auto", "torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    precision: str = help_field(
        "trained",
        "trained (the trained weights in float32, no serving preparation, whatever autocast training ran in) or an "
        "engine.precision (auto | fp32 | bf16 | fp16): the model as the render node serves it at that precision "
        "(BatchNorm folded, channels-last), to see what the served precision costs in quality",
    )
    allow_other_dataset: bool = help_field(
        False, "evaluate on a dataset the checkpoint was not trained on (split all, no baseline)"
    )
    progress: bool = help_field(True, "show progress bars (on a terminal only; `pose2rgbd --progress` forces them)")

    def __post_init__(self) -> None:
        if self.split is not None and self.split not in EVAL_SPLITS:
            raise ConfigError(f"split {self.split!r} is not one of {' | '.join(EVAL_SPLITS)} (or null: as trained)")
        if self.rot_weight_m is not None and not (math.isfinite(self.rot_weight_m) and self.rot_weight_m > 0):
            raise ConfigError(
                f"rot_weight_m must be a positive number of metres per radian, got {self.rot_weight_m} "
                "(or null: the median scene depth)"
            )
        if not 0 <= self.reprojection_frames <= 16:
            raise ConfigError(f"reprojection_frames must be in 0..16 (0: off), got {self.reprojection_frames}")
        if self.point_depth not in POINT_DEPTH:
            raise ConfigError(f"point_depth {self.point_depth!r} is not one of {' | '.join(POINT_DEPTH)}")
        if self.max_frames < 0:
            raise ConfigError(f"max_frames must be >= 0 (0: all test frames), got {self.max_frames}")
        for name in ("grid_rows", "fly_frames", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ConfigError(f"fps must be a positive frame rate, got {self.fps}")
        if self.precision != "trained" and self.precision not in PRECISION_CHOICES:
            raise ConfigError(f"precision {self.precision!r} is not one of trained | {' | '.join(PRECISION_CHOICES)}")
        if not self.device.strip():
            raise ConfigError("device is empty: use auto, cpu, cuda or cuda:N")
