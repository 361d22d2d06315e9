"""Node logic at the message level (no rclpy): the render and record nodes, run by pose2rgbd_ros (live)
or pose2rgbd.runtime (offline over bags)."""

from pose2rgbd.nodes.recorder import Recorder, RecorderConfig
from pose2rgbd.nodes.renderer import Renderer, RendererConfig

__all__ = [
    "Recorder",
    "RecorderConfig",
    "Renderer",
    "RendererConfig",
]
