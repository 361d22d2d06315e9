"""``ros2 run pose2rgbd record_node``: synchronize camera + GPS + odometry into a dataset / SyncedFrame topic.

Thin rclpy wrapper around :class:`pose2rgbd.nodes.recorder.Recorder`. Start / stop: the ``std_srvs/SetBool``
service ``~/set_recording`` or a ``std_msgs/Bool`` on ``topics.recording``. See docs/ros.md.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.time import Time

from pose2rgbd.messages import transform_to_matrix
from pose2rgbd.nodes.recorder import Recorder, RecorderConfig
from pose2rgbd_ros.factory import RclpyFactory
from pose2rgbd_ros.params import declare_config
from pose2rgbd_ros.spin import run_node


class RecordNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("pose2rgbd_recorder", **kwargs)
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry
        from pose2rgbd.msg import SyncedFrame
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, NavSatFix
        from std_msgs.msg import Bool
        from std_srvs.srv import SetBool
        from tf2_ros import Buffer, TransformListener

        self.cfg = declare_config(self, RecorderConfig)
        self.logic = Recorder(self.cfg, RclpyFactory(), logger=self.get_logger())
        self._lock = threading.Lock()
        t = self.cfg.topics
        sd = qos_profile_sensor_data
        self.create_subscription(CompressedImage if t.compressed else Image, t.image, self._cb(self.logic.on_image), sd)
        self.create_subscription(NavSatFix, t.gps, self._cb(self.logic.on_gps), sd)
        self.create_subscription(Odometry, t.odom, self._cb(self.logic.on_odom), sd)
        self.create_subscription(CameraInfo, t.camera_info, self._on_info, sd)
        self.create_subscription(Bool, t.recording, self._on_recording, 10)
        self.create_service(SetBool, "~/set_recording", self._on_set_recording)
        self.synced_pub = self.create_publisher(SyncedFrame, t.synced, QoSProfile(depth=10))
        self.diag_pub = self.create_publisher(DiagnosticArray, t.diagnostics, 10)
        self.create_timer(1.0, self._on_diag)
        if self.cfg.mount.source == "tf_static":
            self.tf_buffer = Buffer()
            self.tf_listener = TransformListener(self.tf_buffer, self, spin_thread=True)
            self._mount_timer = self.create_timer(0.5, self._try_mount)
        self.get_logger().info(
            f"recording {t.image} + {t.gps} + {t.odom} ({self.cfg.sync.policy}) into "
            f"{self.cfg.output.dataset or '<no dataset>'}; SyncedFrame on {t.synced}: {self.cfg.output.publish_synced}"
        )

    def _now(self) -> int:
        return int(self.get_clock().now().nanoseconds)

    def _cb(self, fn: Any) -> Any:
        def callback(msg: Any) -> None:
            with self._lock:
                outputs = fn(msg, self._now())
            for _, out in outputs:
                self.synced_pub.publish(out)

        return callback

    def _on_info(self, msg: Any) -> None:
        with self._lock:
            self.logic.on_camera_info(msg)

    def _on_recording(self, msg: Any) -> None:
        with self._lock:
            self.logic.on_recording_msg(msg)

    def _on_set_recording(self, request: Any, response: Any) -> Any:
        with self._lock:
            response.success, response.message = self.logic.set_recording(request.data)
        return response

    def _try_mount(self) -> None:
        import tf2_ros

        m = self.cfg.mount
        try:
            tf = self.tf_buffer.lookup_transform(m.base_frame, m.camera_frame, Time())
        except tf2_ros.TransformException as e:
            self.get_logger().warning(
                f"waiting for the camera mount {m.base_frame} -> {m.camera_frame}: {e}", throttle_duration_sec=5.0
            )
            return
        with self._lock:
            self.logic.set_mount(transform_to_matrix(tf.transform))
        self._mount_timer.cancel()
        self.get_logger().info(f"camera mount {m.base_frame} -> {m.camera_frame} found")

    def _on_diag(self) -> None:
        with self._lock:
            msg = self.logic.diagnostics(self._now())
        self.diag_pub.publish(msg)

    def close(self) -> None:
        with self._lock:
            self.logic.close()


def main(args: list[str] | None = None) -> int:
    return run_node(args, RecordNode, SingleThreadedExecutor, "pose2rgbd_recorder")


if __name__ == "__main__":
    sys.exit(main())
