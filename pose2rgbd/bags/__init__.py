"""Bag I/O without ROS: read ROS 1 / rosbag2 (sqlite3, mcap, zstd) recordings, write rosbag2.

Built on ``rosbags``. Messages are rosbags typestore objects; read and build them with
:mod:`pose2rgbd.messages` (the one message layer, which also holds the typestores).
"""

from pose2rgbd.bags.reader import BagMessage, BagReader, TopicInfo, open_bag
from pose2rgbd.bags.writer import BagWriter, qos_profiles

__all__ = [
    "BagMessage",
    "BagReader",
    "BagWriter",
    "TopicInfo",
    "open_bag",
    "qos_profiles",
]
