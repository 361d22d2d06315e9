"""The adversarial term of Pose2RGBD (beyond the paper): a pose-conditioned discriminator on the rendered images.

:class:`PoseDiscriminator` is built from PoseGAN's parts (:mod:`pose2rgbd.methods.posegan.net`): its residual
``DBlock`` s (every convolution spectrally normalized, no BatchNorm) halve the image down to 4 x 4 (so the depth
follows the image size: 4 blocks at 64, 5 at 128 -- PoseGAN's layout --, 7 at 512), then ReLU and a sum over
space give the feature ``h``. The score is conditioned on the normalized pose ``y`` by projection (Miyato &
Koyama's cGAN, with a linear embedding of the continuous pose in place of a class embedding)::

    D(x, y) = varphi(h) + <embed(y), h>          varphi, embed: spectrally normalized linear layers

PoseGAN's own discriminator conditions through its pose head instead (``||phi3(h) - y||``, eq. 3), which a
renderer does not need. D is trained with PoseGAN's hinge loss (:func:`pose2rgbd.methods.posegan.losses.hinge_d`)
and adds ``adversarial_weight * hinge_g`` to the renderer's loss; see ``Pose2RGBDNet.train_step``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pose2rgbd.methods.posegan.config import D_MULTIPLIERS
from pose2rgbd.methods.posegan.net import DBlock, _sn_linear

MIN_FEATURE = 4  # the blocks stop at a 4 x 4 map (PoseGAN: 128 -> 4 with 5 blocks)


def discriminator_widths(size: int, channels: int) -> list[int]:
    """Output channels of each DBlock for a ``size`` image: PoseGAN's multipliers 1, 2, 4, 8, 16 of
    ``channels``, then 16 again for every further block (sizes above 128)."""
    n = max(1, (int(size) // MIN_FEATURE).bit_length() - 1)
    mult = [D_MULTIPLIERS[min(i, len(D_MULTIPLIERS) - 1)] for i in range(n)]
    return [m * int(channels) for m in mult]


class PoseDiscriminator(nn.Module):
    """``forward(images (N, C, S, S) in [-1, 1], poses (N, D) normalized) -> scores (N,)`` (real: high)."""

    training_only = True  # not served nor exported: count_parameters leaves it out of the renderer's count

    def __init__(self, in_channels: int, pose_dim: int, size: int, channels: int) -> None:
        super().__init__()
        w = [int(in_channels), *discriminator_widths(size, channels)]
        self.blocks = nn.ModuleList([DBlock(w[i], w[i + 1], first=i == 0) for i in range(len(w) - 1)])
        self.varphi = _sn_linear(w[-1], 1)
        self.embed = _sn_linear(int(pose_dim), w[-1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for b in self.blocks:
            h = b(h)
        return F.relu(h).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.varphi(h).squeeze(1) + (self.embed(y.to(h.dtype)) * h).sum(dim=1)
