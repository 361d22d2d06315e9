"""A generic trainer for models that follow :mod:`pose2rgbd.models.base` (Pose2RGBD, a GAN, a localizer).

It owns: device and mixed precision (:mod:`pose2rgbd.models.device`), seeding, data loaders (reshuffled per
epoch from ``seed + epoch``, so a resumed run sees the same order as an uninterrupted one), one optimizer per
parameter group with its own settings and learning-rate schedule (:class:`OptimizerConfig`, resolved by
:func:`resolve_optimizer_configs`: globals < ``model.optimizer_defaults()`` < ``TrainConfig.groups``), the
loop, budgets, the non-finite check, validation, BatchNorm recalibration and the resume state. Everything
else -- logs, progress bar, checkpoints, early stop -- is a :class:`Callback`.

The update itself, its order included, belongs to the model: each step the trainer sets every group's
learning rate for the current step and calls ``model.train_step(batch, optimizers, autocast=..., step=...)``
(default: one objective, one backward, every optimizer steps; a GAN overrides it with its D and G updates).
What that returns is logged as it is: a single-objective model logs its losses, their sum ``loss`` and its
metrics; a multi-objective model logs group-prefixed names (``generator/adv``) and no sum. Validation calls
``model.validation_step`` per batch and logs the batch-size-weighted means as ``val/<name>``; the model's
``best_metric`` names the value :class:`~pose2rgbd.training.callbacks.CheckpointCallback` selects ``best.pt`` by.

Length and cadence (:class:`TrainConfig`): training ends at the first of ``epochs`` (0: unlimited when a step or
time budget is given, else 100), ``max_steps``, ``max_minutes`` or a callback. Validation runs at the end of every
``val_every``-th epoch, every ``val_every_steps`` steps and every ``val_every_seconds`` of training time, but at
most once per ``val_min_seconds`` (a validation due earlier waits), and once at the end unless the last one was
at the final step. A callback that sets ``should_stop`` at an epoch-end validation ends training there; one set
at a validation inside an epoch takes effect after the next step. ``last.pt`` is due every
``checkpoint_every_seconds`` / ``_steps`` / ``_epochs`` and at the end; callbacks get ``on_checkpoint`` then. All
times are training time read from ``trainer.clock`` (``time.monotonic``; tests replace it). Checkpoints may fall
inside an epoch: ``epoch_step`` (batches done in the current epoch) is saved, and a resume skips those batches of
the epoch's (seeded) order, so it continues where the run stopped.

Batches are made ahead in a background thread (``prefetch_batches``) while the model trains; under ``torchrun``
(:mod:`pose2rgbd.training.distributed`) each process trains on its share of every global batch, gradients are
averaged before each optimizer step, and only rank 0 validates and runs the callbacks it is given (the driver
gives the loggers and checkpoints to rank 0 only).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from pose2rgbd.errors import ConfigError
from pose2rgbd.models.base import METRIC_MODES, ModelBase
from pose2rgbd.models.device import (
    autocast,
    batch_to_device,
    precision_dtype,
    resolve_device,
    resolve_training_precision,
)
from pose2rgbd.prefetch import prefetch
from pose2rgbd.training import distributed as dist_
from pose2rgbd.training.batchnorm import has_batchnorm, recalibrate_batchnorm
from pose2rgbd.training.config import TrainConfig, resolve_optimizer_configs
from pose2rgbd.training.optimizers import build_optimizer, schedule_factor
from pose2rgbd.training.rng import rng_state, set_rng_state

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - seeds third-party code that uses the legacy global RNG
    torch.manual_seed(seed)


def _floats(values: dict[str, Any], what: str, step: int) -> dict[str, float]:
    out = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in values.items()}
    bad = {k: v for k, v in out.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f"non-finite {what} at step {step}: {bad} (all: {out})")
    return out


class Callback:
    """Hooks called by :class:`Trainer`. Set ``trainer.should_stop = True`` to end training early."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, logs: dict[str, float]) -> None: ...

    def on_validation_end(self, trainer: Trainer, logs: dict[str, float]) -> None: ...

    def on_checkpoint(self, trainer: Trainer, *, last_due: bool) -> None:
        """After a validation (``last_due`` False unless a checkpoint is due too) and when ``last.pt`` is due
        by the checkpoint cadence (``last_due`` True); not at the end (``on_train_end`` follows there)."""

    def on_epoch_end(self, trainer: Trainer) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


