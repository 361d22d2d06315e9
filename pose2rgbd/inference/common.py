"""What every engine shares: :class:`EngineConfig`, loading a checkpoint for serving, and preparing its model
(device, precision, threads, BatchNorm folding, channels-last: :mod:`pose2rgbd.models.device`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pose2rgbd.config import help_field, param_ranges, ranged_field
from pose2rgbd.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import torch

    from pose2rgbd.models.checkpoint import LoadedCheckpoint


@dataclass
class EngineConfig:
    """How to load and run a checkpoint (shared by every engine kind; the look-ahead and out-of-bounds
    settings concern the render engine)."""

    checkpoint: str = help_field("", "path to the model checkpoint (.pt) written by `pose2rgbd train`")
    device: str = help_field("auto", "torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    precision: str = help_field(
        "auto",
        "auto (fp32 on CPU, bf16 on CUDA when supported else fp16), fp32, bf16 (CPU: fastest on CPUs with native "
        "bf16, e.g. AVX512-BF16 / AMX) or fp16 (GPU only)",
    )
    threads: int = ranged_field(
        0, "CPU threads for torch (0: torch's default, one per core); 1 avoids latency spikes on a busy CPU", 0, 1024
    )
    fuse_bn: bool = help_field(True, "fold BatchNorm into the preceding convolution at load (same outputs, faster)")
    channels_last: bool = help_field(
        True, "run plain (non-transposed) convolutions in channels-last layout (faster with oneDNN / tensor cores)"
    )
    warmup: int = ranged_field(2, "warm-up forward passes at start (first calls are slow)", 0, 100)
    lookahead: int = ranged_field(
        0, "extra future poses rendered per batch by look-ahead (0: off), spaced at the render node's rate_hz", 0, 64
    )
    tolerance_m: float = ranged_field(
        0.05, "look-ahead: serve a cached render if its pose is within this (m)...", 0.0, 1000.0
    )
    tolerance_deg: float = ranged_field(0.5, "...and within this angle (degrees) of the requested pose", 0.0, 180.0)
    oob_margin: float = ranged_field(0.1, "out of bounds: normalized pose beyond [-1 - margin, 1 + margin]", 0.0, 100.0)
    expect_fingerprint: str = help_field("", "refuse a checkpoint trained on another dataset (empty: no check)")
    expect_size: int = ranged_field(0, "refuse a checkpoint with another output size (0: no check)", 0, 65536)
    expect_preset: str = help_field("", "refuse a checkpoint of another model preset, e.g. base (empty: no check)")

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"engine.precision: {self.precision!r} is not one of auto, fp32, bf16, fp16")
        for name, (lo, hi) in param_ranges(EngineConfig).items():
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ConfigError(f"engine.{name}: {v} is outside its range [{lo}, {hi}]")


def load_for_serving(cfg: EngineConfig) -> LoadedCheckpoint:
    """Load ``cfg.checkpoint`` with the config's expectations (checked once, by the loader); problems raise
    :class:`CheckpointError` with a clear message."""
    from pose2rgbd.models.checkpoint import Expectations, load_checkpoint

    if not cfg.checkpoint:
        raise CheckpointError("no checkpoint given; set engine.checkpoint (a .pt file from `pose2rgbd train`)")
    p = Path(cfg.checkpoint).expanduser()
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    return load_checkpoint(  # a folder, an empty or a text file: named by the loader
        p,
        map_location="cpu",
        expect=Expectations(
            size=cfg.expect_size or None,
            preset=cfg.expect_preset or None,
            fingerprint=cfg.expect_fingerprint or None,
        ),
    )


def prepare_serving(cfg: EngineConfig, model: Any) -> tuple[Any, torch.device, str]:
    """``(prepared copy of model, device, resolved precision)`` for ``cfg`` (threads set as a side effect)."""
    from pose2rgbd.models.device import prepare_for_inference, resolve_device, resolve_precision, set_threads

    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    prepared = prepare_for_inference(model, device, fuse_bn=cfg.fuse_bn, channels_last=cfg.channels_last)
    return prepared, device, precision
