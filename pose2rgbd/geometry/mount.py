"""The camera mount ``T_base_cam``: one config section (``mount.*``) with the same keys and meaning in the record
node (``pose2rgbd record bag`` / ``record_node``) and in ``pose2rgbd convert bag`` / ``convert video``.

Frames: ``base_frame`` is the body the camera hangs from (FLU: x forward, y left, z up; the frame odometry /
IMU orientation describes). The configured mount gives the camera *body* (FLU, x along the view) relative to
the base: ``translation`` in metres and ``rpy_deg`` (roll, pitch, yaw; pitch > 0 looks down); the optical frame
(REP-103: x right, y down, z forward) follows by the fixed rotation :data:`~pose2rgbd.geometry.R_BODY_OPTICAL`::

    T_base_cam = [R_xyz(rpy_deg) @ R_BODY_OPTICAL | translation]

``source``: ``tf_static`` (the recording's /tf_static, base -> camera optical frame; an error / dropped frames
when it is absent), ``config`` (the values above), ``auto`` (/tf_static when it has the transform, else config).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.spatial.transform import Rotation

from pose2rgbd.config import help_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry import R_BODY_OPTICAL
from pose2rgbd.geometry.transforms import make_T

MOUNT_SOURCES = ("auto", "tf_static", "config")
# The body frames an empty ``mount.base_frame`` stands for, in order of preference.
BODY_FRAMES = ("base_link", "base_footprint", "body")


@dataclass
class CameraMount:
    """Camera mount T_base_cam (the same section in the record node and in convert)."""

    source: str = help_field(
        "auto",
        "where the camera mount comes from: 'tf_static' (the recording's /tf_static; an error when absent), "
        "'config' (translation and rpy_deg below), 'auto' (/tf_static when it has the transform, else config)",
    )
    base_frame: str = help_field(
        "", "the body frame the camera hangs from (odometry's child_frame_id); empty: the first of "
        "base_link, base_footprint, body that /tf_static links to the camera"
    )  # fmt: skip
    camera_frame: str = help_field(
        "", "camera optical frame (REP-103) looked up in /tf_static and written as the frame id; empty: the "
        "images' header.frame_id"
    )  # fmt: skip
    translation: list[float] = help_field([0.0, 0.0, 0.0], "config mount: camera position in base_frame (m)")
    rpy_deg: list[float] = help_field(
        [0.0, 0.0, 0.0], "config mount: roll, pitch, yaw (degrees) of the camera body (FLU, x along the view) "
        "relative to base_frame (pitch > 0 looks down); the optical frame follows by REP-103"
    )  # fmt: skip

    # keys of older versions, refused with what to write instead (pose2rgbd.config.from_dict reads this)
    RENAMED_KEYS: ClassVar[dict[str, Any]] = {
        "quat_xyzw": lambda q: (
            "mount.rpy_deg (roll, pitch, yaw in degrees of the camera body relative to base_frame; the optical "
            f"frame follows by REP-103): quat_xyzw {q} is rpy_deg {_rpy_text(q)}"
        ),
    }

    def __post_init__(self) -> None:
        if self.source not in MOUNT_SOURCES:
            raise ConfigError(f"mount.source must be one of {MOUNT_SOURCES}, got {self.source!r}")
        if len(self.translation) != 3:
            raise ConfigError(f"mount.translation needs three numbers (x, y, z in m), got {list(self.translation)}")
        if len(self.rpy_deg) != 3:
            raise ConfigError(f"mount.rpy_deg needs three numbers (roll, pitch, yaw), got {list(self.rpy_deg)}")
        if not np.all(np.isfinite(np.asarray(self.translation, float))) or not np.all(
            np.isfinite(np.asarray(self.rpy_deg, float))
        ):
            raise ConfigError("mount.translation and mount.rpy_deg must be finite numbers")

    def base_frames(self) -> tuple[str, ...]:
        """The body frame(s) to look the mount up from: ``base_frame``, or :data:`BODY_FRAMES` when empty."""
        return (self.base_frame,) if self.base_frame else BODY_FRAMES

    def config_matrix(self) -> np.ndarray:
        """``T_base_cam`` (4x4, camera optical frame) of the configured mount."""
        return mount_matrix(self.rpy_deg, self.translation)

    def describe_config(self) -> str:
        return f"configured mount.rpy_deg={list(self.rpy_deg)}, mount.translation={list(self.translation)}"


def mount_matrix(rpy_deg: Any, translation: Any = (0.0, 0.0, 0.0)) -> np.ndarray:
    """``T_base_cam`` (4x4) for a camera on a FLU base: roll/pitch/yaw (degrees, extrinsic x-y-z) of the camera
    *body* axes, then the REP-103 optical rotation; ``translation`` is the camera position in the base frame."""
    R = Rotation.from_euler("xyz", np.deg2rad(np.asarray(rpy_deg, dtype=np.float64))).as_matrix()
    return make_T(R @ np.asarray(R_BODY_OPTICAL), np.asarray(translation, dtype=np.float64))


def rpy_deg_of_optical_quat(quat_xyzw: Any) -> list[float]:
    """The ``mount.rpy_deg`` giving the base -> optical rotation ``quat_xyzw`` (the inverse of
    :func:`mount_matrix`'s rotation; for messages that tell the user what to write instead)."""
    R_base_opt = Rotation.from_quat(np.asarray(quat_xyzw, dtype=np.float64)).as_matrix()
    R_base_body = R_base_opt @ np.asarray(R_BODY_OPTICAL).T
    with warnings.catch_warnings():  # pitch +-90 (looking straight down): roll and yaw share one angle; fine
        warnings.simplefilter("ignore", UserWarning)
        rpy = np.rad2deg(Rotation.from_matrix(R_base_body).as_euler("xyz"))
    return [round(float(v), 6) + 0.0 for v in rpy]


def _rpy_text(q: Any) -> str:
    try:
        return str(rpy_deg_of_optical_quat([float(v) for v in q]))
    except (TypeError, ValueError):
        return "(not a quaternion)"


__all__ = ["BODY_FRAMES", "MOUNT_SOURCES", "CameraMount", "mount_matrix", "rpy_deg_of_optical_quat"]
