"""What the localize node publishes for a pose (:class:`PoseOutput`): the covariance (calibrated, scaled by the
confidence, inflated out of distribution), the out-of-distribution rule, the pose / OOD flag / per-image status /
debugging TF messages, and the refined pose with ``refine``."""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np

from pose2rgbd import messages as M
from pose2rgbd.errors import Pose2RGBDError
from pose2rgbd.inference.calibration import Calibration, default_covariance
from pose2rgbd.nodes.localizer.config import LocalizerConfig
from pose2rgbd.nodes.logic import NodeLogic

Outgoing = tuple[str, Any]


class PoseOutput(NodeLogic):
    """Part of the :class:`~pose2rgbd.nodes.localizer.LocalizerNode`: from a pose to the messages."""

    cfg: LocalizerConfig

    def _init_outputs(self, cfg: LocalizerConfig, engine: Any, calibration: Calibration | None, refiner: Any) -> None:
        self.refiner = refiner  # a pose2rgbd.inference.refine.Refiner, with refine
        self.last_refine: Any = None
        self.calibration = calibration
        self.world_frame = cfg.world_frame or getattr(engine, "world_frame", "") or "map"
        self._confidence: collections.deque[float] = collections.deque(maxlen=1000)
        self._last_ood = False
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
            "covariance_source": self.cov_source,  # the structure path's extra names the localizer's source
            "position_sigma_m": f"{math.sqrt(np.trace(cov[:3, :3]) / 3):.3f}",
            "orientation_sigma_deg": f"{math.degrees(math.sqrt(np.trace(cov[3:, 3:]) / 3)):.3f}",
            **(extra or {}),
        }
        flag = (extra or {}).get("flag", "")
        text = (f"out of distribution: {flag}" if flag else f"out of distribution: confidence {conf:.3f} < "
                f"{threshold:.3f}") if ood else "localized"  # fmt: skip
        out.append(
            (top.status, M.diagnostic_array(f, stamp, "pose2rgbd: localization", int(ood), text, values, camera))
        )
        if self.cfg.publish_tf:
            tf = M.transform_stamped(f, stamp, self.world_frame, self.cfg.tf_child_frame, T)
            out.append((top.tf, M.tf_message(f, [tf])))
        return out
