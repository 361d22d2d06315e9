"""The structure localizer in the localize node (:class:`StructureInput`): an image is matched against the place
map with the freshest prior (the previous fix, or a GPS / odometry position within ``prior_max_age_s`` of the
image); a "no fix" publishes only the status and why."""

from __future__ import annotations

import collections
import math
import time
from typing import Any

import numpy as np

from pose2rgbd import messages as M
from pose2rgbd.errors import Pose2RGBDError
from pose2rgbd.inference.structure import Prior
from pose2rgbd.nodes.localizer.config import LocalizerConfig
from pose2rgbd.nodes.localizer.outputs import PoseOutput

Outgoing = tuple[str, Any]


class StructureInput(PoseOutput):
    """Part of the :class:`~pose2rgbd.nodes.localizer.LocalizerNode`: the place map's images, priors and fixes."""

    cfg: LocalizerConfig
    engine: Any
    last_latency_ms: float
    _latency_ms: collections.deque[float]

    def _init_structure(self, cfg: LocalizerConfig, engine: Any) -> None:
        self.structured = callable(getattr(engine, "localize_one", None))
        self.last_fix: Any = None
        self._gps: tuple[int, np.ndarray, float] | None = None  # stamp, map position, search radius
        self._odom: tuple[int, np.ndarray] | None = None
        if self.structured:
            self.counters.update({"fixes": 0, "no_fix": 0})
            engine.query_lens = cfg.query_camera()

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
        # the localizer calibrated the covariance (the map's own calibration, or covariance_file), flagged a fix
        # beyond the map's coverage and inflated its covariance (structure.ood_covariance_scale)
        threshold = self.ood_threshold
        ood = fix.out_of_distribution(threshold)
        self.count("out_of_distribution", int(ood))
        self._last_ood = ood
        self._confidence.append(fix.confidence)
        values.update(flag=fix.flag, covariance_source=str(getattr(self.engine, "calibration_source", "")))
        if fix.confidence_bound_m > 0:
            values["confidence_bound_m"] = f"{fix.confidence_bound_m:.4g}"
        return self._outputs(stamp, fix.T_world_cam, fix.confidence, ood, fix.covariance, threshold, msg,
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