class Trainer:
    """Train ``model`` on ``train_set`` (items are dicts; default collation), validating on ``val_set``.

    Attributes callbacks may read: ``step`` (optimization steps done), ``epoch`` (epochs finished),
    ``device``, ``amp_dtype``, ``optimizers`` and ``optimizer_configs`` (dicts by parameter group),
    ``planned_steps`` (0: not known, a time budget ends the run), ``max_epochs`` (``None``: unlimited),
    ``epoch_step`` (batches done in the current epoch), ``last_val`` (latest validation logs), ``elapsed_s``
    (training time so far, summed over resumes), ``bn_fresh``, ``stop_reason``, ``extra_state`` (small values
    saved with the trainer state), ``dist`` (:class:`~pose2rgbd.training.distributed.DistInfo`), ``clock``.

    Raises :class:`ConfigError` when the model's groups, the optimizer settings or ``best_metric`` are
    invalid (naming the group and the key), and :class:`FloatingPointError` on a non-finite logged value.
    """

    def __init__(
        self,
        model: ModelBase,
        train_set: Dataset,
        cfg: TrainConfig,
        *,
        val_set: Dataset | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.cfg = cfg
        seed_everything(cfg.seed)
        self.dist = dist_.current()
        self.device = resolve_device(cfg.device)
        if self.dist.enabled and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", self.dist.local_rank)  # one GPU per process
        world = self.dist.world_size
        if cfg.batch_size % world:
            raise ConfigError(
                f"train.batch_size {cfg.batch_size} is the global batch and must be divisible by the number of "
                f"processes ({world}); use e.g. {max(1, cfg.batch_size // world) * world}"
            )
        #: frames per step in this process (the global batch split over the processes)
        self.local_batch_size = cfg.batch_size // self.dist.world_size
        self.clock: Callable[[], float] = time.monotonic
        self.precision = resolve_training_precision(cfg.amp, self.device)
        self.amp_dtype = precision_dtype(self.precision)
        self.model = model.to(self.device)
        self.train_set = train_set
        self.val_set = val_set
        self.callbacks = list(callbacks)
        if hasattr(model, "loss_groups"):
            raise ConfigError(
                f"{type(model).__name__}.loss_groups() is no longer read: override ModelBase.train_step to "
                "update the groups in an explicit order (see pose2rgbd.models.base)"
            )
        groups = model.get_param_groups()
        if not groups:
            raise ConfigError("model.get_param_groups() returned no parameter groups")
        empty = [name for name, params in groups.items() if not list(params)]
        if empty:
            raise ConfigError(f"model.get_param_groups(): group(s) {empty} have no parameters")
        #: the resolved settings of each parameter group (precedence: pose2rgbd.training.config)
        self.optimizer_configs = resolve_optimizer_configs(cfg, list(groups), model.optimizer_defaults())
        self.optimizers = {name: build_optimizer(groups[name], oc) for name, oc in self.optimizer_configs.items()}
        _, mode = model.best_metric
        if mode not in METRIC_MODES:
            raise ConfigError(f"{type(model).__name__}.best_metric mode {mode!r} is not one of {list(METRIC_MODES)}")
        if len(train_set) == 0:  # type: ignore[arg-type]
            raise ConfigError("the training set is empty")
        self.max_epochs = cfg.max_epochs
        #: batches per epoch (in every process)
        self.batches_per_epoch = math.ceil(
            math.ceil(len(train_set) / self.dist.world_size) / self.local_batch_size  # type: ignore[arg-type]
        )
        by_epochs = self.max_epochs * self.batches_per_epoch if self.max_epochs is not None else 0
        #: steps the run plans (cosine schedules end there unless they set schedule_steps); 0: not known
        self.planned_steps = min(x for x in (cfg.max_steps, by_epochs) if x) if (cfg.max_steps or by_epochs) else 0
        if not self.planned_steps:
            open_ended = [
                g for g, oc in self.optimizer_configs.items() if oc.schedule == "cosine" and not oc.schedule_steps
            ]
            if open_ended:
                raise ConfigError(
                    f"group(s) {open_ended}: a cosine schedule over the run's planned steps needs a run length in "
                    "steps, and a time budget alone does not give one; set train.max_steps, train.epochs or "
                    "the group's schedule_steps"
                )
        self.step = 0
        self.epoch_step = 0
        self.epoch = 0
        self.elapsed_s = 0.0
        self.should_stop = False
        self._val_step = -1  # the step of the last validation (the final one is skipped when it is this step)
        self.stop_reason = ""
        self.last_val: dict[str, float] = {}
        self.bn_fresh = True  # BatchNorm statistics match the weights (no step since the last recalibration)
        self.extra_state: dict[str, Any] = {}  # small plain values callbacks want saved with the trainer state

    # -- data ----------------------------------------------------------------------------------------------
    def _loader(self, ds: Dataset, *, shuffle: bool, epoch: int = 0, skip_batches: int = 0) -> DataLoader:
        """Batches of ``ds``: shuffled per epoch from ``seed`` and ``epoch`` (the same order in one process and
        across ``torchrun`` processes: process r takes every r-th frame of it), the first ``skip_batches``
        left out (a resume inside an epoch)."""
        sampler: Sampler[int] | None = None
        batch = self.local_batch_size if shuffle else self.cfg.batch_size
        seed = self.cfg.seed * 100_003
        # the loader's own generator gives its worker seeds: without one, each new iterator draws from the global
        # generator, which a resume inside an epoch would then draw from at another point than the first run
        generator = torch.Generator().manual_seed(seed + 7_919 + (epoch if shuffle else -1))
        if shuffle:
            if self.dist.enabled:
                ds_sampler: DistributedSampler[int] = DistributedSampler(
                    ds, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True, seed=seed
                )
                ds_sampler.set_epoch(epoch)
                sampler = ds_sampler
            else:
                sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(seed + epoch))  # type: ignore[arg-type]
            if skip_batches:
                sampler = _Skip(sampler, skip_batches * batch)
        return DataLoader(
            ds,
            batch_size=batch,
            sampler=sampler,
            shuffle=False,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
            generator=generator,
        )

    def _autocast(self) -> AbstractContextManager[Any]:
        """A fresh mixed-precision context (the factory models get as ``autocast``)."""
        return autocast(self.device, self.precision)  # type: ignore[no-any-return]

    def learning_rates(self, step: int | None = None) -> dict[str, float]:
        """Each group's learning rate at trainer step ``step`` (default: the next step)."""
        t = self.step if step is None else step
        return {g: oc.lr * schedule_factor(oc, t, self.planned_steps) for g, oc in self.optimizer_configs.items()}

    def _apply_schedules(self) -> None:
        for g, lr in self.learning_rates().items():
            for pg in self.optimizers[g].param_groups:
                pg["lr"] = lr

    # -- one step ------------------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimization step on ``batch`` through ``model.train_step``; returns its logs as floats."""
        self.model.train()
        batch = batch_to_device(batch, self.device)
        self._apply_schedules()
        logs = self.model.train_step(batch, self.optimizers, autocast=self._autocast, step=self.step)
        if not logs:
            raise ConfigError(f"{type(self.model).__name__}.train_step() returned nothing to log")
        out = _floats(logs, "training value", self.step)
        self.step += 1
        self.bn_fresh = False
        return out

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Sample-weighted means of ``model.validation_step`` over ``val_set`` (keys prefixed ``val/``)."""
        if self.val_set is None or len(self.val_set) == 0 or not self.dist.is_main:  # type: ignore[arg-type]
            return {}
        self.recalibrate_batchnorm()
        self._val_step = self.step
        self.model.eval()
        sums: dict[str, float] = {}
        n = 0
        for batch in self._loader(self.val_set, shuffle=False):
            batch = batch_to_device(batch, self.device)
            first = batch[next(iter(batch))]
            b = int(first.shape[0]) if torch.is_tensor(first) else 1
            vals = _floats(self.model.validation_step(batch, autocast=self._autocast), "validation value", self.step)
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v * b
            n += b
        self.last_val = {f"val/{k}": v / max(n, 1) for k, v in sums.items()}
        for cb in self.callbacks:
            cb.on_validation_end(self, self.last_val)
        return self.last_val

    def recalibrate_batchnorm(self) -> None:
        """Exact BatchNorm statistics for the current weights (``cfg.recalibrate_bn``); see the function."""
        if self.cfg.recalibrate_bn and has_batchnorm(self.model):
            recalibrate_batchnorm(
                self.model,
                self.train_set,
                batch_size=self.cfg.batch_size,
                device=self.device,
                autocast=self._autocast(),
                max_batches=self.cfg.recalibrate_bn_batches,
            )
        self.bn_fresh = True

    # -- the loop ------------------------------------------------------------------------------------------
    def _budget_words(self) -> str:
        """The step and time budgets of the training as the start line names them ("" without either)."""
        c = self.cfg
        return " / ".join(w for w in (f"{c.max_steps} steps" if c.max_steps else "",
                                      f"{c.max_minutes:g} min" if c.max_minutes else "") if w)  # fmt: skip

    def _training_time(self) -> float:
        return self._elapsed0 + (self.clock() - self._t0)

    def _budget_left(self) -> bool:
        c = self.cfg
        if c.max_steps and self.step >= c.max_steps:
            self.stop_reason = f"max_steps {c.max_steps} reached"
            return False
        if c.max_minutes and self._training_time() >= c.max_minutes * 60.0:
            self.stop_reason = f"time budget {c.max_minutes:g} min reached"
            return False
        if self.max_epochs is not None and self.epoch >= self.max_epochs:
            self.stop_reason = "done"
            return False
        return True

    def _validation_due(self, epoch_end: bool) -> bool:
        """Whether a validation trigger fired at this step (it then waits for ``val_min_seconds``)."""
        c, t = self.cfg, self._training_time()
        if epoch_end and c.val_every and self.epoch % c.val_every == 0:
            return True
        if c.val_every_steps and self.step % c.val_every_steps == 0:
            return True
        return bool(c.val_every_seconds and t - self._last_val_t >= c.val_every_seconds)

    def _checkpoint_due(self, epoch_end: bool) -> bool:
        c, t = self.cfg, self._training_time()
        if epoch_end and c.checkpoint_every_epochs and self.epoch % c.checkpoint_every_epochs == 0:
            return True
        if c.checkpoint_every_steps and self.step % c.checkpoint_every_steps == 0:
            return True
        return bool(c.checkpoint_every_seconds and t - self._last_ckpt_t >= c.checkpoint_every_seconds)

    def _batches(self, loader: DataLoader) -> Generator[dict[str, Any], None, None]:
        """``loader``'s batches, made ahead in a background thread when ``prefetch_batches`` > 0 (batches are
        made from memory-mapped arrays by numpy / torch code that releases the GIL for the copies)."""
        n = self.cfg.prefetch_batches
        if n <= 0 or self.cfg.num_workers > 0:  # worker processes prefetch already
            yield from loader
            return
        # here: making the iterator draws from the global RNG, at the same point every run
        yield from prefetch(iter(loader), n, name="pose2rgbd-batches")

    def fit(self) -> Trainer:
        """Train until ``max_epochs`` (see :class:`TrainConfig`), a budget or a callback stops it."""
        c = self.cfg
        self._t0, self._elapsed0 = self.clock(), self.elapsed_s
        self._last_val_t = self._last_ckpt_t = self.elapsed_s
        self._val_step = -1  # the step of the last validation
        val_pending = False
        dist_.broadcast_module(self.model)  # every process starts from rank 0's weights (a no-op alone)
        hooks = [dist_.average_gradients_before_step(o) for o in self.optimizers.values()] if self.dist.enabled else []
        log.info(
            "training on %s (amp: %s), %d train / %d val frames, %s from epoch %d%s",
            self.device,
            self.amp_dtype or "off",
            len(self.train_set),  # type: ignore[arg-type]
            len(self.val_set) if self.val_set is not None else 0,  # type: ignore[arg-type]
            "epochs unlimited (a budget ends it)"
            if self.max_epochs is None
            else f"{self.max_epochs} epochs"
            + (f" or {b}, whichever comes first" if (b := self._budget_words()) else ""),
            self.epoch,
            f", {self.dist.world_size} processes x batch {self.local_batch_size}" if self.dist.enabled else "",
        )
        try:
            for cb in self.callbacks:
                cb.on_train_start(self)
            stop = not dist_.broadcast_flag(self._budget_left())
            if self.step > 0 and (stop or self.should_stop):  # a resumed run that had ended already
                log.warning(
                    "the resumed run had ended already (%s): nothing is trained. To train on, give a larger limit "
                    "(--epochs, --train.max_steps, --max-minutes; the run's own are kept otherwise) or, after an "
                    "early stop, --train.patience 0",
                    f"{self.max_epochs} epochs done" if self.stop_reason == "done" else self.stop_reason,
                )
            epoch_end = False
            while not stop:
                if dist_.broadcast_flag(self.should_stop):  # asked at the end of the last epoch (early stopping)
                    self.stop_reason = self.stop_reason or "callback asked to stop"
                    break
                for cb in self.callbacks:
                    cb.on_epoch_start(self)
                set_epoch = getattr(self.train_set, "set_epoch", None)
                if callable(set_epoch):  # a data set whose random augmentation follows the epoch (PoseGAN crops)
                    set_epoch(self.epoch)
                loader = self._loader(self.train_set, shuffle=True, epoch=self.epoch, skip_batches=self.epoch_step)
                epoch_end = False
                with contextlib.closing(self._batches(loader)) as batches:
                    for batch in batches:
                        logs = self.train_step(batch)
                        self.epoch_step += 1
                        epoch_end = self.epoch_step >= self.batches_per_epoch
                        if epoch_end:
                            self.epoch += 1
                            self.epoch_step = 0
                        self.elapsed_s = self._training_time()
                        for cb in self.callbacks:
                            cb.on_step_end(self, logs)
                        stop = dist_.broadcast_flag(self.should_stop or not self._budget_left())
                        if stop:
                            if not self.stop_reason:
                                self.stop_reason = "callback asked to stop" if self.should_stop else "rank 0 stopped"
                            break  # the final validation and checkpoint follow below
                        val_pending = val_pending or self._validation_due(epoch_end)
                        t = self._training_time()
                        validated = False
                        if val_pending and t - self._last_val_t >= c.val_min_seconds:
                            self.validate()
                            self._last_val_t, val_pending, validated = self._training_time(), False, True
                        ckpt = self._checkpoint_due(epoch_end)
                        if ckpt:
                            self._last_ckpt_t = self._training_time()
                        if (validated or ckpt) and self.dist.is_main:
                            for cb in self.callbacks:
                                cb.on_checkpoint(self, last_due=ckpt)
                        if epoch_end:
                            for cb in self.callbacks:
                                cb.on_epoch_end(self)
                            break
            if (c.val_every or c.val_every_steps or c.val_every_seconds) and self._val_step != self.step:
                self.validate()  # the final weights (recalibrated), whatever the cadence, unless just validated
            if stop and epoch_end:
                for cb in self.callbacks:
                    cb.on_epoch_end(self)
            if not self.bn_fresh and self.dist.is_main:
                self.recalibrate_batchnorm()  # the final checkpoint gets statistics of the final weights
            self.elapsed_s = self._training_time()
            if not self.stop_reason:
                self.stop_reason = "done"
            for cb in self.callbacks:
                cb.on_train_end(self)
        finally:
            for h in hooks:
                h.remove()
        log.info("training stopped after %d steps / %d epochs (%s)", self.step, self.epoch, self.stop_reason)
        return self

    # -- state (resume) ------------------------------------------------------------------------------------
    def optimizer_states(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "elapsed_s": self.elapsed_s,
            "extra": dict(self.extra_state),
            "rng": rng_state(),  # taken between steps on the training thread: what the next step draws from
        }

    def load_state(
        self, *, model_state: dict[str, Any], optimizers: dict[str, Any], trainer_state: dict[str, Any]
    ) -> None:
        """Restore a previous run (``trainer_state`` as from :meth:`trainer_state`)."""
        self.model.load_state_dict(model_state)
        for name, st in optimizers.items():
            if name not in self.optimizers:
                raise ConfigError(f"resume: optimizer group {name!r} does not exist in this model")
            self.optimizers[name].load_state_dict(st)
        self.step = int(trainer_state.get("step", 0))
        self.epoch = int(trainer_state.get("epoch", 0))
        self.epoch_step = int(trainer_state.get("epoch_step", 0))
        if not 0 <= self.epoch_step < self.batches_per_epoch:
            self.epoch_step = 0  # another batch size or split: restart the epoch
        self.elapsed_s = float(trainer_state.get("elapsed_s", 0.0))
        self.extra_state = dict(trainer_state.get("extra") or {})
        if not math.isfinite(self.elapsed_s):
            self.elapsed_s = 0.0
        set_rng_state(trainer_state.get("rng") or {})  # last: the trainer's set-up above drew from the generators


class _Skip(Sampler[int]):
    """``sampler`` without its first ``n`` indices (a resume inside an epoch)."""

    def __init__(self, sampler: Sampler[int], n: int) -> None:
        self.sampler, self.n = sampler, n

    def __iter__(self) -> Iterator[int]:
        for i, idx in enumerate(self.sampler):
            if i >= self.n:
                yield idx

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.n)  # type: ignore[arg-type]
