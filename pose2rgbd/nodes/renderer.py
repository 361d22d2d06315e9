"""Renderer node logic (no rclpy): pose (TF or PoseStamped) -> rgb / depth / confidence / depth uncertainty /
camera_info / RGBD, and for planners an organized PointCloud2 and a validity mask.

:data:`RENDERER` is its :class:`~pose2rgbd.nodes.spec.NodeSpec`: the runtime (the rclpy host or the offline
bag runner) builds subscriptions, timers, services and publishers from it and calls:

* :meth:`Renderer.on_pose` for each ``geometry_msgs/PoseStamped`` (pose source ``topic``): the pose is
  validated and kept as *the* latest one (one slot: a 1 kHz flood never queues work); with ``rate_hz == 0``
  it is rendered at once, else at the next :meth:`Renderer.tick`;
* :meth:`Renderer.tick` at ``rate_hz``: looks the camera up in TF (pose source ``tf``) through the lookup
  given to :meth:`Renderer.set_tf_lookup` (or passed to ``tick``), or takes the pending topic pose, renders
  and returns ``[(topic, msg), ...]`` to publish;
* :meth:`Renderer.render_at_pose` for the RenderAtPose service;
* :meth:`Renderer.diagnostics` about once a second (latency, out-of-bounds, drops) -> DiagnosticArray;
* :meth:`Renderer.on_parameter_change` when a parameter is set while it runs (rates, tolerances of the
  node, publish flags, cloud settings, frames apply at once; the engine and topics need a reconfigure).

Outputs for obstacle-avoidance planners (Nav2 voxel / obstacle layers, PX4 avoidance; docs/ros.md): ``points``
is an organized ``sensor_msgs/PointCloud2`` in the camera's optical frame, one point per ``cloud.stride``-th
pixel back-projected from the rendered depth (:func:`~pose2rgbd.geometry.camera.depth_to_points`), NaN where the
render has no valid depth; ``mask`` is a ``mono8`` image at full resolution, 255 where the depth is valid and 0
elsewhere, under the same rule as the cloud (finite depth > 0, within ``cloud.max_range_m``, confidence at least
``cloud.min_confidence``). mono8 rather than 32FC1: the continuous confidence is already published as 32FC1;
the mask is the binary decision itself, a quarter of the bytes, shown as black / white by image viewers and
usable as an OpenCV mask as it is. ``depth_sigma`` (32FC1, metres, also in the RGBD message) is the depth's
uncertainty per pixel, fitted on held-out frames when the model was trained
(:mod:`pose2rgbd.models.depth_uncertainty`): a planner may inflate obstacles by it, or drop pixels whose bound is
too loose for it.

A ``sensor_msgs/NavSatFix`` on ``topics.gps`` (:meth:`Renderer.on_gps`, optional) checks the robot's place against
the model's (:mod:`~pose2rgbd.nodes.place_check`): while the latest fix lies beyond the model's keyframes / training
cameras (``gps.*``), every render is flagged out of bounds, as a pose out of the place is.

Bad input never raises out of these calls: NaN poses are rejected and logged, missing / stale TF gives a
throttled warning and publishes nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pose2rgbd import messages as M
from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.errors import ConfigError, GeometryError
from pose2rgbd.geometry.camera import depth_to_points
from pose2rgbd.geometry.tf_buffer import CLOCKS_DIFFER, TransformException
from pose2rgbd.inference.common import EngineConfig
from pose2rgbd.inference.render import RenderEngine, RenderResult, unbounded_where
from pose2rgbd.nodes.logic import Latencies, NodeLogic, close_engine
from pose2rgbd.nodes.place_check import Log, PlaceCheck, RendererGps
from pose2rgbd.nodes.spec import Input, NodeSpec, Output, Service, TFNeed, Timer
from pose2rgbd.nodes.tf import FUTURE_STAMP_S

Outgoing = tuple[str, Any]
Lookup = Callable[[str, str, int], tuple[np.ndarray, int]]


@dataclass
class RendererTopics:
    """Output topic names (relative names resolve in the node's namespace)."""

    rgb: str = help_field("rgb/image_raw", "rendered colour image (sensor_msgs/Image, rgb8)")
    depth: str = help_field("depth/image_raw", "rendered depth (sensor_msgs/Image, 32FC1, metres along optical Z)")
    confidence: str = help_field("confidence/image_raw", "per-pixel confidence (sensor_msgs/Image, 32FC1, [0, 1])")
    depth_sigma: str = help_field(
        "depth/sigma",
        "per-pixel depth uncertainty in metres: the bound the depth's |error| stayed within on 68.3 % of the held-out "
        "pixels it was fitted on (sensor_msgs/Image, 32FC1, NaN where the depth is NaN, +inf over a frame flagged out "
        "of bounds)",
    )
    camera_info: str = help_field("camera_info", "intrinsics at the output size (sensor_msgs/CameraInfo)")
    rgbd: str = help_field("rgbd", "everything bundled with the query pose (pose2rgbd/msg/RGBD)")
    points: str = help_field(
        "depth/points", "organized point cloud in the optical frame, NaN where invalid (sensor_msgs/PointCloud2)"
    )
    mask: str = help_field("mask/image_raw", "validity mask: 255 valid depth, 0 not (sensor_msgs/Image, mono8)")
    diagnostics: str = help_field("/diagnostics", "latency and out-of-bounds (diagnostic_msgs/DiagnosticArray)")
    pose: str = help_field("pose", "input T_world_cam when pose_source is 'topic' (geometry_msgs/PoseStamped)")
    gps: str = help_field(
        "/gps/fix",
        "the robot's GPS (sensor_msgs/NavSatFix; optional): with a model that has a GPS datum, a fix far from its "
        "place flags every render out of bounds (gps.*; empty: not subscribed)",
    )


@dataclass
class RendererPublish:
    """Which outputs to publish."""

    rgb: bool = help_field(True, "publish the rgb image topic")
    depth: bool = help_field(True, "publish the depth image topic")
    confidence: bool = help_field(True, "publish the confidence topic (when the model has one)")
    depth_sigma: bool = help_field(True, "publish the depth uncertainty topic (when the checkpoint carries one)")
    camera_info: bool = help_field(True, "publish camera_info with every frame")
    rgbd: bool = help_field(True, "publish the bundled RGBD message")
    points: bool = help_field(True, "publish the PointCloud2 (when the model has depth)")
    mask: bool = help_field(True, "publish the validity mask (when the model has depth)")


@dataclass
class RendererCloud:
    """The point cloud and the validity mask (what a planner sees as an obstacle)."""

    stride: int = ranged_field(
        1, "keep every stride-th pixel in u and v (cloud ceil(H/stride) x ceil(W/stride); the mask stays full)", 1, 64
    )
    max_range_m: float = ranged_field(
        0.0, "depth beyond this (metres along optical Z) is invalid (0: no limit)", 0.0, 1e6
    )
    min_confidence: float = ranged_field(0.0, "pixels whose confidence is below this are invalid", 0.0, 1.0)
    colour: bool = help_field(True, "add the rendered colour as a packed float32 'rgb' field (PCL / RViz layout)")
    keep_out_of_bounds: bool = help_field(
        False,
        "keep the points and the mask of a render whose pose is out of the training bounds (false: no valid point, "
        "every cloud point NaN and the mask 0; the depth image is published as it is, flagged in RGBD)",
    )


# the world z component of the camera's optical axis above which a TF pose is warned about as looking steeply up
# (sin 60 deg): a camera that looks at the sky is rare, a body frame given as camera_frame (z up) is not
LOOKS_UP = 0.866
SLOW_AFTER_FRAMES = 20  # the renders the diagnostics wait for before saying they are slower than rate_hz
RATE_WINDOW = 50  # the latest renders whose (monotonic) times measure the rate that reaches the topics
STARVED_SHARE = 0.5  # a measured rate below this share of rate_hz (renders fast enough) is said, with why
# The diagnostics turn WARN when nothing was published for longer than the largest of STALL_MIN_S, STALL_PERIODS
# periods at rate_hz and max_pose_age_s (Renderer.stall_after_s; docs/ros.md, the diagnostics row).
STALL_MIN_S = 1.0
STALL_PERIODS = 3.0


@dataclass
class RendererConfig:
    """The render node: which pose to follow, how often, what to publish."""

    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"help": "model and inference settings"})
    pose_source: str = help_field(
        "tf", "where the camera pose comes from: 'tf' (world_frame -> camera_frame) or 'topic'"
    )
    world_frame: str = help_field(
        "", "TF frame the camera pose is looked up in (empty: the model's world frame, the frame of its training "
        "poses: a converted bag's TF map where its /tf had one, else the GPS's ENU frame, named map)"
    )  # fmt: skip
    camera_frame: str = help_field("camera_optical_frame", "camera optical frame (REP-103: x right, y down, z forward)")
    rate_hz: float = ranged_field(
        10.0, "render rate; with pose_source 'topic', 0 renders every received pose", 0.0, 1000.0
    )
    max_pose_age_s: float = ranged_field(
        0.5, "skip (and warn) when the newest pose is older than this (0: never)", 0.0, 3600.0
    )
    tf_timeout_s: float = ranged_field(0.0, "rclpy only: how long a TF lookup may wait (0: never block)", 0.0, 10.0)
    warn_throttle_s: float = ranged_field(5.0, "repeat the same warning at most this often", 0.0, 3600.0)
    diagnostics_period_s: float = ranged_field(1.0, "diagnostics publishing period (0: off)", 0.0, 3600.0)
    topics: RendererTopics = field(default_factory=RendererTopics, metadata={"help": "topic names"})
    publish: RendererPublish = field(default_factory=RendererPublish, metadata={"help": "outputs to publish"})
    cloud: RendererCloud = field(
        default_factory=RendererCloud, metadata={"help": "point cloud and validity mask for planners"}
    )
    gps: RendererGps = field(
        default_factory=RendererGps, metadata={"help": "the robot's place, by its GPS, against the model's"}
    )

    def __post_init__(self) -> None:
        if self.pose_source not in ("tf", "topic"):
            raise ConfigError(f"pose_source: {self.pose_source!r} is not 'tf' or 'topic'")
        if self.rate_hz < 0 or (self.pose_source == "tf" and self.rate_hz == 0):
            raise ConfigError("rate_hz must be > 0 (or 0 with pose_source 'topic': render every pose)")
        if self.rate_hz == 0 and self.engine.lookahead > 0:
            raise ConfigError(
                "engine.lookahead > 0 needs rate_hz > 0: the look-ahead poses are spaced at the node's rate "
                "(set rate_hz, or engine.lookahead 0)"
            )
        if not self.camera_frame:
            raise ConfigError("camera_frame must be set")


