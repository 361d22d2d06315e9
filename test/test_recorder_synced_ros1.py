"""The recorder's SyncedFrame from a ROS 1 bag's messages: its CameraInfo names the matrices D / K / R / P and its
headers carry seq; the frame is rebuilt in ROS 2's types, so it serializes into the output bag."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np

from pose2rgbd.messages import TypestoreFactory, new_typestore, register_custom_msgs
from pose2rgbd.nodes.recorder.frame_sync import FixSample
from pose2rgbd.nodes.recorder.synced import synced_frame_msg


def _header(sec: int, frame: str) -> NS:
    return NS(seq=7, stamp=NS(sec=sec, nanosec=5), frame_id=frame)  # ROS 1: seq


def test_a_ros1_camera_info_and_image_serialize_with_every_field_kept() -> None:
    from pose2rgbd.messages.read import read_navsatfix

    ts = register_custom_msgs(new_typestore("humble"))
    f = TypestoreFactory(ts)
    K = [70.0, 0.0, 30.0, 0.0, 71.0, 33.0, 0.0, 0.0, 1.0]
    P = [70.0, 0.0, 30.0, 0.0, 0.0, 71.0, 33.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    info = NS(header=_header(3, "cam"), height=48, width=64, distortion_model="plumb_bob", D=[0.1, 0, 0, 0, 0], K=K,
              R=[1.0, 0, 0, 0, 1, 0, 0, 0, 1], P=P, binning_x=0, binning_y=0,
              roi=NS(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))  # fmt: skip
    img = NS(header=_header(3, "cam"), height=2, width=2, encoding="rgb8", is_bigendian=0, step=6,
             data=np.arange(12, dtype=np.uint8))  # fmt: skip
    fix_msg = f.new("sensor_msgs/msg/NavSatFix", header=f.new("std_msgs/msg/Header", frame_id="gps"), latitude=44.0,
                    longitude=26.0, altitude=80.0)  # fmt: skip
    odom = f.new("nav_msgs/msg/Odometry", header=f.new("std_msgs/msg/Header", frame_id="odom"), child_frame_id="base")
    fix = FixSample(0, fix_msg, read_navsatfix(fix_msg))
    msg = synced_frame_msg(f, 3_000_000_005, "cam", "map", img, info, np.array([44.0, 26.0, 80.0]), np.zeros(3),
                           np.array([0.0, 0.0, 0.0, 1.0]), fix, odom, np.eye(4))  # fmt: skip
    back = ts.deserialize_cdr(ts.serialize_cdr(msg, "pose2rgbd/msg/SyncedFrame"), "pose2rgbd/msg/SyncedFrame")
    np.testing.assert_array_equal(back.camera_info.k, K)
    np.testing.assert_array_equal(back.camera_info.p, P)
    assert back.camera_info.d[0] == 0.1 and (back.camera_info.height, back.camera_info.width) == (48, 64)
    assert back.camera_info.header.stamp.sec == 3 and back.camera_info.header.frame_id == "cam"
    np.testing.assert_array_equal(back.image.data, np.arange(12, dtype=np.uint8))
    assert (back.image.encoding, back.image.step, back.image.header.stamp.nanosec) == ("rgb8", 6, 5)
