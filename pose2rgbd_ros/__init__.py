"""ROS 2 (rclpy) runtime of pose2rgbd: thin nodes around the ROS-free logic in :mod:`pose2rgbd.nodes`.

Only this package imports rclpy. The custom interfaces are imported from ``pose2rgbd.msg`` /
``pose2rgbd.srv``, which colcon generates (see docs/ros-build.md).
"""
