"""The localize node (:class:`LocalizerNode`, :data:`LOCALIZER`), one class: decoding and checking images,
localizing them with the engine (an image -> pose model, or the structure localizer against a place map with its
priors), the messages, the diagnostics and the spec. The parts it holds or calls are in the sibling modules: the
config (:mod:`~pose2rgbd.nodes.localizer.config`), the covariance and the messages
(:mod:`~pose2rgbd.nodes.localizer.outputs`), the GPS / odometry priors (:mod:`~pose2rgbd.nodes.localizer.structure`)
and what is loaded at configure (:mod:`~pose2rgbd.nodes.localizer.resources`)."""

from __future__ import annotations

import collections
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from pose2rgbd import messages as M
from pose2rgbd.errors import BagError, Pose2RGBDError
from pose2rgbd.inference.focal_check import FocalCheck
from pose2rgbd.inference.images import prepare_for_model
from pose2rgbd.nodes.localizer.config import IMAGE_TYPES, LOCALIZER_LIVE, LocalizerConfig
from pose2rgbd.nodes.localizer.outputs import PoseCovariance, pose_messages, refined_pose, status_frame
from pose2rgbd.nodes.localizer.resources import configure_localizer
from pose2rgbd.nodes.localizer.structure import Priors
from pose2rgbd.nodes.logic import Latencies, NodeLogic, close_engine
from pose2rgbd.nodes.spec import Input, NodeSpec, Output, Timer

if TYPE_CHECKING:
    from pose2rgbd.inference.calibration import Calibration

Outgoing = tuple[str, Any]
REJECT_REASONS = ("encoding", "corrupt", "size")


