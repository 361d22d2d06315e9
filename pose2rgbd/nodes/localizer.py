"""Localization node logic (no rclpy): camera image -> camera pose in the world frame, with a covariance.

:data:`LOCALIZER` is its :class:`~pose2rgbd.nodes.spec.NodeSpec`; the runtime (the rclpy host or the offline
bag runner) subscribes to the image topic (``sensor_msgs/Image`` or ``CompressedImage``, sensor-data QoS, queue
depth 1 live: the newest image wins) and calls:

* :meth:`LocalizerNode.on_image` per image: decode (any colour encoding; jpeg / png), fit to the model's
  input (:func:`pose2rgbd.inference.images.fit_to_input`: keep the aspect ratio, resize to cover, centre
  crop), localize with the engine (any checkpoint whose kind is served by the localize engine) and return:

  - ``topics.pose``: ``geometry_msgs/PoseWithCovarianceStamped``, the camera (REP-103 optical frame) in the
    world frame: ``header.stamp`` = the image's stamp, ``header.frame_id`` = the world frame, covariance from
    the calibration file (:mod:`pose2rgbd.evaluation.calibration`), scaled by the image's confidence, and by
    ``ood_covariance_scale`` when the image is out of distribution;
  - ``topics.ood``: ``std_msgs/Bool``, one per pose, true when the image is out of distribution: the model's
    confidence is below ``ood_threshold`` (-1: the calibration file's threshold, the 5 % quantile of the
    validation images' confidences);
  - ``topics.status``: ``diagnostic_msgs/DiagnosticArray`` per image, stamped with the image's stamp (level
    WARN when out of distribution; values: confidence, threshold, latency, covariance scale);
  - ``topics.tf`` (with ``publish_tf``): ``world_frame -> tf_child_frame`` for debugging;

* :meth:`LocalizerNode.diagnostics_tick` every ``diagnostics_period_s``: latency p50 / p99, confidence, images
  rejected and why, out-of-distribution count.

Bad images never raise out of :meth:`~LocalizerNode.on_image`: an unsupported encoding (depth, Bayer ...),
corrupt compressed data or a size that cannot be fitted are rejected, counted per reason and logged (throttled).
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pose2rgbd import messages as M
from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.errors import BagError, CheckpointError, ConfigError, Pose2RGBDError
from pose2rgbd.inference import EngineConfig, LocalizeEngine, load_engine
from pose2rgbd.inference.images import prepare_for_model
from pose2rgbd.inference.refine import RefineConfig, Refiner
from pose2rgbd.inference.structure import LOCALIZE_METHODS, Prior, StructureConfig
from pose2rgbd.nodes.common import EngineNode, get_logger
from pose2rgbd.nodes.logic import NodeLogic
from pose2rgbd.nodes.spec import Input, NodeSpec, Output, Timer

if TYPE_CHECKING:  # the calibration module is imported when a node is built (evaluation imports torch)
    from pose2rgbd.evaluation.calibration import Calibration

Outgoing = tuple[str, Any]
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
REJECT_REASONS = ("encoding", "corrupt", "size")


@dataclass
class LocalizerTopics:
    """Topic names (relative names resolve in the node's namespace)."""

    image: str = help_field("/camera/image_raw", "input camera images (sensor_msgs/Image or CompressedImage)")
    pose: str = help_field(
        "pose", "camera pose in the world frame (geometry_msgs/PoseWithCovarianceStamped, stamp of the image)"
    )
    refined_pose: str = help_field("pose_refined", "the refined pose, with refine (PoseWithCovarianceStamped)")
    ood: str = help_field("out_of_distribution", "std_msgs/Bool per pose: the image looks out of distribution")
    status: str = help_field(
        "localization_status",
        "per-image status stamped with the image (diagnostic_msgs/DiagnosticArray: confidence, OOD)",
    )
    diagnostics: str = help_field("/diagnostics", "latency, confidence, rejected images (DiagnosticArray)")
    tf: str = help_field("/tf", "where the debugging transform goes with publish_tf (tf2_msgs/TFMessage)")
    gps: str = help_field(
        "", "structure: sensor_msgs/NavSatFix whose position (in the map's ENU datum) is a prior (empty: none)"
    )
    odometry: str = help_field(
        "",
        "structure: nav_msgs/Odometry whose position is a prior when its header.frame_id is the world frame "
        "(empty: none)",
    )
    camera_info: str = help_field(
        "", "structure: sensor_msgs/CameraInfo of the images (empty: the camera parameter, else the map's camera)"
    )


@dataclass
class LocalizerConfig:
    """The localize node: which images, which model, how the covariance and the OOD flag are made."""

    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"help": "model and inference settings"})
    method: str = help_field(
        "auto",
        "structure (match the image against the place map: a pose or no fix) | posegan (the checkpoint's image -> "
        "pose model) | structure+posegan (the model's estimate is the structure localizer's prior) | auto "
        "(structure when map is set, else posegan)",
    )
    map: str = help_field("", "place map folder (`pose2rgbd map build`) for the structure localizer")
    structure: StructureConfig = field(
        default_factory=StructureConfig, metadata={"help": "structure localizer settings"}
    )
    camera: str = help_field(
        "", "structure: 'fx,fy,cx,cy' of the images at their own size (empty: topics.camera_info, else the map's)"
    )
    posegan_prior_radius_m: float = ranged_field(
        150.0, "structure+posegan: keyframes within this of the model's estimate are candidates", 1.0, 1e6
    )
    prior_max_age_s: float = ranged_field(
        2.0, "a GPS / odometry message older than this (against the image stamp) is no prior", 0.0, 3600.0
    )
    image_type: str = help_field("raw", "type of topics.image: 'raw' (sensor_msgs/Image) or 'compressed'")
    world_frame: str = help_field(
        "", "frame_id of the published poses (empty: the checkpoint's world frame, the frame of its training poses)"
    )
    camera_frame: str = help_field(
        "", "the images' camera optical frame, for the status messages (empty: the images' header.frame_id)"
    )
    crop_scale: float = ranged_field(
        0.0,
        "0 (auto): the model's own preparation of a camera frame (PoseGAN: squash to its load size and centre-crop, "
        "as trained; others: as 1); 1-4: resize to cover crop_scale x the model input keeping the aspect ratio, "
        "then centre-crop",
        0.0,
        4.0,
    )
    input_bit_depth: int = ranged_field(
        0,
        "significant bits of 16-bit images (mono16, rgb16, 16-bit PNG): 10 for 10-bit data in a 16-bit container, "
        "16 for full-range data; 0: inferred per image from its largest value (10, 12, 14 or 16 bits). 8-bit "
        "images are used as they are",
        0,
        16,
    )
    min_image_side: int = ranged_field(
        8, "reject images whose shorter side is below this many pixels (cannot be fitted)", 1, 100000
    )
    max_aspect: float = ranged_field(
        8.0, "reject images whose long / short side ratio is above this (cannot be centre-cropped)", 1.0, 1000.0
    )
    covariance_source: str = help_field(
        "auto",
        "'file' (covariance_file, required), 'default' (a conservative 10 m / 30 deg covariance) or 'auto' "
        "(the file when covariance_file is set, else the default with a warning)",
    )
    covariance_file: str = help_field("", "calibration YAML from `pose2rgbd localize calibrate` (covariance, OOD)")
    scale_by_confidence: bool = help_field(True, "scale the calibrated covariance by the file's per-confidence factors")
    ood_threshold: float = ranged_field(
        -1.0,
        "flag an image out of distribution when its confidence is below this (-1: the calibration file's "
        "threshold; without a file nothing is flagged; 0: never)",
        -1.0,
        1.0,
    )
    ood_covariance_scale: float = ranged_field(
        100.0, "multiply the covariance of an out-of-distribution image by this", 1.0, 1e12
    )
    publish_tf: bool = help_field(False, "also broadcast world_frame -> tf_child_frame (debugging)")
    tf_child_frame: str = help_field(
        "camera_localized",
        "child frame of the debugging TF (not the camera's own frame, which has a parent in the robot's tree)",
    )
    refine: bool = help_field(
        False,
        "also refine each pose by render-and-compare and publish it on topics.refined_pose (costs seconds per "
        "image on a CPU: docs/results.md)",
    )
    refine_checkpoint: str = help_field(
        "",
        "pose -> image checkpoint to render with for refine (empty: the localizer's own checkpoint, e.g. PoseGAN's "
        "generator)",
    )
    refinement: RefineConfig = field(default_factory=RefineConfig, metadata={"help": "render-and-compare settings"})
    warn_throttle_s: float = ranged_field(5.0, "repeat the same warning at most this often", 0.0, 3600.0)
    diagnostics_period_s: float = ranged_field(1.0, "diagnostics publishing period (0: off)", 0.0, 3600.0)
    topics: LocalizerTopics = field(default_factory=LocalizerTopics, metadata={"help": "topic names"})

    def __post_init__(self) -> None:
        if self.image_type not in ("raw", "compressed"):
            raise ConfigError(f"image_type: {self.image_type!r} is not 'raw' or 'compressed'")
        if self.covariance_source not in ("auto", "file", "default"):
            raise ConfigError(f"covariance_source: {self.covariance_source!r} is not 'auto', 'file' or 'default'")
        if self.covariance_source == "file" and not self.covariance_file:
            raise ConfigError(
                "covariance_source is 'file' but covariance_file is empty; write one with `pose2rgbd localize "
                "calibrate` and set covariance_file"
            )
        if self.publish_tf and not self.tf_child_frame:
            raise ConfigError("publish_tf needs a tf_child_frame")
        if self.input_bit_depth and not 8 <= self.input_bit_depth <= 16:
            raise ConfigError(f"input_bit_depth: {self.input_bit_depth} is not 0 (inferred per image) or 8 to 16")
        if self.method not in LOCALIZE_METHODS:
            raise ConfigError(f"method {self.method!r} is not one of {', '.join(LOCALIZE_METHODS)}")
        self.intrinsics()  # refuses a malformed camera

    def intrinsics(self) -> tuple[float, float, float, float] | None:
        """``camera`` as (fx, fy, cx, cy), or None when empty."""
        if not self.camera.strip():
            return None
        try:
            v = tuple(float(x) for x in self.camera.split(","))
        except ValueError:
            v = ()
        if len(v) != 4 or not all(math.isfinite(x) for x in v) or v[0] <= 0 or v[1] <= 0:
            raise ConfigError(f"camera: give 'fx,fy,cx,cy' (four numbers, focal lengths > 0), got {self.camera!r}")
        return v  # type: ignore[return-value]


