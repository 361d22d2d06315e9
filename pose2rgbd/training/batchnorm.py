"""Exact BatchNorm statistics for the current weights ("precise BN").

:func:`recalibrate_batchnorm` runs in the trainer before each validation and at the end of training
(``train.recalibrate_bn``, :meth:`pose2rgbd.training.trainer.Trainer.recalibrate_batchnorm`) and in
:func:`pose2rgbd.training.recalibrate_checkpoint` on a checkpoint written before it existed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pose2rgbd.models.base import ModelBase
from pose2rgbd.models.device import batch_to_device


def has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recalibrate_batchnorm(
    model: ModelBase,
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    autocast: Any = None,
    max_batches: int = 0,
) -> int:
    """Recompute every BatchNorm's running mean / variance for the current weights ("precise BN").

    During training the running statistics are exponential averages over batches seen with *older* weights;
    with few steps and a fast optimizer they lag behind, and an eval-mode forward pass is then far off the
    train-mode one (measured: a Slice-32 RGBD model after 192 steps, depth MAE 219 m in eval mode against
    37 m after recalibration). This pass resets them and accumulates exact averages over ``dataset``
    (in order, no gradients, no random numbers drawn, so training is not perturbed). Each batch goes through
    ``model.recalibration_forward(batch)`` (default ``get_outputs``; a multi-network model runs every network
    whose BatchNorm needs statistics). Returns the number of samples used (0 when the model has no BatchNorm).
    """
    from torch.utils.data import default_collate

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or len(dataset) == 0:  # type: ignore[arg-type]
        return 0
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: the exact mean over the batches below
    was_training = model.training
    model.train()
    n = 0
    try:
        total = len(dataset)  # type: ignore[arg-type]
        limit = total if max_batches <= 0 else min(total, max_batches * batch_size)
        # evenly spread over the whole set (a prefix of a flight would be biased to its first part)
        order = np.unique(np.linspace(0, total - 1, limit).round().astype(np.int64))
        for s in range(0, len(order), batch_size):
            batch = default_collate([dataset[int(i)] for i in order[s : s + batch_size]])
            batch = batch_to_device(batch, device)
            with autocast if autocast is not None else torch.autocast(device.type, enabled=False):
                model.recalibration_forward(batch)
            n += len(order[s : s + batch_size])
    finally:
        for bn, mom in zip(bns, momenta):
            bn.momentum = mom
        model.train(was_training)
    return n
