"""Training configuration (paper Sec. 3: AdamW, fixed learning rate 0.01, up to 100 epochs, 80/20 split).

Optimizer settings are resolved per parameter group (``ModelBase.get_param_groups()``) into an
:class:`OptimizerConfig` by :func:`resolve_optimizer_configs`; per group and per key, later wins:

1. the ``TrainConfig`` globals ``optimizer``, ``lr``, ``weight_decay`` (a global ``adam`` uses no weight decay,
   as before) and the ``OptimizerConfig`` defaults for every other key;
2. the model's own defaults, ``model.optimizer_defaults()[group]`` (e.g. a GAN: Adam, 2e-4, betas (0, 0.9));
3. ``TrainConfig.groups[group]``, the user's per-group overrides.

So the globals configure every group the model has no opinion on (Pose2RGBD: its one group ``model``); to
change a setting a model sets itself, name the group in ``groups``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pose2rgbd.config import SPLIT_KINDS, from_dict, help_field
from pose2rgbd.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = SPLIT_KINDS
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "step")


@dataclass
class OptimizerConfig:
    """Optimizer and learning-rate schedule of one parameter group (see the module docstring for precedence).

    Schedules are functions of the trainer step ``t`` (optimization steps done, so a resumed run continues
    the same curve): ``constant``: ``lr``; ``cosine``: from ``lr`` down to ``lr * min_lr_factor`` over
    ``schedule_steps`` steps (0: the run's planned steps, ``max_steps`` or ``epochs`` x batches per epoch,
    whichever is smaller; a time budget is not foreseen), then flat; ``step``: ``lr * gamma ** (t //
    step_size)``. ``warmup_steps`` > 0 multiplies any of them by ``min(1, (t + 1) / warmup_steps)``.
    """

    optimizer: str = help_field("adamw", "adamw | adam | sgd")
    lr: float = help_field(0.01, "base learning rate")
    betas: tuple[float, float] = help_field((0.9, 0.999), "Adam / AdamW moment coefficients (beta1, beta2)")
    weight_decay: float = help_field(
        0.01, "weight decay: decoupled for adamw, an L2 term in the gradient for adam and sgd"
    )
    momentum: float = help_field(0.9, "SGD momentum")
    schedule: str = help_field("constant", "learning-rate schedule: constant | cosine | step")
    schedule_steps: int = help_field(0, "cosine: steps from lr to lr * min_lr_factor (0: the run's planned steps)")
    min_lr_factor: float = help_field(0.0, "cosine: final learning rate as a fraction of lr")
    step_size: int = help_field(0, "step: multiply the learning rate by gamma every step_size steps (required)")
    gamma: float = help_field(0.1, "step: decay factor")
    warmup_steps: int = help_field(0, "linear warm-up over this many steps (0: none)")

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r} is not one of {' | '.join(OPTIMIZERS)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule {self.schedule!r} is not one of {' | '.join(SCHEDULES)}")
        if self.schedule_steps < 0 or self.warmup_steps < 0 or self.step_size < 0:
            raise ConfigError("schedule_steps, warmup_steps and step_size must be >= 0")
        if not 0.0 <= self.min_lr_factor <= 1.0:
            raise ConfigError(f"min_lr_factor must be in [0, 1], got {self.min_lr_factor}")
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.schedule == "step" and self.step_size < 1:
            raise ConfigError("schedule 'step' needs step_size >= 1 (steps between decays)")


@dataclass
class TrainConfig:
    """How a model is trained (generic: used by Pose2RGBD and the GAN alike)."""

    epochs: int = help_field(
        0,
        "passes over the training frames. 0 (default): unlimited when max_minutes or max_steps is set (the budget "
        "sets the length), else 100 (the paper trains up to 100). Training ends at the first of epochs, "
        "max_steps, max_minutes",
    )
    batch_size: int = help_field(
        16, "frames per optimization step: the global batch; under torchrun each of the N processes takes batch/N"
    )
    optimizer: str = help_field(
        "adamw", "optimizer of every parameter group the model and 'groups' do not set: adamw | adam | sgd"
    )
    lr: float = help_field(0.01, "learning rate, fixed (the paper: AdamW, 0.01, no schedule); see 'groups'")
    weight_decay: float = help_field(0.01, "AdamW / SGD weight decay (PyTorch's AdamW default); see 'groups'")
    groups: dict[str, dict[str, Any]] = help_field(
        {},
        "per parameter group optimizer settings, {group: {key: value}} with the keys of OptimizerConfig "
        "(optimizer, lr, betas, weight_decay, momentum, schedule, schedule_steps, min_lr_factor, step_size, "
        "gamma, warmup_steps); they override the globals and the model's own defaults",
    )
    seed: int = help_field(0, "seed of weights, shuffling and the random split")
    device: str = help_field("auto", "auto (CUDA when present, else CPU) | cpu | cuda | cuda:N")
    amp: str = help_field(
        "auto",
        "mixed precision: auto (bf16 on CUDA GPUs that support it, else fp32; on CPU bf16 only with native bf16 "
        "instructions) | bf16 | off (fp32). Training never uses fp16 (it would need loss scaling)",
    )
    split: str = help_field(
        "random",
        "train/validation/test split: random (shuffled frames) | route (held-out routes, or held-out time blocks "
        "of a single recording) | blocks (held-out time blocks of every source: a dataset merged from several "
        "flights trained on all of them) | every-nth (every N-th frame in time tests, the one halfway between "
        "validates; N = every_nth). Saved with the run in split.json (docs/training.md)",
    )
    val_fraction: float = help_field(
        0.1, "validation share of the random split / of the blocks of a one-route set (selects best.pt)"
    )
    test_fraction: float = help_field(
        0.1,
        "test share of the random split / of the blocks of a one-route set, never used in training or to pick "
        "best.pt; 0: no separate test set, the validation frames are the test frames (the paper's 80/20)",
    )
    every_nth: int = help_field(10, "split every-nth: every N-th frame (in time order) is a test frame")
    val_every: int = help_field(1, "validate at the end of every N-th epoch (0: not by epochs)")
    val_every_steps: int = help_field(0, "also validate every N optimization steps (0: not by steps)")
    val_every_seconds: float = help_field(0.0, "also validate every this many seconds of training (0: not by time)")
    val_min_seconds: float = help_field(
        60.0,
        "at most one validation per this many seconds of training: one due earlier (by epochs or steps) waits "
        "until then (0: no limit). The final validation always runs (unless the last one was at the final step). "
        "Set val_every 0 (and the others 0) for none",
    )
    recalibrate_bn: bool = help_field(
        True, "recompute BatchNorm statistics for the current weights before validating and at the end (precise BN)"
    )
    recalibrate_bn_batches: int = help_field(64, "training batches used to recompute BatchNorm statistics (0: all)")
    max_minutes: float = help_field(
        0.0,
        "stop after this much training time (0: no limit); with epochs 0 it alone sets the run's length. "
        "Validation and last.pt follow at the end",
    )
    max_steps: int = help_field(0, "stop after this many optimization steps (0: no limit)")
    patience: int = help_field(
        0, "early stopping: stop when the validation loss has not improved by more than min_delta for this many "
        "validations in a row (0: never; best.pt keeps the best either way)"
    )  # fmt: skip
    min_delta: float = help_field(0.0, "early stopping: the relative improvement that counts (0.01: 1 %)")
    checkpoint_every_seconds: float = help_field(
        300.0, "write last.pt every this many seconds of training (0: not by time); always at the end"
    )
    checkpoint_every_steps: int = help_field(0, "write last.pt every N optimization steps (0: not by steps)")
    checkpoint_every_epochs: int = help_field(0, "write last.pt at the end of every N-th epoch (0: not by epochs)")
    checkpoint_background: bool = help_field(
        True,
        "write checkpoints in a background thread (the weights are copied first, so training goes on while the "
        "file is written; the write is atomic and an error stops training with its message)",
    )
    prefetch_batches: int = help_field(
        2, "batches made ahead in a background thread while the model trains (0: made in the loop)"
    )
    log_every: int = help_field(10, "log training losses every N steps")
    num_workers: int = help_field(0, "DataLoader worker processes (0: load in the training process)")
    tensorboard: bool = help_field(True, "also write TensorBoard event files (tensorboard --logdir OUT)")
    progress: bool = help_field(True, "show a tqdm progress bar")

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1:
            raise ConfigError("train.epochs must be >= 0 (0: set by the budget) and train.batch_size >= 1")
        for k in ("val_every", "val_every_steps", "checkpoint_every_steps", "checkpoint_every_epochs",
                  "prefetch_batches", "max_steps", "patience"):  # fmt: skip
            if getattr(self, k) < 0:
                raise ConfigError(f"train.{k} must be >= 0, got {getattr(self, k)}")
        for k in ("val_every_seconds", "val_min_seconds", "checkpoint_every_seconds", "max_minutes", "min_delta"):
            v = getattr(self, k)
            if not (v >= 0 and v < float("inf")):
                raise ConfigError(f"train.{k} must be a finite number >= 0, got {v}")
        if self.lr <= 0:
            raise ConfigError("train.lr must be positive")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer {self.optimizer!r} is not one of adamw | adam | sgd")
        if not isinstance(self.groups, Mapping):
            raise ConfigError(f"train.groups: expected a mapping {{group: {{key: value}}}}, got {self.groups!r}")
        # each group's keys and values on their own (the model's groups are checked when the trainer is built)
        self.groups = {str(g): _check_group(g, v, self.global_optimizer_settings()) for g, v in self.groups.items()}
        if self.amp == "fp16":
            raise ConfigError(
                "train.amp 'fp16' is not supported for training (fp16 gradients need loss scaling, which the "
                "trainer does not do); use bf16 (GPUs with bf16 support) or off (fp32)"
            )
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"train.amp {self.amp!r} is not one of auto | bf16 | off")
        if self.split not in SPLITS:
            raise ConfigError(f"train.split {self.split!r} is not one of {list(SPLITS)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("train.val_fraction must be in (0, 1)")
        if not 0.0 <= self.test_fraction < 1.0 or self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                f"train.test_fraction must be in [0, 1) and leave training frames (val_fraction + test_fraction < 1); "
                f"got val_fraction {self.val_fraction}, test_fraction {self.test_fraction}"
            )
        if self.every_nth < (3 if self.test_fraction > 0 else 2):
            raise ConfigError(
                f"train.every_nth must be >= 3 (>= 2 with test_fraction 0), got {self.every_nth}: every N-th frame "
                "tests and the one halfway between validates"
            )

    @property
    def max_epochs(self) -> int | None:
        """The epoch limit the run obeys: ``epochs`` when set; else unlimited (``None``) when a step or time
        budget is given, else 100."""
        if self.epochs > 0:
            return self.epochs
        return None if (self.max_steps or self.max_minutes) else 100

    def global_optimizer_settings(self) -> dict[str, Any]:
        """The globals as ``OptimizerConfig`` keys (a global ``adam`` had and has no weight decay)."""
        return {
            "optimizer": self.optimizer,
            "lr": self.lr,
            "weight_decay": 0.0 if self.optimizer == "adam" else self.weight_decay,
        }


def _check_group(group: Any, settings: Any, base: Mapping[str, Any], where: str = "train.groups") -> dict[str, Any]:
    """Validate one group's partial settings (keys, types, values on top of ``base``); returns them coerced."""
    w = f"{where}.{group}"
    if not isinstance(settings, Mapping):
        raise ConfigError(f"{w}: expected a mapping of OptimizerConfig keys, got {settings!r}")
    full = _optimizer_config({**base, **settings}, w)
    return {k: getattr(full, k) for k in settings}


