"""The optimizer of each parameter group and its learning-rate schedule, as the trainer builds and steps them.

:func:`build_optimizer` makes the optimizer an :class:`~pose2rgbd.training.config.OptimizerConfig` describes
(``adamw`` | ``adam`` | ``sgd``); :func:`schedule_factor` is the learning rate at a trainer step as a fraction
of the group's ``lr`` (``constant`` | ``cosine`` | ``step``, after an optional linear warm-up). Each group's
settings are resolved by :func:`pose2rgbd.training.config.resolve_optimizer_configs`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from pose2rgbd.training.config import OptimizerConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], oc: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimizer ``oc`` describes (its learning rate is then set per step by :func:`schedule_factor`)."""
    params = list(params)
    if oc.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=oc.lr, betas=oc.betas, weight_decay=oc.weight_decay)
    if oc.optimizer == "adam":
        return torch.optim.Adam(params, lr=oc.lr, betas=oc.betas, weight_decay=oc.weight_decay)
    return torch.optim.SGD(params, lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay)


def schedule_factor(oc: OptimizerConfig, step: int, planned_steps: int) -> float:
    """Learning rate at trainer step ``step`` as a fraction of ``oc.lr`` (see :class:`OptimizerConfig`)."""
    f = 1.0
    if oc.schedule == "cosine":
        total = max(1, oc.schedule_steps or planned_steps)
        t = min(step, total) / total
        f = oc.min_lr_factor + (1.0 - oc.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
    elif oc.schedule == "step":
        f = oc.gamma ** (step // oc.step_size)
    if oc.warmup_steps > 0:
        f *= min(1.0, (step + 1) / oc.warmup_steps)
    return f