class LocalizerNode(NodeLogic):
    """Message-level localize node (see the package docstring). ``factory`` builds the outgoing messages."""

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
        self.latency = Latencies()  # image -> pose (refinement is reported apart)
        self.cov = PoseCovariance(calibration)  # the image -> pose model's; a fix brings the map's own
        self.refiner = refiner  # a pose2rgbd.inference.refine.Refiner, with refine
        self.last_refine: Any = None
        self.world_frame = cfg.world_frame or getattr(engine, "world_frame", "") or "map"
        self._confidence: collections.deque[float] = collections.deque(maxlen=1000)
        self._last_ood = False
        # the structure localizer (a place map): images at their own size, priors, "no fix" answers
        self.structured = callable(getattr(engine, "localize_one", None))
        self.last_fix: Any = None
        self.priors = Priors()
        if self.structured:
            self.counters.update({"fixes": 0, "no_fix": 0})
            engine.query_lens = cfg.query_camera()

    # ------------------------------------------------------------------ what the runtimes read
    @property
    def last_latency_ms(self) -> float:
        """The newest localized image's latency (ms; NaN before the first), which the runtimes record."""
        return self.latency.last_ms

    @property
    def ood_threshold(self) -> float:
        """The confidence below which an image is out of distribution (0: nothing is flagged)."""
        return self.cov.ood_threshold(self.cfg)

    def close(self) -> None:
        """The host's cleanup: let go of the model (and the map)."""
        close_engine(self.engine)

    # ------------------------------------------------------------------ input
    def _reject(self, image: tuple[int, str], reason: str, now_ns: int, text: str) -> list[Outgoing]:
        self.count("rejected")
        self.count(f"rejected_{reason}")
        self.warning(f"reject_{reason}", now_ns, f"rejected image on '{self.cfg.topics.image}': {text}")
        return self._no_pose(image, f"rejected image: {text}", f"rejected_{reason}")

    def _no_pose(self, image: tuple[int, str], text: str, reason: str) -> list[Outgoing]:
        """The status of an image (``(stamp_ns, camera frame)``) that gets no pose
        (rejected, or its localization failed): one per image, stamped with it, level ERROR, the reason in its
        values, as a "no fix" is said at WARN."""
        status = M.diagnostic_array(self.f, image[0], "pose2rgbd: localization", 2, text,
                                    {"fix": "false", "reason": reason}, image[1])  # fmt: skip
        return [(self.cfg.topics.status, status)]

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
        image = (M.stamp_to_ns(msg.header.stamp) or now_ns, status_frame(self.cfg, str(msg.header.frame_id)))
        rgb, reason, text = self.decode(msg)
        if rgb is None:
            return self._reject(image, reason, now_ns, text)
        h, w = rgb.shape[:2]
        if min(h, w) < self.cfg.min_image_side or max(h, w) > self.cfg.max_aspect * min(h, w):
            return self._reject(
                image, "size", now_ns,
                f"{w}x{h} cannot be fitted to the model input (min_image_side {self.cfg.min_image_side}, "
                f"max_aspect {self.cfg.max_aspect:g})",
            )  # fmt: skip
        if self.structured:
            return self._localize_structure(image, rgb, now_ns, t0)
        try:
            model = getattr(self.engine, "model", None)  # a Localizer need not expose one
            x = prepare_for_model(model, rgb, self.engine.input_hw, crop_scale=self.cfg.crop_scale)
            res = self.engine.localize(x)
        except (Pose2RGBDError, RuntimeError) as e:  # RuntimeError: torch (e.g. out of GPU memory)
            self.count("localize_errors")
            self.warning("localize", now_ns, f"localization failed: {type(e).__name__}: {e}")
            return self._no_pose(image, f"localization failed: {e}", "localize_error")
        T = res.T_world_cam[0]
        conf = float(res.confidence[0])
        if not (np.all(np.isfinite(T)) and math.isfinite(conf)):
            self.count("localize_errors")
            self.warning("nan", now_ns, "the model returned a non-finite pose; nothing published")
            return self._no_pose(image, "the model returned a non-finite pose", "localize_error")
        stamp = image[0]
        threshold = self.ood_threshold
        ood = conf < threshold
        cov = self.cov.at(self.cfg, conf, ood)
        out = pose_messages(self.f, self.cfg, self.world_frame, image[1], stamp, T, conf, ood, cov, threshold,
                            self.cov.source)  # fmt: skip
        self.latency.add((time.perf_counter() - t0) * 1e3)  # image -> pose (refinement is reported apart)
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
        return [refined_pose(self.f, self.cfg, self.world_frame, stamp, r.T_world_cam[0], cov)]

    # ------------------------------------------------------------------ the structure localizer
    def _localize_structure(self, image: tuple[int, str], rgb: np.ndarray, now_ns: int, t0: float) -> list[Outgoing]:
        """Localize the image ``(stamp_ns, camera frame)`` against the map with the freshest prior; a "no fix"
        publishes only the status and why."""
        stamp, camera = image
        waiting = self.cfg.topics.camera_info and not self.cfg.camera and hasattr(self.engine, "camera_expected")
        if waiting and self.engine.query_intrinsics is None:
            # an image before the first CameraInfo of the topic given (a bag's first messages): said as that, not as
            # a camera never given, whose warning names flags the node has no use for
            self.engine.camera_expected = self.cfg.topics.camera_info
            self.warning("camera_info", now_ns, f"an image before any CameraInfo on {self.cfg.topics.camera_info}: "
                         "localized with the map's camera scaled to the image until one arrives")  # fmt: skip
        try:
            fix = self.engine.localize_one(rgb, self.priors.at(stamp, self.cfg.prior_max_age_s))
        except (Pose2RGBDError, RuntimeError) as e:
            self.count("localize_errors")
            self.warning("localize", now_ns, f"localization failed: {type(e).__name__}: {e}")
            return self._no_pose(image, f"localization failed: {e}", "localize_error")
        self.last_fix = fix
        self.latency.add((time.perf_counter() - t0) * 1e3)
        self.count("frames")
        values = {"inliers": fix.inliers, "correspondences": fix.correspondences, "prior": fix.prior or "none",
                  "latency_ms": f"{self.latency.last_ms:.1f}"}  # fmt: skip
        if not fix.ok:
            self.count("no_fix")
            self.count("no_fix_" + fix.reason.replace(" ", "_"))
            self._last_ood = True
            self.warning("no_fix", now_ns, f"no fix: {fix.reason} ({fix.inliers} inliers)")
            status = M.diagnostic_array(self.f, stamp, "pose2rgbd: localization", 1, f"no fix: {fix.reason}",
                                        {"fix": "false", "reason": fix.reason, **values}, camera)  # fmt: skip
            return [(self.cfg.topics.status, status)]
        self.count("fixes")
        # the localizer calibrated the covariance (the map's own calibration, or covariance_file), flagged a fix
        # beyond the map's coverage and inflated its covariance (structure.ood_covariance_scale)
        threshold = self.ood_threshold
        ood = fix.out_of_distribution(threshold)
        self.count("out_of_distribution", int(ood))
        self._last_ood = ood
        self._confidence.append(fix.confidence)
        values.update(flag=fix.flag, covariance_source=self._covariance_source())
        if fix.confidence_bound_m > 0:
            values["confidence_bound_m"] = f"{fix.confidence_bound_m:.4g}"
        return pose_messages(self.f, self.cfg, self.world_frame, camera, stamp, fix.T_world_cam, fix.confidence, ood,
                             fix.covariance, threshold, self.cov.source, {"fix": "true", **values})  # fmt: skip

    def on_gps(self, msg: Any, now_ns: int) -> list[Outgoing]:
        """A NavSatFix: its position in the map's world frame (its datum's ``to_world``) becomes the prior of the next
        images."""
        datum = getattr(getattr(self.engine, "map", None), "datum", None)
        if datum is None:
            self.warning("gps_datum", now_ns, "GPS prior unused: the map's dataset has no datum (no GPS origin)")
            return []
        self.priors.add_gps(msg, datum, self.cfg.structure.prior_radius_m, now_ns)
        return []

    def on_odometry(self, msg: Any, now_ns: int) -> list[Outgoing]:
        """An Odometry in the world frame: its position becomes the prior of the next images."""
        frame = str(msg.header.frame_id).lstrip("/")
        if frame != self.world_frame:
            why = f"its frame {frame!r} is not the world frame {self.world_frame!r}"
            self.warning("odom_frame", now_ns, f"odometry prior unused: {why} (publish it in the map frame)")
            return []
        self.priors.add_odometry(msg, now_ns)
        return []

    def on_camera_info(self, msg: Any, now_ns: int) -> list[Outgoing]:
        """The images' intrinsics (unless the camera parameter gives them)."""
        if not self.cfg.camera and self.structured:
            cam = M.camera_from_info(msg)
            self.engine.query_intrinsics = (cam.fx, cam.fy, cam.cx, cam.cy)
        return []

    def _covariance_source(self) -> str:
        """Where the published covariance comes from: for the structure localizer its calibration (``map``,
        ``file``, ``none``), for an image -> pose model the node's (``file`` or ``default``)."""
        if self.structured:
            return str(getattr(self.engine, "calibration_source", ""))
        return self.cov.source

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self, now_ns: int) -> Any:
        p50, p99 = self.latency.percentiles_ms()
        c = self.counters
        focal: FocalCheck | None = getattr(self.engine, "focal", None) if self.structured else None
        wrong_camera = focal.verdict() if focal is not None else ""
        if c["frames"] == 0:
            level, text = 1, "no image localized yet (waiting for images)"
        elif self.structured and self.last_fix is not None and not self.last_fix.ok:
            level, text = 1, f"no fix for the current image: {self.last_fix.reason}"
        elif wrong_camera:
            level, text = 1, f"the camera does not fit the images' matches ({wrong_camera}): check it"
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
            # the structure localizer's own (the map's calibration, a file's, none), as in each fix's status
            "covariance_source": self._covariance_source(),
            **c,
        }
        if self.structured:
            values["fix_rate"] = f"{c['fixes'] / max(c['frames'], 1):.3f}"
            values["map"] = self.cfg.map
        if focal is not None:  # the focal lengths the last fixes' matches fit over the camera's
            values["focal_scale_median"] = f"{focal.median:.3f}"
        for key in ("device", "precision"):  # a model's; the structure localizer alone runs no network
            if value := str(getattr(self.engine, key, "") or ""):
                values[key] = value
        return M.diagnostic_array(self.f, now_ns, "pose2rgbd: localizer", level, text, values, self.world_frame)