PoseSource = Literal["tf", "topic"]


def looked_up_frame(cfg: RendererConfig, engine: RenderEngine) -> str:
    """The world frame the node looks poses up in: ``world_frame``, or where empty the model's own."""
    return cfg.world_frame or engine.world_frame


# Not live: world_frame (the frame of the loaded model's training poses: the engine is built for it at configure),
# engine.* (the loaded model), pose_source and topics.* (subscriptions).
RENDERER_LIVE = (
    "rate_hz",
    "max_pose_age_s",
    "tf_timeout_s",
    "warn_throttle_s",
    "diagnostics_period_s",
    "camera_frame",
    "publish.*",
    "cloud.*",
    "gps.*",
)


class Renderer(NodeLogic):
    """Message-level render node (see module docstring). ``factory`` builds the outgoing messages."""

    live = RENDERER_LIVE
    logger_name = "pose2rgbd.renderer"

    def __init__(
        self,
        cfg: RendererConfig,
        engine: RenderEngine,
        factory: M.MessageFactory,
        *,
        logger: Any = None,
        tf_lookup: Lookup | None = None,
    ):
        counters = ("frames", "rejected_poses", "superseded_poses", "zero_stamp_poses", "tf_failures", "stale_poses",
                    "out_of_bounds", "cache_hits", "render_errors", *GPS_COUNTERS)  # fmt: skip
        super().__init__(cfg, factory, logger, dict.fromkeys(counters, 0))
        self.engine = engine
        self.world_frame = looked_up_frame(cfg, engine)
        if cfg.world_frame and cfg.world_frame != engine.world_frame:
            self.log.warning(
                f"world_frame {cfg.world_frame!r} is not the model's world frame {engine.world_frame!r} (the frame of "
                "its training poses): poses are taken as they are, right only where the two names mean one frame; "
                "leave world_frame empty to use the model's"
            )
        self.tf_lookup = tf_lookup
        self._pending: tuple[int, np.ndarray] | None = None  # the one latest pose slot (topic source)
        self._last_rendered_stamp: int | None = None
        self._last_frame_ns: int | None = None  # node clock when the latest frame was published
        self._last_pose_rx_ns: int | None = None  # node clock when the latest PoseStamped arrived (pose source topic)
        self._silent_why = ""  # why the latest tick published nothing ("" after a frame): the diagnostics say it
        self._rejected_why = ""  # why the latest PoseStamped was rejected ("" once a valid one arrived)
        self.latency = Latencies()  # of the rendered frames
        self._last_res: RenderResult | None = None  # the newest published frame (last_frame_stats)
        self._last_oob = False
        self._last_oob_why = ""  # the latest frame's reason for its out-of-bounds flag (_oob_why)
        self._last_oob_kind = ""  # "", "pose" or "unseen": a warning as it starts or changes
        self._poses_ahead: bool | None = None  # whether the last pose taken on the pose topic was stamped far ahead
        self._camera_info_cache: Any = None
        self._said_looks_up = False  # the warning of a camera_frame whose view points steeply up, once
        self._published_s: deque[float] = deque(maxlen=RATE_WINDOW)  # time.monotonic() of the latest renders
        self.place = place_check(engine, cfg.topics.gps, self.log)  # the robot's place by GPS against the model's
        self._gps_why = ""  # why the frame being published is out of bounds for the GPS ("": it is not)

    # ------------------------------------------------------------------ runtime hooks
    @property
    def last_latency_ms(self) -> float:
        """The newest rendered frame's latency (ms; NaN before the first), which the runtimes record."""
        return self.latency.last_ms

    @property
    def last_frame_stats(self) -> dict[str, float]:
        """What the offline runtime records of the newest published frame, computed when asked (never on the live
        path): its distance from the nearest training camera (``coverage_m``, ``coverage_deg``; NaN unknown), its
        out-of-bounds flag (1 or 0) and, where the checkpoint carries a depth uncertainty, the median of the frame's
        finite ``depth_sigma`` (``depth_sigma_median_m``; +inf where the frame's is +inf, flagged out of bounds; NaN
        where it has no depth)."""
        res = self._last_res
        if res is None:
            return {}
        nan = float("nan")
        out = {
            "coverage_m": nan if res.coverage_m is None else float(res.coverage_m[0]),
            "coverage_deg": nan if res.coverage_deg is None else float(res.coverage_deg[0]),
            "out_of_bounds": float(res.out_of_bounds[0]),
        }
        if res.depth_sigma is not None:
            s = res.depth_sigma[0]
            finite = s[np.isfinite(s)]
            unbounded = float("inf") if np.isposinf(s).any() else nan
            out["depth_sigma_median_m"] = float(np.median(finite)) if finite.size else unbounded
        return out

    def close(self) -> None:
        """The host's cleanup: stop the engine's look-ahead and let go of the model."""
        close_engine(self.engine)

    def set_tf_lookup(self, lookup: Lookup | None) -> None:
        """The runtime's TF: ``lookup(target, source, time_ns) -> (T_target_source, stamp_ns)``."""
        self.tf_lookup = lookup

    def refuse_parameter(self, name: str, value: Any) -> str:
        if name == "rate_hz" and self.engine.cfg.lookahead > 0 and value != self.cfg.rate_hz:
            return (
                "rate_hz sets the look-ahead spacing of the loaded engine (engine.lookahead > 0): reconfigure the "
                "node to change it"
            )
        return ""

    def parameter_applied(self, name: str) -> None:
        if name == "rate_hz":  # the rate is measured anew at the new rate_hz, not over renders at the old one
            self._published_s.clear()

    # ------------------------------------------------------------------ helpers
    def pose_from_msg(self, msg: Any) -> tuple[int, np.ndarray]:
        """PoseStamped -> (stamp_ns, T_world_cam); raises GeometryError (NaN, bad quaternion, wrong frame)."""
        frame = str(msg.header.frame_id).lstrip("/")
        if frame and frame != self.world_frame:
            raise GeometryError(f"pose is in frame '{frame}', expected the world frame '{self.world_frame}'")
        return M.stamp_to_ns(msg.header.stamp), M.pose_to_matrix(msg.pose)

    # ------------------------------------------------------------------ inputs
    def on_pose(self, msg: Any, now_ns: int) -> list[Outgoing]:
        """A PoseStamped arrived (pose source 'topic'). Returns outputs only when ``rate_hz == 0``."""
        try:
            stamp, T = self.pose_from_msg(msg)
        except GeometryError as e:
            self.count("rejected_poses")
            self._rejected_why = f"the newest pose on '{self.cfg.topics.pose}' was rejected: {e}"
            self.warning("bad_pose", now_ns, f"rejected pose on '{self.cfg.topics.pose}': {e}")
            return []
        ahead = now_ns > 0 and stamp > now_ns + int(FUTURE_STAMP_S * 1e9)
        if ahead and self._poses_ahead is False:  # a jump ahead of poses in step with the clock: refused, as the TF
            self.count("rejected_poses")  # input refuses such a transform (poses all ahead, another clock: taken)
            future = (
                f"stamped {(stamp - now_ns) / 1e9:.2f} s after this node's clock (more than {FUTURE_STAMP_S:g} s): "
                f"{CLOCKS_DIFFER}"
            )
            self._rejected_why = f"the newest pose on '{self.cfg.topics.pose}' was rejected: {future}"
            self.warning("bad_pose", now_ns, f"rejected pose on '{self.cfg.topics.pose}': {future}")
            return []
        if now_ns > 0:  # the clock at 0 (sim time before /clock): nothing to compare with, nothing learnt
            self._poses_ahead = ahead
        if stamp == 0:  # no header stamp (`ros2 topic pub` without one): the receive time, as the record node does
            stamp = now_ns
            self.count("zero_stamp_poses")
            self.warning("zero_stamp", now_ns, f"poses on '{self.cfg.topics.pose}' have a zero header stamp: each "
                         "is taken at the time it is received (stamp them at their capture time)")  # fmt: skip
        if self._pending is not None:
            self.count("superseded_poses")
        self._pending = (stamp, T)
        self._last_pose_rx_ns, self._rejected_why = now_ns, ""
        if self.cfg.rate_hz == 0:
            return self.tick(now_ns)
        return []

    def on_gps(self, msg: Any, now_ns: int) -> list[Outgoing]:
        """A NavSatFix arrived (``topics.gps``): the robot's place against the model's (:class:`PlaceCheck`)."""
        self.count("gps_fixes")
        if self.place.on_fix(msg, now_ns, self.cfg.gps):
            self.count("gps_checked")
        return []

    def _place_flagged(self, res: RenderResult, now_ns: int) -> RenderResult:
        """``res`` flagged out of bounds while the latest GPS fix lies beyond the model's place (a copy: the engine's
        cache keeps its own); ``res`` itself otherwise."""
        self._gps_why = self.place.flag(now_ns, self.cfg.gps)
        if not self._gps_why:
            return res
        flags = np.ones(len(res), dtype=bool)
        return dataclasses.replace(res, out_of_bounds=flags, depth_sigma=unbounded_where(res.depth_sigma, flags))

    def tick(self, now_ns: int, lookup: Lookup | None = None) -> list[Outgoing]:
        """Render the current pose (TF lookup or latest topic pose). Never raises on bad input."""
        if self.cfg.pose_source == "tf":
            lookup = lookup or self.tf_lookup
            if lookup is None:
                raise ConfigError("pose_source is 'tf' but no TF lookup was given (set_tf_lookup or tick())")
            tf_pair = f"{self.world_frame} -> {self.cfg.camera_frame}"
            try:
                T, stamp = lookup(self.world_frame, self.cfg.camera_frame, 0)
            except TransformException as e:
                self.count("tf_failures")
                self._silent_why = f"no transform {tf_pair}: {str(e).strip().rstrip('.')}"
                self.warning("tf", now_ns, f"{self._silent_why}; nothing published")
                return []
            if float(np.asarray(T)[2, 2]) > LOOKS_UP and not self._said_looks_up:  # the view steep up: said once
                self._said_looks_up = True
                self.log.warning(
                    f"camera_frame '{self.cfg.camera_frame}' looks {np.degrees(np.arcsin(min(1.0, T[2, 2]))):.0f} deg "
                    "up, into the sky: a camera's optical frame (REP-103: z forward, x right, y down) looks along z, a "
                    "body frame (base_link: x forward, z up) along x. Set camera_frame to the camera's optical frame "
                    "(e.g. camera_optical_frame), or publish one in TF (a camera that does look up: nothing to do)"
                )  # fmt: skip
            if stamp == 0:  # a chain of /tf_static alone (a fixed camera): valid at every time, rendered at the rate
                stamp = now_ns
            elif stamp == self._last_rendered_stamp:  # TF did not move on: nothing new to render
                age_s = (now_ns - stamp) * 1e-9
                self._silent_why = (
                    f"no new pose: TF {tf_pair} has not moved on for {age_s:.2f} s"
                    if age_s >= 0
                    else f"no new pose: TF {tf_pair} has not moved on from a stamp {-age_s:.2f} s after this node's "
                    "clock (clocks or stamps differ)"
                )
                if self._stale(age_s):  # TF stopped: the pose rendered last is the newest, and it is stale now
                    self.count("stale_poses")
                    self._silent_why += f" (max_pose_age_s {self.cfg.max_pose_age_s:g})"
                    self.warning("stale", now_ns, f"{self._silent_why}; nothing published")
                return []
        else:
            if self._pending is None:
                since = self._last_pose_rx_ns
                self._silent_why = self._rejected_why or f"no new pose on '{self.cfg.topics.pose}'" + (
                    " yet" if since is None else f" for {(now_ns - since) * 1e-9:.2f} s"
                )
                return []
            stamp, T = self._pending
            self._pending = None
        age_s = (now_ns - stamp) * 1e-9
        if self._stale(age_s):
            self.count("stale_poses")
            self._silent_why = (
                f"poses are stale: the newest is {age_s:.2f} s old (max_pose_age_s {self.cfg.max_pose_age_s:g})"
            )
            self.warning(
                "stale", now_ns, f"newest pose is {age_s:.2f} s old (max_pose_age_s {self.cfg.max_pose_age_s}); skipped"
            )
            return []
        try:
            res = self.engine.render_lookahead(T, stamp)
        except GeometryError as e:
            self.count("rejected_poses")
            self._silent_why = f"the newest pose was rejected: {e}"
            self.warning("bad_pose", now_ns, f"rejected pose: {e}")
            return []
        self._last_rendered_stamp = stamp
        out = self._outputs(self._place_flagged(res, now_ns), stamp)
        self._last_frame_ns, self._silent_why = now_ns, ""
        return out

    def _stale(self, age_s: float) -> bool:
        """Whether a pose ``age_s`` old is too old to render (``max_pose_age_s``; 0: never)."""
        return self.cfg.max_pose_age_s > 0 and age_s > self.cfg.max_pose_age_s

    def render_at_pose(self, request: Any, response: Any, now_ns: int) -> Any:
        """RenderAtPose service: fills and returns ``response`` (success false + message on bad input)."""
        try:
            stamp, T = self.pose_from_msg(request.pose)
            res = self._place_flagged(self.engine.render(T), now_ns)
        except GeometryError as e:
            self.count("rejected_poses")
            response.success = False
            response.message = f"rejected: {e}"
            return response
        stamp = stamp or now_ns
        msgs = self._build(res, stamp)
        response.success = True
        response.message = f"out of bounds: {self._oob_why(res)[1]}" if bool(res.out_of_bounds[0]) else "ok"
        response.rgbd = msgs["rgbd"]
        return response

    # ------------------------------------------------------------------ outputs
    def _build(self, res: RenderResult, stamp: int) -> dict[str, Any]:
        f, cfg = self.f, self.cfg
        cam = cfg.camera_frame
        hdr = M.header(f, stamp, cam)
        rgb = M.image(f, stamp, cam, None if res.rgb is None else res.rgb[0], "rgb8")
        depth = M.image(f, stamp, cam, None if res.depth is None else res.depth[0], "32FC1")
        conf = M.image(f, stamp, cam, None if res.confidence is None else res.confidence[0], "32FC1")
        sigma = M.image(f, stamp, cam, None if res.depth_sigma is None else res.depth_sigma[0], "32FC1")
        info = M.camera_info(f, stamp, cam, self.engine.camera)
        latency_ms = res.latency_s * 1e3
        rgbd = f.new(
            "pose2rgbd/msg/RGBD",
            header=hdr,
            query_pose=M.pose_stamped(f, stamp, self.world_frame, res.T_world_cam[0]),
            rgb=rgb,
            depth=depth,
            confidence=conf,
            camera_info=info,
            out_of_bounds=bool(res.out_of_bounds[0]),
            from_cache=bool(res.from_cache[0]),
            latency_ms=float(latency_ms),
            coverage_m=float("nan") if res.coverage_m is None else float(res.coverage_m[0]),
            coverage_deg=float("nan") if res.coverage_deg is None else float(res.coverage_deg[0]),
            depth_sigma=sigma,
        )
        return {"rgb": rgb, "depth": depth, "confidence": conf, "depth_sigma": sigma, "camera_info": info,
                "rgbd": rgbd}  # fmt: skip

    def _unseen(self, res: RenderResult) -> bool:
        """Whether frame 0 is out of bounds for its view alone: it sees too little of what the model saw
        (``engine.min_seen``) from a pose within the training poses' box (a pose outside it is said as that, with
        the world-frame hint: far from the map nothing is seen either)."""
        if res.seen is None or float(res.seen[0]) >= self.engine.cfg.min_seen:
            return False
        return not bool(self.engine.out_of_bounds(res.T_world_cam[:1])[0])

    def _oob_why(self, res: RenderResult) -> tuple[str, str]:
        """Why frame 0 is out of bounds: ``("gps" | "unseen" | "pose", the reason as the end of a sentence starting
        with "camera" or "current")``; the GPS first (the robot is not in the model's place: nothing else matters)."""
        if self._gps_why:
            return "gps", self._gps_why
        if self._unseen(res):
            assert res.seen is not None
            far = (
                "" if res.coverage_deg is None else f", {float(res.coverage_deg[0]):.0f} deg from the nearest keyframe"
            )
            return "unseen", (
                f"view is out of the training bounds: it sees almost nothing the keyframes saw (keyframe points on "
                f"{100 * float(res.seen[0]):.1f} % of its pixels{far})"
            )
        cov = res.coverage_m
        far = "" if cov is None else f", {float(cov[0]):.1f} m from the nearest training camera"
        return "pose", f"pose is out of the training bounds (outside the training poses + margin{far})"

    def valid_mask(self, res: RenderResult) -> np.ndarray | None:
        """``(H, W)`` bool of frame 0: finite depth > 0, within ``cloud.max_range_m``, confidence at least
        ``cloud.min_confidence`` (``None`` without depth); none of it for a pose out of the training bounds unless
        ``cloud.keep_out_of_bounds``: a planner would take a guess far from anything the model saw for obstacles.
        The cloud and the mask topic both follow it."""
        if res.depth is None:
            return None
        c = self.cfg.cloud
        d = res.depth[0]
        if bool(res.out_of_bounds[0]) and not c.keep_out_of_bounds:
            return np.zeros(d.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(d) & (d > 0)
            if c.max_range_m > 0:
                ok &= d <= c.max_range_m
            if c.min_confidence > 0 and res.confidence is not None:
                ok &= res.confidence[0] >= c.min_confidence
        return ok

    def _planner_outputs(self, res: RenderResult, stamp: int) -> dict[str, Any]:
        """The PointCloud2 and the mono8 mask of frame 0 (those asked for in ``publish``)."""
        pub = self.cfg.publish
        valid = self.valid_mask(res) if pub.points or pub.mask else None
        if valid is None or res.depth is None:
            return {}
        f, cam, c = self.f, self.cfg.camera_frame, self.cfg.cloud
        out: dict[str, Any] = {}
        if pub.points:
            xyz = depth_to_points(self.engine.camera, res.depth[0], valid, stride=c.stride)
            rgb = res.rgb[0][:: c.stride, :: c.stride] if c.colour and res.rgb is not None else None
            out["points"] = M.point_cloud2(f, stamp, cam, xyz, rgb)
        if pub.mask:
            out["mask"] = M.image(f, stamp, cam, valid.astype(np.uint8) * np.uint8(255), "mono8")
        return out

    def _outputs(self, res: RenderResult, stamp: int) -> list[Outgoing]:
        t0 = time.perf_counter()
        msgs = self._build(res, stamp)
        msgs.update(self._planner_outputs(res, stamp))
        self.latency.add((res.latency_s + time.perf_counter() - t0) * 1e3)
        self._last_res = res
        self.count("frames")
        now = time.monotonic()
        if self._published_s and now - self._published_s[-1] > self._gap_s():
            self._published_s.clear()  # after an outage the rate is measured anew: the gap is not the renders' rate
        self._published_s.append(now)
        self.count("cache_hits", int(res.from_cache[0]))
        oob = bool(res.out_of_bounds[0])
        self.count("out_of_bounds", int(oob))
        kind, why = self._oob_why(res) if oob else ("", "")
        self.count("gps_out_of_place", int(kind == "gps"))
        # warned once as it starts, and again if its reason changes (the GPS check warns of its own)
        if oob and kind != self._last_oob_kind and kind != "gps":
            dropped = (
                ""
                if self.cfg.cloud.keep_out_of_bounds
                else "; while it is, depth/points and the mask hold no valid point "
                "(cloud.keep_out_of_bounds keeps them)"
            )
            if kind == "unseen":
                hint = (
                    "The camera looks where no keyframe looked (up into the sky, or out of the mapped place): the "
                    "depth there is the network's guess, not a surface seen (engine.min_seen sets the share)"
                )
            else:
                hint = (
                    f"Where every pose is, {self.world_frame!r} in TF may not be where the model's training poses "
                    "are (a converted bag's world is its TF map where its /tf had one, else ENU about the GPS datum: "
                    'docs/conventions.md, "world frame")'
                )
            self.log.warning(f"camera {why}: renders are unreliable{dropped}. {hint}")
        self._last_oob, self._last_oob_why, self._last_oob_kind = oob, why, kind
        pub, top = self.cfg.publish, self.cfg.topics
        out: list[Outgoing] = []
        if pub.rgb and res.rgb is not None:
            out.append((top.rgb, msgs["rgb"]))
        if pub.depth and res.depth is not None:
            out.append((top.depth, msgs["depth"]))
        if pub.confidence and res.confidence is not None:
            out.append((top.confidence, msgs["confidence"]))
        if pub.depth_sigma and res.depth_sigma is not None:
            out.append((top.depth_sigma, msgs["depth_sigma"]))
        if pub.camera_info:
            out.append((top.camera_info, msgs["camera_info"]))
        if pub.rgbd:
            out.append((top.rgbd, msgs["rgbd"]))
        if "points" in msgs:
            out.append((top.points, msgs["points"]))
        if "mask" in msgs:
            out.append((top.mask, msgs["mask"]))
        return out

    def _gap_s(self) -> float:
        """A pause between two renders longer than this is an outage (TF or poses gone, the node deactivated), not a
        slow rate: 3 periods at ``rate_hz``, at least 0.5 s."""
        return max(0.5, 3.0 / self.cfg.rate_hz) if self.cfg.rate_hz > 0 else 0.5

    def output_hz(self) -> float | None:
        """The rate renders reached the topics at, over the latest :data:`RATE_WINDOW` (None before
        :data:`SLOW_AFTER_FRAMES` of them, or when the last is more than 2 s old: nothing to render, not slow)."""
        t = self._published_s
        if len(t) < SLOW_AFTER_FRAMES or time.monotonic() - t[-1] > 2.0 or t[-1] <= t[0]:
            return None
        return (len(t) - 1) / (t[-1] - t[0])

    def _too_slow(self, p50_ms: float, frames: int) -> str:
        """Why the renders cannot keep up with ``rate_hz`` ("" when they can, or before :data:`SLOW_AFTER_FRAMES`
        frames): their median latency is longer than the time between two frames, so a live node publishes at the
        rate its renders allow, not at ``rate_hz`` (docs/serving.md has what each CPU and GPU serves); or, with
        renders fast enough, fewer than :data:`STARVED_SHARE` of ``rate_hz`` reached the topics (poses late or stale,
        TF failing, the node's CPU taken by other processes)."""
        rate = self.cfg.rate_hz
        if rate <= 0 or frames < SLOW_AFTER_FRAMES:
            return ""
        measured = self.output_hz()
        if p50_ms > 1e3 / rate:
            reach = f"{1e3 / p50_ms:.1f} Hz reach" if measured is None else f"{measured:.1f} Hz reached"
            return (
                f"renders take {p50_ms:.1f} ms (median), longer than the {1e3 / rate:.1f} ms between frames at "
                f"rate_hz {rate:g}: live, about {reach} the topics; lower rate_hz or the output size, or serve on "
                "a faster CPU or a GPU (docs/serving.md)"
            )
        if measured is not None and self.cfg.pose_source == "tf" and measured < STARVED_SHARE * rate:
            c = self.counters
            return (
                f"publishing {measured:.1f} Hz of rate_hz {rate:g} (the latest {len(self._published_s)} renders) "
                f"though renders take {p50_ms:.1f} ms: {c['stale_poses']} stale poses and {c['tf_failures']} TF "
                "lookups failed so far; poses arrive late (the node's CPU taken by other processes, a pose "
                "publisher that lags) or too seldom"
            )
        return ""

    def stall_after_s(self) -> float:
        """How long the node may publish nothing before its diagnostics say so: the largest of
        :data:`STALL_MIN_S`, :data:`STALL_PERIODS` periods at ``rate_hz`` (TF or poses that come slower than the
        rate leave ticks without a new pose) and ``max_pose_age_s`` (a pose up to that old is still rendered, so
        poses that far apart are within what the node was told to take)."""
        rate = self.cfg.rate_hz
        return max(STALL_MIN_S, self.cfg.max_pose_age_s, STALL_PERIODS / rate if rate > 0 else 0.0)

    def _stalled(self, now_ns: int) -> str:
        """Why nothing was published for longer than :meth:`stall_after_s` ("" when a frame came since, or before the
        first frame: the diagnostics say that otherwise)."""
        if self._last_frame_ns is None:
            return ""
        gap_s = (now_ns - self._last_frame_ns) * 1e-9
        if gap_s <= self.stall_after_s():
            return ""
        last = (
            ""
            if self._last_rendered_stamp is None
            else f", the last frame's pose stamped {self._last_rendered_stamp * 1e-9:.3f}"
        )
        why = self._silent_why or "no pose to render"
        return f"nothing published for {gap_s:.1f} s (more than {self.stall_after_s():g} s{last}): {why}"

    def diagnostics(self, now_ns: int) -> Any:
        p50, p99 = self.latency.percentiles_ms()
        c = self.counters
        stalled = self._stalled(now_ns)
        if c["frames"] == 0:
            level, text = 1, f"no frame rendered yet: {self._silent_why or 'waiting for a pose'}"
        elif stalled:  # the latest frame's out-of-bounds flag is no longer the current pose's
            level, text = 1, stalled
        elif self._last_oob:
            level, text = 1, f"current {self._last_oob_why}"
            if not self.cfg.cloud.keep_out_of_bounds:
                text += ": depth/points and the mask hold no valid point"
        else:
            level, text = 0, "rendering"
        slow = "" if stalled else self._too_slow(p50, c["frames"])
        if slow:
            level, text = 1, slow if level == 0 else f"{text}; {slow}"
        values = {"latency_p50_ms": f"{p50:.2f}", "latency_p99_ms": f"{p99:.2f}", **c}
        if self._last_frame_ns is not None:
            values["last_frame_age_s"] = f"{(now_ns - self._last_frame_ns) * 1e-9:.2f}"
        if (hz := self.output_hz()) is not None:
            values["output_hz"] = f"{hz:.2f}"
        values["device"] = str(self.engine.device)
        values["precision"] = self.engine.precision
        u = self.engine.depth_uncertainty
        if u is not None:  # what depth/sigma means: the share of held-out pixels within it, and within how many of it
            values["depth_sigma_level"] = f"{u.level:.4f}"  # 95 % of them were (heavier tails than a normal error's)
            for key, w in (("depth_sigma_95_multiple", u.wide[1]), ("depth_sigma_95_multiple_holes", u.wide[0])):
                if np.isfinite(w):  # unknown where the fit saw too few such pixels (a model without holes)
                    values[key] = f"{w:.2f}"
            values["depth_sigma_growth_per_m"] = f"{u.growth_per_m:.4g}"  # x (1 + it * coverage distance)
        return M.diagnostic_array(self.f, now_ns, "pose2rgbd: renderer", level, text, values, self.cfg.camera_frame)


# counters of the GPS check: fixes received on topics.gps, those checked against the model's place (a model with a
# datum, a fix of a valid status), frames flagged out of bounds for the GPS
GPS_COUNTERS = ("gps_fixes", "gps_checked", "gps_out_of_place")


def place_check(engine: RenderEngine, topic: str, log: Log) -> PlaceCheck:
    """The GPS check of ``engine``'s model (:class:`PlaceCheck`): its datum (:func:`model_datum`) and coverage
    positions (the keyframes it warps, else its training cameras; ``engine.coverage_poses``)."""
    from pose2rgbd.models.coverage import WarpsKeyframes, model_datum  # here: `render bag --help` imports no torch

    loaded = getattr(engine, "loaded", None)
    datum = None if loaded is None else model_datum(loaded)
    poses = getattr(engine, "coverage_poses", None)
    warps = loaded is not None and isinstance(loaded.model, WarpsKeyframes) and loaded.model.keyframes is not None
    return PlaceCheck(datum, None if poses is None else poses.t, what="keyframe" if warps else "training camera",
                      topic=topic, log=log)  # fmt: skip


# ---------------------------------------------------------------------------------------------- the node spec
def configure_renderer(cfg: RendererConfig) -> dict[str, Any]:
    """Load the model (heavy: once, at configure). Look-ahead poses are spaced at the node's ``rate_hz`` (with
    ``rate_hz`` 0 the look-ahead is off, see :class:`RendererConfig`: the engine's default spacing is kept)."""
    rate = cfg.rate_hz if cfg.rate_hz > 0 else 10.0
    return {"engine": RenderEngine.from_config(cfg.engine, lookahead_rate_hz=rate)}


def build_renderer(cfg: RendererConfig, factory: M.MessageFactory, logger: Any = None, **res: Any) -> Renderer:
    return Renderer(cfg, res["engine"], factory, logger=logger)


def _describe_renderer(cfg: RendererConfig, res: dict[str, Any]) -> str:
    engine = res["engine"]
    tf = cfg.pose_source == "tf"
    source = f"TF {looked_up_frame(cfg, engine)} -> {cfg.camera_frame}" if tf else f"the poses on '{cfg.topics.pose}'"
    when = f"at {cfg.rate_hz:g} Hz" if cfg.rate_hz > 0 else "each as it arrives (rate_hz 0)"
    return f"rendering {engine.size}x{engine.size} on {engine.device} from {source} {when}"


def _no_head(r: object, head: Literal["rgb", "depth"]) -> str:
    """Why the render node's model never gives ``head`` ("" where it does): its topics are not advertised."""
    assert isinstance(r, Renderer)
    has = r.engine.has_rgb if head == "rgb" else r.engine.has_depth
    return "" if has else f"the model has no {head} head"


def _no_sigma(r: object) -> str:
    """Why the render node never publishes ``depth/sigma`` ("" where it does)."""
    assert isinstance(r, Renderer)
    if r.engine.depth_uncertainty is not None:
        return ""
    if not r.engine.has_depth:
        return "the model has no depth head"
    return (
        "the checkpoint carries no depth uncertainty (`pose2rgbd evaluate --checkpoint C --dataset D "
        "--fit-depth-uncertainty` fits one into it)"
    )


RENDERER = NodeSpec(
    name="pose2rgbd_renderer",
    config=RendererConfig,
    configure=configure_renderer,
    build=build_renderer,
    inputs=(
        Input(
            "topics.pose", ("geometry_msgs/msg/PoseStamped",), Renderer.on_pose, when=lambda c: c.pose_source == "topic"
        ),
        Input(
            "topics.gps",
            ("sensor_msgs/msg/NavSatFix",),
            Renderer.on_gps,
            when=lambda c: bool(c.topics.gps),
            required=lambda c: False,
        ),
    ),
    outputs=(
        Output("topics.rgb", "sensor_msgs/msg/Image", depth=2, silent=lambda r: _no_head(r, "rgb")),
        Output("topics.depth", "sensor_msgs/msg/Image", depth=2, silent=lambda r: _no_head(r, "depth")),
        Output("topics.confidence", "sensor_msgs/msg/Image", depth=2),
        Output("topics.depth_sigma", "sensor_msgs/msg/Image", depth=2, silent=_no_sigma),
        Output("topics.camera_info", "sensor_msgs/msg/CameraInfo", depth=2),
        Output("topics.rgbd", "pose2rgbd/msg/RGBD", depth=2),
        Output("topics.points", "sensor_msgs/msg/PointCloud2", depth=2, silent=lambda r: _no_head(r, "depth")),
        Output("topics.mask", "sensor_msgs/msg/Image", depth=2, silent=lambda r: _no_head(r, "depth")),
        Output("topics.diagnostics", "diagnostic_msgs/msg/DiagnosticArray"),
    ),
    timers=(
        Timer(lambda c: 1.0 / c.rate_hz if c.rate_hz > 0 else 0.0, Renderer.tick, "render"),
        Timer(lambda c: c.diagnostics_period_s, Renderer.diagnostics_tick, "diagnostics"),
    ),
    services=(Service("~/render_at_pose", "pose2rgbd/srv/RenderAtPose", Renderer.render_at_pose),),
    tf=TFNeed(
        required=lambda c: c.pose_source == "tf",
        timeout_s=lambda c: c.tf_timeout_s,
        why="pose_source is 'tf'",
        instead="or give the camera's poses in the model's world frame as geometry_msgs/msg/PoseStamped with "
        "--pose-source topic --pose-topic TOPIC",
    ),
    live=RENDERER_LIVE,
    description="pose -> rendered RGB, metric depth, confidence, point cloud and validity mask",
    extras={"describe": _describe_renderer},
)
