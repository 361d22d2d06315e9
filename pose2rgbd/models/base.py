"""The model contract every trainable model follows (Pose2RGBD here, PoseGAN next), nerfstudio style.

A model is a ``torch.nn.Module`` that also says

* ``get_outputs(batch) -> dict[str, Tensor]``: what it predicts for a batch (a dict from the data loader);
* ``get_loss_dict(outputs, batch) -> dict[str, Tensor]``: scalar losses (already weighted);
* ``get_metrics_dict(outputs, batch) -> dict[str, Tensor | float]``: cheap scalars to log while training;
* ``get_param_groups() -> dict[str, list[Parameter]]``: one optimizer per group (the trainer builds them);
* ``loss_groups() -> dict[str, list[str]] | None``: which losses each parameter group minimizes. ``None`` (the
  default) means "the sum of all losses drives every group" -- one backward, every optimizer steps. A GAN
  returns e.g. ``{"generator": ["g_adv", "l1"], "discriminator": ["d_real", "d_fake"]}``; the trainer then
  runs, in this order, zero-grad / backward of that group's losses / step of that group's optimizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ModelBase(nn.Module):
    """Base class of trainable models (see module docstring for the contract)."""

    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def get_loss_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def get_metrics_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, Any]:
        return {}

    def get_param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    def loss_groups(self) -> dict[str, list[str]] | None:
        return None


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, as the paper's Table 4 counts them (BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
