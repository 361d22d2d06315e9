"""The recorder's ``pose2rgbd/msg/SyncedFrame``: one image with the fix and odometry interpolated at its stamp,
the camera intrinsics and the camera pose it was recorded with (what ``ros2 bag record`` keeps of a recording)."""

from __future__ import annotations

from typing import Any, Protocol

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
    # the input's messages rebuilt as this message's types: a ROS 1 bag's CameraInfo names its matrices D / K / R / P
    # (ROS 2: d / k / r / p) and its headers carry seq; copied as they were, they could not be serialized
    if compressed:
        image = f.new("sensor_msgs/msg/Image", header=hdr)
        packed = f.new("sensor_msgs/msg/CompressedImage", header=_header(f, img.header),
                       format=str(img.format), data=np.asarray(img.data, np.uint8))  # fmt: skip
    else:
        packed = f.new("sensor_msgs/msg/CompressedImage", header=hdr)
        image = f.new("sensor_msgs/msg/Image", header=_header(f, img.header),
                      height=int(img.height), width=int(img.width), encoding=str(img.encoding),
                      is_bigendian=int(img.is_bigendian), step=int(img.step),
                      data=np.asarray(img.data, np.uint8))  # fmt: skip
    return f.new(
        "pose2rgbd/msg/SyncedFrame",
        header=hdr,
        image=image,
        compressed_image=packed,
        camera_info=_camera_info(f, camera_info),
        fix=fix_msg,
        odom=odom_msg,
        pose=M.pose_stamped(f, stamp, world_frame, T_world_cam),
    )


class _Header(Protocol):  # std_msgs/Header of ROS 1 (with seq) or ROS 2
    stamp: object  # builtin_interfaces/Time, or ROS 1's time (M.stamp_to_ns reads both)
    frame_id: str


class _Roi(Protocol):
    x_offset: int
    y_offset: int
    height: int
    width: int
    do_rectify: bool


class _CameraInfo(Protocol):  # sensor_msgs/CameraInfo of ROS 1 or ROS 2 (the matrices: M.first_field)
    header: _Header
    height: int
    width: int
    distortion_model: str
    binning_x: int
    binning_y: int
    roi: _Roi


def _camera_info(f: M.MessageFactory, info: _CameraInfo | None) -> object:
    """``info`` (ROS 1 or ROS 2 CameraInfo, or None: an empty one) as this factory's ``sensor_msgs/msg/CameraInfo``,
    every field kept; a ROS 1 header's ``seq`` dropped."""
    if info is None:
        return f.new("sensor_msgs/msg/CameraInfo")
    return f.new(
        "sensor_msgs/msg/CameraInfo",
        header=_header(f, info.header),
        height=int(info.height),
        width=int(info.width),
        distortion_model=str(info.distortion_model),
        d=np.asarray(M.first_field(info, "d", "D"), np.float64),
        k=np.asarray(M.first_field(info, "k", "K"), np.float64),
        r=np.asarray(M.first_field(info, "r", "R"), np.float64),
        p=np.asarray(M.first_field(info, "p", "P"), np.float64),
        binning_x=int(info.binning_x),
        binning_y=int(info.binning_y),
        roi=f.new("sensor_msgs/msg/RegionOfInterest", x_offset=int(info.roi.x_offset), y_offset=int(info.roi.y_offset),
                  height=int(info.roi.height), width=int(info.roi.width), do_rectify=bool(info.roi.do_rectify)),
    )  # fmt: skip


def _header(f: M.MessageFactory, h: _Header) -> object:
    """A header (ROS 1: with ``seq``) as this factory's ``std_msgs/msg/Header``: stamp and frame kept."""
    return M.header(f, M.stamp_to_ns(h.stamp), str(h.frame_id))
