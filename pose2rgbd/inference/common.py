"""What every engine shares: :class:`EngineConfig` and loading a checkpoint for serving (:func:`load_for_serving`);
what runs its network, the module prepared for serving or an ONNX Runtime session, is
:mod:`pose2rgbd.inference.backends`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pose2rgbd.config import help_field, param_ranges, ranged_field
from pose2rgbd.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from pose2rgbd.models.checkpoint import LoadedCheckpoint


@dataclass
class EngineConfig:
    """How to load and run a checkpoint (shared by every engine kind; the look-ahead and out-of-bounds
    settings concern the render engine)."""

    checkpoint: str = help_field(
        "", "path to the model checkpoint (.pt) written by `pose2rgbd train`, or a .onnx from `pose2rgbd export`"
    )
    backend: str = help_field(
        "auto",
        "what runs the network: auto (onnxruntime for a .onnx checkpoint, else torch), torch, onnxruntime (a .pt "
        "checkpoint is exported to ONNX at start, checked against torch; faster on CPU, see docs/serving.md)",
    )
    device: str = help_field("auto", "torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    precision: str = help_field(
        "auto",
        "auto (CUDA: bf16 when supported, else fp16; CPU: fp32, but bf16 for the hybrid on CPUs with native bf16, "
        "AVX512-BF16 / AMX), fp32, bf16 (CPU: fastest on CPUs with native bf16) or fp16 (GPU only)",
    )
    threads: int = ranged_field(
        0,
        "CPU threads for torch and ONNX Runtime (0: auto, one fewer than the CPU's cores and at least one, so the "
        "node's own threads and the rest of the robot's stack keep a core: a tighter p99; a renderer takes every core "
        "for frames of 512x512 and more, whose work gains more from it than a preempted thread costs: "
        "docs/serving.md)",
        0,
        1024,
    )
    keep_freed_memory: bool = help_field(
        True,
        "CPU: keep the memory a frame frees in the process's heap for the next frame instead of returning it to the "
        "system (glibc mallopt, process-wide, set once when an engine starts: far fewer page faults, a lower p99; "
        "the process keeps its largest working set; docs/serving.md)",
    )
    freeze_gc: bool = help_field(
        True,
        "once the engine is warm, move every object alive out of Python's cyclic garbage collector's scans "
        "(gc.freeze, process-wide): a full collection then walks only newer objects (one over a loaded hybrid "
        "took up to 116 ms; docs/serving.md)",
    )
    fuse_bn: bool = help_field(True, "fold BatchNorm into the preceding convolution at load (same outputs, faster)")
    channels_last: bool = help_field(
        True, "run plain (non-transposed) convolutions in channels-last layout (faster with oneDNN / tensor cores)"
    )
    max_batch: int = ranged_field(
        0,
        "most frames per network call; a larger request is split (0: auto -- on CPU as many frames as fit in "
        "512x512 output pixels, since larger batches are slower per frame there (memory-bound); unlimited on GPU)",
        0,
        4096,
    )
    slow_precision: str = help_field(
        "warn",
        "a precision this hardware cannot run fast (bf16 on a CPU without AVX512-BF16 / AMX, where it is emulated "
        "and several times slower): warn (log a warning at start) or refuse (a configuration error)",
    )
    transposed_channels_last: str = help_field(
        "auto",
        "transposed convolutions in channels-last too (with channels_last): auto (CPU: time both layouts at start, "
        "keep the faster; GPU: off), on, off -- which is faster depends on the CPU (docs/serving.md)",
    )
    cuda_graphs: str = help_field(
        "auto",
        "on a GPU, capture a render's device work as CUDA graphs, one per batch size, and replay them (the host then "
        "launches one graph instead of hundreds of kernels; the hybrid): auto (on a CUDA device, for a model kind "
        "that has such a path), on (the same; an error on a CPU), off (docs/serving.md, 'CUDA graphs')",
    )
    warmup: int = ranged_field(2, "warm-up forward passes at start (first calls are slow)", 0, 100)
    lookahead: int = ranged_field(
        0,
        "look-ahead: future poses predicted after each request and rendered off the request path, spaced at the "
        "render node's rate_hz (0: off); at most as many as one-pose renders fit in one period. A request near a "
        "prediction (tolerance_m / tolerance_deg) gets that prediction's render, published with the requested "
        "pose's stamp (RGBD from_cache: true) and its depth_sigma widened for the offset",
        0,
        64,
    )
    tolerance_m: float = ranged_field(
        0.05, "look-ahead: serve a cached render if its pose is within this (m)...", 0.0, 1000.0
    )
    tolerance_deg: float = ranged_field(0.5, "...and within this angle (degrees) of the requested pose", 0.0, 180.0)
    oob_margin: float = ranged_field(
        0.1,
        "out of bounds: a pose outside the training poses' box widened by margin x its widest half-side (position, "
        "the same metres on every side) and by margin x each rotation component's half-range, at least 5 deg of turn",
        0.0,
        100.0,
    )
    min_seen: float = ranged_field(
        0.05,
        "out of bounds too: a render where what the model saw lands on fewer than this share of the pixels (the "
        "hybrid: keyframe points; a view direction no keyframe looked in, e.g. up into the sky or out of the "
        "place); its depth is the fill's guess everywhere. 0: the pose's position alone decides",
        0.0,
        1.0,
    )
    map: str = help_field(
        "",
        "place map the model reads its keyframes from instead of the checkpoint's (the hybrid; a map of its training "
        "dataset); empty: the map the checkpoint names, or the keyframes bundled in it (`export --bundle`)",
    )
    expect_fingerprint: str = help_field("", "refuse a checkpoint trained on another dataset (empty: no check)")
    expect_size: int = ranged_field(0, "refuse a checkpoint with another output size (0: no check)", 0, 65536)
    expect_preset: str = help_field("", "refuse a checkpoint of another model preset, e.g. base (empty: no check)")

    def as_batch_job(self) -> EngineConfig:
        """This config for an engine inside a batch job that does other work too (``evaluate``, ``localize images``,
        ``localize calibrate``, ``render trajectory``, the fly-through video, the experiments): none of what a serving
        process sets for itself (the heap, the frozen collector), and, unless threads are set, torch's threads as the
        process has them."""
        import torch

        threads = self.threads or torch.get_num_threads()
        return replace(self, keep_freed_memory=False, freeze_gc=False, threads=threads)

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"engine.precision: {self.precision!r} is not one of auto, fp32, bf16, fp16")
        if self.backend not in BACKENDS:
            raise ConfigError(f"engine.backend: {self.backend!r} is not one of auto, torch, onnxruntime")
        if self.transposed_channels_last not in ("auto", "on", "off"):
            raise ConfigError(
                f"engine.transposed_channels_last: {self.transposed_channels_last!r} is not one of auto, on, off"
            )
        if self.cuda_graphs not in ("auto", "on", "off"):
            raise ConfigError(f"engine.cuda_graphs: {self.cuda_graphs!r} is not one of auto, on, off")
        if self.slow_precision not in ("warn", "refuse"):
            raise ConfigError(f"engine.slow_precision: {self.slow_precision!r} is not one of warn, refuse")
        for name, (lo, hi) in param_ranges(EngineConfig).items():
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ConfigError(f"engine.{name}: {v} is outside its range [{lo}, {hi}]")


BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime")


def is_onnx_path(path: str | Path) -> bool:
    return str(path).lower().endswith(".onnx")


def resolve_backend(cfg: EngineConfig) -> str:
    """``torch`` | ``onnxruntime`` for ``cfg`` (``auto``: by the checkpoint's suffix); a mismatch of backend
    and file raises :class:`ConfigError` saying what to do."""
    onnx_file = is_onnx_path(cfg.checkpoint)
    name = cfg.backend
    if name == "auto":
        return "onnxruntime" if onnx_file else "torch"
    if name == "torch" and onnx_file:
        raise ConfigError(
            f"engine.backend torch cannot run {cfg.checkpoint} (an exported ONNX file): use engine.backend "
            "onnxruntime (or auto), or give the .pt checkpoint it was exported from"
        )
    return name


def load_for_serving(cfg: EngineConfig) -> LoadedCheckpoint:
    """Load ``cfg.checkpoint`` with the config's expectations (checked once, by the loader); problems raise
    :class:`CheckpointError` with a clear message."""
    from pose2rgbd.models.checkpoint import Expectations, load_checkpoint

    if not cfg.checkpoint:
        raise CheckpointError("no checkpoint given; set engine.checkpoint (a .pt file from `pose2rgbd train`)")
    p = Path(cfg.checkpoint).expanduser()
    if not p.exists():
        # a relative path is the process's working directory's (a launched node's is not the shell's)
        where = "" if p.is_absolute() else f" (relative to the working directory {Path.cwd()}; give an absolute path)"
        raise CheckpointError(f"checkpoint not found: {p}{where}")
    expect = Expectations(
        size=cfg.expect_size or None,
        preset=cfg.expect_preset or None,
        fingerprint=cfg.expect_fingerprint or None,
    )
    resolve_backend(cfg)  # a backend that cannot run this file: say so before loading it
    if is_onnx_path(p):
        from pose2rgbd.models.export import load_onnx_checkpoint

        return load_onnx_checkpoint(p, expect=expect)
    # a folder, an empty or a text file: named by the loader
    # a hybrid opens the place map its checkpoint names, or engine.map instead (checked by the loader)
    return load_checkpoint(p, map_location="cpu", expect=expect, place_map=cfg.map)
