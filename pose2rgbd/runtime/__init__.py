"""Runtimes without ROS: the offline bag runner and its TF buffer (the rclpy runtime is pose2rgbd_ros)."""

from pose2rgbd.runtime.factory import TypestoreFactory
from pose2rgbd.runtime.tf_buffer import (
    ConnectivityException,
    ExtrapolationException,
    LookupException,
    TFBuffer,
    TransformException,
)


def __getattr__(name: str) -> object:
    # offline imports the node logic, which imports tf_buffer from here: load it lazily (no import cycle)
    if name in ("RunStats", "run_recorder_bag", "run_renderer_bag"):
        from pose2rgbd.runtime import offline

        return getattr(offline, name)
    raise AttributeError(name)


__all__ = [
    "ConnectivityException",
    "ExtrapolationException",
    "LookupException",
    "RunStats",
    "TFBuffer",
    "TransformException",
    "TypestoreFactory",
    "run_recorder_bag",
    "run_renderer_bag",
]