# Not live: engine.* (the loaded model), image_type and topics.* (subscriptions / publishers), world_frame (the
# model's frame), covariance_* (read at configure), crop_scale and the image limits (tied to the model), refine.
LOCALIZER_LIVE = (
    "ood_threshold",
    "ood_covariance_scale",
    "scale_by_confidence",
    "publish_tf",
    "tf_child_frame",
    "camera_frame",
    "warn_throttle_s",
    "diagnostics_period_s",
)


class LocalizerNode(EngineNode, NodeLogic):
    """Message-level localize node (see the module docstring). ``factory`` builds the outgoing messages."""

    live = LOCALIZER_LIVE
    logger_name = "pose2rgbd.localizer"

    def __init__(
        self,
        cfg: LocalizerConfig,
        engine: Any,
        factory: M.MessageFactory,
        *,
        calibration: Calibration | None = None,
        refiner: Any = None,
        logger: Any = None,
    ) -> None:
        counters = ["images", "frames", "out_of_distribution", "rejected", *(f"rejected_{r}" for r in REJECT_REASONS),
                    "localize_errors", "refined", "refine_errors"]  # fmt: skip
        super().__init__(cfg, factory, logger, dict.fromkeys(counters, 0))
        self.engine = engine
        self.refiner = refiner  # a pose2rgbd.inference.refine.Refiner, with refine
        self.calibration = calibration
        self.world_frame = cfg.world_frame or getattr(engine, "world_frame", "") or "map"
        self.last_latency_ms = math.nan
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=1000)
        self._confidence: collections.deque[float] = collections.deque(maxlen=1000)
        self._last_ood = False
        self.last_refine: Any = None
        # the structure localizer (a place map): images at their own size, priors, "no fix" answers
        self.structured = callable(getattr(engine, "localize_one", None))
        self.last_fix: Any = None
        self._gps: tuple[int, np.ndarray, float] | None = None  # stamp, map position, search radius
        self._odom: tuple[int, np.ndarray] | None = None
        if self.structured:
            self.counters.update({"fixes": 0, "no_fix": 0})
            if cfg.intrinsics() is not None:
                engine.query_intrinsics = cfg.intrinsics()
        from pose2rgbd.evaluation.calibration import default_covariance

        if calibration is None:
            self.base_cov = default_covariance()
            self.cov_source = "default"
        else:
            self.base_cov = calibration.covariance
            self.cov_source = "file"

    # ------------------------------------------------------------------ the OOD rule and the covariance
    @property
    def ood_threshold(self) -> float:
        """The confidence below which an image is out of distribution (0: nothing is flagged)."""
        if self.cfg.ood_threshold >= 0:
            return self.cfg.ood_threshold
        return self.calibration.ood_threshold if self.calibration is not None else 0.0

    def covariance(self, confidence: float, ood: bool) -> np.ndarray:
        """The 6x6 covariance published with a pose of this confidence."""
        if self.calibration is not None and self.cfg.scale_by_confidence:
            cov = self.calibration.covariance_at(confidence)
        else:
            cov = self.base_cov.copy()
        return cov * self.cfg.ood_covariance_scale if ood else cov

    # ------------------------------------------------------------------ input
    def _reject(self, reason: str, now_ns: int, text: str) -> list[Outgoing]:
        self.count("rejected")
        self.count(f"rejected_{reason}")
        self.warning(f"reject_{reason}", now_ns, f"rejected image on '{self.cfg.topics.image}': {text}")
        return []

    def decode(self, msg: Any) -> tuple[np.ndarray | None, str, str]:
        """Image / CompressedImage -> ``(uint8 RGB, "", "")`` or ``(None, reason, text)`` with reason
        ``encoding`` (not a colour image: depth, unsupported) or ``corrupt`` (data that cannot be decoded)."""
        try:
            rgb = M.image_msg_to_rgb(msg, bit_depth=self.cfg.input_bit_depth)
        except BagError as e:
            text = str(e)
            return None, ("encoding" if "encoding" in text and not M.is_compressed(msg) else "corrupt"), text
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:  # e.g. a compressedDepth message
            return (
                None,
                "encoding",
                f"not a colour image ({getattr(msg, 'format', '')!r} decodes to {rgb.dtype} {rgb.shape})",
            )
        return rgb, "", ""

    def on_image(self, msg: Any, now_ns: int) -> list[Outgoing]:
        """An image arrived: localize it (see the module docstring). Never raises on a bad image."""
        t0 = time.perf_counter()
        self.count("images")
        rgb, reason, text = self.decode(msg)
        if rgb is None:
            return self._reject(reason, now_ns, text)
        h, w = rgb.shape[:2]
        if min(h, w) < self.cfg.min_image_side or max(h, w) > self.cfg.max_aspect * min(h, w):
            return self._reject(
                "size", now_ns,
                f"{w}x{h} cannot be fitted to the model input (min_image_side {self.cfg.min_image_side}, "
                f"max_aspect {self.cfg.max_aspect:g})",
            )  # fmt: skip
        if self.structured:
            return self._on_image_structure(msg, rgb, now_ns, t0)
        try:
            model = getattr(self.engine, "model", None)  # a Localizer need not expose one
            x = prepare_for_model(model, rgb, self.engine.input_hw, crop_scale=self.cfg.crop_scale)
            res = self.engine.localize(x)
        except (Pose2RGBDError, RuntimeError) as e:  # RuntimeError: torch (e.g. out of GPU memory)
            self.count("localize_errors")
            self.warning("localize", now_ns, f"localization failed: {type(e).__name__}: {e}")
            return []
        T = res.T_world_cam[0]
        conf = float(res.confidence[0])
        if not (np.all(np.isfinite(T)) and math.isfinite(conf)):
            self.count("localize_errors")
            self.warning("nan", now_ns, "the model returned a non-finite pose; nothing published")
            return []
        stamp = M.stamp_to_ns(msg.header.stamp) or now_ns
        threshold = self.ood_threshold
        ood = conf < threshold
        cov = self.covariance(conf, ood)
        out = self._outputs(stamp, T, conf, ood, cov, threshold, msg)
        self.last_latency_ms = (time.perf_counter() - t0) * 1e3  # image -> pose (refinement is reported apart)
        self._latency_ms.append(self.last_latency_ms)
        if self.refiner is not None:
            out += self._refined(x, T, stamp, cov, now_ns)
        self._confidence.append(conf)
        self.count("frames")
        self.count("out_of_distribution", int(ood))
        if ood and not self._last_ood:
            self.log.warning(
                f"image out of distribution (confidence {conf:.3f} < {threshold:.3f}): pose unreliable, covariance "
                f"x{self.cfg.ood_covariance_scale:g}"
            )
        self._last_ood = ood
        return out

    # ------------------------------------------------------------------ the structure localizer
    def _on_image_structure(self, msg: Any, rgb: np.ndarray, now_ns: int, t0: float) -> list[Outgoing]:
        """Localize against the map with the freshest prior; a "no fix" publishes only the status and why."""
        stamp = M.stamp_to_ns(msg.header.stamp) or now_ns
        try:
            fix = self.engine.localize_one(rgb, self._prior(stamp))
        except (Pose2RGBDError, RuntimeError) as e:
            self.count("localize_errors")
            self.warning("localize", now_ns, f"localization failed: {type(e).__name__}: {e}")
            return []
        self.last_fix = fix
        self.last_latency_ms = (time.perf_counter() - t0) * 1e3
        self._latency_ms.append(self.last_latency_ms)
        self.count("frames")
        values = {"inliers": fix.inliers, "correspondences": fix.correspondences, "prior": fix.prior or "none",
                  "latency_ms": f"{self.last_latency_ms:.1f}"}  # fmt: skip
        camera = self.cfg.camera_frame or str(msg.header.frame_id).lstrip("/") or "camera_optical_frame"
        if not fix.ok:
            self.count("no_fix")
            key = "no_fix_" + fix.reason.replace(" ", "_")
            self.count(key)
            self._last_ood = True
            self.warning("no_fix", now_ns, f"no fix: {fix.reason} ({fix.inliers} inliers)")
            status = M.diagnostic_array(self.f, stamp, "pose2rgbd: localization", 1, f"no fix: {fix.reason}",
                                        {"fix": "false", "reason": fix.reason, **values}, camera)  # fmt: skip
            return [(self.cfg.topics.status, status)]
        self.count("fixes")
        cov = self.calibration.covariance_of_fix(fix.covariance) if self.calibration else fix.covariance
        threshold = self.ood_threshold
        ood = fix.confidence < threshold
        self.count("out_of_distribution", int(ood))
        self._last_ood = ood
        self._confidence.append(fix.confidence)
        return self._outputs(stamp, fix.T_world_cam, fix.confidence, ood, cov, threshold, msg,
                             {"fix": "true", **values})  # fmt: skip

    def _prior(self, stamp: int) -> Prior | None:
        """The freshest odometry or GPS position within prior_max_age_s of the image (odometry first)."""
        age = int(self.cfg.prior_max_age_s * 1e9)
        if self._odom is not None and abs(stamp - self._odom[0]) <= age:
            return Prior(self._odom[1], None, 0.0, "odometry")
        if self._gps is not None and abs(stamp - self._gps[0]) <= age:
            return Prior(self._gps[1], None, self._gps[2], "gps")
        return None

    def on_gps(self, msg: Any, now_ns: int) -> list[Outgoing]:
        """A NavSatFix: its position in the map's ENU frame becomes the prior of the next images."""
        datum = getattr(getattr(self.engine, "map", None), "datum", None)
        if datum is None:
            self.warning("gps_datum", now_ns, "GPS prior unused: the map's dataset has no datum (no GPS origin)")
            return []
        fix = M.read_navsatfix(msg)
        if fix.problem() is not None:
            return []
        enu = datum.to_enu(*fix.lla)
        sigma = math.sqrt(max(fix.covariance[0], fix.covariance[4], 0.0)) if fix.covariance_type > 0 else 0.0
        radius = max(self.cfg.structure.prior_radius_m, 3.0 * sigma)
        self._gps = (M.stamp_to_ns(msg.header.stamp) or now_ns, np.asarray(enu, np.float64).reshape(3), radius)
        return []

    def on_odometry(self, msg: Any, now_ns: int) -> list[Outgoing]:
        """An Odometry in the world frame: its position becomes the prior of the next images."""
        frame = str(msg.header.frame_id).lstrip("/")
        if frame != self.world_frame:
            why = f"its frame {frame!r} is not the world frame {self.world_frame!r}"
            self.warning("odom_frame", now_ns, f"odometry prior unused: {why} (publish it in the map frame)")
            return []
        p = msg.pose.pose.position
        self._odom = (M.stamp_to_ns(msg.header.stamp) or now_ns, np.array([p.x, p.y, p.z], np.float64))
        return []

    def on_camera_info(self, msg: Any, now_ns: int) -> list[Outgoing]:
        """The images' intrinsics (unless the camera parameter gives them)."""
        if not self.cfg.camera and self.structured:
            cam = M.camera_from_info(msg)
            self.engine.query_intrinsics = (cam.fx, cam.fy, cam.cx, cam.cy)
        return []

    def _refined(self, x: np.ndarray, T: np.ndarray, stamp: int, cov: np.ndarray, now_ns: int) -> list[Outgoing]:
        """Render-and-compare from the localizer's pose; the refined pose on topics.refined_pose (same stamp and
        covariance: the calibration is the localizer's). A failed refinement is counted, never raised."""
        try:
            r = self.refiner.refine(x[None] if x.ndim == 3 else x, T[None])
        except (Pose2RGBDError, RuntimeError) as e:
            self.count("refine_errors")
            self.warning("refine", now_ns, f"refinement failed: {type(e).__name__}: {e}")
            return []
        self.last_refine = r
        self.count("refined")
        f = self.f
        pose = f.new(
            "geometry_msgs/msg/PoseWithCovarianceStamped",
            header=M.header(f, stamp, self.world_frame),
            pose=f.new(
                "geometry_msgs/msg/PoseWithCovariance", pose=M.pose(f, r.T_world_cam[0]), covariance=cov.reshape(-1)
            ),
        )
        return [(self.cfg.topics.refined_pose, pose)]

    # ------------------------------------------------------------------ outputs
    def _outputs(
        self, stamp: int, T: np.ndarray, conf: float, ood: bool, cov: np.ndarray, threshold: float, msg: Any,
        extra: dict[str, Any] | None = None,
    ) -> list[Outgoing]:  # fmt: skip
        f, top = self.f, self.cfg.topics
        pose = f.new(
            "geometry_msgs/msg/PoseWithCovarianceStamped",
            header=M.header(f, stamp, self.world_frame),
            pose=f.new("geometry_msgs/msg/PoseWithCovariance", pose=M.pose(f, T), covariance=cov.reshape(-1).copy()),
        )
        out: list[Outgoing] = [(top.pose, pose), (top.ood, f.new("std_msgs/msg/Bool", data=bool(ood)))]
        camera = self.cfg.camera_frame or str(msg.header.frame_id).lstrip("/") or "camera_optical_frame"
        values = {
            "confidence": f"{conf:.4f}",
            "ood_threshold": f"{threshold:.4f}",
            "out_of_distribution": str(ood).lower(),
            "covariance_source": self.cov_source,
            "position_sigma_m": f"{math.sqrt(np.trace(cov[:3, :3]) / 3):.3f}",
            "orientation_sigma_deg": f"{math.degrees(math.sqrt(np.trace(cov[3:, 3:]) / 3)):.3f}",
            **(extra or {}),
        }
        text = f"out of distribution: confidence {conf:.3f} < {threshold:.3f}" if ood else "localized"
        out.append(
            (top.status, M.diagnostic_array(f, stamp, "pose2rgbd: localization", int(ood), text, values, camera))
        )
        if self.cfg.publish_tf:
            tf = M.transform_stamped(f, stamp, self.world_frame, self.cfg.tf_child_frame, T)
            out.append((top.tf, M.tf_message(f, [tf])))
        return out

    def diagnostics(self, now_ns: int) -> Any:
        p50, p99 = self.latency_percentiles_ms()
        c = self.counters
        if c["frames"] == 0:
            level, text = 1, "no image localized yet (waiting for images)"
        elif self.structured and self.last_fix is not None and not self.last_fix.ok:
            level, text = 1, f"no fix for the current image: {self.last_fix.reason}"
        elif self._last_ood:
            level, text = 1, "the current image is out of distribution"
        else:
            level, text = 0, "localizing"
        conf = np.asarray(self._confidence) if self._confidence else np.array([math.nan])
        values: dict[str, Any] = {
            "latency_p50_ms": f"{p50:.2f}",
            "latency_p99_ms": f"{p99:.2f}",
            "confidence_last": f"{conf[-1]:.4f}",
            "confidence_median": f"{float(np.median(conf)):.4f}",
            "ood_threshold": f"{self.ood_threshold:.4f}",
            "covariance_source": self.cov_source,
            **c,
        }
        if self.structured:
            values["fix_rate"] = f"{c['fixes'] / max(c['frames'], 1):.3f}"
            values["map"] = self.cfg.map
        values["device"] = str(getattr(self.engine, "device", ""))
        values["precision"] = str(getattr(self.engine, "precision", ""))
        return M.diagnostic_array(self.f, now_ns, "pose2rgbd: localizer", level, text, values, self.world_frame)