# ---------------------------------------------------------------------------------------------- the node spec
def build_localizer(cfg: LocalizerConfig, factory: M.MessageFactory, logger: Any = None, **res: Any) -> LocalizerNode:
    return LocalizerNode(
        cfg, res["engine"], factory, calibration=res.get("calibration"), refiner=res.get("refiner"), logger=logger
    )


def _describe_localizer(cfg: LocalizerConfig, res: dict[str, Any]) -> str:
    engine = res["engine"]
    cal = res.get("calibration") is not None
    if res.get("method", "posegan").startswith("structure"):
        priors = [n for n, t in (("gps", cfg.topics.gps), ("odometry", cfg.topics.odometry)) if t]
        how = {"map": "the map's own calibration", "file": "calibrated by covariance_file"}.get(
            engine.calibration_source, "uncalibrated information"
        )
        return (
            f"localizing {cfg.image_type} images from {cfg.topics.image} against the place map {cfg.map} "
            f"({len(engine.map)} keyframes; method {res['method']}; priors: previous fix"
            f"{''.join(', ' + p for p in priors)}; covariance: {how}; out of distribution: "
            f"{cfg.structure.ood_policy})"
        )
    h, w = engine.input_hw
    cov = "calibrated covariance" if cal else "default covariance"
    sigmas = res["calibration"].pose_error_sigmas() if cal else None
    if sigmas is not None:  # the calibration dataset's GPS error, added to each pose's covariance
        cov += f" + the dataset's pose error, {sigmas[0]:.3g} m horizontal / {sigmas[1]:.3g} m vertical"
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
            LocalizerNode.on_image,
            depth=1,
            choose_type=lambda c: IMAGE_TYPES[int(c.image_type == "compressed")],
        ),
        Input(
            "topics.gps",
            ("sensor_msgs/msg/NavSatFix",),
            LocalizerNode.on_gps,
            when=lambda c: bool(c.topics.gps),
            required=lambda c: False,
        ),
        Input(
            "topics.odometry",
            ("nav_msgs/msg/Odometry",),
            LocalizerNode.on_odometry,
            when=lambda c: bool(c.topics.odometry),
            required=lambda c: False,
        ),
        Input(
            "topics.camera_info",
            ("sensor_msgs/msg/CameraInfo",),
            LocalizerNode.on_camera_info,
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
    timers=(Timer(lambda c: c.diagnostics_period_s, LocalizerNode.diagnostics_tick, "diagnostics"),),
    live=LOCALIZER_LIVE,
    description="camera image -> camera pose with covariance and an out-of-distribution flag",
    extras={"describe": _describe_localizer},
)