def _optimizer_config(data: Mapping[str, Any], where: str) -> OptimizerConfig:
    """``from_dict`` with value errors of ``OptimizerConfig.__post_init__`` prefixed by ``where`` too."""
    try:
        return from_dict(OptimizerConfig, dict(data), where=where)  # unknown keys, wrong types: named already
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def resolve_optimizer_configs(
    cfg: TrainConfig, groups: Sequence[str], model_defaults: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, OptimizerConfig]:
    """The :class:`OptimizerConfig` of each parameter group in ``groups`` (precedence: module docstring).

    Group names in ``cfg.groups`` or ``model_defaults`` that are not in ``groups`` are a :class:`ConfigError`
    that lists the model's groups.
    """
    model_defaults = dict(model_defaults or {})
    known = list(groups)
    for source, names in (("train.groups", cfg.groups), ("model.optimizer_defaults()", model_defaults)):
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown parameter group(s) {unknown}; the model's groups are {known}")
    base = cfg.global_optimizer_settings()
    out: dict[str, OptimizerConfig] = {}
    for g in known:
        model_g = _check_group(g, model_defaults.get(g, {}), base, where="model.optimizer_defaults()")
        user_g = dict(cfg.groups.get(g, {}))
        out[g] = _optimizer_config({**base, **model_g, **user_g}, f"train.groups.{g}")
        defaults = TrainConfig().global_optimizer_settings()
        shadowed = [k for k in base if k in model_g and k not in user_g and base[k] != defaults[k]]
        if shadowed:
            log.warning(
                "group %r: the model's own %s override the global train settings; set train.groups.%s to change them",
                g,
                ", ".join(f"{k}={model_g[k]!r}" for k in shadowed),
                g,
            )
    return out