# ---------------------------------------------------------------------------------------------- the node spec
def load_node_calibration(cfg: LocalizerConfig, log: Any = None) -> Calibration | None:
    """The calibration the node uses (``None``: the conservative default, with a warning)."""
    from pose2rgbd.evaluation.calibration import load_calibration

    log = get_logger(log, "pose2rgbd.localizer")
    if cfg.covariance_source == "default" or (cfg.covariance_source == "auto" and not cfg.covariance_file):
        if cfg.covariance_source == "auto" and cfg.map and cfg.method != "posegan":
            log.info(
                "no covariance_file: each fix's covariance comes from its inliers' information, uncalibrated; "
                "calibrate with `pose2rgbd localize calibrate --map`"
            )
        elif cfg.covariance_source == "auto":
            log.warning(
                "no covariance_file: publishing a conservative default covariance (10 m, 30 deg standard deviation) "
                "and flagging nothing as out of distribution; calibrate with `pose2rgbd localize calibrate`"
            )
        return None
    return load_calibration(cfg.covariance_file)


def configure_localizer(cfg: LocalizerConfig) -> dict[str, Any]:
    """Load the map and / or the model, and the calibration (heavy: once, at configure)."""
    from pose2rgbd.inference.structure import load_structure_localizer, resolve_method

    method = resolve_method(cfg.method, cfg.map, cfg.engine.checkpoint)
    engine: Any = None
    if "posegan" in method:
        engine = load_engine(cfg.engine)
        if not isinstance(engine, LocalizeEngine):
            raise CheckpointError(
                f"{cfg.engine.checkpoint}: a {engine.loaded.kind!r} model renders images from poses; the localize "
                "node needs an image -> pose checkpoint (a model kind served by the localize engine)"
            )
    if "structure" in method:
        engine = load_structure_localizer(
            cfg.map, cfg.structure, prior_engine=engine, prior_radius_m=cfg.posegan_prior_radius_m
        )
    return {"engine": engine, "calibration": load_node_calibration(cfg), "refiner": load_refiner(cfg, engine),
            "method": method}  # fmt: skip


