"""The one message layer: read and build every ROS message type pose2rgbd touches, without ROS.

* :mod:`.read`: messages -> NumPy / geometry (duck typed: rclpy and rosbags messages alike; validating).
* :mod:`.build`: NumPy / geometry -> messages through a :class:`MessageFactory`, factory first, then
  ``stamp_ns, frame_id``, then the payload (also organized ``PointCloud2`` from points + colours).
* :mod:`.images`: Image / CompressedImage codecs (readers and builders).
* :mod:`.factory`: the :class:`MessageFactory` protocol and :class:`TypestoreFactory` (rosbags);
  ``pose2rgbd_ros.factory.RclpyFactory`` is the rclpy one.
* :mod:`.typestore`: rosbags typestores; :mod:`.interfaces`: the custom ``pose2rgbd/msg/*`` definitions.

Bags, conversion, node logic and runtimes import this package; it imports none of them.
"""

from pose2rgbd.messages.build import (
    camera_info,
    diagnostic_array,
    header,
    imu,
    navsatfix,
    odometry,
    pack_rgb,
    point_cloud2,
    pose,
    pose_stamped,
    stamp,
    tf_message,
    transform,
    transform_stamped,
    vector3,
)
from pose2rgbd.messages.factory import MessageFactory, TypestoreFactory, default_factory
from pose2rgbd.messages.images import (
    ENCODINGS,
    compressed_image,
    compressed_to_numpy,
    image,
    image_msg_to_depth,
    image_msg_to_rgb,
    image_to_numpy,
    is_compressed,
)
from pose2rgbd.messages.interfaces import CUSTOM_MSGS, CUSTOM_SRVS, msg_definitions, register_custom_msgs
from pose2rgbd.messages.read import (
    FIX_STATUS_NAMES,
    FixReading,
    camera_from_info,
    first_field,
    header_stamp_ns,
    orientation_xyzw,
    point_cloud2_fields,
    pose_to_matrix,
    pose_tq,
    quat_problem,
    read_navsatfix,
    stamp_to_ns,
    transform_to_matrix,
)
from pose2rgbd.messages.typestore import get_typestore, new_typestore, normalize_msgtype, register_msg_definitions

__all__ = [
    "CUSTOM_MSGS",
    "CUSTOM_SRVS",
    "ENCODINGS",
    "FIX_STATUS_NAMES",
    "FixReading",
    "MessageFactory",
    "TypestoreFactory",
    "camera_from_info",
    "camera_info",
    "compressed_image",
    "compressed_to_numpy",
    "default_factory",
    "diagnostic_array",
    "first_field",
    "get_typestore",
    "header",
    "header_stamp_ns",
    "image",
    "image_msg_to_depth",
    "image_msg_to_rgb",
    "image_to_numpy",
    "imu",
    "is_compressed",
    "msg_definitions",
    "navsatfix",
    "new_typestore",
    "normalize_msgtype",
    "odometry",
    "orientation_xyzw",
    "pack_rgb",
    "point_cloud2",
    "point_cloud2_fields",
    "pose",
    "pose_stamped",
    "pose_to_matrix",
    "pose_tq",
    "quat_problem",
    "read_navsatfix",
    "register_custom_msgs",
    "register_msg_definitions",
    "stamp",
    "stamp_to_ns",
    "tf_message",
    "transform",
    "transform_stamped",
    "transform_to_matrix",
    "vector3",
]
