"""Recorder node logic (no rclpy): camera + NavSatFix + Odometry -> dataset v1 frames and SyncedFrame msgs.

Camera-driven synchronization (policy ``interpolate``, the default): every image waits until GPS and
odometry both have a sample after its stamp; the two samples bracketing the stamp are interpolated (GPS
linearly in lat/lon/alt, odometry position linearly and orientation by slerp) if they are at most
``sync.max_gap_s`` apart, otherwise the image is dropped and counted. Policy ``approximate`` matches the
three streams with message_filters' ApproximateTimeSynchronizer semantics (``queue_size``, ``slop_s``).

Pose of each frame: position = GPS -> ENU about the datum (the first valid fix, or ``datum`` =
``"lat,lon,alt"`` when set; a resumed dataset keeps its datum); orientation = odometry orientation
(its frame assumed aligned with ENU, REP-105); then the camera mount ``T_base_cam`` (from /tf_static or
``mount.translation`` / ``mount.rpy_deg``, :class:`pose2rgbd.geometry.mount.CameraMount`, the same section as
``convert``'s): ``T_world_cam = T_world_base @ T_base_cam``.

An image whose bytes repeat the previous image's (a camera re-sending its last buffer, or frozen) is dropped,
counted (``repeated_images``) and warned about, as ``convert`` drops repeated frames
(:mod:`pose2rgbd.dataset.repeats`); ``output.keep_repeats`` keeps them.

Outputs: frames appended to a dataset (``DatasetWriter(mode="append")``: flushed per frame, readable after
a crash; re-running on the same output resumes after its last stamp) and/or ``pose2rgbd/msg/SyncedFrame``
messages for ``ros2 bag record``. Recording starts/stops with :meth:`Recorder.set_recording` (the node spec
:data:`RECORDER` exposes it as a ``std_srvs/SetBool`` service ``~/set_recording`` and a ``std_msgs/Bool``
topic).

The parts, one module each: the configuration (:mod:`~pose2rgbd.nodes.recorder.config`), the synchronizer
(:mod:`~pose2rgbd.nodes.recorder.frame_sync`), the GPS input and gate (:mod:`~pose2rgbd.nodes.recorder.gps`), the
camera mount (:mod:`~pose2rgbd.nodes.recorder.mount`), the dataset append / resume
(:mod:`~pose2rgbd.nodes.recorder.append`), the SyncedFrame message (:mod:`~pose2rgbd.nodes.recorder.synced`) and
the node itself with its spec (:mod:`~pose2rgbd.nodes.recorder.node`).
"""

from pose2rgbd.nodes.recorder.config import (
    RECORDER_LIVE,
    RecorderConfig,
    RecorderOutput,
    RecorderSync,
    RecorderTopics,
)
from pose2rgbd.nodes.recorder.node import RECORDER, Recorder, build_recorder

__all__ = [
    "RECORDER",
    "RECORDER_LIVE",
    "Recorder",
    "RecorderConfig",
    "RecorderOutput",
    "RecorderSync",
    "RecorderTopics",
    "build_recorder",
]
