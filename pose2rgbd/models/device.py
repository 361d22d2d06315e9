"""Where and how a network runs: device, precision, CPU threads and inference preparation.

One module for the trainer and every engine, so "auto" means the same everywhere:

* :func:`resolve_device`: ``auto`` -> CUDA when present, else CPU; a named CUDA device without CUDA is a
  :class:`ConfigError` that says what to use instead.
* :func:`resolve_precision`: ``fp32`` | ``bf16`` | ``fp16`` from a requested name. ``auto`` is bf16 on CUDA
  (fp16 where the GPU has no bf16); on CPU it is fp32, or bf16 when ``cpu_bf16_when_native`` and the CPU has
  native bf16 instructions (AVX512-BF16 / AMX: there bf16 autocast is several times faster; elsewhere it is
  emulated and slower). fp16 on a CPU falls back to fp32 with a warning.
* :func:`resolve_training_precision`: the trainer's choice, ``auto`` | ``bf16`` | ``off``. Never fp16 (fp16
  gradients underflow without loss scaling, which the trainer does not do): ``auto`` is bf16 on a CUDA GPU that
  supports it, else fp32; on CPU as :func:`resolve_precision` with ``cpu_bf16_when_native``.
* :func:`autocast`: the matching ``torch.autocast`` context (disabled for fp32).
* :func:`prepare_for_inference`: a copy of a model in eval mode with BatchNorm folded into the preceding
  convolution and plain convolutions in channels-last layout;
* :func:`prepare_for_serving`: that copy with the transposed convolutions' layout chosen (``auto`` on CPU: both
  layouts timed by forward passes, the faster kept), what an engine serves; :func:`warm_up`: the first forward
  passes of a prepared model, at the batch size an engine runs, before it serves;
* :func:`example_input`: random network inputs of a model (:func:`network_input_shape`), what the layouts are
  timed and the warm-up runs on (and what :mod:`pose2rgbd.models.export` checks an exported graph with).

Importing this module imports torch.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from typing import Any, Literal

import torch
from torch import nn

from pose2rgbd.cpuinfo import has_native_bf16
from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.models.interfaces import ImageToPose, PoseToImage

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]
SHARE_BUFFER_BYTES = 16 * 2**20  # prepare_for_inference shares buffers at least this large instead of copying
PRECISION_CHOICES: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a torch device that exists here (else ConfigError)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"device {name!r} is not a torch device ({e}); use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= (n := torch.cuda.device_count()):
        raise ConfigError(
            f"device {name!r} requested but this machine has {n} CUDA device{'s' if n != 1 else ''} "
            f"(cuda:0{f' to cuda:{n - 1}' if n > 1 else ''}); use one of them, or auto"
        )
    return dev


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 instructions (AVX512-BF16 / AMX; :func:`pose2rgbd.cpuinfo.has_native_bf16`: the CPU's
    own flags, not a substring of the whole /proc/cpuinfo), False elsewhere."""
    return has_native_bf16()


def resolve_precision(name: str, device: torch.device, *, cpu_bf16_when_native: bool = False) -> Precision:
    """The precision to run at on ``device`` for the requested ``name`` (see the module docstring)."""
    if name not in PRECISION_CHOICES:
        raise ConfigError(f"precision {name!r} is not one of {list(PRECISION_CHOICES)}")
    if device.type == "cuda":
        if name == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return name  # type: ignore[return-value]
    if name == "fp16":
        log.warning("precision fp16 requested on CPU; using fp32 (fp16 is GPU only here, try bf16)")
        return "fp32"
    if name == "bf16":
        if not cpu_has_native_bf16():
            log.warning("precision bf16 on a CPU without native bf16 instructions: expect it to be slow")
        return "bf16"
    if name == "auto" and cpu_bf16_when_native and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def resolve_training_precision(amp: str, device: torch.device) -> Precision:
    """The precision the trainer runs at for ``train.amp`` (``auto`` | ``bf16`` | ``off``) on ``device``: never
    fp16 (see the module docstring); an explicit ``fp16`` raises :class:`ConfigError`."""
    if amp == "fp16":
        raise ConfigError(
            "fp16 is not supported for training (its gradients need loss scaling, which the trainer does not do); "
            "use bf16 (GPUs with bf16 support) or off (fp32)"
        )
    if amp not in ("auto", "bf16", "off"):
        raise ConfigError(f"train.amp {amp!r} is not one of auto | bf16 | off")
    if amp == "off":
        return "fp32"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16"
        if amp == "bf16":
            raise ConfigError("train.amp bf16: this GPU does not support bf16; use auto or off (fp32)")
        log.info("this GPU has no bf16: training in fp32 (fp16 would need loss scaling)")
        return "fp32"
    return resolve_precision(amp, device, cpu_bf16_when_native=True)


