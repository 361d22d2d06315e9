"""Node logic at the message level (no rclpy): the render and record nodes, run by pose2rgbd_ros (live)
or pose2rgbd.runtime (offline over bags)."""

from pose2rgbd.nodes.messages import MessageFactory, msg_definitions, register_custom_msgs
from pose2rgbd.nodes.recorder import Recorder, RecorderConfig
from pose2rgbd.nodes.renderer import Renderer, RendererConfig

__all__ = [
    "MessageFactory",
    "Recorder",
    "RecorderConfig",
    "Renderer",
    "RendererConfig",
    "msg_definitions",
    "register_custom_msgs",
]
