"""Training configuration (paper Sec. 3: AdamW, fixed learning rate 0.01, up to 100 epochs, 80/20 split)."""

from __future__ import annotations

from dataclasses import dataclass

from pose2rgbd.config import help_field
from pose2rgbd.errors import ConfigError

SPLITS = ("random", "route")


@dataclass
class TrainConfig:
    """How a model is trained (generic: used by Pose2RGBD and the GAN alike)."""

    epochs: int = help_field(100, "number of passes over the training frames (the paper trains up to 100)")
    batch_size: int = help_field(16, "frames per optimization step")
    optimizer: str = help_field("adamw", "optimizer of every parameter group: adamw | adam | sgd")
    lr: float = help_field(0.01, "learning rate, fixed (the paper: AdamW, 0.01, no schedule)")
    weight_decay: float = help_field(0.01, "AdamW weight decay (PyTorch's default)")
    seed: int = help_field(0, "seed of weights, shuffling and the random split")
    device: str = help_field("auto", "auto (CUDA when present, else CPU) | cpu | cuda | cuda:N")
    amp: str = help_field("auto", "mixed precision: auto (bf16 on CUDA and on CPUs with native bf16) | bf16 | off")
    split: str = help_field("random", "train/validation split: random (paper, 80/20) | route (held-out routes)")
    val_fraction: float = help_field(0.2, "validation share of the random split / of the blocks of a one-route set")
    val_every: int = help_field(1, "validate every N epochs (0: never)")
    recalibrate_bn: bool = help_field(
        True, "recompute BatchNorm statistics for the current weights before validating and at the end (precise BN)"
    )
    recalibrate_bn_batches: int = help_field(64, "training batches used to recompute BatchNorm statistics (0: all)")
    max_minutes: float = help_field(0.0, "stop after this much training time (0: no limit); a checkpoint is written")
    max_steps: int = help_field(0, "stop after this many optimization steps (0: no limit)")
    log_every: int = help_field(10, "log training losses every N steps")
    num_workers: int = help_field(0, "DataLoader worker processes (0: load in the training process)")
    depth_max: float = help_field(0.0, "cap of the depth range in metres (0: set by depth_max_percentile)")
    depth_max_percentile: float = help_field(
        99.0, "depth range maximum = this percentile of the training depths (100: plain min-max, as the paper)"
    )
    tensorboard: bool = help_field(True, "also write TensorBoard event files (tensorboard --logdir OUT)")
    progress: bool = help_field(True, "show a tqdm progress bar")

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("train.epochs and train.batch_size must be >= 1")
        if self.lr <= 0:
            raise ConfigError("train.lr must be positive")
        if self.optimizer not in ("adamw", "adam", "sgd"):
            raise ConfigError(f"train.optimizer {self.optimizer!r} is not one of adamw | adam | sgd")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"train.amp {self.amp!r} is not one of auto | bf16 | off")
        if self.split not in SPLITS:
            raise ConfigError(f"train.split {self.split!r} is not one of {list(SPLITS)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("train.val_fraction must be in (0, 1)")
