"""The Pose2RGBD networks (paper Sec. 2, Fig. 1): Base (a DCGAN-like generator) and Slice-S.

Base: ``Linear(pose) -> 4x4 x dense_channels -> BN -> ReLU``, then stride-2 transposed convolutions with
BN + ReLU doubling the resolution up to the output size; the last one outputs the image channels and a tanh.

Slice-S: the same trunk, but its last upsampling outputs ``bottleneck_channels`` features followed by a
bottleneck of 3x3 convolutions (BN + ReLU)::

    up -> b1 -> b2 (penultimate) ---------------------------> concat -> b3 -> out conv -> tanh (RGB / D / RGBD)
                 \\-> slice head (3x3 conv, sigmoid) -> S maps -/
                                                      \\-> confidence = sum of the S slice probabilities

The slice head is trained with a per-slice binary cross entropy against one-hot depth slices
(:func:`pose2rgbd.methods.pose2rgbd.slices.slice_targets`). Every output lies in [-1, 1].

The model owns its transforms as buffers (saved with the weights): the pose normalization (``pose_min`` /
``pose_max``, :class:`~pose2rgbd.models.interfaces.PoseToImage`) and the depth range (``depth_range``,
:class:`DepthNormalizer`, the one source of truth for depth scaling in training, evaluation and serving).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pose2rgbd.methods.pose2rgbd.config import Pose2RGBDConfig
from pose2rgbd.methods.pose2rgbd.slices import slice_targets
from pose2rgbd.models.base import ModelBase
from pose2rgbd.models.interfaces import PoseToImage
from pose2rgbd.models.normalization import DepthNormalizer, PoseNormalizer


def _up(cin: int, cout: int, k: int, *, bias: bool) -> nn.ConvTranspose2d:
    # Exact doubling: k=3 -> padding 1, output_padding 1; k=4 -> padding 1, output_padding 0.
    return nn.ConvTranspose2d(cin, cout, k, stride=2, padding=1, output_padding=1 if k == 3 else 0, bias=bias)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Pose2RGBDNet(PoseToImage, ModelBase):
    """Base / Slice network. ``forward(pose (B, D) in [-1, 1]) -> dict`` (see :func:`build_model`)."""

    kind = "pose2rgbd"

    def __init__(
        self,
        config: Pose2RGBDConfig,
        depth_normalizer: DepthNormalizer | None = None,
        pose_normalizer: PoseNormalizer | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.init_pose_normalization(config.encoding, pose_normalizer)
        c = config
        c0 = int(c.dense_channels)
        self.dense = nn.Linear(c.input_dim, 16 * c0)
        self.dense_bn = nn.BatchNorm2d(c0)
        n_up = c.n_upsamplings(c.size)
        widths = [int(w) for w in c.trunk_channels[: n_up - 1]]
        layers: list[nn.Module] = []
        cin = c0
        for w in widths:
            layers += [_up(cin, w, c.kernel_size, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        self.trunk = nn.Sequential(*layers)
        self.last_up: nn.Module
        if not c.is_slice:
            self.last_up = _up(cin, c.out_channels, c.kernel_size, bias=True)
        else:
            b = int(c.bottleneck_channels)
            self.last_up = nn.Sequential(_up(cin, b, c.kernel_size, bias=False), nn.BatchNorm2d(b), nn.ReLU(True))
            self.b1 = _conv_bn_relu(b, b)
            self.b2 = _conv_bn_relu(b, b)
            self.slice_head = nn.Conv2d(b, c.slices, 3, padding=1, bias=True)
            self.b3 = _conv_bn_relu(b + c.slices, b)
            self.out_conv = nn.Conv2d(b, c.out_channels, 3, padding=1, bias=True)
        dn = depth_normalizer or DepthNormalizer(0.0, 1.0)
        self.depth_range: torch.Tensor
        self.register_buffer("depth_range", torch.tensor([dn.min_m, dn.max_m], dtype=torch.float64))

    # -- depth range -------------------------------------------------------------------------------------
    @property
    def depth_normalizer(self) -> DepthNormalizer:
        lo, hi = (float(v) for v in self.depth_range.tolist())
        return DepthNormalizer(lo, hi)

    def set_depth_normalizer(self, dn: DepthNormalizer) -> None:
        self.depth_range.copy_(torch.tensor([dn.min_m, dn.max_m], dtype=torch.float64))

    # -- serving transforms (PoseToImage) ----------------------------------------------------------------
    @property
    def image_hw(self) -> tuple[int, int]:
        return (int(self.config.size), int(self.config.size))

    @property
    def has_rgb(self) -> bool:
        return self.config.has_rgb

    @property
    def has_depth(self) -> bool:
        return self.config.has_depth

    @property
    def depth_range_m(self) -> tuple[float, float] | None:
        if not self.config.has_depth:
            return None
        dn = self.depth_normalizer
        return (dn.min_m, dn.max_m)

    def depth_to_metres(self, depth: torch.Tensor) -> torch.Tensor:
        return self.depth_normalizer.denormalize(depth)  # type: ignore[no-any-return]

    # -- forward -----------------------------------------------------------------------------------------
    def forward(self, pose: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        x = self.dense(pose).view(pose.shape[0], -1, 4, 4)
        x = F.relu(self.dense_bn(x))
        x = self.trunk(x)
        out: dict[str, torch.Tensor] = {}
        if not c.is_slice:
            y = torch.tanh(self.last_up(x))
        else:
            x = self.last_up(x)
            x = self.b2(self.b1(x))
            logits = self.slice_head(x)
            probs = torch.sigmoid(logits)
            x = self.b3(torch.cat([x, probs], dim=1))
            y = torch.tanh(self.out_conv(x))
            out["slice_logits"] = logits
            out["slices"] = probs
            out["confidence"] = probs.sum(dim=1, keepdim=True)
        if c.has_rgb:
            out["rgb"] = y[:, :3]
        if c.has_depth:
            out["depth"] = y[:, -1:]
        return out

    # -- model contract ----------------------------------------------------------------------------------
    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self(batch["pose"])

    def _depth_target(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized depth target (sky/+inf -> 1, i.e. the range maximum) and the valid mask (not NaN)."""
        d = batch["depth"].float()
        valid = ~torch.isnan(d)
        dn = self.depth_normalizer
        t = dn.normalize(torch.where(valid, d, torch.zeros_like(d)))
        return t, valid

    def get_loss_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.config
        losses: dict[str, torch.Tensor] = {}
        if c.has_rgb:
            losses["rgb_mse"] = F.mse_loss(outputs["rgb"].float(), batch["rgb"].float())
        if c.has_depth:
            t, valid = self._depth_target(batch)
            v = valid.float()
            n = v.sum().clamp_min(1.0)
            losses["depth_mse"] = (((outputs["depth"].float() - t) ** 2) * v).sum() / n
            if c.is_slice:
                target = slice_targets(torch.where(valid, t, torch.full_like(t, float("nan"))), c.slices)
                bce = F.binary_cross_entropy_with_logits(outputs["slice_logits"].float(), target, reduction="none")
                losses["slice_bce"] = c.slice_loss_weight * (bce * v).sum() / (n * c.slices)
        return losses

    @torch.no_grad()
    def get_metrics_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, Any]:
        """Cheap batch metrics in data units (the full evaluation lives in pose2rgbd.evaluation)."""
        m: dict[str, Any] = {}
        if self.config.has_rgb:
            m["rgb_mae_px"] = (outputs["rgb"].float().clamp(-1, 1) - batch["rgb"]).abs().mean() * 127.5
        if self.config.has_depth:
            gt = batch["depth"].float()
            dn = self.depth_normalizer
            fin = torch.isfinite(gt) & (gt <= dn.max_m)
            if bool(fin.any()):
                pred = dn.denormalize(outputs["depth"].float())
                m["depth_mae"] = (pred - gt)[fin].abs().mean()
        return m


def build_model(
    cfg: Pose2RGBDConfig,
    depth_normalizer: DepthNormalizer | None = None,
    pose_normalizer: PoseNormalizer | None = None,
) -> Pose2RGBDNet:
    """The network for ``cfg``. ``model(pose)`` returns a dict:

    * ``"rgb"`` ``(B, 3, S, S)`` in [-1, 1] when ``cfg.outputs`` has RGB;
    * ``"depth"`` ``(B, 1, S, S)`` in [-1, 1] (see ``model.depth_normalizer``) when it has depth;
    * slice presets also ``"slices"`` ``(B, K, S, S)`` probabilities, ``"slice_logits"`` and
      ``"confidence"`` ``(B, 1, S, S)`` = sum of the slice probabilities.

    The normalizers are the model's transforms (buffers); left out, they are set later (training fits them,
    a checkpoint load restores them).
    """
    return Pose2RGBDNet(cfg, depth_normalizer, pose_normalizer)
