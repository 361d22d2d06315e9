"""The localize engine: images -> camera poses ``T_world_cam`` with a confidence (the image -> pose engine kind).

Serves any model kind whose family's engine is ``localize``: a model with the
:class:`~pose2rgbd.models.interfaces.ImageToPose` transforms (``images_to_input``, ``outputs_to_poses``). ROS-free
and thread-safe. :class:`Localizer` is the interface nodes code against; :class:`LocalizeEngine` implements it
for checkpoints.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.inference.common import EngineConfig, load_for_serving

if TYPE_CHECKING:
    from pose2rgbd.inference.backends import Backend
    from pose2rgbd.inference.structure_fix import Fix
    from pose2rgbd.models.checkpoint import LoadedCheckpoint

log = logging.getLogger(__name__)


@dataclass
class LocalizeResult:
    """A batch of localized frames."""

    T_world_cam: np.ndarray  # (N, 4, 4) float64 camera poses (world -> REP-103 optical camera)
    confidence: np.ndarray  # (N,) float32 in [0, 1]
    latency_s: float  # wall time of the call
    # per frame, from localizers that can refuse (the structure localizer): a fix or not, why, the covariance
    fixes: list[Fix] | None = None

    def __len__(self) -> int:
        return len(self.T_world_cam)


@runtime_checkable
class Localizer(Protocol):
    """What a localization node needs: ``localize`` one ``(H, W, 3)`` or a batch ``(N, H, W, 3)`` of uint8
    RGB images at :attr:`input_hw`."""

    camera: PinholeCamera | None
    world_frame: str

    @property
    def input_hw(self) -> tuple[int, int]: ...

    def localize(self, images: np.ndarray) -> LocalizeResult: ...


def check_image_batch(images: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 -> ``(N, H, W, 3)``; anything else raises ConfigError."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise ConfigError(f"images: expected uint8 (H, W, 3) or (N, H, W, 3) RGB, got {a.dtype} {a.shape}")
    return a


class LocalizeEngine:
    """Serve an image -> pose model. Build with :meth:`from_config` (loads ``cfg.checkpoint``) or from a
    :class:`~pose2rgbd.models.LoadedCheckpoint`. Device, precision, threads, BatchNorm folding and
    channels-last follow ``cfg`` as for the render engine; so does the backend (torch, or an exported ``.onnx``
    file in ONNX Runtime)."""

    kind = "localize"

    def __init__(self, cfg: EngineConfig, loaded: LoadedCheckpoint) -> None:
        from pose2rgbd.inference.backends import make_backend
        from pose2rgbd.models.interfaces import ImageToPose

        if not isinstance(loaded.model, ImageToPose):
            raise CheckpointError(
                f"{loaded.where}: a {loaded.kind!r} model does not localize images "
                f"(its engine is {loaded.family.engine!r}); use pose2rgbd.inference.load_engine"
            )
        self.cfg = cfg
        self.loaded = loaded
        self.backend: Backend
        self.model: ImageToPose  # the model's transforms (for torch: the prepared module the backend runs)
        self.backend, self.model = make_backend(cfg, loaded)
        self.device = self.backend.device
        self.precision = self.backend.precision
        self.camera = loaded.camera
        self.world_frame = loaded.world_frame or "map"
        self._lock = threading.RLock()
        self.stats = {"calls": 0, "frames": 0}
        h, w = self.input_hw
        log.info(
            "localize engine: %s on %s (%s, %s), %dx%d input",
            loaded.where,
            self.device,
            self.backend.name,
            self.precision,
            w,
            h,
        )

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> LocalizeEngine:
        """Load ``cfg.checkpoint`` (raises :class:`CheckpointError` with a clear message) and build."""
        return cls(cfg, load_for_serving(cfg))

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.model.input_hw

    def localize(self, images: np.ndarray) -> LocalizeResult:
        """Poses and confidences for one image ``(H, W, 3)`` or a batch ``(N, H, W, 3)`` (uint8 RGB)."""
        t0 = time.perf_counter()
        batch = check_image_batch(images)
        with self._lock:
            x = self.model.images_to_input(batch)
            out = self.backend(x)
            out = {k: (v.float() if hasattr(v, "float") else v) for k, v in out.items()}
            T, conf = self.model.outputs_to_poses(out)
            self.stats["calls"] += 1
            self.stats["frames"] += len(batch)
        return LocalizeResult(T, conf, time.perf_counter() - t0)
