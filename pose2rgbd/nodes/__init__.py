"""Node logic at the message level (no rclpy). Each node declares its interface once in a
:class:`~pose2rgbd.nodes.spec.NodeSpec` (:data:`NODES`); pose2rgbd.runtime (offline over bags) and
pose2rgbd_ros (live) serve every node from its spec."""

from pose2rgbd.nodes.localizer import LOCALIZER, LocalizerConfig, LocalizerNode
from pose2rgbd.nodes.recorder import RECORDER, Recorder, RecorderConfig
from pose2rgbd.nodes.registry import NODES, node_spec
from pose2rgbd.nodes.renderer import RENDERER, Renderer, RendererConfig
from pose2rgbd.nodes.spec import Input, NodeSpec, Output, Service, TFNeed, Timer

__all__ = [
    "LOCALIZER",
    "NODES",
    "RECORDER",
    "RENDERER",
    "Input",
    "LocalizerConfig",
    "LocalizerNode",
    "NodeSpec",
    "Output",
    "Recorder",
    "RecorderConfig",
    "Renderer",
    "RendererConfig",
    "Service",
    "TFNeed",
    "Timer",
    "node_spec",
]
