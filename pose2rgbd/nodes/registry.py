"""The node table: every node pose2rgbd ships, by short name. A new node is one module with its config, logic
and :class:`~pose2rgbd.nodes.spec.NodeSpec`, plus one line here; the offline runner and the rclpy host serve
it from the spec."""

from __future__ import annotations

from pose2rgbd.errors import ConfigError
from pose2rgbd.nodes.localizer import LOCALIZER
from pose2rgbd.nodes.recorder import RECORDER
from pose2rgbd.nodes.renderer import RENDERER
from pose2rgbd.nodes.spec import NodeSpec

NODES: dict[str, NodeSpec] = {
    "render": RENDERER,
    "record": RECORDER,
    "localize": LOCALIZER,
}


def node_spec(name: str) -> NodeSpec:
    """The spec of a node by short name (``render``) or ROS node name (``pose2rgbd_renderer``)."""
    for key, spec in NODES.items():
        if name in (key, spec.name):
            return spec
    raise ConfigError(f"unknown node {name!r}; known: {', '.join(NODES)}")
