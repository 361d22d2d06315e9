"""What runs the network for an engine: one engine, two backends.

* :class:`TorchBackend`: the checkpoint's torch module, prepared for inference (device, precision autocast,
  threads, BatchNorm folding, channels-last, the transposed convolutions' layout: :func:`prepare_serving`, one
  call into the model layer, :func:`pose2rgbd.models.device.prepare_for_serving`); on a GPU its renders replay CUDA
  graphs where the kind has such a path (``engine.cuda_graphs``: :func:`use_cuda_graphs`);
* :class:`OnnxRuntimeBackend`: an exported ``.onnx`` file (``pose2rgbd export``) in an ONNX Runtime session
  (CPU, or CUDA when the device is CUDA and onnxruntime has it), graph optimizations on. A ``.pt`` checkpoint
  with ``backend: onnxruntime`` is exported at engine start (torchscript exporter, checked against torch);
* ``torch+onnxruntime``: a model whose forward is only partly a graph (it has
  ``serve_network_part_with_onnxruntime``: the hybrid, whose warp stays in torch / numba) runs as the torch
  module with its network part exported at start and run by ONNX Runtime.

Both are called with the network input tensor the model's transforms make and return ``{name: tensor}`` of the
serving outputs, so the engines' transforms (pose -> input, outputs -> arrays) are the same code for both.
:func:`make_backend` picks one from ``EngineConfig.backend`` (``auto``: ONNX Runtime for a ``.onnx`` file, else
torch) and gives it back warm (``engine.warmup`` batch-1 passes of the network: :meth:`Backend.warm`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.inference import serving_process
from pose2rgbd.inference.common import BACKENDS, is_onnx_path, resolve_backend

if TYPE_CHECKING:
    import torch

    from pose2rgbd.inference.common import EngineConfig
    from pose2rgbd.models.checkpoint import LoadedCheckpoint

log = logging.getLogger(__name__)


class Backend(Protocol):
    """``backend(x) -> {output name: tensor}`` (float32 or autocast dtype; the engine converts)."""

    name: str
    device: torch.device
    precision: str

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def warm(self, passes: int) -> None:
        """``passes`` batch-1 runs of the network (the first calls are slow), before the engine serves."""


def check_precision_speed(cfg: EngineConfig, device: torch.device, precision: str) -> str | None:
    """The warning for a precision ``device`` cannot run fast (bf16 on a CPU without native bf16), or ``None``;
    with ``cfg.slow_precision == "refuse"`` it is raised as a :class:`ConfigError` instead."""
    from pose2rgbd.models.device import cpu_has_native_bf16

    if device.type != "cpu" or precision != "bf16" or cpu_has_native_bf16():
        return None
    msg = (
        "engine.precision bf16 on a CPU without native bf16 instructions (no avx512_bf16 / amx_bf16 in "
        "/proc/cpuinfo): bf16 is emulated there and several times slower than fp32 (measured 3-9x on an AVX2 CPU, "
        "docs/serving.md); use precision fp32 (or auto) on this machine"
    )
    if cfg.slow_precision == "refuse":
        raise ConfigError(msg + " (refused: engine.slow_precision is refuse)")
    return msg


def prepare_serving(cfg: EngineConfig, model: Any, *, fp32_only: bool = False) -> tuple[Any, torch.device, str]:
    """``(prepared copy of model, device, resolved precision)`` for ``cfg`` (threads set as a side effect): the
    copy, its layout chosen (``engine.transposed_channels_last``), made in one call into the model layer
    (:func:`pose2rgbd.models.device.prepare_for_serving`). ``precision`` ``auto`` is bf16 on a CPU with native
    bf16 for a kind that declares it safe (:attr:`~pose2rgbd.models.base.ModelBase.serves_bf16_on_cpu`: the
    hybrid); ``fp32_only``: fp32 whatever ``auto`` would be (a network part served by ONNX Runtime)."""
    from pose2rgbd.models.base import ModelBase
    from pose2rgbd.models.device import prepare_for_serving, resolve_device, resolve_precision, set_threads

    set_threads(serving_process.serving_threads(cfg.threads, pixels=frame_pixels(model)))
    device = resolve_device(cfg.device)
    if fp32_only:
        _check_fp32(cfg)
        precision = "fp32"
    else:
        cpu_bf16 = isinstance(model, ModelBase) and model.serves_bf16_on_cpu
        precision = resolve_precision(cfg.precision, device, cpu_bf16_when_native=cpu_bf16)
    slow = check_precision_speed(cfg, device, precision)
    if slow:
        log.warning("%s", slow)
    prepared = prepare_for_serving(
        model,
        device,
        precision,
        fuse_bn=cfg.fuse_bn,
        channels_last=cfg.channels_last,
        transposed_channels_last=cfg.transposed_channels_last,
    )
    return prepared, device, precision


class TorchBackend:
    """The torch module, prepared once for inference (see the module docstring)."""

    name = "torch"

    def __init__(self, cfg: EngineConfig, model: Any, *, fp32_only: bool = False) -> None:
        import torch

        from pose2rgbd.models.device import autocast

        self._torch = torch
        self._autocast = autocast
        self.model, self.device, self.precision = prepare_serving(cfg, model, fp32_only=fp32_only)
        self.cuda_graphs = use_cuda_graphs(cfg, self.model, self.device)

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with self._torch.inference_mode(), self._autocast(self.device, self.precision):
            return self.model(x)  # type: ignore[no-any-return]

    def warm(self, passes: int) -> None:
        """The prepared module's first passes, in the model layer (:func:`pose2rgbd.models.device.warm_up`)."""
        from pose2rgbd.models.device import warm_up

        warm_up(self.model, self.device, self.precision, passes)


