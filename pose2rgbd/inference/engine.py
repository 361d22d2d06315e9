"""Inference engine: checkpoint -> RGB (uint8) + depth (float32 metres, optical Z, REP-118) + confidence.

ROS-free and thread-safe. The engine

* loads a checkpoint through :func:`pose2rgbd.models.load_checkpoint` and checks it against what the caller
  expects (output size, preset, dataset fingerprint, finite pose normalization);
* picks the device (``auto``: CUDA when present) and precision (``auto``: fp32 on CPU, bf16 / fp16 autocast on
  CUDA; bf16 autocast on CPU on request);
* prepares the network for inference once: eval mode, BatchNorm folded into the preceding (transposed)
  convolution, plain convolutions in channels-last layout (see :func:`prepare_for_inference`);
* renders batches of ``T_world_cam`` poses (4x4, world ENU -> REP-103 optical camera);
* optionally renders *ahead*: :meth:`InferenceEngine.render_lookahead` extrapolates the next poses at the
  caller's rate with a constant-velocity model (translation and rotation), renders them together with the
  current pose in one batch, and serves later requests from that cache while the real pose stays within a
  tolerance (metres + degrees) of a cached one;
* flags poses outside the training extremes (plus a margin) as out of bounds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.spatial.transform import Rotation

from pose2rgbd.config import help_field
from pose2rgbd.errors import CheckpointError, ConfigError, GeometryError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.encoding import encode_poses

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass
class EngineConfig:
    """How to load and run a Pose2RGBD checkpoint."""

    checkpoint: str = help_field("", "path to the model checkpoint (.pt) written by `pose2rgbd train`")
    device: str = help_field("auto", "torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    precision: str = help_field(
        "auto",
        "auto (fp32 on CPU, bf16 on CUDA when supported else fp16), fp32, bf16 (CPU: fastest on CPUs with native "
        "bf16, e.g. AVX512-BF16 / AMX) or fp16 (GPU only)",
    )
    threads: int = help_field(
        0, "CPU threads for torch (0: torch's default, one per core); 1 avoids latency spikes on a busy CPU"
    )
    fuse_bn: bool = help_field(True, "fold BatchNorm into the preceding convolution at load (same outputs, faster)")
    channels_last: bool = help_field(
        True, "run plain (non-transposed) convolutions in channels-last layout (faster with oneDNN / tensor cores)"
    )
    warmup: int = help_field(2, "warm-up forward passes at start (first calls are slow)")
    lookahead: int = help_field(0, "extra future poses rendered per batch by look-ahead (0: off)")
    lookahead_rate_hz: float = help_field(10.0, "rate at which look-ahead poses are extrapolated (the node rate)")
    tolerance_m: float = help_field(0.05, "look-ahead: serve a cached render if its pose is within this (m)...")
    tolerance_deg: float = help_field(0.5, "...and within this angle (degrees) of the requested pose")
    oob_margin: float = help_field(0.1, "out of bounds: normalized pose beyond [-1 - margin, 1 + margin]")
    expect_fingerprint: str = help_field("", "refuse a checkpoint trained on another dataset (empty: no check)")
    expect_size: int = help_field(0, "refuse a checkpoint with another output size (0: no check)")
    expect_preset: str = help_field("", "refuse a checkpoint of another model preset, e.g. base (empty: no check)")

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"engine.precision: {self.precision!r} is not one of auto, fp32, bf16, fp16")
        if self.lookahead < 0 or self.lookahead > 64:
            raise ConfigError(f"engine.lookahead: {self.lookahead} must be within [0, 64]")
        if self.lookahead_rate_hz <= 0:
            raise ConfigError("engine.lookahead_rate_hz must be > 0")
        if self.tolerance_m < 0 or self.tolerance_deg < 0 or self.oob_margin < 0:
            raise ConfigError("engine tolerances and margin must be >= 0")


@dataclass
class RenderResult:
    """A batch of rendered frames. ``None`` for heads the model does not have."""

    T_world_cam: np.ndarray  # (N, 4, 4) the requested poses
    rgb: np.ndarray | None  # (N, S, S, 3) uint8
    depth: np.ndarray | None  # (N, S, S) float32 metres along optical Z; NaN invalid
    confidence: np.ndarray | None  # (N, S, S) float32 in [0, 1]
    out_of_bounds: np.ndarray  # (N,) bool
    from_cache: np.ndarray  # (N,) bool: served from the look-ahead cache
    latency_s: float  # wall time of the call

    def __len__(self) -> int:
        return len(self.T_world_cam)

    def frame(self, i: int) -> RenderResult:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[i : i + 1]

        return RenderResult(
            self.T_world_cam[i : i + 1],
            pick(self.rgb),
            pick(self.depth),
            pick(self.confidence),
            self.out_of_bounds[i : i + 1],
            self.from_cache[i : i + 1],
            self.latency_s,
        )


def check_pose_batch(T_world_cam: np.ndarray) -> np.ndarray:
    """``(4, 4)`` or ``(N, 4, 4)`` -> ``(N, 4, 4)`` float64; NaN / inf / non-rigid input raises GeometryError."""
    T = np.asarray(T_world_cam, dtype=np.float64)
    if T.shape == (4, 4):
        T = T[None]
    if T.ndim != 3 or T.shape[1:] != (4, 4):
        raise GeometryError(f"poses: expected (N, 4, 4) or (4, 4), got {T.shape}")
    if not np.all(np.isfinite(T)):
        raise GeometryError("pose contains NaN or inf; rejected")
    R = T[:, :3, :3]
    err = np.abs(np.einsum("nji,njk->nik", R, R) - np.eye(3)).max() if len(T) else 0.0
    if err > 1e-4:
        raise GeometryError(f"pose rotation is not orthonormal (max error {err:.1e}); rejected")
    return T


def extrapolate_constant_velocity(
    t0_ns: int, T0: np.ndarray, t1_ns: int, T1: np.ndarray, query_ns: np.ndarray
) -> np.ndarray:
    """Constant linear and angular velocity (world frame) from two poses, evaluated at ``query_ns``.

    Returns ``(M, 4, 4)``. With ``t1_ns <= t0_ns`` the pose is held (zero velocity).
    """
    q = np.asarray(query_ns, dtype=np.int64)
    out = np.repeat(np.asarray(T1, dtype=np.float64)[None], len(q), axis=0)
    dt = (t1_ns - t0_ns) * 1e-9
    if dt <= 0:
        return out
    v = (T1[:3, 3] - T0[:3, 3]) / dt
    w = Rotation.from_matrix(T1[:3, :3] @ T0[:3, :3].T).as_rotvec() / dt  # world-frame angular velocity
    h = (q - t1_ns).astype(np.float64) * 1e-9
    out[:, :3, 3] = T1[:3, 3] + h[:, None] * v
    out[:, :3, :3] = Rotation.from_rotvec(h[:, None] * w).as_matrix() @ T1[:3, :3]
    return out


def _pose_close(Ta: np.ndarray, Tb: np.ndarray, tol_m: float, tol_rad: float) -> tuple[bool, float]:
    dt = float(np.linalg.norm(Ta[:3, 3] - Tb[:3, 3]))
    c = (np.trace(Ta[:3, :3].T @ Tb[:3, :3]) - 1.0) / 2.0
    ang = float(np.arccos(np.clip(c, -1.0, 1.0)))
    ok = dt <= tol_m and ang <= tol_rad
    # a single score to pick the best cached entry: metres + radians scaled to metres by the tolerances
    score = dt / max(tol_m, 1e-9) + ang / max(tol_rad, 1e-9)
    return ok, score


class InferenceEngine:
    """Serve a loaded Pose2RGBD model. Build with :meth:`from_config` (loads a checkpoint) or with a
    ``loaded`` object that follows the :class:`pose2rgbd.models.LoadedCheckpoint` contract.

    Args:
        cfg: engine configuration.
        loaded: a loaded checkpoint (``.model``, ``.model_config``, ``.pose_normalizer``,
            ``.depth_normalizer``, ``.camera``, ``.depth_kind``, ``.world_frame``, ``.dataset_fingerprint``).
        postprocess: ``outputs_to_numpy(outputs, depth_normalizer)``; defaults to the models package's.
    """

    def __init__(
        self,
        cfg: EngineConfig,
        loaded: Any,
        *,
        postprocess: Callable[[dict[str, Any], Any], dict[str, np.ndarray | None]] | None = None,
    ) -> None:
        import torch

        from pose2rgbd.models.device import prepare_for_inference, resolve_device, resolve_precision, set_threads

        self.cfg = cfg
        self.loaded = loaded
        self._torch = torch
        from pose2rgbd.models.device import autocast

        self._autocast = autocast
        if postprocess is None:
            from pose2rgbd.models import outputs_to_numpy

            postprocess = outputs_to_numpy
        self._postprocess = postprocess
        self._validate(loaded)
        set_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.model = prepare_for_inference(
            loaded.model, self.device, fuse_bn=cfg.fuse_bn, channels_last=cfg.channels_last
        )
        self.pose_normalizer = loaded.pose_normalizer
        self.depth_normalizer = getattr(loaded, "depth_normalizer", None)
        self.camera: PinholeCamera = loaded.camera
        self.size = int(self.camera.width)
        self.depth_kind = str(getattr(loaded, "depth_kind", "metric"))
        self.world_frame = str(getattr(loaded, "world_frame", "map") or "map")
        self._lock = threading.RLock()
        self._history: list[tuple[int, np.ndarray]] = []  # last two (stamp_ns, T) seen by render_lookahead
        self._cache: list[tuple[int, np.ndarray, RenderResult]] = []  # (pred stamp, pose, single-frame result)
        self.stats = {"renders": 0, "frames": 0, "cache_hits": 0, "cache_misses": 0}
        if self.depth_kind != "metric":
            log.warning("checkpoint depth kind is %r: published depth is not in metres", self.depth_kind)
        log.info(
            "engine: %s on %s (%s), %dx%d, look-ahead %d",
            cfg.checkpoint or "<in-memory model>",
            self.device,
            self.precision,
            self.camera.width,
            self.camera.height,
            cfg.lookahead,
        )
        # warm up every batch size the engine will run (oneDNN builds its kernels per input shape)
        for n in sorted({1, cfg.lookahead + 1}):
            for _ in range(max(0, cfg.warmup)):
                self._forward(np.repeat(np.eye(4)[None], n, axis=0))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: EngineConfig) -> InferenceEngine:
        """Load ``cfg.checkpoint`` (raises :class:`CheckpointError` with a clear message) and build."""
        from pathlib import Path

        if not cfg.checkpoint:
            raise CheckpointError("no checkpoint given; set engine.checkpoint (a .pt file from `pose2rgbd train`)")
        p = Path(cfg.checkpoint).expanduser()
        if not p.is_file():
            raise CheckpointError(f"checkpoint not found: {p}")
        from pose2rgbd.models import load_checkpoint

        loaded = load_checkpoint(
            p,
            map_location="cpu",
            expect_fingerprint=cfg.expect_fingerprint or None,
            expect_size=cfg.expect_size or None,
            expect_preset=cfg.expect_preset or None,
        )
        return cls(cfg, loaded)

    def _validate(self, loaded: Any) -> None:
        cfg = self.cfg
        where = cfg.checkpoint or "checkpoint"
        for attr in ("model", "model_config", "pose_normalizer", "camera"):
            if getattr(loaded, attr, None) is None:
                raise CheckpointError(f"{where}: loaded checkpoint has no {attr!r}; is it a pose2rgbd checkpoint?")
        mc = loaded.model_config
        size = int(getattr(mc, "size", loaded.camera.width))
        if loaded.camera.width != size or loaded.camera.height != size:
            raise CheckpointError(
                f"{where}: camera {loaded.camera.width}x{loaded.camera.height} does not match model size {size}"
            )
        if cfg.expect_size and size != cfg.expect_size:
            raise CheckpointError(f"{where}: model renders {size}x{size}, expected {cfg.expect_size}")
        preset = str(getattr(mc, "preset", ""))
        if cfg.expect_preset and preset != cfg.expect_preset:
            raise CheckpointError(f"{where}: model preset is {preset!r}, expected {cfg.expect_preset!r}")
        fp = str(getattr(loaded, "dataset_fingerprint", "") or "")
        if cfg.expect_fingerprint and fp != cfg.expect_fingerprint:
            raise CheckpointError(
                f"{where}: trained on dataset {fp[:12] or '<unknown>'}, expected {cfg.expect_fingerprint[:12]}; "
                "use a checkpoint trained on this dataset or clear engine.expect_fingerprint"
            )
        pn = loaded.pose_normalizer
        if not (np.all(np.isfinite(pn.minimum)) and np.all(np.isfinite(pn.maximum))):
            raise CheckpointError(f"{where}: pose normalization extremes are not finite")
        enc = str(getattr(mc, "encoding", pn.kind))
        if enc != pn.kind:
            raise CheckpointError(f"{where}: model encoding {enc!r} differs from its pose normalizer {pn.kind!r}")
        outputs = str(getattr(mc, "outputs", "rgbd"))
        if "d" in outputs.replace("rgb", "") and getattr(loaded, "depth_normalizer", None) is None:
            log.warning(
                "%s: model has a depth head but no depth normalizer; depth is left as the model gives it", where
            )

    # ------------------------------------------------------------------ rendering
    @property
    def has_rgb(self) -> bool:
        return str(getattr(self.loaded.model_config, "outputs", "rgbd")) in ("rgb", "rgbd")

    @property
    def has_depth(self) -> bool:
        return str(getattr(self.loaded.model_config, "outputs", "rgbd")) in ("depth", "rgbd")

    def _encode(self, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalized model input ``(N, D)`` float32 and the out-of-bounds flags ``(N,)`` (one encoding pass)."""
        pn = self.pose_normalizer
        x = pn.normalize_encoded(encode_poses(T, pn.kind))
        oob = np.any(np.abs(x) > 1.0 + self.cfg.oob_margin, axis=-1).reshape(len(T))
        return x.astype(np.float32), oob

    def _forward(self, T: np.ndarray, x: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
        torch = self._torch
        if x is None:
            x, _ = self._encode(T)
        x = torch.from_numpy(x).to(self.device)
        with torch.inference_mode():
            with self._autocast(self.device, self.precision):
                out = self.model(x)
            out = {k: (v.float() if torch.is_tensor(v) else v) for k, v in out.items()}
        return self._postprocess(out, self.depth_normalizer)

    def render(self, T_world_cam: np.ndarray) -> RenderResult:
        """Render a batch of poses ``(N, 4, 4)`` (or one ``(4, 4)``); bad poses raise GeometryError."""
        t0 = time.perf_counter()
        T = check_pose_batch(T_world_cam)
        x, oob = self._encode(T)
        with self._lock:
            arrays = self._forward(T, x)
            self.stats["renders"] += 1
            self.stats["frames"] += len(T)
        return RenderResult(
            T,
            arrays.get("rgb"),
            arrays.get("depth"),
            arrays.get("confidence"),
            oob,
            np.zeros(len(T), dtype=bool),
            time.perf_counter() - t0,
        )

    def render_lookahead(self, T_world_cam: np.ndarray, stamp_ns: int) -> RenderResult:
        """Render one pose, using and refilling the look-ahead cache (see the module docstring).

        With ``lookahead == 0`` this is :meth:`render` of one pose. The result's ``T_world_cam`` is the
        requested pose; ``from_cache`` says whether the images were rendered for a nearby predicted pose.
        """
        T = check_pose_batch(T_world_cam)
        if len(T) != 1:
            raise GeometryError("render_lookahead takes one pose")
        if self.cfg.lookahead == 0:
            return self.render(T)
        t_start = time.perf_counter()
        T1 = T[0]
        tol_rad = np.deg2rad(self.cfg.tolerance_deg)
        with self._lock:
            best: RenderResult | None = None
            best_score = np.inf
            for _, Tc, res in self._cache:
                ok, score = _pose_close(Tc, T1, self.cfg.tolerance_m, tol_rad)
                if ok and score < best_score:
                    best, best_score = res, score
            self._push_history(int(stamp_ns), T1)
            if best is not None:
                self.stats["cache_hits"] += 1
                oob = np.asarray(self.pose_normalizer.out_of_bounds(T, self.cfg.oob_margin), dtype=bool).reshape(1)
                return RenderResult(
                    T,
                    best.rgb,
                    best.depth,
                    best.confidence,
                    oob,
                    np.ones(1, dtype=bool),
                    time.perf_counter() - t_start,
                )
            self.stats["cache_misses"] += 1
            period_ns = round(1e9 / self.cfg.lookahead_rate_hz)
            stamps = int(stamp_ns) + period_ns * np.arange(1, self.cfg.lookahead + 1, dtype=np.int64)
            if len(self._history) == 2:
                (ta, Ta), (tb, Tb) = self._history
                future = extrapolate_constant_velocity(ta, Ta, tb, Tb, stamps)
            else:
                future = np.repeat(T1[None], len(stamps), axis=0)
            batch = self.render(np.concatenate([T, future], axis=0))
            self._cache = [(int(s), future[i], batch.frame(i + 1)) for i, s in enumerate(stamps)]
        first = batch.frame(0)
        first.latency_s = time.perf_counter() - t_start
        return first

    def _push_history(self, stamp_ns: int, T: np.ndarray) -> None:
        if self._history and stamp_ns <= self._history[-1][0]:
            if stamp_ns < self._history[-1][0]:  # time went backwards (bag loop): forget the motion
                self._history.clear()
                self._cache.clear()
            else:
                self._history[-1] = (stamp_ns, T.copy())
                return
        self._history.append((stamp_ns, T.copy()))
        del self._history[:-2]

    def reset(self) -> None:
        """Forget the look-ahead history and cache (e.g. after a jump in time)."""
        with self._lock:
            self._history.clear()
            self._cache.clear()

    def out_of_bounds(self, T_world_cam: np.ndarray) -> np.ndarray:
        T = check_pose_batch(T_world_cam)
        return np.asarray(self.pose_normalizer.out_of_bounds(T, self.cfg.oob_margin), dtype=bool).reshape(len(T))
