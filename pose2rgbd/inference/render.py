"""The render engine: a pose -> image checkpoint -> RGB (uint8) + depth (float32 metres, optical Z, REP-118)
+ confidence.

ROS-free and thread-safe. It serves any model kind whose family's engine is ``render`` (a model with the
:class:`~pose2rgbd.models.interfaces.PoseToImage` transforms). The engine

* loads a checkpoint through :func:`pose2rgbd.models.load_checkpoint`, which checks it against what the caller
  expects (output size, preset, dataset fingerprint);
* picks the device (``auto``: CUDA when present) and precision (``auto``: fp32 on CPU, but bf16 autocast for
  the hybrid on a CPU with native bf16; bf16 / fp16 autocast on CUDA; bf16 autocast on CPU on request);
* prepares the network for inference once: eval mode, BatchNorm folded into the preceding (transposed)
  convolution, plain convolutions in channels-last layout, and warms it up (``engine.warmup`` batch-1 passes,
  the batch size it runs: oneDNN builds its kernels per input shape), one call into the model layer each
  (:func:`~pose2rgbd.models.device.prepare_for_serving`, :func:`~pose2rgbd.models.device.warm_up`);
* renders batches of ``T_world_cam`` poses (4x4, world ENU -> REP-103 optical camera) through the model's
  own transforms (``poses_to_input``, ``outputs_to_arrays``);
* runs the network through a backend (:mod:`pose2rgbd.inference.backends`): the torch module, or an exported
  ``.onnx`` file in ONNX Runtime (``engine.backend``; ``auto`` picks by the file's suffix) -- the transforms
  are the model's own in both cases;
* optionally renders *ahead*, off the request path: :meth:`RenderEngine.render_lookahead` extrapolates the
  next ``lookahead`` poses (no more than renders fit in one period: :attr:`RenderEngine.horizon`)
  at the caller's rate with a constant-velocity model (translation and rotation); a
  background thread renders them one by one, nearest first, while the caller serves the current frame, and
  later requests are served from that cache while the real pose stays within a tolerance (metres + degrees) of
  a cached one (its depth uncertainty widened for the offset: ``poses.depth_sigma_for_offset``). A request that
  finds no cached frame (a *miss*) renders only its own pose inline, ahead of any queued background work (which
  waits for at most the frame it is rendering); a request whose predicted frame is being rendered at that moment
  waits for it;
* flags poses outside the training extremes (plus a margin) as out of bounds.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from pose2rgbd.errors import CheckpointError, ConfigError, GeometryError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.inference.common import EngineConfig, load_for_serving
from pose2rgbd.inference.poses import (
    check_pose_batch,
    depth_sigma_for_offset,
    extrapolate_constant_velocity,
    pose_close,
)

if TYPE_CHECKING:
    import torch

    from pose2rgbd.geometry.coverage import Coverage
    from pose2rgbd.inference.backends import Backend
    from pose2rgbd.models.checkpoint import LoadedCheckpoint
    from pose2rgbd.models.depth_uncertainty import DepthUncertainty

log = logging.getLogger(__name__)


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
    # distance to the nearest training camera (pose2rgbd.geometry.coverage): metres and degrees; None when the
    # checkpoint carries no training poses (written by older versions)
    coverage_m: np.ndarray | None = None  # (N,) float64
    coverage_deg: np.ndarray | None = None  # (N,) float64
    # per pixel the bound the depth's absolute error stayed within on the held-out frames' share ``level`` of pixels
    # (pose2rgbd.models.depth_uncertainty; metres, NaN where the depth is no answer); None when the checkpoint has none
    depth_sigma: np.ndarray | None = None  # (N, S, S) float32
    # per frame the share of pixels where what the model saw landed (a keyframe's point: the model's
    # ``confidence_is_seen``), None for other models; below ``engine.min_seen`` the frame is out of bounds
    seen: np.ndarray | None = None  # (N,) float64

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
            pick(self.coverage_m),
            pick(self.coverage_deg),
            pick(self.depth_sigma),
            pick(self.seen),
        )


def depth_uncertainty_of(loaded: LoadedCheckpoint) -> DepthUncertainty | None:
    """The depth uncertainty ``loaded`` carries (fitted by training on its validation frames), None where it
    carries none; a malformed one is a CheckpointError naming the checkpoint."""
    # here: importing the engine needs no torch
    from pose2rgbd.models.depth_uncertainty import EXTRA_KEY, DepthUncertainty

    d = loaded.extra.get(EXTRA_KEY)
    if d is None:
        return None
    try:
        return DepthUncertainty.from_dict(d)
    except ValueError as e:
        raise CheckpointError(f"{loaded.where}: its depth uncertainty is malformed ({e}); train it again") from e


def _not_a_renderer(loaded: LoadedCheckpoint) -> str:
    """Why a checkpoint cannot be served by the render engine, and what to use instead."""
    from pose2rgbd.models.registry import family_names, get_family

    engine = loaded.family.engine
    if engine == "localize":
        what = "an image -> pose model, served by the localize engine (pose2rgbd.inference.LocalizeEngine)"
    elif engine is None:
        what = "a model no engine serves"
    else:
        what = f"a model served by the {engine!r} engine"
    renderers = [k for k in family_names() if get_family(k).engine == "render"]
    return (
        f"{loaded.where}: this checkpoint holds a {loaded.kind!r} model, {what}. The render engine (the render "
        f"node, `pose2rgbd render`) needs a pose -> image model: give a checkpoint of kind "
        f"{' | '.join(repr(k) for k in renderers)} (e.g. from `pose2rgbd train --method pose2rgbd`)"
    )


_ENGINES: weakref.WeakSet[RenderEngine] = weakref.WeakSet()


@atexit.register
def _stop_lookahead_threads() -> None:
    """At interpreter exit: let every look-ahead thread finish its frame and leave (a daemon thread killed inside
    a native kernel aborts the process)."""
    for eng in list(_ENGINES):
        eng.close()


@dataclass(eq=False)
class _Ahead:
    """One look-ahead frame: a predicted pose, and its render once the background thread has made it."""

    stamp_ns: int
    T: np.ndarray
    result: RenderResult | None = None
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)


def unbounded_where(sigma: np.ndarray | None, out_of_bounds: np.ndarray) -> np.ndarray | None:
    """``sigma`` ``(N, H, W)`` with +inf over the frames flagged ``out_of_bounds`` ``(N,)`` (a copy where any is):
    no bound was measured there -- the depth uncertainty is fitted on validation frames within the place, and a view
    beyond the training poses, or one no keyframe saw, is an extrapolation no fit covers (NaN, no answer, stays
    NaN)."""
    if sigma is None or not np.any(out_of_bounds):
        return sigma
    out = np.array(sigma, copy=True)
    flagged = out[np.asarray(out_of_bounds, bool)]
    out[np.asarray(out_of_bounds, bool)] = np.where(np.isnan(flagged), np.nan, np.inf)
    return out


def _flagged(res: RenderResult) -> RenderResult:
    """``res`` as handed out: its depth uncertainty +inf over the frames it flags out of bounds
    (:func:`unbounded_where`; a copy where any is flagged, so that a cached frame keeps its finite bound for a nearby
    request in bounds)."""
    sigma = unbounded_where(res.depth_sigma, res.out_of_bounds)
    return res if sigma is res.depth_sigma else replace(res, depth_sigma=sigma)


class RenderEngine:
    """Serve a pose -> image model. Build with :meth:`from_config` (loads ``cfg.checkpoint``: a ``.pt`` checkpoint
    or an exported ``.onnx`` file) or from a :class:`~pose2rgbd.models.LoadedCheckpoint` (e.g. one made in memory).

    Args:
        cfg: engine configuration (its ``expect_*`` values are checked by the loader in :meth:`from_config`).
        loaded: a loaded checkpoint whose model has the ``PoseToImage`` transforms and whose camera is set.
    """

    kind = "render"
    IDLE_EXIT_S = 2.0  # the look-ahead thread ends after this long without work (restarted on demand)
    # where the look-ahead thread has caught up (nothing queued or rendering), the next frame's entry is kept only
    # within this share of the tolerance of the newest prediction (the later frames' within the whole): a kept entry
    # was predicted from older poses, further ahead, and the request must fall within the tolerance of the entry
    # itself; the rest of the tolerance is the newest prediction's own error (one period ahead). With the whole
    # tolerance, predictions made 2-4 periods ahead that drifted just past it were kept, and missed: 13 of 298
    # requests of bench_engine's flight at 0.05 m / 0.5 deg. A thread still busy gets no extra render (where a
    # render takes most of the period, the renewals made it fall behind: docs/serving.md, "The next frame renewed")
    NEXT_FRAME_SHARE = 0.5
    FRAME_TIME_WEIGHT = 0.25  # the newest one-pose forward's weight in the recent forward time (look-ahead's horizon)

    def __init__(self, cfg: EngineConfig, loaded: LoadedCheckpoint, *, lookahead_rate_hz: float = 10.0) -> None:
        from pose2rgbd.inference.backends import make_backend
        from pose2rgbd.models.interfaces import PoseToImage

        if not isinstance(loaded.model, PoseToImage):
            raise CheckpointError(_not_a_renderer(loaded))
        if loaded.camera is None:
            raise CheckpointError(f"{loaded.where}: the checkpoint has no camera; the render engine needs one")
        if lookahead_rate_hz <= 0:
            raise ConfigError(f"lookahead_rate_hz must be > 0, got {lookahead_rate_hz}")
        self.cfg = cfg
        self.lookahead_rate_hz = float(lookahead_rate_hz)  # spacing of the look-ahead poses (the node's rate)
        self.loaded = loaded
        self.backend: Backend
        self.model: PoseToImage  # the model's transforms (for torch: the prepared module the backend runs)
        self.backend, self.model = make_backend(cfg, loaded)
        self.device = self.backend.device
        self.precision = self.backend.precision
        self.camera: PinholeCamera = loaded.camera
        self.size = int(self.camera.width)
        self.depth_kind = loaded.depth_kind
        from pose2rgbd.models.coverage import coverage_poses  # here: `render bag --help` does not import torch

        self.coverage_poses = coverage_poses(loaded)  # the keyframes the model warps, else the training cameras
        self.depth_uncertainty = depth_uncertainty_of(loaded) if self.has_depth else None
        self._sigma_grows = self.depth_uncertainty is not None and self.depth_uncertainty.growth_per_m > 0
        self.world_frame = loaded.world_frame or "map"
        self._lock = threading.RLock()  # guards the history, the look-ahead list and the stats
        self._wake = threading.Condition(self._lock)
        self._forward_lock = threading.Lock()  # one network call at a time (requests go first)
        self._inline_waiting = 0  # requests waiting for the network: the look-ahead thread lets them go first
        self._worker: threading.Thread | None = None
        self._closed = False
        self._in_flight: _Ahead | None = None
        self._history: list[tuple[int, np.ndarray]] = []  # last two (stamp_ns, T) seen by render_lookahead
        self._frame_s: float | None = None  # a one-pose forward's recent wall time (s): how far look-ahead goes
        self._ahead: list[_Ahead] = []  # the current pose's frame and the predicted ones, nearest first
        self.stats = {
            "renders": 0,  # network calls
            "frames": 0,  # frames rendered (inline and ahead)
            "inline_frames": 0,  # frames rendered on the request path
            "ahead_frames": 0,  # frames rendered by the look-ahead thread
            "cache_hits": 0,
            "cache_misses": 0,
        }
        _ENGINES.add(self)
        if self.depth_kind != "metric" and self.has_depth:
            log.warning("checkpoint depth kind is %r: published depth is not in metres", self.depth_kind)
        if self.has_depth and self.depth_uncertainty is None:
            log.warning(
                "%s carries no depth uncertainty (written before `pose2rgbd train` fitted one on its validation "
                "frames, or trained without them): renders give depth without depth_sigma; train again, or add it "
                "with `pose2rgbd evaluate --checkpoint C --dataset D --fit-depth-uncertainty`",
                loaded.where,
            )
        elif self.depth_uncertainty is not None:
            log.info("depth uncertainty: %s", self.depth_uncertainty.describe())
            self.depth_uncertainty.sigma(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32))  # its kernel loaded
        log.info(
            "render engine: %s on %s (%s, %s), %dx%d, look-ahead %d",
            loaded.where,
            self.device,
            self.backend.name,
            self.precision,
            self.camera.width,
            self.camera.height,
            cfg.lookahead,
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: EngineConfig, *, lookahead_rate_hz: float = 10.0) -> RenderEngine:
        """Load ``cfg.checkpoint`` (raises :class:`CheckpointError` with a clear message) and build;
        ``lookahead_rate_hz`` spaces the look-ahead poses (the render node passes its ``rate_hz``)."""
        return cls(cfg, load_for_serving(cfg), lookahead_rate_hz=lookahead_rate_hz)

    # ------------------------------------------------------------------ rendering
    @property
    def has_rgb(self) -> bool:
        return bool(self.model.has_rgb)

    @property
    def has_depth(self) -> bool:
        return bool(self.model.has_depth)

    @property
    def depth_range_m(self) -> tuple[float, float] | None:
        return self.model.depth_range_m

    def _encode(self, T: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """The model input (a tensor on the engine device) and the out-of-bounds flags ``(N,)``."""
        return self.model.poses_to_input(T, oob_margin=self.cfg.oob_margin)

    def _forward(self, x: torch.Tensor) -> dict[str, np.ndarray | None]:
        out = self.backend(x)
        out = {k: (v.float() if hasattr(v, "float") else v) for k, v in out.items()}
        return self.model.outputs_to_arrays(out)

    @property
    def max_batch(self) -> int:
        """Most frames per network call (``engine.max_batch``; 0: auto, see :class:`EngineConfig`)."""
        if self.cfg.max_batch > 0:
            return int(self.cfg.max_batch)
        if self.device.type != "cpu":
            return 1 << 30
        h, w = self.model.image_hw
        return max(1, (512 * 512) // max(1, h * w))

    def _forward_chunked(self, x: torch.Tensor) -> tuple[dict[str, np.ndarray | None], int]:
        """The arrays for input ``x`` in chunks of :attr:`max_batch` frames, and the number of network calls."""
        n, step = len(x), self.max_batch
        if n <= step:
            return self._forward(x), 1
        parts = [self._forward(x[i : i + step]) for i in range(0, n, step)]
        out: dict[str, np.ndarray | None] = {}
        for k in parts[0]:
            arrays = [p[k] for p in parts]
            out[k] = None if arrays[0] is None else np.concatenate([a for a in arrays if a is not None], axis=0)
        return out, len(parts)

    def _render(self, T: np.ndarray, *, inline: bool) -> RenderResult:
        t0 = time.perf_counter()
        x, oob = self._encode(T)
        # where the request is from what the model saw: published with an inline render, and the depth's
        # uncertainty grows with it (a frame rendered ahead: for its predicted pose, widened when served)
        cov = self._coverage(T) if inline or self._sigma_grows else None
        if inline:
            with self._lock:
                self._inline_waiting += 1
        try:
            with self._forward_lock:
                t_forward = time.perf_counter()
                arrays, calls = self._forward_chunked(x)
                t_forward = time.perf_counter() - t_forward
        finally:
            if inline:
                with self._lock:
                    self._inline_waiting -= 1
                    self._wake.notify_all()
        with self._lock:
            if len(T) == 1:
                w = self.FRAME_TIME_WEIGHT
                self._frame_s = t_forward if self._frame_s is None else (1 - w) * self._frame_s + w * t_forward
            self.stats["renders"] += calls
            self.stats["frames"] += len(T)
            self.stats["inline_frames" if inline else "ahead_frames"] += len(T)
        seen = self._seen(arrays.get("confidence"))
        flags = self._unseen(oob, seen)
        sigma = self._depth_sigma(arrays.get("depth"), arrays.get("confidence"), cov)
        return RenderResult(
            T,
            arrays.get("rgb"),
            arrays.get("depth"),
            arrays.get("confidence"),
            flags,
            np.zeros(len(T), dtype=bool),
            time.perf_counter() - t0,
            # a frame rendered ahead is served for the request's own pose, whose coverage the hit path computes
            cov.position_m if inline and cov is not None else None,
            cov.angle_deg if inline and cov is not None else None,
            sigma,  # finite: what the cache keeps (the frame's flags are applied where it is handed out: _flagged)
            seen,
        )

    def _seen(self, confidence: np.ndarray | None) -> np.ndarray | None:
        """Per frame the share of pixels where what the model saw landed, for a model whose confidence says so
        (:attr:`~pose2rgbd.models.interfaces.PoseToImage.confidence_is_seen`), else None."""
        if confidence is None or not self.model.confidence_is_seen:
            return None
        return np.asarray((confidence > 0.5).mean(axis=(1, 2)), dtype=np.float64)

    def _unseen(self, oob: np.ndarray, seen: np.ndarray | None) -> np.ndarray:
        """The out-of-bounds flags ``oob`` of the poses, also set for a frame whose ``seen`` share is below
        ``engine.min_seen``: a view no keyframe looked in (up into the sky, out of the place) at a position within
        the training box; its depth would be the fill's guess everywhere."""
        if seen is None or self.cfg.min_seen <= 0:
            return oob
        return np.asarray(oob, dtype=bool) | (seen < self.cfg.min_seen)

    def _depth_sigma(
        self, depth: np.ndarray | None, confidence: np.ndarray | None, cov: Coverage | None
    ) -> np.ndarray | None:
        """The depth's uncertainty per pixel (metres), grown for each pose's coverage distance ``cov`` (None: the
        validation frames' median distance), or None without a fitted one or a depth."""
        if self.depth_uncertainty is None or depth is None:
            return None
        return self.depth_uncertainty.sigma(depth, confidence, None if cov is None else cov.distance)

    def _coverage(self, T_world_cam: np.ndarray) -> Coverage | None:
        """Each pose's nearest keyframe the model warps (or training camera) and how far (None without them)."""
        return None if self.coverage_poses is None else self.coverage_poses.coverage(T_world_cam)

    def coverage(self, T_world_cam: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Metres and degrees from each pose ``(N, 4, 4)`` to the nearest keyframe the model warps, or for a model
        without keyframes the nearest training camera (``(None, None)`` when the checkpoint carries none)."""
        c = self._coverage(T_world_cam)
        return (None, None) if c is None else (c.position_m, c.angle_deg)

    def render(self, T_world_cam: np.ndarray) -> RenderResult:
        """Render a batch of poses ``(N, 4, 4)`` (or one ``(4, 4)``); bad poses raise GeometryError."""
        return _flagged(self._render(check_pose_batch(T_world_cam), inline=True))

    def render_lookahead(self, T_world_cam: np.ndarray, stamp_ns: int) -> RenderResult:
        """Render one pose, using and refilling the look-ahead cache (see the module docstring).

        With ``lookahead == 0`` this is :meth:`render` of one pose. The result's ``T_world_cam`` is the
        requested pose; ``from_cache`` says whether the images were rendered for a nearby predicted pose. A miss
        renders only the requested pose; the predicted ones are rendered by a background thread.
        """
        T = check_pose_batch(T_world_cam)
        if len(T) != 1:
            raise GeometryError("render_lookahead takes one pose")
        if self.cfg.lookahead == 0:
            return self.render(T)
        t_start = time.perf_counter()
        T1 = T[0]
        with self._lock:
            self._push_history(int(stamp_ns), T1)
            best = self._closest(T1)
        served: RenderResult | None = None
        if best is not None:
            best.done.wait()  # immediate for a finished frame; the frame being rendered now: wait for it
            served = best.result
        if served is not None:
            with self._lock:
                self.stats["cache_hits"] += 1
            res = RenderResult(
                T,
                served.rgb,
                served.depth,
                served.confidence,
                self._unseen(self.model.out_of_bounds(T, self.cfg.oob_margin), served.seen),
                np.ones(1, dtype=bool),
                0.0,
                *self.coverage(T),
                self._served_sigma(served, T1),
                served.seen,
            )
        else:
            with self._lock:
                self.stats["cache_misses"] += 1
            res = self._render(T, inline=True)  # only the requested pose on the request path
        with self._lock:
            self._replan(int(stamp_ns), T1, None if served is not None else res)  # (the cache: the finite sigma)
        res = _flagged(res)  # a hit or a miss: +inf over the request's own flags
        res.latency_s = time.perf_counter() - t_start
        return res

    def _served_sigma(self, served: RenderResult, T1: np.ndarray) -> np.ndarray | None:
        """A cached frame's depth uncertainty for the request ``T1`` it is served for: widened for the offset
        between the pose it was rendered for and ``T1`` (:func:`~pose2rgbd.inference.poses.depth_sigma_for_offset`)."""
        if served.depth_sigma is None or served.depth is None:
            return served.depth_sigma
        sigma = depth_sigma_for_offset(served.depth[0], served.depth_sigma[0], served.T_world_cam[0], T1, self.camera)
        return sigma[None]

    def _closest(self, T1: np.ndarray) -> _Ahead | None:
        """The best look-ahead entry within tolerance of ``T1`` that is finished or being rendered now."""
        tol_rad = float(np.deg2rad(self.cfg.tolerance_deg))
        best: _Ahead | None = None
        best_score = np.inf
        for e in self._ahead:
            if e.cancelled or (e.result is None and e is not self._in_flight):
                continue  # queued, not started: rendering the request inline is faster than waiting
            ok, score = pose_close(e.T, T1, self.cfg.tolerance_m, tol_rad)
            if ok and score < best_score:
                best, best_score = e, score
        return best

    def _replan(self, stamp_ns: int, T1: np.ndarray, rendered: RenderResult | None) -> None:
        """The look-ahead list for a request at ``stamp_ns``: the request's own frame (when it was rendered
        now) and the next :attr:`horizon` predicted poses; entries of the old list that are within tolerance of a
        prediction (the next frame's: within :attr:`NEXT_FRAME_SHARE` of it, where the thread has caught up) are kept
        (finished or not), the others are dropped, new predictions are queued."""
        if self._closed:
            return
        period_ns = round(1e9 / self.lookahead_rate_hz)
        stamps = stamp_ns + period_ns * np.arange(1, self.horizon + 1, dtype=np.int64)
        if len(self._history) == 2:
            (ta, Ta), (tb, Tb) = self._history
            future = extrapolate_constant_velocity(ta, Ta, tb, Tb, stamps)
        else:
            future = np.repeat(T1[None], len(stamps), axis=0)
        tol_m, tol_rad = self.cfg.tolerance_m, float(np.deg2rad(self.cfg.tolerance_deg))
        old = [e for e in self._ahead if not e.cancelled]
        new: list[_Ahead] = []
        if rendered is not None:
            done = _Ahead(stamp_ns, T1.copy(), rendered.frame(0))
            done.done.set()
            new.append(done)

        def near(entries: list[_Ahead], Tp: np.ndarray, share: float) -> _Ahead | None:
            hits = [(s, e) for e in entries for ok, s in [pose_close(e.T, Tp, share * tol_m, share * tol_rad)] if ok]
            return min(hits, key=lambda h: (h[1].result is None, h[0]))[1] if hits else None

        # renewing the next frame costs a render: only where the look-ahead thread has caught up with its work
        caught_up = self._in_flight is None and all(e.result is not None for e in old)
        for j, (s, Tp) in enumerate(zip(stamps, future, strict=True)):
            share = self.NEXT_FRAME_SHARE if j == 0 and caught_up else 1.0
            if near(new, Tp, share) is not None:
                continue  # already covered (a slow or hovering camera): no duplicate render
            keep = near(old, Tp, share)
            if keep is not None:
                old.remove(keep)
                keep.stamp_ns = int(s)
                new.append(keep)
            else:
                new.append(_Ahead(int(s), Tp.copy()))
        for e in old:
            if e not in new:
                e.cancelled = True
                if e is not self._in_flight:
                    e.done.set()
        self._ahead = new
        if any(e.result is None for e in new):
            self._ensure_worker()
            self._wake.notify_all()

    @property
    def horizon(self) -> int:
        """How many poses look-ahead predicts after each request: ``engine.lookahead``, but no more than one-pose
        forwards fit in one period at their recent speed, and at least one. Every request adds at least one frame
        for the thread to render, more where the motion changed; predictions further ahead than the thread renders
        in a period kept it from the next frame (at 512x512 on two cores, 55-65 ms a forward at 10 Hz, with
        ``lookahead`` 4: docs/serving.md, "Look-ahead as far as the thread can render")."""
        n = int(self.cfg.lookahead)
        if self._frame_s is None or self._frame_s <= 0 or n <= 1:
            return n
        return max(1, min(n, int(1.0 / (self.lookahead_rate_hz * self._frame_s))))

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the look-ahead thread (after the frame it is rendering); later requests render inline only."""
        with self._lock:
            self._closed = True
            self._drop_ahead()
            self._wake.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout_s)

    def _ensure_worker(self) -> None:
        if self._closed:
            return
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="pose2rgbd-lookahead", daemon=True)
            self._worker.start()

    def _next_job(self) -> _Ahead | None:
        if self._inline_waiting or self._closed:
            return None
        return next((e for e in self._ahead if e.result is None and not e.cancelled), None)

    def _work(self) -> None:
        """The look-ahead thread: render queued predictions one by one, nearest first; leave when idle."""
        while True:
            with self._lock:
                deadline = time.monotonic() + self.IDLE_EXIT_S
                job = self._next_job()
                while job is None:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._closed:
                        self._worker = None
                        return
                    self._wake.wait(left)
                    job = self._next_job()
                self._in_flight = job
            result: RenderResult | None = None
            try:
                result = self._render(job.T[None], inline=False).frame(0)
            except Exception:  # never let the thread die silently; the request path renders inline instead
                log.exception("look-ahead render failed")
            with self._lock:
                if not job.cancelled:
                    job.result = result
                    if result is None:
                        job.cancelled = True
                self._in_flight = None
                job.done.set()
                self._wake.notify_all()

    def wait_lookahead(self, timeout_s: float = 10.0) -> bool:
        """Block until the look-ahead thread has rendered every queued prediction (tests, benchmarks);
        ``False`` on timeout."""
        end = time.monotonic() + timeout_s
        with self._lock:
            while any(e.result is None and not e.cancelled for e in self._ahead):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(min(left, 0.05))
        return True

    def _push_history(self, stamp_ns: int, T: np.ndarray) -> None:
        if self._history and stamp_ns <= self._history[-1][0]:
            if stamp_ns < self._history[-1][0]:  # time went backwards (bag loop): forget the motion
                self._history.clear()
                self._drop_ahead()
            else:
                self._history[-1] = (stamp_ns, T.copy())
                return
        self._history.append((stamp_ns, T.copy()))
        del self._history[:-2]

    def _drop_ahead(self) -> None:
        for e in self._ahead:
            e.cancelled = True
            if e is not self._in_flight:
                e.done.set()
        self._ahead = []

    def reset(self) -> None:
        """Forget the look-ahead history and cache (e.g. after a jump in time)."""
        with self._lock:
            self._history.clear()
            self._drop_ahead()

    def out_of_bounds(self, T_world_cam: np.ndarray) -> np.ndarray:
        T = check_pose_batch(T_world_cam)
        return self.model.out_of_bounds(T, self.cfg.oob_margin)
