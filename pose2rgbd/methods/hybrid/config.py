"""Configuration of the hybrid warp-and-fill model (one schema for the CLI, YAML files and checkpoints)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pose2rgbd.config import help_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.encoding import ENCODINGS, encoding_dim
from pose2rgbd.methods.pose2rgbd.config import DEFAULT_TRUNK, MAX_SIZE, MIN_SIZE, Pose2RGBDConfig

LOSSES: tuple[str, ...] = ("mse", "l1")
HOLE_DEPTHS: tuple[str, ...] = ("nearest", "background", "learned")
HOLE_BORDERS: tuple[str, ...] = ("auto", "background", "nearest")
HOLE_RGBS: tuple[str, ...] = ("nearest", "background")
RGB_CORRECTIONS: tuple[str, ...] = ("everywhere", "holes")
GEOMETRIES: tuple[str, ...] = ("warp", "fused")
WARP_COLOURS: tuple[str, ...] = ("nearest-surface", "blend")
WARP_DEPTHS: tuple[str, ...] = ("nearest-surface", "blend")
# what a checkpoint written before a setting existed was trained with (FAMILY.migrate fills them in)
# (geometry is not here while its default, warp, is what such checkpoints did; a new default adds "geometry": "warp")
BEFORE_DEFAULTS: dict[str, object] = {
    "hole_rgb": "nearest",
    "rgb_correction": "everywhere",
    "fill_init": "none",
    "hole_ground": False,
    "warp_colour": "nearest-surface",
    "warp_depth": "nearest-surface",
    "hole_border": "background",
    "behind_keyframe": False,
    "decoder": True,
}


@dataclass
class HybridConfig:
    """Hybrid warp-and-fill: the nearest training RGB-D frames (keyframes of a place map the checkpoint names)
    splatted into the query pose and a small U-Net that fills and corrects them (with ``decoder``, beside a
    Pose2RGBD Base decoder's render of the pose)."""

    preset: str = help_field("hybrid", "preset name (recorded in checkpoints and reports)")
    encoding: str = help_field(
        "6dof-quat", "pose input of the decoder (with model.decoder true) and of the pose normalization: 6dof-euler, "
        "6dof-quat or 6dof-rot6d"
    )  # fmt: skip
    size: int = help_field(64, "square output resolution, a power of two in [64, 512]")
    # the pose decoder (a Pose2RGBD Base network, methods/pose2rgbd/net.py)
    dense_channels: int = help_field(1024, "decoder: channels of the 4x4 map made by the dense layer from the pose")
    trunk_channels: list[int] = help_field(
        list(DEFAULT_TRUNK), "decoder: transposed-conv channels per upsampling, at 512"
    )
    kernel_size: int = help_field(3, "decoder: kernel of the transposed convolutions (3 or 4)")
    decoder: bool = help_field(
        False, "render the pose with a Pose2RGBD decoder and give its RGB-D to the fill network (False, the default: "
        "no decoder; the fill network refines the keyframes' answer alone, as the shipped pretrained fill was "
        "trained: a faster render, nothing in it tied to one place, and on real held-out blocks as good or better "
        "than with it, docs/results.md \"Without the pose decoder\"; True: the paper's pose-to-image network as "
        "one more input, whose widths the presets set)"
    )  # fmt: skip
    decoder_loss_weight: float = help_field(
        0.5, "with model.decoder true: weight of the decoder's own RGB / depth losses next to the final output's (0: "
        "trained only through fill)"
    )  # fmt: skip
    # the keyframe store and the warp
    neighbours: int = help_field(
        5, "keyframes warped into each query pose (nearest first; the reprojection baseline warps 3: more of them "
        "fill one frame's sensor holes from the others, docs/results.md \"A pretrained fill\")"
    )  # fmt: skip
    behind_keyframe: bool = help_field(
        True, "one more keyframe per query, the nearest whose camera lies behind the query camera's image plane, "
        "warped only into the pixels the neighbours leave empty: a camera ahead of its nearest keyframes (flying "
        "or walking on past them) sees beyond their borders, which a view from behind covers "
        "(docs/results.md, \"A keyframe from behind\")"
    )  # fmt: skip
    max_keyframes: int = help_field(
        4000, "most training frames kept as keyframes (without --map: written into the run folder's keyframe map; a "
        "larger training split is subsampled evenly in time)"
    )  # fmt: skip
    map: str = help_field(
        "", "training: the place map whose keyframes the model warps (of the training dataset, its keyframes from "
        "the training split only); empty: the training split's frames are written into OUT/keyframes"
    )  # fmt: skip
    exclude_window: int = help_field(
        30,
        "training: a query never warps its own frame nor frames of the same source within this many frames of it, "
        "so the network learns to fill from farther views as on unseen routes (0: only the frame itself)",
    )
    exclude_random: bool = help_field(
        True, "training: draw each query's window uniformly from 0..exclude_window (False: always exclude_window)"
    )
    geometry: str = help_field(
        "warp",
        "the depth and colour the fill network refines: warp (the nearest keyframes forward-warped) | fused (the "
        "keyframes' depth fused into one surface, stored with their map in <map>/fused: its depth ray-cast "
        "at the pose, its colour from the keyframes that see each point, exposure-compensated; the warp where the "
        "surface is missing; needs Open3D, pose2rgbd[fusion])",
    )
    fused_neighbours: int = help_field(4, "geometry fused: keyframes that colour each surface point (nearest first)")
    fused_folds: int = help_field(
        5, "geometry fused, training: a query sees the surface fused without its own time block of the keyframes, "
        "one of this many (as a held-out block at test time; 0 or 1: the surface of every keyframe)"
    )  # fmt: skip
    # the fill network
    fill_channels: int = help_field(
        16, "fill U-Net: channels at its first level (full resolution, or 1/fill_space_to_depth), doubled per level"
    )
    fill_levels: int = help_field(2, "fill U-Net: number of stride-2 levels (receptive field grows 2x per level)")
    fill_space_to_depth: int = help_field(
        1,
        "fill U-Net: 1 runs it from the image's full resolution; 2 or 4 from 1/2 or 1/4 of it, each 2x2 (4x4) pixel "
        "block's inputs as channels and its answer from one sub-pixel convolution (fill_channels then count at that "
        "resolution)",
    )
    fill_init: str = help_field(
        "pretrained",
        "training a new model: the fill network's starting weights -- pretrained (the weights shipped for this "
        "fill_channels / fill_levels / fill_space_to_depth, trained on many simulated places with sensor realism; a "
        "zero start with a note where none are shipped) | none (zero start: the untrained model answers the "
        "reprojection baseline) | PATH (a fill file written by `python -m pose2rgbd.methods.hybrid.pretrain`)",
    )
    hole_depth: str = help_field(
        "background",
        "depth where no keyframe point lands: nearest (the nearest keyframe's, as the reprojection baseline) | "
        "background (the farther warped surface around the hole, grown in from its edges: a disocclusion shows "
        "what lay behind) | learned (corrected by the fill network like the rest)",
    )
    hole_ground: bool = help_field(
        True,
        "with hole_depth background: a hole's depth is at most where its ray meets the place's ground, a plane "
        "fitted to a new model's keyframes' depth and kept in its checkpoint (the lowest level plane under the "
        "cameras: pose2rgbd.placemap.ground). Up is the world's z for a place map of a dataset with a datum where "
        "the cameras stand upright in it, else found from the cameras where their heading turns; no plane where "
        "up stays unclear (a straight flight without a datum, a camera turned in roll) or no plane qualifies. Views "
        "far from every keyframe have the near ground in their holes, which the background rule gives the depth of "
        'what stands behind it (docs/results.md, "The ground under the holes")',
    )
    hole_border: str = help_field(
        "auto",
        "with hole_depth background: the depth of what the neighbours leave open at the image's border, where the "
        "view sees beyond every keyframe's frame (the holes that reach the border, and what only the keyframe from "
        "behind landed on): background (hole_depth's rule in the holes, the keyframe from behind's depth where it "
        "landed) | nearest (the nearest keyframe's own depth at the pixel, as the reprojection baseline; the colour "
        "stays) | auto (a new model chooses for its place, from its own keyframes, each warped from the others with "
        "its time window left out: the one with the lower depth error there, kept in the checkpoint; docs/results.md, "
        '"The holes at the border")',
    )
    hole_rgb: str = help_field(
        "background",
        "colour of the warped view where no keyframe point lands, the fill network's input and the base its correction "
        "is added to: nearest (the nearest keyframe's own pixel, as the reprojection baseline) | background (the "
        "colour of the pixel whose depth hole_depth background gives the hole: the farther surface around it)",
    )
    warp_colour: str = help_field(
        "blend",
        "colour of a warped pixel: nearest-surface (the z-buffer's winner alone, as the reprojection baseline) | "
        "blend (every selected keyframe whose own nearest point there lies within blend_tolerance of the winner's "
        "depth, weighted by 1 / its pose distance to the query: sensor noise, exposure and compression averaged "
        "over the views that see the surface; the depth: warp_depth)",
    )
    warp_depth: str = help_field(
        "blend",
        "depth of a warped pixel: blend (the mean of the nearest points there of every selected keyframe whose own "
        "nearest point lies within blend_tolerance of the winner's, with warp_colour blend's weights: the nearest "
        "of several noisy depths of one surface lies short of it, "
        'docs/results.md "The depth averaged over the views that see the surface") | nearest-surface (the '
        "z-buffer's winner, the nearest point any keyframe landed there, as the reprojection baseline)",
    )
    blend_tolerance: float = help_field(
        0.2,
        "warp_colour / warp_depth blend: a keyframe's point counts as the same surface within this fraction of "
        "the depth",
    )
    rgb_correction: str = help_field(
        "everywhere",
        "where the fill network's colour correction is added: everywhere (warped pixels too: real keyframes "
        "disagree with a new view in exposure, white balance, compression and what moved, docs/results.md "
        '"The colour correction everywhere") | holes (pixels no keyframe point landed on; warped pixels keep the '
        "keyframes' colour)",
    )
    loss: str = help_field("l1", "image loss of the final and decoder outputs: l1 (the metrics are MAE) | mse")
    depth_max: float = help_field(
        0.0, "cap of the depth range in metres, fitted once on the training split (0: set by depth_max_percentile)"
    )
    depth_max_percentile: float = help_field(
        99.0, "depth range maximum = this percentile of the training depths (100: plain min-max)"
    )

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"model.encoding {self.encoding!r} is not one of {list(ENCODINGS)}")
        s = int(self.size)
        if s < MIN_SIZE or s > MAX_SIZE or s & (s - 1):
            raise ConfigError(f"model.size {self.size} must be a power of two in [{MIN_SIZE}, {MAX_SIZE}]")
        if self.kernel_size not in (3, 4):
            raise ConfigError(f"model.kernel_size {self.kernel_size} must be 3 or 4")
        if not 1 <= int(self.neighbours) <= 16:
            raise ConfigError(f"model.neighbours {self.neighbours} must be in 1..16")
        if int(self.max_keyframes) < 1:
            raise ConfigError(f"model.max_keyframes {self.max_keyframes} must be >= 1")
        if int(self.exclude_window) < 0:
            raise ConfigError(f"model.exclude_window {self.exclude_window} must be >= 0 (0: only the frame itself)")
        if not 4 <= int(self.fill_channels) <= 256:
            raise ConfigError(f"model.fill_channels {self.fill_channels} must be in 4..256")
        if int(self.fill_space_to_depth) not in (1, 2, 4):
            raise ConfigError(f"model.fill_space_to_depth {self.fill_space_to_depth} must be 1, 2 or 4")
        if not 0 <= int(self.fill_levels) <= 4 or s // int(self.fill_space_to_depth) >> int(self.fill_levels) < 8:
            raise ConfigError(
                f"model.fill_levels {self.fill_levels} must be in 0..4 and leave at least 8x8 at the lowest level "
                f"(model.size {s} / model.fill_space_to_depth {self.fill_space_to_depth}, halved per level)"
            )
        if not str(self.fill_init).strip():
            raise ConfigError("model.fill_init is empty: pass pretrained, none or the path of a fill file")
        if self.hole_depth not in HOLE_DEPTHS:
            raise ConfigError(f"model.hole_depth {self.hole_depth!r} is not one of {list(HOLE_DEPTHS)}")
        if self.hole_border not in HOLE_BORDERS:
            raise ConfigError(f"model.hole_border {self.hole_border!r} is not one of {list(HOLE_BORDERS)}")
        if self.hole_rgb not in HOLE_RGBS:
            raise ConfigError(f"model.hole_rgb {self.hole_rgb!r} is not one of {list(HOLE_RGBS)}")
        if self.warp_colour not in WARP_COLOURS:
            raise ConfigError(f"model.warp_colour {self.warp_colour!r} is not one of {list(WARP_COLOURS)}")
        if self.warp_depth not in WARP_DEPTHS:
            raise ConfigError(f"model.warp_depth {self.warp_depth!r} is not one of {list(WARP_DEPTHS)}")
        if not 0.0 < float(self.blend_tolerance) <= 1.0:
            raise ConfigError(f"model.blend_tolerance {self.blend_tolerance} must be in (0, 1]")
        if self.rgb_correction not in RGB_CORRECTIONS:
            raise ConfigError(f"model.rgb_correction {self.rgb_correction!r} is not one of {list(RGB_CORRECTIONS)}")
        if self.geometry not in GEOMETRIES:
            raise ConfigError(f"model.geometry {self.geometry!r} is not one of {list(GEOMETRIES)}")
        if not 1 <= int(self.fused_neighbours) <= 16:
            raise ConfigError(f"model.fused_neighbours {self.fused_neighbours} must be in 1..16")
        if not 0 <= int(self.fused_folds) <= 20:
            raise ConfigError(f"model.fused_folds {self.fused_folds} must be in 0..20 (0 or 1: no time block left out)")
        if self.loss not in LOSSES:
            raise ConfigError(f"model.loss {self.loss!r} is not one of {list(LOSSES)}")
        for name in ("decoder_loss_weight", "depth_max"):
            v = float(getattr(self, name))
            if not (v >= 0.0 and math.isfinite(v)):
                raise ConfigError(f"model.{name} {getattr(self, name)} must be a finite number >= 0")
        if not 0.0 < self.depth_max_percentile <= 100.0:
            raise ConfigError(f"model.depth_max_percentile {self.depth_max_percentile} must be in (0, 100]")
        self.decoder_config()  # the decoder's own checks (trunk widths)

    @property
    def input_dim(self) -> int:
        return encoding_dim(self.encoding)

    def decoder_config(self) -> Pose2RGBDConfig:
        """The Pose2RGBD Base network that renders RGB-D from the pose alone."""
        return Pose2RGBDConfig(
            preset="base",
            outputs="rgbd",
            encoding=self.encoding,
            size=int(self.size),
            dense_channels=int(self.dense_channels),
            trunk_channels=[int(c) for c in self.trunk_channels],
            kernel_size=int(self.kernel_size),
            depth_max=self.depth_max,
            depth_max_percentile=self.depth_max_percentile,
        )


