"""Bag I/O without ROS: read ROS 1 / rosbag2 (sqlite3, mcap, zstd) recordings, write rosbag2, build messages.

Built on ``rosbags``. Messages are rosbags typestore objects; the readers of :mod:`.messages` and
:mod:`.images` also accept rclpy messages (same field names).
"""

from pose2rgbd.bags.images import (
    ENCODINGS,
    compressed_to_numpy,
    image_msg_to_depth,
    image_msg_to_rgb,
    image_to_numpy,
    is_compressed,
    numpy_to_compressed,
    numpy_to_image,
)
from pose2rgbd.bags.messages import (
    camera_from_info,
    camera_info,
    header,
    header_stamp_ns,
    imu,
    matrix_to_pose,
    matrix_to_transform,
    navsatfix,
    navsatfix_to_array,
    ns_to_stamp,
    odometry,
    pose_stamped,
    pose_to_matrix,
    stamp_to_ns,
    tf_message,
    transform_stamped,
    transform_to_matrix,
)
from pose2rgbd.bags.reader import BagMessage, BagReader, TopicInfo, open_bag
from pose2rgbd.bags.typestore import get_typestore, new_typestore, normalize_msgtype, register_msg_definitions
from pose2rgbd.bags.writer import BagWriter, qos_profiles

__all__ = [
    "ENCODINGS",
    "BagMessage",
    "BagReader",
    "BagWriter",
    "TopicInfo",
    "camera_from_info",
    "camera_info",
    "compressed_to_numpy",
    "get_typestore",
    "header",
    "header_stamp_ns",
    "image_msg_to_depth",
    "image_msg_to_rgb",
    "image_to_numpy",
    "imu",
    "is_compressed",
    "matrix_to_pose",
    "matrix_to_transform",
    "navsatfix",
    "navsatfix_to_array",
    "new_typestore",
    "normalize_msgtype",
    "ns_to_stamp",
    "numpy_to_compressed",
    "numpy_to_image",
    "odometry",
    "open_bag",
    "pose_stamped",
    "pose_to_matrix",
    "qos_profiles",
    "register_msg_definitions",
    "stamp_to_ns",
    "tf_message",
    "transform_stamped",
    "transform_to_matrix",
]
