"""Runtimes without ROS: the offline bag runner (the rclpy runtime is pose2rgbd_ros)."""

from pose2rgbd.runtime.offline import RunStats, run_recorder_bag, run_renderer_bag

__all__ = ["RunStats", "run_recorder_bag", "run_renderer_bag"]
