"""PoseGAN model configuration (one schema for the CLI, YAML files and checkpoints) and the paper's presets.

The paper (PoseGAN, Sec. 3-5.1) fixes: 5 GBlocks in G, 5 DBlocks in D, spectral normalization in G and D,
``alpha = 0.1``, ``beta1 = 0.5``, ``beta2 = 10``, ``k = 0.1`` (adaptive margin), ``gamma = 0.01`` (configC),
``n_critic = 1``, Adam 2e-4 with betas (0, 0.9), batch 16, images resized to 144 and cropped to 128. The
presets below are exactly those settings; only the switches the paper's ablations turn off differ
(``configA``: no adversarial loss, ``configB``: no pose estimation of generated samples, ``configC``: constant
margin). What the paper leaves open (channel widths, the norm of the image term, ...) is a field here, its
choice documented in docs/models.md (PoseGAN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from pose2rgbd.config import help_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.encoding import encoding_dim

PRESET_NAMES: tuple[str, ...] = ("posegan", "configA", "configB", "configC")
MIN_SIZE, MAX_SIZE = 32, 256
N_BLOCKS = 5  # GBlocks in G and DBlocks in D (paper Fig. 1)
# Channel multipliers of the base width (SN-GAN's ResNet layout at 128x128, paper Sec. 5.1 "follow SN-GANs"):
# G: the dense layer's map, then the output of each of the 5 GBlocks; D: the output of each of the 5 DBlocks.
G_MULTIPLIERS: tuple[int, ...] = (16, 16, 8, 4, 2, 1)
D_MULTIPLIERS: tuple[int, ...] = (1, 2, 4, 8, 16)
# Resize-then-crop of the paper: images compressed to 144 x 144, then cropped to 128 x 128.
LOAD_OVER_CROP = 144.0 / 128.0
ENCODING = "6dof-quat"  # the pose y: position + unit quaternion (x, y, z, w) with w >= 0 (3 + d, d = 4)


@dataclass
class PoseGANConfig:
    """Architecture and losses of a PoseGAN (paper Sec. 3-4, Fig. 1)."""

    preset: str = help_field(
        "posegan",
        "variant: posegan (the full model) | configA (D's pose head as a plain regressor, no GAN) | configB (no "
        "pose estimation of generated samples) | configC (constant margin gamma_const instead of k ||F(x) - y||)",
    )
    size: int = help_field(128, "square image size, a power of two in [32, 256] (the paper trains at 128)")
    g_channels: int = help_field(
        32, "base width ch of G: the dense map has 16 ch channels, the GBlocks output 16, 8, 4, 2, 1 ch"
    )
    d_channels: int = help_field(32, "base width ch of D: the DBlocks output 1, 2, 4, 8, 16 ch channels")
    alpha: float = help_field(0.1, "weight of the pose loss L2 in D's loss, L_D = L1 + alpha L2 (eq. 8)")
    beta1: float = help_field(0.5, "weight of ||F(G(y)) - y|| in G's loss (eq. 9)")
    beta2: float = help_field(10.0, "weight of the image term ||G(y) - x|| (mean absolute error) in G's loss (eq. 9)")
    gamma_k: float = help_field(0.1, "adaptive margin gamma = k ||F(x) - y|| (eq. 7); presets posegan / configB")
    gamma_const: float = help_field(0.01, "constant margin gamma of preset configC (eq. 6)")
    orientation_weight: float = help_field(
        1.0,
        "weight of the quaternion part in every pose distance ||F(x) - y|| = ||(dp, w dq)|| of normalized poses "
        "(1: the paper's plain norm of the (3 + 4)-vector)",
    )
    n_critic: int = help_field(1, "discriminator updates per generator update (on the same batch)")
    center_target: bool = help_field(
        False,
        "G's image term against the centre crop of the frame instead of the (randomly cropped) real image x "
        "(the paper: the same x)",
    )

    def __post_init__(self) -> None:
        if self.preset not in PRESET_NAMES:
            raise ConfigError(f"model.preset {self.preset!r} is not one of {list(PRESET_NAMES)}")
        s = int(self.size)
        if s < MIN_SIZE or s > MAX_SIZE or s & (s - 1):
            raise ConfigError(
                f"model.size {self.size} must be a power of two in [{MIN_SIZE}, {MAX_SIZE}] (32, 64, 128, 256)"
            )
        for name in ("g_channels", "d_channels", "n_critic"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("alpha", "beta1", "beta2", "gamma_k", "gamma_const", "orientation_weight"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0.0):
                raise ConfigError(f"model.{name} must be a finite number >= 0, got {v}")

    # -- what the preset switches --------------------------------------------------------------------------
    @property
    def adversarial(self) -> bool:
        """G and the real / fake head are trained (every preset but configA)."""
        return self.preset != "configA"

    @property
    def fake_pose(self) -> bool:
        """D's pose loss has the margin term on generated samples (the second term of eq. 6)."""
        return self.preset in ("posegan", "configC")

    @property
    def adaptive_gamma(self) -> bool:
        """gamma = k ||F(x) - y|| (eq. 7); configC uses the constant gamma_const."""
        return self.preset != "configC"

    # -- sizes ---------------------------------------------------------------------------------------------
    @property
    def load_size(self) -> int:
        """Frames are resized to this square size, then cropped to ``size`` (144 -> 128 in the paper)."""
        return round(int(self.size) * LOAD_OVER_CROP)

    @property
    def base_size(self) -> int:
        """Side of G's first feature map (and of D's last one): ``size / 2**5`` (4 at 128)."""
        return int(self.size) >> N_BLOCKS

    @property
    def pose_dim(self) -> int:
        return encoding_dim(ENCODING)

    @property
    def g_widths(self) -> list[int]:
        return [m * int(self.g_channels) for m in G_MULTIPLIERS]

    @property
    def d_widths(self) -> list[int]:
        return [m * int(self.d_channels) for m in D_MULTIPLIERS]

    def with_(self, **kw: Any) -> PoseGANConfig:
        return replace(self, **kw)


# The presets are the paper's settings (every field at its default) with the ablation switch of Table 1.
PRESETS: dict[str, dict[str, Any]] = {name: {"preset": name} for name in PRESET_NAMES}


def preset_config(preset: str, **overrides: Any) -> PoseGANConfig:
    """A :class:`PoseGANConfig` for one of :data:`PRESETS` with some fields overridden."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown posegan preset {preset!r}; choose one of {list(PRESETS)}")
    return PoseGANConfig(**{**PRESETS[preset], **overrides})
