"""The model contract every trainable model follows (Pose2RGBD, a GAN, a localizer), nerfstudio style.

A model is a ``torch.nn.Module`` (subclass :class:`ModelBase`) that says what it predicts and what it
minimizes; :class:`pose2rgbd.training.Trainer` owns everything else (device, precision, seeding, data,
optimizers, schedules, validation, budgets, callbacks, resume).

Methods every model defines:

* ``get_outputs(batch) -> dict[str, Tensor]``: what it predicts for a batch (a dict from the data loader);
* ``get_loss_dict(outputs, batch) -> dict[str, Tensor]``: scalar losses (already weighted);
* ``get_metrics_dict(outputs, batch) -> dict[str, Tensor | float]``: cheap scalars to log (default: none).

Methods with a default that a model overrides when it needs to:

* ``get_param_groups() -> dict[str, list[Parameter]]``: one optimizer per group, built by the trainer from
  :class:`pose2rgbd.training.config.OptimizerConfig` settings (default: one group ``"model"``, every
  trainable parameter);
* ``optimizer_defaults() -> dict[str, dict]``: the model's own optimizer settings per group (keys of
  ``OptimizerConfig``, e.g. a GAN: ``{"generator": {"optimizer": "adam", "lr": 2e-4, "betas": (0.0, 0.9)}}``).
  Precedence, per group and per key: ``TrainConfig`` globals < ``optimizer_defaults()[group]`` <
  ``TrainConfig.groups[group]`` (default: ``{}``, the globals apply);
* ``train_step(batch, optimizers, *, autocast, step) -> dict[str, Tensor | float]``: one optimization step,
  the update order included. ``optimizers`` is the trainer's dict ``{group: torch.optim.Optimizer}`` (learning
  rates already set for this step), ``autocast`` a zero-argument callable returning the mixed-precision
  context (``with autocast(): ...``; call it once per forward), ``step`` the number of steps done so far.
  It returns what is logged for the step. The default is the *single-objective* step: one forward, the sum
  of ``get_loss_dict`` as one loss, one backward, every optimizer steps; it returns the losses by name, their
  sum ``"loss"`` and the metrics. A *multi-objective* model (a GAN) overrides it and does its updates in its
  own order, each with its own forward (e.g. ``n_critic`` discriminator steps, then one generator step), using
  :func:`backward_and_step` for each update; it returns names prefixed by the group they belong to
  (``"generator/adv"``, ``"discriminator/hinge"``, see :func:`group_logs`) and no summed ``"loss"``;
* ``validation_step(batch, *, autocast) -> dict[str, Tensor | float]``: per-batch validation values, called
  in eval mode under ``torch.no_grad()``; the trainer averages them over the validation set (weighted by
  batch size) and prefixes ``val/``. Default: the losses, their sum ``"loss"`` and the metrics; a
  multi-objective model overrides it like ``train_step`` (group-prefixed names, no sum);
* ``recalibration_forward(batch) -> None``: the forward pass of BatchNorm recalibration (the trainer resets
  every BatchNorm's statistics and averages them over training batches run through this, in train mode, without
  gradients). Default: ``get_outputs(batch)``. A multi-network model (a GAN) overrides it to run every network
  whose BatchNorm needs statistics, each on the inputs it sees in training (e.g. the discriminator on real and
  generated images);
* ``best_metric``: ``(name, "min" | "max")``, the validation value that selects ``best.pt`` (default
  ``("val/loss", "min")``; a localizer: ``("val/median_position_error_m", "min")``; a class attribute or a
  property).

The trainer raises :class:`FloatingPointError` for a non-finite logged value; :func:`backward_and_step`
checks before the backward pass, so no weights change on a non-finite loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pose2rgbd.errors import ConfigError

AutocastFactory = Callable[[], AbstractContextManager[Any]]

METRIC_MODES = ("min", "max")


def total_loss(losses: Mapping[str, torch.Tensor], *, step: int, what: str = "loss") -> torch.Tensor:
    """The sum of ``losses`` (float32); :class:`FloatingPointError` naming ``what`` and ``step`` if not finite."""
    if not losses:
        raise ConfigError(f"{what}: no losses to minimize (get_loss_dict() returned an empty dict)")
    total = torch.stack([v.float() for v in losses.values()]).sum()
    if not torch.isfinite(total.detach()):
        values = {k: float(v.detach()) for k, v in losses.items()}
        raise FloatingPointError(f"non-finite {what} at step {step}: {values}")
    return total


def backward_and_step(
    losses: Mapping[str, torch.Tensor],
    optimizers: Iterable[torch.optim.Optimizer],
    *,
    step: int,
    what: str = "loss",
) -> torch.Tensor:
    """One update: zero the gradients of ``optimizers``, backward the sum of ``losses``, step ``optimizers``.

    Only the listed optimizers step, so parameters of other groups do not change (their ``.grad`` may be
    filled by this backward; the next update of that group zeroes it first). Returns the detached sum.
    """
    opts = list(optimizers)
    total = total_loss(losses, step=step, what=what)
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    total.backward()
    for opt in opts:
        opt.step()
    return total.detach()


def group_logs(group: str, values: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
    """``{"<group>/<name>": float}``: log names of a multi-objective model."""
    return {f"{group}/{k}": float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in values.items()}


class ModelBase(nn.Module):
    """Base class of trainable models (see the module docstring for the contract)."""

    best_metric: tuple[str, str] = ("val/loss", "min")
    # engine.precision auto serves this kind at bf16 on a CPU with native bf16 instructions (AVX512-BF16 / AMX),
    # fp32 elsewhere: only for kinds whose served outputs were measured to stay within the fp32 model's
    # (docs/serving.md). Not Base / Slice: their depth is a network output normalized over the whole depth range,
    # where bf16's 8-bit mantissa is metres outdoors.
    serves_bf16_on_cpu: bool = False

    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def get_loss_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def get_metrics_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, Any]:
        return {}

    def use_cuda_graphs(self, on: bool = True, *, emulate: bool = False) -> bool:
        """Serve eval-mode forwards through CUDA graphs where the kind has such a path
        (:mod:`pose2rgbd.models.cuda_graphs`; ``engine.cuda_graphs``); returns whether it has (False here: eager)."""
        return False

    def recalibration_forward(self, batch: dict[str, Any]) -> None:
        """The BatchNorm recalibration pass of one batch (see the module docstring): every network whose
        BatchNorm needs statistics runs; the outputs are not used."""
        self.get_outputs(batch)

    def checkpoint_extra(self, path: Path) -> dict[str, Any]:
        """Entries of the checkpoint's ``extra`` that this model writes beside its ``state_dict`` when saved to
        ``path`` (the hybrid: the place map it reads its keyframes from, or the keyframes themselves)."""
        return {}

    def restore_extra(
        self, extra: dict[str, Any], path: Path | None, *, place_map: str = "", dataset_fingerprint: str = ""
    ) -> dict[str, Any]:
        """Take back what :meth:`checkpoint_extra` wrote (``path``: the checkpoint file, None in memory) and return
        ``extra`` without what the model took. ``place_map``: a map (of the training dataset,
        ``dataset_fingerprint``) to read keyframes from instead of the checkpoint's; a model that reads none
        refuses it."""
        if place_map:
            raise ConfigError(
                f"a place map ({place_map}) was given, but a {type(self).__name__} reads no keyframes; leave it empty"
            )
        return extra

    def shared_with_copies(self) -> tuple[object, ...]:
        """Read-only state that a copy prepared for serving (:func:`~pose2rgbd.models.device.prepare_for_inference`)
        refers to instead of copying (the hybrid: its keyframes and their cache); default none."""
        return ()

    def get_param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    def optimizer_defaults(self) -> dict[str, dict[str, Any]]:
        return {}

    def train_step(
        self,
        batch: dict[str, Any],
        optimizers: Mapping[str, torch.optim.Optimizer],
        *,
        autocast: AutocastFactory,
        step: int,
    ) -> dict[str, torch.Tensor | float]:
        """Single objective: the sum of all losses drives every parameter group (one forward, one backward)."""
        with autocast():
            outputs = self.get_outputs(batch)
            losses = self.get_loss_dict(outputs, batch)
        total = backward_and_step(losses, optimizers.values(), step=step)
        logs: dict[str, torch.Tensor | float] = {k: v.detach() for k, v in losses.items()}
        logs["loss"] = total
        logs.update(self.get_metrics_dict(outputs, batch))
        return logs

    def validation_step(self, batch: dict[str, Any], *, autocast: AutocastFactory) -> dict[str, torch.Tensor | float]:
        """Single objective: the losses, their sum ``loss`` and the metrics of one batch."""
        with autocast():
            outputs = self.get_outputs(batch)
            losses = self.get_loss_dict(outputs, batch)
        vals: dict[str, torch.Tensor | float] = {k: float(v) for k, v in losses.items()}
        vals["loss"] = sum(float(v) for v in losses.values())
        vals.update(self.get_metrics_dict(outputs, batch))
        return vals


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, as the paper's Table 4 counts them (BN running stats excluded). Submodules
    marked ``training_only = True`` (e.g. Pose2RGBD's adversarial discriminator: never served or exported) are not
    counted unless ``model`` is one itself."""
    skip = {
        id(p) for m in model.modules() if m is not model and getattr(m, "training_only", False) for p in m.parameters()
    }
    return sum(p.numel() for p in model.parameters() if (p.requires_grad or not trainable_only) and id(p) not in skip)