# The decoder widths below apply with model.decoder true; without a decoder (the default) `hybrid` and `hybrid-lite`
# are the same model (the 16-channel, 2-level fill), `hybrid-fast` the 8-channel, 3-level fill and `hybrid-subpixel`
# the 16-channel, 2-level fill from half resolution (DEFAULT_PRESET after them; HybridConfig's own field defaults are
# `hybrid`'s).
PRESETS: dict[str, dict[str, Any]] = {
    "hybrid": {"preset": "hybrid"},
    # a quarter-width decoder: most of the answer comes from the warped keyframes, so a CPU budget goes further
    "hybrid-lite": {"preset": "hybrid-lite", "dense_channels": 256, "trunk_channels": [64, 32, 32, 16, 16, 16]},
    # for a CPU at sensor rate: the quarter-width decoder and a fill U-Net of half the width with one more level
    # (its full-resolution convolutions are most of the time; the extra level keeps the receptive field)
    "hybrid-fast": {
        "preset": "hybrid-fast",
        "dense_channels": 256,
        "trunk_channels": [64, 32, 32, 16, 16, 16],
        "fill_channels": 8,
        "fill_levels": 3,
    },
    # hybrid-fast's fill without its full-resolution layers: the same widths from half resolution down (16, 32, 64
    # channels at 1/2, 1/4, 1/8), the input's 2x2 blocks as channels, the answer by sub-pixel convolution
    "hybrid-subpixel": {
        "preset": "hybrid-subpixel",
        "dense_channels": 256,
        "trunk_channels": [64, 32, 32, 16, 16, 16],
        "fill_channels": 16,
        "fill_levels": 2,
        "fill_space_to_depth": 2,
    },
}
# the kind's default preset: the fill that serves 256x256 near 33 ms at the p99 on a 2-core CPU without AMX with
# AVX-512 bf16 (over it in eight of the last twenty-one runs, one of the latest three; `hybrid-subpixel` has the margin,
# at a cost in colour on the GoPro clips; with AVX2 alone, in float32, both at about twice that: docs/serving.md),
# equals `hybrid` on the synthetic routes at convergence and is ahead of it on average on the real sets
# (docs/results.md, "`hybrid-fast`, the default preset" and "A fill at half resolution")
DEFAULT_PRESET = "hybrid-fast"
