"""The one ``main`` of every node executable: ``ros2 run pose2rgbd NAME_node`` runs the node table entry NAME
(:data:`pose2rgbd.nodes.NODES`) in the lifecycle host (:class:`~pose2rgbd_ros.host.NodeHost`).

Every ``ros_nodes/NAME_node`` file is the same few lines (the name comes from the file name), and CMakeLists.txt
installs every file in ``ros_nodes/``: a new node's executable is a copy of one of them under its name.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pose2rgbd.nodes import node_spec
from pose2rgbd_ros.host import NodeHost, main_for


def node_name_from_executable(path: str) -> str:
    """``.../render_node`` -> ``render``."""
    return Path(path).name.removesuffix(".py").removesuffix("_node")


def make_node(name: str, **kwargs: Any) -> NodeHost:
    """A :class:`NodeHost` of the node table entry ``name`` (short or ROS node name); ``rclpy.init`` first."""
    return NodeHost(node_spec(name), **kwargs)


def main(args: list[str] | None = None, name: str | None = None) -> int:
    """Spin the node ``name`` (default: from the executable's file name) until Ctrl-C / shutdown."""
    return main_for(node_spec(name or node_name_from_executable(sys.argv[0])), args)


if __name__ == "__main__":
    sys.exit(main())
