"""Runtimes without ROS: the offline bag runner serving any node spec (the rclpy runtime is pose2rgbd_ros)."""

from pose2rgbd.runtime.offline import RunStats, run_node_bag, run_recorder_bag, run_renderer_bag

__all__ = ["RunStats", "run_node_bag", "run_recorder_bag", "run_renderer_bag"]
