"""``ros2 run pose2rgbd record_node``: synchronize camera + GPS + odometry into a dataset / SyncedFrame topic.

The record node's spec (:data:`pose2rgbd.nodes.recorder.RECORDER`) served by the lifecycle host. Start / stop:
the ``std_srvs/SetBool`` service ``~/set_recording`` or a ``std_msgs/Bool`` on ``topics.recording``. See
docs/ros.md.
"""

from __future__ import annotations

import sys
from typing import Any

from pose2rgbd.nodes.recorder import RECORDER
from pose2rgbd_ros.host import NodeHost, main_for


def RecordNode(**kwargs: Any) -> NodeHost:
    return NodeHost(RECORDER, **kwargs)


def main(args: list[str] | None = None) -> int:
    return main_for(RECORDER, args)


if __name__ == "__main__":
    sys.exit(main())
