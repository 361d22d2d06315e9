"""The recorder's ``pose2rgbd/msg/SyncedFrame``: one image with the fix and odometry interpolated at its stamp,
the camera intrinsics and the camera pose it was recorded with (what ``ros2 bag record`` keeps of a recording)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pose2rgbd import messages as M
from pose2rgbd.geometry.transforms import T_from_tq
from pose2rgbd.nodes.recorder.frame_sync import FixSample


def synced_frame_msg(
    f: M.MessageFactory,
    stamp: int,
    camera_frame: str,
    world_frame: str,
    img: Any,
    camera_info: Any,
    lla: np.ndarray,
    t_odom: np.ndarray,
    q_odom: np.ndarray,
    fix: FixSample,
    odom: Any,
    T_world_cam: np.ndarray,
) -> Any:
    """The SyncedFrame of one frame: ``img`` (raw or compressed) in its field, the fix at ``lla`` with the nearest
    fix's status and covariance, the odometry at ``t_odom`` / ``q_odom`` with the nearest message's frames,
    covariance and twist, ``camera_info`` (None: an empty one) and the pose ``T_world_cam``."""
    hdr = M.header(f, stamp, camera_frame)
    compressed = hasattr(img, "format") and not hasattr(img, "encoding")
    r = fix.reading
    fix_msg = M.navsatfix(
        f,
        stamp,
        str(fix.msg.header.frame_id),
        float(lla[0]),
        float(lla[1]),
        float(lla[2]),
        status=r.status,
        service=r.service,
        covariance=r.covariance,
        covariance_type=r.covariance_type,
    )
    odom_msg = M.odometry(
        f,
        stamp,
        str(odom.header.frame_id),
        str(odom.child_frame_id),
        T_from_tq(t_odom, q_odom),
        pose_cov=np.asarray(odom.pose.covariance, dtype=np.float64),
        twist=odom.twist,
    )
    return f.new(
        "pose2rgbd/msg/SyncedFrame",
        header=hdr,
        image=img if not compressed else f.new("sensor_msgs/msg/Image", header=hdr),
        compressed_image=img if compressed else f.new("sensor_msgs/msg/CompressedImage", header=hdr),
        camera_info=camera_info if camera_info is not None else f.new("sensor_msgs/msg/CameraInfo"),
        fix=fix_msg,
        odom=odom_msg,
        pose=M.pose_stamped(f, stamp, world_frame, T_world_cam),
    )
