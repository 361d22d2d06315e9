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
    encoding: str = help_field(
        "6dof-quat", "pose input: 6dof-euler (t + roll/pitch/yaw), 6dof-quat (t + quaternion; the paper's two) or "
        "6dof-rot6d (t + the camera's x and y axes: no jump anywhere, for downward-looking cameras)"
    )  # fmt: skip
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
    # Geometry-aware training (beyond the paper, docs/models.md "Geometry-aware training"); all off by default,
    # so the paper's presets train exactly as before. No switch adds parameters.
    consistency_weight: float = help_field(
        0.0,
        "multi-view consistency: weight of the disagreement between the render at a training pose and the render "
        "at a nearby random pose warped into it with the predicted metric depth (0: off; needs depth output)",
    )
    consistency_depth_weight: float = help_field(
        1.0, "share of the depth disagreement (normalized depth units) next to the photometric one in consistency"
    )
    consistency_real_weight: float = help_field(
        0.0,
        "weight of the disagreement between the render at the nearby pose and the real training frame warped "
        "into it with the predicted depth (0: off; needs depth output)",
    )
    consistency_radius_m: float = help_field(0.5, "largest translation of the nearby pose, m")
    consistency_radius_deg: float = help_field(3.0, "largest rotation of the nearby pose, degrees")
    consistency_ssim: float = help_field(0.85, "SSIM share of the photometric error (rest: L1), as in monodepth")
    consistency_occlusion_tol: float = help_field(
        0.1, "a warped pixel counts when the two depths agree within this fraction (else occluded / disoccluded)"
    )
    pose_augment_weight: float = help_field(
        0.0,
        "pose-space augmentation: weight of the loss at randomly perturbed training poses whose targets are the "
        "training frame forward-splatted into them with its own depth (holes left out; 0: off; needs depth data)",
    )
    pose_augment_radius_m: float = help_field(0.5, "largest translation of an augmented pose, m")
    pose_augment_radius_deg: float = help_field(3.0, "largest rotation of an augmented pose, degrees")
    # Adversarial term (beyond the paper): a pose-conditioned discriminator built from PoseGAN's blocks. Off by
    # default; only when on does the model own discriminator parameters (a second optimizer group, training-only).
    adversarial_weight: float = help_field(
        0.0,
        "weight of the hinge adversarial term in the renderer's loss, from a pose-conditioned discriminator "
        "trained alongside (optimizer group 'discriminator'; 0: off, no discriminator is built)",
    )
    adversarial_depth: bool = help_field(
        False, "the discriminator also sees the depth channel (RGB-D; needs depth output); else RGB only"
    )
    adversarial_channels: int = help_field(
        32, "base width of the discriminator: its DBlocks output 1, 2, 4, 8, 16, 16, ... times this"
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
        for name in (
            "consistency_weight",
            "consistency_depth_weight",
            "consistency_real_weight",
            "consistency_radius_m",
            "consistency_radius_deg",
            "pose_augment_weight",
            "pose_augment_radius_m",
            "pose_augment_radius_deg",
            "adversarial_weight",
        ):
            v = float(getattr(self, name))
            if not (v >= 0.0 and math.isfinite(v)):
                raise ConfigError(f"model.{name} {getattr(self, name)} must be a finite number >= 0")
        if not 0.0 <= self.consistency_ssim <= 1.0:
            raise ConfigError(f"model.consistency_ssim {self.consistency_ssim} must be in [0, 1]")
        if not self.consistency_occlusion_tol > 0.0:
            raise ConfigError(f"model.consistency_occlusion_tol {self.consistency_occlusion_tol} must be > 0")
        if self.uses_consistency and not self.has_depth:
            raise ConfigError(
                "model.consistency_weight / consistency_real_weight warp with the predicted depth: use outputs "
                "'depth' or 'rgbd', or set them to 0"
            )

        if int(self.adversarial_channels) < 1:
            raise ConfigError(f"model.adversarial_channels must be >= 1, got {self.adversarial_channels}")
        if self.uses_adversarial and self.adversarial_depth and not self.has_depth:
            raise ConfigError(
                "model.adversarial_depth shows the discriminator the predicted depth: use outputs 'depth' or "
                "'rgbd', or set adversarial_depth false"
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
    def uses_consistency(self) -> bool:
        return self.consistency_weight > 0 or self.consistency_real_weight > 0

    @property
    def uses_geometry(self) -> bool:
        """A geometry-aware training term is on (it needs metric depth data and the camera intrinsics)."""
        return self.uses_consistency or self.pose_augment_weight > 0

    @property
    def uses_adversarial(self) -> bool:
        """The adversarial term is on (the model then owns a discriminator, see ``net.PoseDiscriminator``)."""
        return self.adversarial_weight > 0

    @property
    def adversarial_in_channels(self) -> int:
        """Channels the discriminator sees: RGB (+ depth with ``adversarial_depth``; depth alone without RGB)."""
        return 3 * self.has_rgb + 1 * (self.has_depth and (self.adversarial_depth or not self.has_rgb))

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


# The settings the "+" presets add to the paper's architectures.
GEOMETRY_SWITCHES: dict[str, Any] = {
    "consistency_weight": 0.1,
    "consistency_real_weight": 0.1,
    "pose_augment_weight": 0.5,
}

# The paper's own presets (its architectures, trained as the paper does).
PAPER_PRESETS: tuple[str, ...] = PRESET_NAMES

PRESETS: dict[str, dict[str, Any]] = {
    "base": {"preset": "base"},
    "slice10": {"preset": "slice10"},
    "slice32": {"preset": "slice32"},
    "slice64": {"preset": "slice64"},
    # Candidates beyond the paper (geometry-aware training, docs/models.md); same networks, same parameter counts.
    # Not yet measured at a converged budget: see docs/results.md before relying on them.
    "base+": {"preset": "base", **GEOMETRY_SWITCHES},
    "slice10+": {"preset": "slice10", **GEOMETRY_SWITCHES},
}

# Parameter counts reported in the paper (Table 4: 6dof-quat input, 512x512 depth output).
PAPER_PARAMETERS: dict[str, int] = {"base": 2_928_673, "slice10": 2_975_633, "slice32": 2_987_601, "slice64": 3_005_009}