def load_refiner(cfg: LocalizerConfig, engine: Any = None) -> Refiner | None:
    """The render-and-compare refiner for ``refine`` (``None`` without): a fresh, unprepared copy of the model that
    renders (``refine_checkpoint``, else the localizer's own checkpoint when it also renders images), on the
    engine's device unless ``refinement.device`` names one."""
    if not cfg.refine:
        return None
    import dataclasses

    from pose2rgbd.models import PoseToImage, load_checkpoint

    path = cfg.refine_checkpoint or cfg.engine.checkpoint
    if not path:
        raise ConfigError(
            "refine renders with a pose -> image model: set refine_checkpoint (the structure localizer has none)"
        )
    if str(path).endswith(".onnx"):
        raise ConfigError(
            f"refine differentiates through a torch model, and {path} is an exported ONNX graph: set "
            "refine_checkpoint to the .pt checkpoint (of this localizer or of a Pose2RGBD model of the same place)"
        )
    loaded = load_checkpoint(path, map_location="cpu")
    if engine is not None and cfg.refine_checkpoint:
        mine = getattr(engine, "loaded", None)
        if mine is not None and mine.world_frame != loaded.world_frame:
            raise ConfigError(
                f"refine_checkpoint {path} renders in world frame {loaded.world_frame!r}, the localizer answers in "
                f"{mine.world_frame!r}: refinement needs a renderer of the same place and frame"
            )
    rcfg = cfg.refinement
    if rcfg.device == "auto" and engine is not None and getattr(engine, "device", None) is not None:
        rcfg = dataclasses.replace(rcfg, device=str(engine.device))
    if not isinstance(loaded.model, PoseToImage) or not loaded.model.has_rgb:
        raise ConfigError(
            f"refine: {path} ({loaded.kind!r}) does not render RGB images from poses; set refine_checkpoint to a "
            "pose -> image checkpoint of the same place (e.g. a Pose2RGBD model), or refine to false"
        )
    return Refiner(loaded.model, rcfg)


