"""What the localize node publishes for a pose: the covariance and the out-of-distribution threshold
(:class:`PoseCovariance`: calibrated, scaled by the confidence, inflated out of distribution), and the messages
(:func:`pose_messages`: the pose, the OOD flag, the per-image status and the debugging TF; :func:`refined_pose`).
Parts the :class:`~pose2rgbd.nodes.localizer.LocalizerNode` holds or calls; each takes the node's current config,
whose OOD and covariance settings may change while it runs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pose2rgbd import messages as M
from pose2rgbd.inference.calibration import Calibration, default_covariance, with_pose_error
from pose2rgbd.nodes.localizer.config import LocalizerConfig

Outgoing = tuple[str, Any]


class PoseCovariance:
    """The covariance and the out-of-distribution threshold of the image -> pose model's poses: from the calibration
    file (``source`` ``"file"``), else the conservative default with nothing flagged (``"default"``)."""

    def __init__(self, calibration: Calibration | None) -> None:
        self.calibration = calibration
        self.base = default_covariance() if calibration is None else calibration.covariance
        self.source = "default" if calibration is None else "file"

    def ood_threshold(self, cfg: LocalizerConfig) -> float:
        """The confidence below which an image is out of distribution (0: nothing is flagged)."""
        if cfg.ood_threshold >= 0:
            return cfg.ood_threshold
        return self.calibration.ood_threshold if self.calibration is not None else 0.0

    def at(self, cfg: LocalizerConfig, confidence: float, ood: bool) -> np.ndarray:
        """The 6x6 covariance published with a pose of this confidence: the model's (scaled by the confidence,
        inflated out of distribution), then the calibration dataset's own pose error added (its GPS receiver's
        statement: the model was trained and calibrated against those poses, not the true ones)."""
        if self.calibration is not None and cfg.scale_by_confidence:
            cov = self.calibration.covariance_at(confidence)
        else:
            cov = self.base.copy()
        if ood:
            cov = cov * cfg.ood_covariance_scale
        return cov if self.calibration is None else with_pose_error(cov, self.calibration.pose_error_sigmas())


def _pose_with_covariance(f: M.MessageFactory, stamp: int, frame: str, T: np.ndarray, cov: np.ndarray) -> Any:
    return f.new(
        "geometry_msgs/msg/PoseWithCovarianceStamped",
        header=M.header(f, stamp, frame),
        pose=f.new("geometry_msgs/msg/PoseWithCovariance", pose=M.pose(f, T), covariance=cov.reshape(-1).copy()),
    )


def refined_pose(f: M.MessageFactory, cfg: LocalizerConfig, world_frame: str, stamp: int, T: np.ndarray,
                 cov: np.ndarray) -> Outgoing:  # fmt: skip
    """The refined pose on ``topics.refined_pose``: the image's stamp and the localizer's covariance (the
    calibration is the localizer's)."""
    return cfg.topics.refined_pose, _pose_with_covariance(f, stamp, world_frame, T, cov)


def status_frame(cfg: LocalizerConfig, frame_id: str) -> str:
    """The frame an image's status names: ``camera_frame``, else the image's own, else the optical frame's usual
    name."""
    return cfg.camera_frame or frame_id.lstrip("/") or "camera_optical_frame"


def pose_messages(
    f: M.MessageFactory, cfg: LocalizerConfig, world_frame: str, camera: str, stamp: int, T: np.ndarray, conf: float,
    ood: bool, cov: np.ndarray, threshold: float, covariance_source: str, extra: dict[str, Any] | None = None,
) -> list[Outgoing]:  # fmt: skip
    """A pose's messages: the pose (``topics.pose``), the OOD flag (``topics.ood``), the per-image status stamped
    with the image and naming its ``camera`` frame (``topics.status``, :func:`status_frame`; ``extra`` adds to its
    values, its ``flag`` names why a fix is flagged) and, with ``publish_tf``, the debugging transform."""
    top = cfg.topics
    out: list[Outgoing] = [
        (top.pose, _pose_with_covariance(f, stamp, world_frame, T, cov)),
        (top.ood, f.new("std_msgs/msg/Bool", data=bool(ood))),
    ]
    values = {
        "confidence": f"{conf:.4f}",
        "ood_threshold": f"{threshold:.4f}",
        "out_of_distribution": str(ood).lower(),
        "covariance_source": covariance_source,  # the structure path's extra names the localizer's source
        "position_sigma_m": f"{math.sqrt(np.trace(cov[:3, :3]) / 3):.3f}",
        "orientation_sigma_deg": f"{math.degrees(math.sqrt(np.trace(cov[3:, 3:]) / 3)):.3f}",
        **(extra or {}),
    }
    flag = (extra or {}).get("flag", "")
    text = (f"out of distribution: {flag}" if flag else f"out of distribution: confidence {conf:.3f} < "
            f"{threshold:.3f}") if ood else "localized"  # fmt: skip
    out.append((top.status, M.diagnostic_array(f, stamp, "pose2rgbd: localization", int(ood), text, values, camera)))
    if cfg.publish_tf:
        tf = M.transform_stamped(f, stamp, world_frame, cfg.tf_child_frame, T)
        out.append((top.tf, M.tf_message(f, [tf])))
    return out
