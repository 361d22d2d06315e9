"""The one ``main`` shape of every pose2rgbd node: init, build, spin, report a fatal error, always shut down."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node

from pose2rgbd.errors import Pose2RGBDError
from pose2rgbd_ros.params_files import unmatched_params_files


def run_node(
    args: list[str] | None, make_node: Callable[[], Node], make_executor: Callable[[], Executor], logger_name: str
) -> int:
    """Spin ``make_node()`` on ``make_executor()`` (both built after ``rclpy.init``) until Ctrl-C / shutdown.

    Returns 1 after a :class:`Pose2RGBDError` (logged as fatal), else 0 (also when rclpy fails a take that
    races the shutdown). A node with a ``close()`` method has
    it called before it is destroyed.
    """
    rclpy.init(args=args)
    node: Any = None
    executor: Executor | None = None
    stopped = False
    try:
        node = make_node()
        for warning in unmatched_params_files(sys.argv if args is None else args, node.get_fully_qualified_name()):
            node.get_logger().warning(warning)
        executor = make_executor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        stopped = True  # by a signal: rclpy shuts the context down, /rosout goes with it
    except Pose2RGBDError as e:
        text = "exiting: configure failed (the error above)" if e.logged else str(e)
        (node.get_logger() if node else rclpy.logging.get_logger(logger_name)).fatal(text)
        return 1
    except RuntimeError as e:
        # rclpy can fail a message take that races Ctrl-C's context shutdown ("Unable to convert call argument
        # ... to Python object", seen under load): once the context is shut down that is the shutdown itself,
        # not a fault of the node, so the node exits cleanly. While the context is still up it is a real error.
        if rclpy.ok():
            raise
        rclpy.logging.get_logger(logger_name).debug(f"error while shutting down, ignored: {e}")
    finally:
        if executor is not None:  # no callback may still run while the node is closed and destroyed
            executor.shutdown(timeout_sec=5.0)
        if node is not None:
            if stopped and callable(getattr(node, "to_console", None)):
                node.to_console()  # its last lines (the record node's summary) without rcl's error for /rosout
            if callable(getattr(node, "close", None)):
                node.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