def build_localizer(cfg: LocalizerConfig, factory: M.MessageFactory, logger: Any = None, **res: Any) -> LocalizerNode:
    return LocalizerNode(
        cfg, res["engine"], factory, calibration=res.get("calibration"), refiner=res.get("refiner"), logger=logger
    )


def _describe_localizer(cfg: LocalizerConfig, res: dict[str, Any]) -> str:
    engine = res["engine"]
    cal = res.get("calibration") is not None
    if res.get("method", "posegan").startswith("structure"):
        priors = [n for n, t in (("gps", cfg.topics.gps), ("odometry", cfg.topics.odometry)) if t]
        return (
            f"localizing {cfg.image_type} images from {cfg.topics.image} against the place map {cfg.map} "
            f"({len(engine.map)} keyframes; method {res['method']}; priors: previous fix"
            f"{''.join(', ' + p for p in priors)}; {'calibrated' if cal else 'information'} covariance)"
        )
    h, w = engine.input_hw
    cov = "calibrated covariance" if cal else "default covariance"
    return f"localizing {cfg.image_type} images from {cfg.topics.image} at {w}x{h} on {engine.device} ({cov})"


LOCALIZER = NodeSpec(
    name="pose2rgbd_localizer",
    config=LocalizerConfig,
    configure=configure_localizer,
    build=build_localizer,
    inputs=(
        Input(
            "topics.image",
            IMAGE_TYPES,
            "on_image",
            depth=1,
            choose_type=lambda c: IMAGE_TYPES[int(c.image_type == "compressed")],
        ),
        Input(
            "topics.gps",
            ("sensor_msgs/msg/NavSatFix",),
            "on_gps",
            when=lambda c: bool(c.topics.gps),
            required=lambda c: False,
        ),
        Input(
            "topics.odometry",
            ("nav_msgs/msg/Odometry",),
            "on_odometry",
            when=lambda c: bool(c.topics.odometry),
            required=lambda c: False,
        ),
        Input(
            "topics.camera_info",
            ("sensor_msgs/msg/CameraInfo",),
            "on_camera_info",
            when=lambda c: bool(c.topics.camera_info),
            required=lambda c: False,
        ),
    ),
    outputs=(
        Output("topics.pose", "geometry_msgs/msg/PoseWithCovarianceStamped"),
        Output("topics.refined_pose", "geometry_msgs/msg/PoseWithCovarianceStamped"),
        Output("topics.ood", "std_msgs/msg/Bool"),
        Output("topics.status", "diagnostic_msgs/msg/DiagnosticArray"),
        Output("topics.diagnostics", "diagnostic_msgs/msg/DiagnosticArray"),
        Output("topics.tf", "tf2_msgs/msg/TFMessage", depth=100),
    ),
    timers=(Timer(lambda c: c.diagnostics_period_s, "diagnostics_tick", "diagnostics"),),
    live=LOCALIZER_LIVE,
    description="camera image -> camera pose with covariance and an out-of-distribution flag",
    extras={"describe": _describe_localizer},
)