def precision_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (``None`` for fp32)."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, precision: str) -> Any:
    """``torch.autocast`` for ``precision`` on ``device`` (a disabled one for fp32)."""
    dtype = precision_dtype(precision)
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def batch_to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A batch (a dict of tensors and other values) with its tensors on ``device`` (copied asynchronously where
    the memory allows it)."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def set_threads(threads: int) -> None:
    """Torch CPU threads (0: leave torch's default, one per core)."""
    if threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}")
    if threads > 0:
        torch.set_num_threads(threads)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` / ``ConvTranspose2d`` inside an
    ``nn.Sequential`` into that convolution (in place; the BatchNorm becomes ``Identity``). Only Sequential
    containers are touched because there the module order is the execution order. Returns the number folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    n = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in itertools.pairwise(names):
            conv, bn = seq._modules[a], seq._modules[b]
            if (
                isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d))
                and type(bn) is nn.BatchNorm2d
                and bn.track_running_stats
                and bn.running_mean is not None
                and not conv.training
                and not bn.training
            ):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                seq._modules[b] = nn.Identity()
                n += 1
    return n


def prepare_for_inference(
    model: nn.Module,
    device: torch.device,
    *,
    fuse_bn: bool = True,
    channels_last: bool = True,
    transposed_channels_last: bool = False,
) -> nn.Module:
    """A copy of ``model`` on ``device``, in eval mode, ready for fast inference (the caller's model is untouched;
    buffers of at least :data:`SHARE_BUFFER_BYTES` already on ``device`` are shared with it, not copied).

    * ``fuse_bn``: :func:`fold_batchnorm` (exact up to float rounding);
    * ``channels_last``: weights of plain ``Conv2d`` layers in channels-last layout, so oneDNN (CPU) / cuDNN
      run them in NHWC (the Slice bottleneck's full-resolution 3x3 convolutions gain about 20 %);
    * ``transposed_channels_last``: the ``ConvTranspose2d`` layers too. Which is faster depends on the CPU and
      oneDNN build: on an AVX512-BF16 CPU with oneDNN 3.12 it doubled Base 256x256 (12 -> 25 ms, docs/ros.md);
      on an AVX2 CPU it made Base 256 1.4x and Slice-10 512 1.6x *faster* (no NCHW <-> NHWC copies between the
      last transposed convolution and the bottleneck; docs/serving.md). The engine times both at start
      (``engine.transposed_channels_last: auto``).
    """
    m = copy.deepcopy(model, _shared_memo(model, device)).to(device).eval()
    if fuse_bn:
        fold_batchnorm(m)
    if channels_last:
        for mod in m.modules():
            if type(mod) is nn.Conv2d or (transposed_channels_last and type(mod) is nn.ConvTranspose2d):
                mod.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # untyped overload
    return m


def _shared_memo(model: nn.Module, device: torch.device) -> dict[int, Any]:
    """The memo of a prepared copy: what it refers to instead of copying. Large buffers already on the device (at
    least :data:`SHARE_BUFFER_BYTES`): preparation never changes a buffer in place (it folds BatchNorm into new
    convolutions and changes the layout of convolution weights, which are parameters), and a copy would double the
    resident memory of a render node that keeps the loaded checkpoint; and the model's read-only state
    (:meth:`~pose2rgbd.models.base.ModelBase.shared_with_copies`: the hybrid's keyframes and their cache)."""
    from pose2rgbd.models.base import ModelBase

    memo: dict[int, Any] = {
        id(b): b
        for b in model.buffers()
        if b is not None and b.device == device and b.numel() * b.element_size() >= SHARE_BUFFER_BYTES
    }
    if isinstance(model, ModelBase):
        memo.update({id(o): o for o in model.shared_with_copies()})
    return memo


def has_transposed_convolutions(model: nn.Module) -> bool:
    return any(type(m) is nn.ConvTranspose2d for m in model.modules())


TRANSPOSED_LAYOUTS: tuple[str, ...] = ("auto", "on", "off")


def prepare_for_serving(
    model: nn.Module,
    device: torch.device,
    precision: str,
    *,
    fuse_bn: bool = True,
    channels_last: bool = True,
    transposed_channels_last: str = "auto",
    cast_weights: bool = True,
) -> nn.Module:
    """:func:`prepare_for_inference` of ``model`` with the layout of its transposed convolutions chosen, and with
    ``cast_weights`` its convolution and linear weights stored at ``precision`` (:func:`cast_autocast_weights`):
    ``on`` / ``off`` as asked (``on`` only with ``channels_last``); ``auto`` on a CPU, with ``channels_last`` and
    transposed convolutions, both layouts timed by batch-1 forward passes at ``precision`` and the faster kept
    (channels-last only when at least 5 % faster: which wins depends on the CPU and oneDNN build, docs/serving.md);
    ``auto`` elsewhere: NCHW."""
    if transposed_channels_last not in TRANSPOSED_LAYOUTS:
        raise ConfigError(f"transposed_channels_last {transposed_channels_last!r} is not one of auto, on, off")

    def prep(tcl: bool) -> nn.Module:
        return prepare_for_inference(
            model, device, fuse_bn=fuse_bn, channels_last=channels_last, transposed_channels_last=tcl
        )

    choice = transposed_channels_last
    if choice != "auto" or not channels_last or not has_transposed_convolutions(model):
        return cast_autocast_weights(prep(choice == "on" and channels_last), precision, cast_weights)
    if device.type != "cpu":
        return cast_autocast_weights(prep(False), precision, cast_weights)
    a, b = prep(False), prep(True)
    x = _example(a, device)
    if x is None:
        return cast_autocast_weights(a, precision, cast_weights)
    ta, tb = forward_seconds(a, x, precision, device), forward_seconds(b, x, precision, device)
    log.info("transposed convolutions: NCHW %.1f ms, channels-last %.1f ms per forward", 1e3 * ta, 1e3 * tb)
    return cast_autocast_weights(b if tb < 0.95 * ta else a, precision, cast_weights)


# the layers whose weights autocast casts to its lower precision at every call (its lists for CPU and CUDA)
AUTOCAST_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                   nn.Linear)  # fmt: skip


def cast_autocast_weights(model: nn.Module, precision: str, enabled: bool = True) -> nn.Module:
    """A serving copy at ``precision`` bf16 / fp16: the weights and biases of its convolutions and linear layers
    stored in that dtype once, in place. Autocast casts them at every call otherwise (the hybrid: its largest
    weight is 9 MB in fp32); the ops get the same operands, so the outputs are the same, bit for bit
    (``test/test_hybrid_serving.py``). Measured, `hybrid` with 1,801 keyframes, forward passes interleaved: 26.5 ->
    25.7 ms median at 256x256 (one thread), no change beyond the noise at 512x512 (two threads). fp32: unchanged."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None or not enabled:
        return model
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, AUTOCAST_LAYERS):
                for name in ("weight", "bias"):
                    p = getattr(m, name, None)
                    if isinstance(p, torch.Tensor) and p.is_floating_point():
                        p.data = p.data.to(dtype)
    return model


def network_input_shape(model: nn.Module) -> tuple[int, ...]:
    """Shape of one sample of the network input (no batch axis): what the model's ``poses_to_input`` (pose ->
    image: the normalized pose) or ``images_to_input`` (image -> pose: the image) makes; the graph ONNX exports
    (:mod:`pose2rgbd.models.export`) takes it too."""
    if isinstance(model, PoseToImage):
        return (int(model.pose_min.numel()),)
    if isinstance(model, ImageToPose):
        h, w = model.input_hw
        return (3, int(h), int(w))
    raise CheckpointError(f"a {type(model).__name__} model has no serving input")


def example_input(model: nn.Module, batch: int, *, seed: int = 0) -> torch.Tensor:
    """Random network inputs ``(batch, *network_input_shape)`` in [-1, 1] (the range the transforms produce): what
    the layouts are timed and the warm-up runs on here, and what an export is checked with."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *network_input_shape(model)), generator=g) * 2.0 - 1.0


def _example(model: nn.Module, device: torch.device) -> torch.Tensor | None:
    """A batch-1 network input of ``model`` on ``device`` (:func:`example_input`), or ``None`` for a model whose
    input is not known."""
    try:
        return example_input(model, 1).to(device)
    except CheckpointError:
        return None


def forward_seconds(model: nn.Module, x: torch.Tensor, precision: str, device: torch.device, reps: int = 2) -> float:
    """Best time of ``reps`` forward passes of ``x`` (after one warm-up pass) at ``precision``."""
    best = float("inf")
    with torch.inference_mode(), autocast(device, precision):
        for i in range(reps + 1):
            t0 = time.perf_counter()
            model(x)
            if i:
                best = min(best, time.perf_counter() - t0)
    return best


def warm_up(model: nn.Module, device: torch.device, precision: str, passes: int) -> None:
    """``passes`` forward passes of a batch-1 network input (:func:`_example`) at ``precision``: the first calls
    are slow (oneDNN builds its kernels per input shape, the hybrid compiles its warp), so an engine makes them
    before it serves; nothing for a model whose input is not known."""
    x = _example(model, device) if passes > 0 else None
    if x is None:
        return
    with torch.inference_mode(), autocast(device, precision):
        for _ in range(passes):
            model(x)
