"""The one ``main`` shape of every pose2rgbd node: init, build, spin, report a fatal error, always shut down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node

from pose2rgbd.errors import Pose2RGBDError


def run_node(
    args: list[str] | None, make_node: Callable[[], Node], make_executor: Callable[[], Executor], logger_name: str
) -> int:
    """Spin ``make_node()`` on ``make_executor()`` (both built after ``rclpy.init``) until Ctrl-C / shutdown.

    Returns 1 after a :class:`Pose2RGBDError` (logged as fatal), else 0. A node with a ``close()`` method has
    it called before it is destroyed.
    """
    rclpy.init(args=args)
    node: Any = None
    executor: Executor | None = None
    try:
        node = make_node()
        executor = make_executor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Pose2RGBDError as e:
        (node.get_logger() if node else rclpy.logging.get_logger(logger_name)).fatal(str(e))
        return 1
    finally:
        if executor is not None:  # no callback may still run while the node is closed and destroyed
            executor.shutdown(timeout_sec=5.0)
        if node is not None:
            if callable(getattr(node, "close", None)):
                node.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
