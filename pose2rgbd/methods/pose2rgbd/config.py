"""Pose2RGBD model configuration (one schema for the CLI, YAML files and checkpoints) and the paper's presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from pose2rgbd.config import help_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.encoding import ENCODINGS, encoding_dim

PRESET_NAMES: tuple[str, ...] = ("base", "slice10", "slice32", "slice64")
OUTPUTS: tuple[str, ...] = ("rgb", "depth", "rgbd")
MIN_SIZE, MAX_SIZE = 64, 512

# Decoder channel schedule at 512x512 (the paper's resolution): after the dense layer (4x4 x dense_channels),
# transposed convolution k (k = 0, 1, ...) doubles the resolution and outputs trunk_channels[k] channels; the
# last upsampling outputs the image (Base) or bottleneck_channels (Slice). A smaller output drops upsamplings
# from the end of this list. With 6dof-quat input and a Depth output this gives 2,927,009 parameters for Base
# (paper: 2,928,673) -- see docs/models.md for the derivation.
DEFAULT_TRUNK: tuple[int, ...] = (256, 128, 64, 64, 32, 32)


@dataclass
class Pose2RGBDConfig:
    """Architecture of a Pose2RGBD network (paper Sec. 2, Fig. 1)."""

    preset: str = help_field("slice10", "architecture preset: base | slice10 | slice32 | slice64")
    outputs: str = help_field("rgbd", "what the network predicts: rgb | depth | rgbd")
    encoding: str = help_field("6dof-quat", "pose input: 6dof-euler (t + roll/pitch/yaw) or 6dof-quat (t + quaternion)")
    size: int = help_field(128, "square output resolution, a power of two in [64, 512] (the paper uses 512)")
    dense_channels: int = help_field(1024, "channels of the 4x4 map produced by the dense layer from the pose")
    trunk_channels: list[int] = help_field(list(DEFAULT_TRUNK), "transposed-conv channels per upsampling, at 512")
    kernel_size: int = help_field(3, "kernel of the transposed convolutions (stride 2; 3 or 4)")
    bottleneck_channels: int = help_field(32, "width of the 3x3 bottleneck of the Slice models")
    slice_loss_weight: float = help_field(1.0, "weight of the per-slice binary cross entropy in the loss")
    depth_max: float = help_field(
        0.0, "cap of the depth range in metres, fitted once on the training split (0: set by depth_max_percentile)"
    )
    depth_max_percentile: float = help_field(
        99.0, "depth range maximum = this percentile of the training depths (100: plain min-max, as the paper)"
    )

    def __post_init__(self) -> None:
        if self.preset not in PRESET_NAMES:
            raise ConfigError(f"model.preset {self.preset!r} is not one of {list(PRESET_NAMES)}")
        if self.outputs not in OUTPUTS:
            raise ConfigError(f"model.outputs {self.outputs!r} is not one of {list(OUTPUTS)}")
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"model.encoding {self.encoding!r} is not one of {list(ENCODINGS)}")
        s = int(self.size)
        if s < MIN_SIZE or s > MAX_SIZE or s & (s - 1):
            raise ConfigError(f"model.size {self.size} must be a power of two in [{MIN_SIZE}, {MAX_SIZE}]")
        if self.kernel_size not in (3, 4):
            raise ConfigError(f"model.kernel_size {self.kernel_size} must be 3 or 4")
        n_needed = self.n_upsamplings(MAX_SIZE) - 1
        if len(self.trunk_channels) < n_needed or any(int(c) <= 0 for c in self.trunk_channels):
            raise ConfigError(f"model.trunk_channels needs {n_needed} positive widths (one per upsampling at 512)")
        if self.bottleneck_channels <= 0:
            raise ConfigError("model.bottleneck_channels must be positive")
        if not (self.depth_max >= 0.0 and math.isfinite(self.depth_max)):
            raise ConfigError(f"model.depth_max {self.depth_max} must be a finite number >= 0 (0: use the percentile)")
        if not 0.0 < self.depth_max_percentile <= 100.0:
            raise ConfigError(f"model.depth_max_percentile {self.depth_max_percentile} must be in (0, 100]")
        if self.is_slice and self.outputs == "rgb":
            raise ConfigError(
                f"preset {self.preset} predicts depth slices: outputs must be 'depth' or 'rgbd'; for an RGB-only "
                "model use --outputs rgb --preset base"
            )

    @staticmethod
    def n_upsamplings(size: int) -> int:
        return size.bit_length() - 3  # 4 -> size: log2(size / 4)

    @property
    def has_rgb(self) -> bool:
        return self.outputs in ("rgb", "rgbd")

    @property
    def has_depth(self) -> bool:
        return self.outputs in ("depth", "rgbd")

    @property
    def slices(self) -> int:
        """Number of depth slices S (0 for Base)."""
        return 0 if self.preset == "base" else int(self.preset.removeprefix("slice"))

    @property
    def is_slice(self) -> bool:
        return self.preset != "base"

    @property
    def out_channels(self) -> int:
        return 3 * self.has_rgb + 1 * self.has_depth

    @property
    def input_dim(self) -> int:
        return encoding_dim(self.encoding)

    def with_(self, **kw: Any) -> Pose2RGBDConfig:
        return replace(self, **kw)


def preset_config(preset: str, **overrides: Any) -> Pose2RGBDConfig:
    """A :class:`Pose2RGBDConfig` for one of :data:`PRESETS` with some fields overridden."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
    kw = dict(PRESETS[preset])
    kw.update(overrides)
    return Pose2RGBDConfig(**kw)


PRESETS: dict[str, dict[str, Any]] = {
    "base": {"preset": "base"},
    "slice10": {"preset": "slice10"},
    "slice32": {"preset": "slice32"},
    "slice64": {"preset": "slice64"},
}

# Parameter counts reported in the paper (Table 4: 6dof-quat input, 512x512 depth output).
PAPER_PARAMETERS: dict[str, int] = {"base": 2_928_673, "slice10": 2_975_633, "slice32": 2_987_601, "slice64": 3_005_009}