def use_cuda_graphs(cfg: EngineConfig, model: object, device: torch.device) -> bool:
    """``engine.cuda_graphs`` for the prepared ``model`` on ``device``: whether its renders replay CUDA graphs
    (:meth:`~pose2rgbd.models.base.ModelBase.use_cuda_graphs`). ``on`` on a CPU is a :class:`ConfigError`; ``on``
    for a kind without such a path says so once and serves eagerly."""
    from pose2rgbd.models.base import ModelBase

    if cfg.cuda_graphs == "off":
        return False
    if device.type != "cuda":
        if cfg.cuda_graphs == "on":
            raise ConfigError(
                f"engine.cuda_graphs on needs a CUDA device; the engine runs on {device} (engine.device "
                f"{cfg.device!r}): set engine.cuda_graphs auto or off, or engine.device cuda"
            )
        return False
    if isinstance(model, ModelBase) and model.use_cuda_graphs(True):
        return True
    if cfg.cuda_graphs == "on":
        log.warning("engine.cuda_graphs on: %s has no captured render path; it runs eagerly", type(model).__name__)
    return False


def _check_fp32(cfg: EngineConfig) -> None:
    if cfg.precision not in ("auto", "fp32"):
        raise ConfigError(
            f"engine.precision {cfg.precision}: the onnxruntime backend runs the exported fp32 graph; use "
            "precision auto or fp32 (or the torch backend for bf16 / fp16 autocast)"
        )


def ort_session(path: str | Path, device: torch.device, threads: int = 0) -> Any:
    """An ONNX Runtime session for ``path`` on ``device`` (CPU, or CUDA when this onnxruntime has the provider;
    else a :class:`ConfigError`), all graph optimizations on; ``threads`` > 0 sets the intra-op threads."""
    import onnxruntime as ort

    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError(
                f"engine.device {device}: this onnxruntime has no CUDA provider "
                f"(it has {ort.get_available_providers()}); use device cpu or install onnxruntime-gpu"
            )
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": device.index or 0})]
    else:
        providers = ["CPUExecutionProvider"]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        raise CheckpointError(f"{path}: onnxruntime cannot load this file: {str(e)[:300]}") from e


class OnnxRuntimeBackend:
    """An exported file in an ONNX Runtime session (fp32), on ``engine.threads`` intra-op threads (0: the engine's
    auto, :func:`~pose2rgbd.inference.serving_process.serving_threads`)."""

    name = "onnxruntime"

    def __init__(
        self, cfg: EngineConfig, path: str | Path, outputs: list[str], input_name: str, *, pixels: int = 0
    ) -> None:
        import torch

        from pose2rgbd.models.device import resolve_device

        self._torch = torch
        self.device = resolve_device(cfg.device)
        _check_fp32(cfg)
        self.precision = "fp32"
        self.session = ort_session(path, self.device, serving_process.serving_threads(cfg.threads, pixels))
        self.outputs = list(outputs)
        self.input_name = input_name
        have = {o.name for o in self.session.get_outputs()}
        missing = [o for o in self.outputs if o not in have]
        if missing:
            raise CheckpointError(f"{path}: the graph lacks the outputs {missing} its metadata names; export again")

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        torch = self._torch
        a = x.detach().to("cpu", torch.float32).contiguous().numpy()
        got = self.session.run(self.outputs, {self.input_name: a})
        return {k: torch.from_numpy(v) for k, v in zip(self.outputs, got, strict=True)}

    def warm(self, passes: int) -> None:
        """Runs of a batch-1 input of the graph's shape (zeros; its dynamic axes 1)."""
        import numpy as np

        inp = next(i for i in self.session.get_inputs() if i.name == self.input_name)
        a = np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], np.float32)
        for _ in range(passes):
            self.session.run(self.outputs, {self.input_name: a})


