"""``ros2 run pose2rgbd render_node``: serve rendered RGB + metric depth for the current camera pose.

Thin rclpy wrapper around :class:`pose2rgbd.nodes.renderer.Renderer`; see docs/ros.md for topics and params.
The model is loaded once, at start; a bad checkpoint ends the node with a clear error.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.duration import Duration
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.time import Time

from pose2rgbd.geometry.tf_buffer import TransformException
from pose2rgbd.messages import stamp_to_ns, transform_to_matrix
from pose2rgbd.nodes.renderer import Renderer, RendererConfig
from pose2rgbd_ros.factory import RclpyFactory
from pose2rgbd_ros.params import declare_config
from pose2rgbd_ros.spin import run_node


class RenderNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("pose2rgbd_renderer", **kwargs)
        from geometry_msgs.msg import PoseStamped
        from pose2rgbd.msg import RGBD
        from pose2rgbd.srv import RenderAtPose
        from tf2_ros import Buffer, TransformListener

        from pose2rgbd.inference import InferenceEngine

        self.cfg = declare_config(self, RendererConfig)
        if self.cfg.rate_hz > 0:
            self.cfg.engine.lookahead_rate_hz = self.cfg.rate_hz
        self.engine = InferenceEngine.from_config(self.cfg.engine)  # heavy: once, at start
        self.factory = RclpyFactory()
        self.logic = Renderer(self.cfg, self.engine, self.factory, logger=self.get_logger())
        self._lock = threading.Lock()  # the logic is called from the timer, pose and service callbacks
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, Image

        t = self.cfg.topics
        types = {t.rgb: Image, t.depth: Image, t.confidence: Image, t.camera_info: CameraInfo, t.rgbd: RGBD}
        self.pubs = {name: self.create_publisher(tp, name, QoSProfile(depth=2)) for name, tp in types.items()}
        self.diag_pub = self.create_publisher(DiagnosticArray, t.diagnostics, 10)

        render_group = MutuallyExclusiveCallbackGroup()
        input_group = ReentrantCallbackGroup()  # poses keep arriving (latest wins) while a frame renders
        self.tf_buffer = Buffer()
        self.tf_listener = TransformListener(self.tf_buffer, self, spin_thread=True)
        if self.cfg.pose_source == "topic":
            self.create_subscription(
                PoseStamped, t.pose, self._on_pose, qos_profile_sensor_data, callback_group=input_group
            )
        if self.cfg.rate_hz > 0:
            self.create_timer(1.0 / self.cfg.rate_hz, self._on_tick, callback_group=render_group)
        self.create_service(RenderAtPose, "~/render_at_pose", self._on_service, callback_group=render_group)
        if self.cfg.diagnostics_period_s > 0:
            self.create_timer(self.cfg.diagnostics_period_s, self._on_diag, callback_group=input_group)
        source = f"TF {self.cfg.world_frame} -> {self.cfg.camera_frame}" if self.cfg.pose_source == "tf" else t.pose
        size = f"{self.engine.size}x{self.engine.size}"
        self.get_logger().info(f"rendering {size} on {self.engine.device} from {source} at {self.cfg.rate_hz} Hz")

    def _now(self) -> int:
        return int(self.get_clock().now().nanoseconds)

    def _lookup(self, target: str, source: str, _time_ns: int) -> tuple[np.ndarray, int]:
        import tf2_ros

        try:
            tf = self.tf_buffer.lookup_transform(
                target, source, Time(), timeout=Duration(seconds=self.cfg.tf_timeout_s)
            )
        except tf2_ros.TransformException as e:  # Lookup / Connectivity / Extrapolation / InvalidArgument
            raise TransformException(str(e)) from e
        return transform_to_matrix(tf.transform), stamp_to_ns(tf.header.stamp)

    def _publish(self, outputs: list[tuple[str, Any]]) -> None:
        for name, msg in outputs:
            self.pubs[name].publish(msg)

    def _on_pose(self, msg: Any) -> None:
        with self._lock:
            outputs = self.logic.on_pose(msg, self._now())
        self._publish(outputs)

    def _on_tick(self) -> None:
        with self._lock:
            outputs = self.logic.tick(self._now(), self._lookup)
        self._publish(outputs)

    def _on_service(self, request: Any, response: Any) -> Any:
        with self._lock:
            return self.logic.render_at_pose(request, response, self._now())

    def _on_diag(self) -> None:
        self.diag_pub.publish(self.logic.diagnostics(self._now()))


def main(args: list[str] | None = None) -> int:
    return run_node(args, RenderNode, lambda: MultiThreadedExecutor(num_threads=3), "pose2rgbd_renderer")


if __name__ == "__main__":
    sys.exit(main())
