"""``ros2 run pose2rgbd render_node``: serve rendered RGB + metric depth for the current camera pose.

The render node's spec (:data:`pose2rgbd.nodes.renderer.RENDERER`) served by the lifecycle host; the model is
loaded in ``on_configure`` (with ``autostart`` true, at start: a bad checkpoint ends the node with a clear
error). Topics and parameters: docs/ros.md.
"""

from __future__ import annotations

import sys
from typing import Any

from pose2rgbd.nodes.renderer import RENDERER
from pose2rgbd_ros.host import NodeHost, main_for


def RenderNode(**kwargs: Any) -> NodeHost:
    return NodeHost(RENDERER, **kwargs)


def main(args: list[str] | None = None) -> int:
    return main_for(RENDERER, args)


if __name__ == "__main__":
    sys.exit(main())