def frame_pixels(model: object) -> int:
    """The pixels of the frames ``model`` renders (a pose -> image model), 0 for another kind: what the automatic
    thread count goes by (:func:`~pose2rgbd.inference.serving_process.serving_threads`)."""
    from pose2rgbd.models.interfaces import PoseToImage

    if not isinstance(model, PoseToImage):
        return 0
    h, w = model.image_hw
    return int(h) * int(w)


def make_backend(cfg: EngineConfig, loaded: LoadedCheckpoint) -> tuple[Backend, Any]:
    """``(backend, transforms model)``: the model whose transforms the engine calls (for torch: the prepared
    module itself, on the engine's device; for ONNX Runtime: the weightless module rebuilt from the metadata).
    The backend is warm (``cfg.warmup`` passes, :meth:`Backend.warm`), and the process set for serving as the config
    says (``keep_freed_memory`` on CPU, ``freeze_gc``: :mod:`pose2rgbd.inference.serving_process`; a serving engine
    also logs, once, where the machine hands freed memory back to its host).

    ``auto`` is ONNX Runtime for what was loaded from an exported file (its ``extra`` holds the graph's metadata),
    else torch: the file and the backend were checked against each other before loading
    (:func:`~pose2rgbd.inference.common.load_for_serving`), so the backend is not resolved from the path again."""
    backend, model = _make_backend(cfg, loaded)
    if cfg.keep_freed_memory and backend.device.type == "cpu":
        serving_process.keep_freed_memory()  # before the warm-up, whose passes then leave the heap a frame needs
    backend.warm(max(0, cfg.warmup))
    if cfg.freeze_gc:
        serving_process.freeze_gc()  # the loaded, warm engine out of the collector's full scans
    # a serving process (batch jobs turn both off): what it cannot set, it says
    if cfg.keep_freed_memory or cfg.freeze_gc:
        serving_process.note_free_page_reporting()
    return backend, model


def _make_backend(cfg: EngineConfig, loaded: LoadedCheckpoint) -> tuple[Backend, Any]:
    """:func:`make_backend` before the warm-up."""
    name = cfg.backend if cfg.backend != "auto" else ("onnxruntime" if "onnx" in loaded.extra else "torch")
    serve_part = getattr(loaded.model, "serve_network_part_with_onnxruntime", None)
    if name == "onnxruntime" and serve_part is not None and "onnx" not in loaded.extra:
        # a model whose forward is only partly a graph (the hybrid: the warp in torch / numba): its network part
        # is exported at start and served by ONNX Runtime inside the prepared torch module
        tb = TorchBackend(cfg, loaded.model, fp32_only=True)
        tb.model.serve_network_part_with_onnxruntime(
            threads=serving_process.serving_threads(cfg.threads, frame_pixels(loaded.model)), device=tb.device
        )
        if tb.cuda_graphs:  # the network part runs in ONNX Runtime, outside any graph: eager
            tb.cuda_graphs = tb.model.use_cuda_graphs(False)
            if cfg.cuda_graphs == "on":
                log.warning("engine.cuda_graphs on: the network part runs in ONNX Runtime (engine.backend "
                            "onnxruntime), outside any graph; renders run eagerly")  # fmt: skip
        tb.name = "torch+onnxruntime"
        return tb, tb.model
    if name == "torch":
        if "onnx" in loaded.extra:
            raise ConfigError(f"{loaded.where}: an exported ONNX model is served by engine.backend onnxruntime")
        tb = TorchBackend(cfg, loaded.model)
        return tb, tb.model
    _check_fp32(cfg)
    meta = loaded.extra.get("onnx")
    if meta is not None and loaded.path is not None:
        ob = OnnxRuntimeBackend(cfg, loaded.path, list(meta["outputs"]), str(meta["input"]["name"]),
                                pixels=frame_pixels(loaded.model))  # fmt: skip
        return ob, loaded.model
    # a torch checkpoint served by ONNX Runtime: exported (and checked against torch) at start, in a temporary
    # folder that ONNX Runtime has read once the session exists
    import tempfile

    import torch

    from pose2rgbd.models.export import INPUT_NAME, export_onnx

    with tempfile.TemporaryDirectory(prefix="pose2rgbd-onnx-") as d:
        rep = export_onnx(loaded, Path(d) / "model.onnx", exporter="torchscript", check_batch=2)
        log.info("exported %s to ONNX at start (max abs error %s)", loaded.where, rep.max_abs_error)
        ob = OnnxRuntimeBackend(cfg, rep.path, list(rep.outputs), INPUT_NAME, pixels=frame_pixels(loaded.model))
    model = loaded.model.to(torch.device("cpu")).eval()  # its transforms (inputs go to ONNX Runtime as numpy)
    return ob, model


__all__ = [
    "BACKENDS",
    "Backend",
    "OnnxRuntimeBackend",
    "TorchBackend",
    "check_precision_speed",
    "is_onnx_path",
    "make_backend",
    "prepare_serving",
    "resolve_backend",
]
