"""The sensor topics a recording reads, one schema for the record node (live and on a bag) and ``convert bag``.

Their defaults are the conventional names a live node subscribes to; a bag conversion starts from empty names
(:data:`FIND_BY_TYPE`): a topic left empty there is found by its message type. Each user of the schema adds its
own keys by subclassing (the record node: its outputs; conversion: the IMU and depth topics).
"""

from __future__ import annotations

from dataclasses import dataclass

from pose2rgbd.config import help_field


@dataclass
class SensorTopics:
    """Input topics (in a bag conversion an empty name is found by message type)."""

    image: str = help_field(
        "/camera/image_raw", "camera images (sensor_msgs/Image, or CompressedImage); convert bag: empty = by type"
    )
    camera_info: str = help_field(
        "/camera/camera_info", "camera intrinsics (sensor_msgs/CameraInfo); convert bag: empty = by type"
    )
    gps: str = help_field("/gps/fix", "GPS fixes (sensor_msgs/NavSatFix); convert bag: empty = by type")
    odom: str = help_field(
        "/odom", "odometry whose orientation is used (nav_msgs/Odometry); convert bag: empty = by type (optional)"
    )


# the keys of SensorTopics a bag conversion finds by message type unless they are named
FIND_BY_TYPE = {"image": "", "camera_info": "", "gps": "", "odom": ""}
