"""The real nodes, live over DDS (marker ``ros``): each node runs as its own process, started the way ``ros2 run``
starts it (``ros_nodes/NAME_node --ros-args --params-file ...``, the venv's bin first on PATH); this test process
publishes the inputs and checks the outputs, the services, the parameters, diagnostics, the lifecycle and a
clean exit on SIGINT.

Every test has its own random ``ROS_DOMAIN_ID`` and ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (no traffic
leaves loopback), bounded waits, and the node process is ended in a fixture finaliser (SIGINT, then SIGKILL).
The renderer serves the analytic ground-plane checkpoint (``pose2rgbd.testing.ground_plane``), so depth is checked
against the exact value (a camera looking straight down at altitude h sees depth h everywhere).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pose2rgbd.testing.ground_plane import look_down_pose

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
NS = "/pose2rgbd"
START_TIMEOUT_S = 90.0  # a node process imports torch and loads the model: slow on a busy 2-core machine
WAIT_S = 30.0


class LiveNode:
    """One node executable in its own process (its output in a log file, shown when a test fails)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [str(REPO / "ros_nodes" / f"{name}_node"), "--ros-args", "-r", f"__ns:={NS}", *args],
            env=env, cwd=log.parent, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text()

    def interrupt(self, timeout_s: float = 20.0, sig: int = signal.SIGINT) -> int:
        """SIGINT (Ctrl-C), as ``ros2 run`` / launch stop a node (or ``sig``: SIGTERM, as systemd, ``docker stop``
        and launch's escalation do); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # the whole group: nothing the node started outlives it
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(10)
        self._out.close()


def _need(module: str, reason: str) -> Any:
    """Import ``module``; skip without it, or fail when the test command requires ROS (POSE2RGBD_REQUIRE_ROS=1)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("POSE2RGBD_REQUIRE_ROS") == "1":
            pytest.fail(f"POSE2RGBD_REQUIRE_ROS=1: {reason}")
        pytest.skip(reason)


@pytest.fixture
def ros(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ros_domain_id: int) -> Iterator[Any]:
    """rclpy in this process on a random domain, localhost only; yields a :class:`Harness`."""
    rclpy = _need("rclpy", "rclpy not installed")
    _need("pose2rgbd.msg", "the interfaces are not built (bash scripts/setup.sh builds them)")
    _need("tf2_msgs.msg", "tf2_msgs is not built (bash scripts/setup.sh builds it)")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros_domain_id))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.delenv("ROS_STATIC_PEERS", raising=False)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    monkeypatch.setenv("RCUTILS_LOGGING_BUFFERED_STREAM", "0")
    context = rclpy.context.Context()
    rclpy.init(context=context)
    h = Harness(rclpy, context, tmp_path)
    try:
        yield h
    finally:
        for n in h.nodes:
            n.kill()
        h.node.destroy_node()
        rclpy.shutdown(context=context)


class Harness:
    def __init__(self, rclpy: Any, context: Any, tmp: Path) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy, self.tmp = rclpy, tmp
        self.node = rclpy.create_node(f"live_test_{os.getpid()}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.nodes: list[LiveNode] = []
        self.received: dict[str, list[Any]] = {}

    def start(self, name: str, *args: str) -> LiveNode:
        n = LiveNode(name, list(args), dict(os.environ), self.tmp / f"{name}.log")
        self.nodes.append(n)
        return n

    def subscribe(self, topic: str, msgtype: Any, qos: Any = 10) -> list[Any]:
        got: list[Any] = []
        self.received[topic] = got
        self.node.create_subscription(msgtype, topic, got.append, qos)
        return got

    def spin_until(self, cond: Callable[[], bool], timeout_s: float, what: str, node: LiveNode | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            if node is not None and node.proc.poll() is not None:
                pytest.fail(f"{what}: the node exited ({node.proc.returncode}):\n{node.output()[-3000:]}")
            if time.monotonic() > deadline:
                log = f"\nnode output:\n{node.output()[-3000:]}" if node is not None else ""
                counts = {t: len(v) for t, v in self.received.items()}
                pytest.fail(f"timed out after {timeout_s} s waiting for {what} (received: {counts}){log}")
            self.executor.spin_once(timeout_sec=0.02)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def call(self, srv_type: Any, name: str, request: Any, node: LiveNode, timeout_s: float = WAIT_S) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            self.spin_until(lambda: client.service_is_ready(), timeout_s, f"service {name}", node)
            future = client.call_async(request)
            self.spin_until(future.done, timeout_s, f"the response of {name}", node)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def now_ns(self) -> int:
        return int(self.node.get_clock().now().nanoseconds)

    # -------------------------------------------------------------- parameters and lifecycle over the wire
    def get_param(self, node: LiveNode, fqn: str, name: str) -> Any:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        r = self.call(GetParameters, f"{fqn}/get_parameters", GetParameters.Request(names=[name]), node)
        return parameter_value_to_python(r.values[0])

    def set_param(self, node: LiveNode, fqn: str, name: str, value: Any) -> Any:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        req = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call(SetParameters, f"{fqn}/set_parameters", req, node).results[0]

    def lifecycle_state(self, node: LiveNode, fqn: str) -> str:
        from lifecycle_msgs.srv import GetState

        return str(self.call(GetState, f"{fqn}/get_state", GetState.Request(), node).current_state.label)

    def transition(self, node: LiveNode, fqn: str, transition_id: int) -> None:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        req = ChangeState.Request(transition=Transition(id=transition_id))
        assert self.call(ChangeState, f"{fqn}/change_state", req, node).success, node.output()[-3000:]


# ---------------------------------------------------------------------------------------------- message helpers
def _stamp(ns: int) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _quat_xyzw(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_quat()


def _transform(parent: str, child: str, T: np.ndarray, ns: int) -> Any:
    from geometry_msgs.msg import TransformStamped

    ts = TransformStamped()
    ts.header.stamp, ts.header.frame_id, ts.child_frame_id = _stamp(ns), parent, child
    ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = map(float, T[:3, 3])
    q = _quat_xyzw(T[:3, :3])
    r = ts.transform.rotation
    r.x, r.y, r.z, r.w = map(float, q)
    return ts


def _pose_stamped(frame: str, T: np.ndarray, ns: int) -> Any:
    from geometry_msgs.msg import PoseStamped

    m = PoseStamped()
    m.header.stamp, m.header.frame_id = _stamp(ns), frame
    p, o = m.pose.position, m.pose.orientation
    p.x, p.y, p.z = map(float, T[:3, 3])
    o.x, o.y, o.z, o.w = map(float, _quat_xyzw(T[:3, :3]))
    return m


def _image_array(msg: Any) -> np.ndarray:
    from pose2rgbd.messages import image_to_numpy

    return image_to_numpy(msg)


def _latched() -> Any:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


def _diag_status(arrays: list[Any], name: str) -> Any:
    for arr in reversed(arrays):
        for st in arr.status:
            if st.name == name:
                return st
    return None


def _diag_ok(arrays: list[Any], name: str) -> bool:
    """The newest status of ``name`` is OK (level 0)."""
    st = _diag_status(arrays, name)
    return st is not None and st.level == b"\x00"


# ---------------------------------------------------------------------------------------------- the renderer
SIZE = 32
RENDERER = f"{NS}/pose2rgbd_renderer"
CAMERA = "camera_optical_frame"


@pytest.fixture
def ground_plane_checkpoint(tmp_path: Path) -> Path:
    from pose2rgbd.models import save_checkpoint
    from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint

    ck = make_ground_plane_checkpoint(SIZE)
    return save_checkpoint(tmp_path / "ground.pt", ck.model, dataset_fingerprint="stub", camera=ck.camera)


def test_render_node_live(ros: Harness, ground_plane_checkpoint: Path) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import Transition
    from pose2rgbd.msg import RGBD
    from pose2rgbd.srv import RenderAtPose
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from tf2_msgs.msg import TFMessage

    h = ros
    node = h.start(
        "render",
        "--params-file", str(REPO / "config" / "render.yaml"),
        "-p", f"engine.checkpoint:={ground_plane_checkpoint}", "-p", "engine.device:=cpu",
        "-p", "engine.threads:=1", "-p", "engine.warmup:=1", "-p", "rate_hz:=20.0",
    )  # fmt: skip
    rgb = h.subscribe(f"{NS}/rgb/image_raw", Image)
    depth = h.subscribe(f"{NS}/depth/image_raw", Image)
    conf = h.subscribe(f"{NS}/confidence/image_raw", Image)
    info = h.subscribe(f"{NS}/camera_info", CameraInfo)
    rgbd = h.subscribe(f"{NS}/rgbd", RGBD)
    points = h.subscribe(f"{NS}/depth/points", PointCloud2)
    mask = h.subscribe(f"{NS}/mask/image_raw", Image)
    diags = h.subscribe("/diagnostics", DiagnosticArray)
    tf_pub = h.node.create_publisher(TFMessage, "/tf", 10)
    static_pub = h.node.create_publisher(TFMessage, "/tf_static", _latched())

    # TF: map -> base_link (dynamic, looking straight down from 21 m) and base_link -> camera (static, 1 m
    # along the base's z, which points down): the camera is at (3, -2, 20), so depth is 20 m everywhere.
    T_map_base = look_down_pose(3.0, -2.0, 21.0, yaw=0.3)
    T_base_cam = np.eye(4)
    T_base_cam[2, 3] = 1.0
    static_pub.publish(TFMessage(transforms=[_transform("base_link", CAMERA, T_base_cam, h.now_ns())]))
    sent: set[int] = set()

    def publish_tf() -> None:
        ns = h.now_ns()
        sent.add(ns)
        tf_pub.publish(TFMessage(transforms=[_transform("map", "base_link", T_map_base, ns)]))

    timer = h.node.create_timer(0.05, publish_tf)
    h.spin_until(
        lambda: len(rgbd) >= 3 and len(rgb) >= 3 and len(info) >= 3 and len(points) >= 1 and len(mask) >= 1,
        START_TIMEOUT_S, "rendered frames", node,
    )  # fmt: skip
    # diagnostics come once a second: wait for one published after the first frames (an earlier one says "waiting")
    h.spin_until(lambda: _diag_ok(diags, "pose2rgbd: renderer"), WAIT_S, "diagnostics after the first frames", node)

    m = rgbd[-1]
    stamp = _ns(m.header.stamp)
    assert stamp in sent, "the outputs carry the stamp of the TF they were rendered for"
    assert m.header.frame_id == CAMERA and m.query_pose.header.frame_id == "map"
    p = m.query_pose.pose.position
    np.testing.assert_allclose([p.x, p.y, p.z], [3.0, -2.0, 20.0], atol=1e-4)
    assert (m.rgb.encoding, m.depth.encoding, m.confidence.encoding) == ("rgb8", "32FC1", "32FC1")
    for im in (m.rgb, m.depth, m.confidence, m.camera_info):
        assert (im.width, im.height) == (SIZE, SIZE) and im.header.frame_id == CAMERA and _ns(im.header.stamp) == stamp
    np.testing.assert_allclose(_image_array(m.depth), 20.0, rtol=1e-4)
    np.testing.assert_allclose(_image_array(m.confidence), 1.0, atol=1e-5)
    assert not m.out_of_bounds and m.latency_ms > 0
    # a checkpoint without a depth uncertainty: depth/sigma is not advertised (no topic that never publishes)
    assert m.depth_sigma.width == 0 and len(h.node.get_publishers_info_by_topic(f"{NS}/depth/image_raw")) == 1
    assert h.node.get_publishers_info_by_topic(f"{NS}/depth/sigma") == []
    # the separate topics: same encodings, frame ids, sizes; CameraInfo consistent with the images
    assert rgb[-1].encoding == "rgb8" and rgb[-1].step == 3 * SIZE and len(rgb[-1].data) == 3 * SIZE * SIZE
    assert depth[-1].encoding == "32FC1" and conf[-1].encoding == "32FC1"
    ci = info[-1]
    assert (ci.width, ci.height, ci.header.frame_id) == (SIZE, SIZE, CAMERA)
    K = np.asarray(ci.k).reshape(3, 3)
    np.testing.assert_allclose(K, [[SIZE / 2, 0, SIZE / 2], [0, SIZE / 2, SIZE / 2], [0, 0, 1]], atol=0.51)  # 90 deg
    by_stamp = {_ns(x.header.stamp) for x in depth} & {_ns(x.header.stamp) for x in info}
    assert by_stamp, "depth and CameraInfo share stamps"
    # for planners: the organized cloud in the optical frame (depth 20 m everywhere, back-projected) and the mask
    from pose2rgbd.messages import point_cloud2_fields

    pc = points[-1]
    assert (pc.height, pc.width, pc.header.frame_id) == (SIZE, SIZE, CAMERA) and pc.point_step == 16
    pts = point_cloud2_fields(pc)
    np.testing.assert_allclose(pts["z"], 20.0, rtol=1e-4)
    u = np.arange(SIZE, dtype=np.float64)
    np.testing.assert_allclose(pts["x"], (u[None, :] - K[0, 2]) * pts["z"] / K[0, 0], rtol=1e-5, atol=1e-5)
    assert mask[-1].encoding == "mono8" and (_image_array(mask[-1]) == 255).all()
    assert _ns(pc.header.stamp) in {_ns(x.header.stamp) for x in depth}
    st = _diag_status(diags, "pose2rgbd: renderer")
    values = {kv.key: kv.value for kv in st.values}
    assert st.level == b"\x00" and int(values["frames"]) >= 1 and values["device"] == "cpu", st

    # a transform with a NaN translation on /tf is rejected, counted in the diagnostics and logged
    bad = _transform("map", "base_link", T_map_base, h.now_ns())
    bad.transform.translation.x = float("nan")
    tf_pub.publish(TFMessage(transforms=[bad]))

    def rejected_counted() -> bool:
        st = _diag_status(diags, "pose2rgbd: renderer")
        return st is not None and int({kv.key: kv.value for kv in st.values}.get("tf_rejected", "0")) >= 1

    h.spin_until(rejected_counted, WAIT_S, "tf_rejected in the diagnostics", node)
    h.spin_until(lambda: "rejected a transform on /tf" in node.output(), WAIT_S, "the rejection logged", node)

    # the RenderAtPose service: any pose; a pose in another frame is refused with the reason
    req = RenderAtPose.Request(pose=_pose_stamped("map", look_down_pose(-5.0, 4.0, 12.5), h.now_ns()))
    res = h.call(RenderAtPose, f"{RENDERER}/render_at_pose", req, node)
    assert res.success, res.message
    np.testing.assert_allclose(_image_array(res.rgbd.depth), 12.5, rtol=1e-4)
    assert res.rgbd.header.frame_id == CAMERA and _ns(res.rgbd.header.stamp) == _ns(req.pose.header.stamp)
    bad = h.call(RenderAtPose, f"{RENDERER}/render_at_pose",
                 RenderAtPose.Request(pose=_pose_stamped("odom", look_down_pose(0, 0, 10), 1)), node)  # fmt: skip
    assert not bad.success and "odom" in bad.message

    # parameters: get, set within range (live), refused out of range and refused when configure-time
    assert h.get_param(node, RENDERER, "rate_hz") == 20.0
    assert h.get_param(node, RENDERER, "engine.checkpoint") == str(ground_plane_checkpoint)
    assert h.set_param(node, RENDERER, "max_pose_age_s", 2.0).successful
    assert h.get_param(node, RENDERER, "max_pose_age_s") == 2.0
    assert not h.set_param(node, RENDERER, "rate_hz", 5000.0).successful  # range 0..1000
    r = h.set_param(node, RENDERER, "world_frame", "odom")
    assert not r.successful and "configure" in r.reason
    assert h.get_param(node, RENDERER, "world_frame") == ""  # render.yaml: empty, the model's world frame

    # lifecycle: deactivate (nothing published but the diagnostics saying so), cleanup (not even those), switch to
    # the PoseStamped source, configure, activate
    assert h.lifecycle_state(node, RENDERER) == "active"
    h.transition(node, RENDERER, Transition.TRANSITION_DEACTIVATE)
    assert h.lifecycle_state(node, RENDERER) == "inactive"
    h.spin_for(0.5)
    rgbd.clear()
    diags.clear()
    h.spin_for(1.0)
    # once a second, as when active: well within a diagnostic aggregator's 5 s before it calls a node stale
    h.spin_until(lambda: _diag_status(diags, "pose2rgbd: renderer") is not None, 3.0, "inactive diagnostics", node)
    assert rgbd == [], "an inactive node publishes nothing but its diagnostics"
    inactive = f"inactive: activate with `ros2 lifecycle set {RENDERER} activate`"
    st = _diag_status(diags, "pose2rgbd: renderer")
    assert st.level == b"\x00" and st.message == inactive, st
    assert {kv.key: kv.value for kv in st.values}["lifecycle_state"] == "inactive", st
    h.transition(node, RENDERER, Transition.TRANSITION_CLEANUP)
    assert h.lifecycle_state(node, RENDERER) == "unconfigured"
    h.spin_for(0.2)
    diags.clear()
    h.spin_for(1.2)
    assert _diag_status(diags, "pose2rgbd: renderer") is None, "cleaned up: no diagnostics"
    h.node.destroy_timer(timer)
    assert h.set_param(node, RENDERER, "pose_source", "topic").successful
    h.transition(node, RENDERER, Transition.TRANSITION_CONFIGURE)
    h.transition(node, RENDERER, Transition.TRANSITION_ACTIVATE)
    assert h.lifecycle_state(node, RENDERER) == "active"
    from geometry_msgs.msg import PoseStamped

    pose_pub = h.node.create_publisher(PoseStamped, f"{NS}/pose", 10)
    T = look_down_pose(1.0, 1.0, 15.0)
    pose_stamps: set[int] = set()

    def publish_pose() -> None:
        ns = h.now_ns()
        pose_stamps.add(ns)
        pose_pub.publish(_pose_stamped("map", T, ns))

    h.node.create_timer(0.05, publish_pose)
    h.spin_until(lambda: any(_ns(x.header.stamp) in pose_stamps for x in rgbd), WAIT_S, "frames from PoseStamped", node)
    m = next(x for x in reversed(rgbd) if _ns(x.header.stamp) in pose_stamps)
    np.testing.assert_allclose(_image_array(m.depth), 15.0, rtol=1e-4)
    h.spin_until(lambda: getattr(_diag_status(diags, "pose2rgbd: renderer"), "message", "") == "rendering", WAIT_S,
                 "the active diagnostics again", node)  # fmt: skip
    assert "lifecycle_state" not in {kv.key for kv in _diag_status(diags, "pose2rgbd: renderer").values}

    rc = node.interrupt()
    assert rc == 0, f"exit code {rc}:\n{node.output()[-3000:]}"
    assert "Traceback" not in node.output(), node.output()[-3000:]


# ---------------------------------------------------------------------------------------------- the recorder
RECORDER = f"{NS}/pose2rgbd_recorder"


LARGE_IMAGE_PUBLISHER = """
import sys, time
import numpy as np, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
n = int(sys.argv[1])
rclpy.init()
node = rclpy.create_node("large_image_publisher")
pub = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
end = time.monotonic() + 60
while pub.get_subscription_count() == 0 and time.monotonic() < end:
    rclpy.spin_once(node, timeout_sec=0.05)
time.sleep(1.0)
data = np.random.default_rng(0).integers(0, 256, 640 * 480 * 3, dtype=np.uint8).tobytes()
for k in range(n):
    img = Image(height=480, width=640, encoding="rgb8", step=3 * 640, data=data)
    img.header.stamp.sec, img.header.frame_id = k + 1, "camera_optical_frame"
    pub.publish(img)
    time.sleep(0.2)
time.sleep(1.0)
print("published", n, flush=True)
"""


def test_the_large_images_profile_carries_every_frame_of_a_vga_camera(ros: Harness, tmp_path: Path) -> None:
    """config/fastdds_large_images.xml in a camera publisher's environment: every best-effort 640x480 rgb8 frame
    (921,600 bytes, over Fast DDS's default shared-memory segment) reaches a subscriber on the same machine. Without
    it, on the machines measured, a quarter of them did at this rate (5 Hz) and half at 30 Hz (docs/ros.md, "Large
    images over DDS"); a profile Fast DDS refuses or that does not take shared memory loses them again."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    profile = REPO / "config" / "fastdds_large_images.xml"
    got = ros.subscribe("/camera/image_raw", Image, qos_profile_sensor_data)
    env = {**os.environ, "FASTRTPS_DEFAULT_PROFILES_FILE": str(profile)}
    log = tmp_path / "publisher.log"
    n = 25
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", LARGE_IMAGE_PUBLISHER, str(n)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while proc.poll() is None and time.monotonic() < deadline:
                ros.executor.spin_once(timeout_sec=0.02)
            ros.spin_for(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert proc.returncode == 0 and f"published {n}" in text, text
    assert "XMLPARSER" not in text, text  # Fast DDS reports a profile it cannot read
    stamps = {m.header.stamp.sec for m in got}
    # the first two may go while the subscription's side of the match completes; every later one arrives
    assert set(range(3, n + 1)) <= stamps and all(len(m.data) == 640 * 480 * 3 for m in got), sorted(stamps)


def test_record_node_live(ros: Harness, tmp_path: Path) -> None:
    import cv2
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import Transition
    from nav_msgs.msg import Odometry
    from pose2rgbd.msg import SyncedFrame
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, NavSatFix, NavSatStatus
    from std_srvs.srv import SetBool
    from tf2_msgs.msg import TFMessage

    h = ros
    dataset = tmp_path / "flight"
    node = h.start(
        "record",
        "--params-file", str(REPO / "config" / "record.yaml"),
        "-p", f"output.dataset:={dataset}", "-p", "mount.source:=tf_static", "-p", "mount.base_frame:=base_link",
    )  # fmt: skip
    synced = h.subscribe(f"{NS}/synced_frame", SyncedFrame)
    diags = h.subscribe("/diagnostics", DiagnosticArray)
    from rclpy.qos import qos_profile_sensor_data

    image_pub = h.node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    compressed_pub = h.node.create_publisher(CompressedImage, "/camera/image_raw/compressed", qos_profile_sensor_data)
    info_pub = h.node.create_publisher(CameraInfo, "/camera/camera_info", qos_profile_sensor_data)
    gps_pub = h.node.create_publisher(NavSatFix, "/gps/fix", qos_profile_sensor_data)
    odom_pub = h.node.create_publisher(Odometry, "/odom", qos_profile_sensor_data)
    static_pub = h.node.create_publisher(TFMessage, "/tf_static", _latched())
    # the camera mount on /tf_static (transient local: the node may start after it was sent)
    T_base_cam = look_down_pose(0.2, 0.0, -0.1)
    static_pub.publish(TFMessage(transforms=[_transform("base_link", CAMERA, T_base_cam, h.now_ns())]))

    W, H = 40, 30
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[:, :, 0] = np.arange(W, dtype=np.uint8)[None, :] * 5
    compressed = {"on": False}
    image_stamps: list[int] = []

    def sensors() -> None:
        ns = h.now_ns()
        fix = NavSatFix(latitude=48.0, longitude=11.0, altitude=500.0)
        fix.header.stamp, fix.header.frame_id = _stamp(ns), "gps"
        fix.status.status = NavSatStatus.STATUS_FIX  # the message's default is STATUS_UNKNOWN (-2 in Jazzy)
        gps_pub.publish(fix)
        od = Odometry()
        od.header.stamp, od.header.frame_id, od.child_frame_id = _stamp(ns), "odom", "base_link"
        od.pose.pose.orientation.w = 1.0
        odom_pub.publish(od)

    def camera() -> None:
        ns = h.now_ns() - 20_000_000  # 20 ms old: GPS and odometry on both sides of it
        image_stamps.append(ns)
        pixels[0, 0, 2] = len(image_stamps) % 256  # a live camera: no two frames alike (repeats are dropped)
        info = CameraInfo(width=W, height=H, k=[20.0, 0, W / 2, 0, 20.0, H / 2, 0, 0, 1.0])
        info.header.stamp, info.header.frame_id = _stamp(ns), CAMERA
        info_pub.publish(info)
        if compressed["on"]:
            msg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", pixels[:, :, ::-1])[1].tobytes())
            msg.header.stamp, msg.header.frame_id = _stamp(ns), CAMERA
            compressed_pub.publish(msg)
        else:
            msg = Image(height=H, width=W, encoding="rgb8", step=3 * W, data=pixels.tobytes())
            msg.header.stamp, msg.header.frame_id = _stamp(ns), CAMERA
            image_pub.publish(msg)

    h.node.create_timer(0.02, sensors)
    h.node.create_timer(0.1, camera)
    h.spin_until(lambda: len(synced) >= 3, START_TIMEOUT_S, "SyncedFrame messages", node)

    m = synced[-1]
    stamp = _ns(m.header.stamp)
    assert stamp in image_stamps and m.header.frame_id == CAMERA
    assert (
        m.image.encoding == "rgb8" and (m.image.width, m.image.height) == (W, H) and len(m.compressed_image.data) == 0
    )
    got = _image_array(m.image)
    np.testing.assert_array_equal(got[1:], pixels[1:])  # the frame as sent (its first row carries the counter)
    assert (m.camera_info.width, m.camera_info.height) == (W, H)
    assert _ns(m.fix.header.stamp) == stamp and _ns(m.odom.header.stamp) == stamp  # interpolated at the image
    np.testing.assert_allclose([m.fix.latitude, m.fix.longitude, m.fix.altitude], [48.0, 11.0, 500.0])
    assert m.pose.header.frame_id == "map" and _ns(m.pose.header.stamp) == stamp
    p = m.pose.pose.position
    np.testing.assert_allclose([p.x, p.y, p.z], [0.2, 0.0, -0.1], atol=1e-6)  # GPS at the datum + the TF mount
    h.spin_until(lambda: _diag_ok(diags, "pose2rgbd: recorder"), WAIT_S, "diagnostics after the first frames", node)
    st = _diag_status(diags, "pose2rgbd: recorder")
    assert "recording" in st.message and st.level == b"\x00", st

    # recording off: no more frames; on again: frames again
    r = h.call(SetBool, f"{RECORDER}/set_recording", SetBool.Request(data=False), node)
    assert r.success
    h.spin_for(0.5)
    synced.clear()
    h.spin_for(1.0)
    assert synced == [], "stopped: no SyncedFrame"
    assert h.call(SetBool, f"{RECORDER}/set_recording", SetBool.Request(data=True), node).success
    h.spin_until(lambda: len(synced) >= 2, WAIT_S, "SyncedFrame after recording was switched on", node)

    # parameters
    assert h.get_param(node, RECORDER, "sync.slop_s") == 0.05
    assert h.set_param(node, RECORDER, "sync.slop_s", 0.1).successful
    assert h.get_param(node, RECORDER, "sync.slop_s") == 0.1
    assert not h.set_param(node, RECORDER, "min_fix_status", 5).successful  # range -1..2
    r = h.set_param(node, RECORDER, "sync.max_gap_s", 1.0)
    assert not r.successful and "configure" in r.reason

    # lifecycle: switch to compressed images between cleanup and configure (the dataset is resumed)
    for t in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP):
        h.transition(node, RECORDER, t)
    assert h.lifecycle_state(node, RECORDER) == "unconfigured"
    assert h.set_param(node, RECORDER, "topics.compressed", True).successful
    assert h.set_param(node, RECORDER, "topics.image", "/camera/image_raw/compressed").successful
    compressed["on"] = True
    for t in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
        h.transition(node, RECORDER, t)
    synced.clear()
    h.spin_until(lambda: any(len(x.compressed_image.data) for x in synced), WAIT_S, "compressed SyncedFrame", node)
    m = next(x for x in synced if len(x.compressed_image.data))
    assert m.compressed_image.format == "jpeg" and m.image.width == 0

    rc = node.interrupt()
    assert rc == 0, f"exit code {rc}:\n{node.output()[-3000:]}"
    out = node.output()
    assert "Traceback" not in out, out[-3000:]
    # the summary after Ctrl-C reaches the console, without rcl's error for the shut-down context's /rosout
    assert re.search(r"recorded \d+ frames of \d+ images into", out), out[-3000:]
    assert "Failed to publish log message to rosout" not in out, out[-3000:]
    from pose2rgbd.dataset import Dataset

    assert len(Dataset(dataset)) >= 5, "the frames were written to the dataset"


# ------------------------------------------------------------------------------- a briefly trained model, live
@pytest.fixture(scope="module")
def trained_world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A short simulated orbit as a dataset (64x64) and a Base model trained on it for 60 steps."""
    from pose2rgbd.methods.pose2rgbd import preset_config
    from pose2rgbd.sim import SimConfig
    from pose2rgbd.sim.export import export_dataset, world_of
    from pose2rgbd.training.config import TrainConfig
    from pose2rgbd.training.train import train_model

    d = tmp_path_factory.mktemp("trained_live")
    sim = SimConfig(width=64, height=64, routes=["orbit"], route_duration_s=4.0)
    sim.dataset_stride = 2
    export_dataset(sim, d / "dataset", progress=False, world=world_of(sim))
    tc = TrainConfig(
        epochs=1000, batch_size=8, lr=3e-3, max_steps=60, split="random", val_every=0, seed=0, device="cpu",
        amp="off", progress=False, tensorboard=False, log_every=1000,
    )  # fmt: skip
    res = train_model(d / "dataset", d / "train", preset_config("base", size=64, outputs="rgbd"), tc)
    from pose2rgbd.models import load_checkpoint

    max_m = load_checkpoint(res.checkpoint).model.depth_normalizer.max_m  # the model's depth range
    return {"dataset": d / "dataset", "checkpoint": res.checkpoint, "max_m": max_m}


def test_render_node_live_with_a_trained_model_gives_metric_depth_near_ground_truth(
    ros: Harness, trained_world: dict
) -> None:
    """The render node process serves a briefly trained model: each pose published on the pose topic comes back
    as a depth image in metres whose error against the simulator's ground truth is below half the mean depth
    and below the error of the best constant depth (the depth follows the pose)."""
    from sensor_msgs.msg import Image

    from pose2rgbd.dataset import Dataset

    _need("pose2rgbd.msg", "the interfaces are not built")
    h = ros
    node = h.start(
        "render",
        "--params-file", str(REPO / "config" / "render.yaml"),
        "-p", f"engine.checkpoint:={trained_world['checkpoint']}", "-p", "engine.device:=cpu",
        "-p", "engine.threads:=1", "-p", "engine.warmup:=1", "-p", "pose_source:=topic", "-p", "rate_hz:=0.0",
        "-p", "max_pose_age_s:=0.0",
    )  # fmt: skip
    depth = h.subscribe(f"{NS}/depth/image_raw", Image)
    pose_pub = h.node.create_publisher(type(_pose_stamped("map", np.eye(4), 0)), f"{NS}/pose", 10)
    ds = Dataset(trained_world["dataset"])
    picks = np.linspace(0, len(ds) - 1, 6).round().astype(int)
    T = ds.frames.T_world_cam
    got: dict[int, np.ndarray] = {}
    for k, i in enumerate(picks):
        stamp = 1_000_000_000 * (k + 1)  # the request's stamp comes back on the image

        def arrived(stamp: int = stamp) -> bool:
            for m in depth:
                got.setdefault(_ns(m.header.stamp), _image_array(m))
            return stamp in got

        def send(i: int = int(i), stamp: int = stamp) -> None:
            pose_pub.publish(_pose_stamped("map", T[i], stamp))

        timer = h.node.create_timer(0.5, send)  # re-sent until the node, subscribed, renders it
        send()
        h.spin_until(arrived, START_TIMEOUT_S if k == 0 else WAIT_S, f"the depth of pose {k}", node)
        h.node.destroy_timer(timer)
    err, const, mean = [], [], []
    for k, i in enumerate(picks):
        g = ds.read_depth(int(i))
        d = got[1_000_000_000 * (k + 1)]
        ok = np.isfinite(g) & (g <= trained_world["max_m"])
        assert d.dtype == np.float32 and d.shape == g.shape and ok.mean() > 0.5
        err.append(np.abs(d[ok] - g[ok]).mean())
        const.append(np.abs(g[ok] - np.median(g[ok])).mean())
        mean.append(g[ok].mean())
    e, c, m = float(np.mean(err)), float(np.mean(const)), float(np.mean(mean))
    assert e < 0.5 * m and e < 0.8 * c, (e, c, m)  # measured: 37.4 m, constant 55.1 m, mean 96.0 m
    assert node.interrupt() == 0


# ---------------------------------------------------------------------------------------------- the localizer
LOCALIZER = f"{NS}/pose2rgbd_localizer"


def test_localize_node_live(ros: Harness, tmp_path: Path) -> None:
    """The localize node process: images (sensor-data QoS) in, PoseWithCovarianceStamped with the image's stamp
    in the checkpoint's world frame, OOD flags, debug TF, a bad image counted, a live parameter, Ctrl-C."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Bool
    from tf2_msgs.msg import TFMessage

    from pose2rgbd.evaluation.calibration import check_covariance, compute_calibration, save_calibration
    from pose2rgbd.models import save_checkpoint
    from pose2rgbd.testing.toy_localizer import make_toy_localizer_checkpoint

    ck = make_toy_localizer_checkpoint(SIZE, world_frame="odom")
    ckpt = save_checkpoint(tmp_path / "toy.pt", ck.model, dataset_fingerprint="stub", camera=ck.camera,
                           world_frame="odom")  # fmt: skip
    rng = np.random.default_rng(0)
    T_true = np.repeat(np.eye(4)[None], 50, 0)
    T_est = T_true.copy()
    T_est[:, :3, 3] = rng.normal(size=(50, 3))
    calib = save_calibration(compute_calibration(T_est, T_true, rng.uniform(0, 1, 50)), tmp_path / "calib.yaml")
    h = ros
    node = h.start(
        "localize",
        "--params-file", str(REPO / "config" / "localize.yaml"),
        "-p", f"engine.checkpoint:={ckpt}", "-p", "engine.device:=cpu", "-p", "engine.threads:=1",
        "-p", "engine.warmup:=1", "-p", "topics.image:=/cam/image", "-p", f"covariance_file:={calib}",
        "-p", "publish_tf:=true", "-p", "ood_threshold:=0.0",
    )  # fmt: skip
    poses = h.subscribe(f"{NS}/pose", PoseWithCovarianceStamped)
    flags = h.subscribe(f"{NS}/out_of_distribution", Bool)
    diags = h.subscribe("/diagnostics", DiagnosticArray)
    tfs = h.subscribe("/tf", TFMessage)
    pub = h.node.create_publisher(Image, "/cam/image", qos_profile_sensor_data)
    sent: set[int] = set()
    img = (rng.integers(0, 256, (24, 40, 3))).astype(np.uint8)

    def publish_image(encoding: str = "rgb8") -> None:
        ns = h.now_ns()
        m = Image(encoding=encoding, height=24, width=40, is_bigendian=0)
        m.header.stamp, m.header.frame_id = _stamp(ns), CAMERA
        if encoding == "rgb8":
            m.step, m.data = 120, img.tobytes()
            sent.add(ns)
        else:  # a depth image: rejected
            m.step, m.data = 160, np.ones((24, 40), np.float32).tobytes()
        pub.publish(m)

    timer = h.node.create_timer(0.1, publish_image)
    h.spin_until(lambda: len(poses) >= 3, START_TIMEOUT_S, "localized poses", node)
    m = poses[-1]
    assert _ns(m.header.stamp) in sent and m.header.frame_id == "odom"
    check_covariance(np.asarray(m.pose.covariance).reshape(6, 6))
    assert flags and not any(f.data for f in flags)  # threshold 0: never out of distribution
    h.spin_until(lambda: any(t.transforms[0].child_frame_id == "camera_localized" for t in tfs), WAIT_S, "TF", node)

    pub.publish(Image())  # an empty image: rejected (size), never a crash
    h.node.destroy_timer(timer)
    bad_timer = h.node.create_timer(0.2, lambda: publish_image("32FC1"))

    def rejected() -> bool:
        st = _diag_status(diags, "pose2rgbd: localizer")
        return st is not None and int({kv.key: kv.value for kv in st.values}.get("rejected_encoding", "0")) >= 1

    h.spin_until(rejected, WAIT_S, "rejected_encoding in the diagnostics", node)
    h.node.destroy_timer(bad_timer)

    # a live parameter: every image is now below the threshold -> flagged, covariance x ood_covariance_scale
    assert h.set_param(node, LOCALIZER, "ood_threshold", 1.0).successful
    r = h.set_param(node, LOCALIZER, "covariance_file", "/elsewhere.yaml")
    assert not r.successful and "configure" in r.reason
    flags.clear()
    h.node.create_timer(0.1, publish_image)
    h.spin_until(lambda: len(flags) >= 2, WAIT_S, "flags after the change", node)
    assert all(f.data for f in flags)

    rc = node.interrupt()
    assert rc == 0, f"exit code {rc}:\n{node.output()[-3000:]}"
    assert "Traceback" not in node.output(), node.output()[-3000:]


def test_localize_node_live_with_a_place_map(ros: Harness, map_world: dict) -> None:
    """The localize node process with map:= and no checkpoint (the structure localizer): images of the held-out
    route come back as poses near the truth with their own covariance; an image of another city gets no pose,
    and the per-image status and the diagnostics say why."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from pose2rgbd.dataset import Dataset
    from pose2rgbd.evaluation.calibration import check_covariance

    ds = Dataset(map_world["dataset"])
    rows = np.flatnonzero(ds.frames.source_id == 1)[:4]
    foreign = Dataset(map_world["other"]).read_rgb(3)
    h = ros
    node = h.start(
        "localize",
        "--params-file", str(REPO / "config" / "localize.yaml"),
        "-p", f"map:={map_world['map']}", "-p", "topics.image:=/cam/image",
    )  # fmt: skip
    poses = h.subscribe(f"{NS}/pose", PoseWithCovarianceStamped)
    status = h.subscribe(f"{NS}/localization_status", DiagnosticArray)
    diags = h.subscribe("/diagnostics", DiagnosticArray)
    pub = h.node.create_publisher(Image, "/cam/image", qos_profile_sensor_data)
    truth: dict[int, np.ndarray] = {}
    k = [0]

    def publish(img: np.ndarray | None = None, T: np.ndarray | None = None) -> None:
        if img is None:
            i = int(rows[k[0] % len(rows)])
            k[0] += 1
            img, T = ds.read_rgb(i), ds.frames.T_world_cam[i]
        ns = h.now_ns()
        m = Image(encoding="rgb8", height=img.shape[0], width=img.shape[1], is_bigendian=0, step=3 * img.shape[1])
        m.header.stamp, m.header.frame_id, m.data = _stamp(ns), CAMERA, img.tobytes()
        if T is not None:
            truth[ns] = T
        pub.publish(m)

    timer = h.node.create_timer(0.3, publish)
    h.spin_until(lambda: len(poses) >= 3, START_TIMEOUT_S, "poses from the map", node)
    h.node.destroy_timer(timer)
    for m in poses:
        T = truth[_ns(m.header.stamp)]
        p = m.pose.pose.position
        assert np.linalg.norm([p.x - T[0, 3], p.y - T[1, 3], p.z - T[2, 3]]) < 1.0
        check_covariance(np.asarray(m.pose.covariance).reshape(6, 6))
    n_poses = len(poses)
    timer = h.node.create_timer(0.3, lambda: publish(foreign))

    def refused() -> bool:
        return any(st.message.startswith("no fix") for arr in status for st in arr.status)

    h.spin_until(refused, WAIT_S, "a no-fix status for the foreign image", node)
    h.node.destroy_timer(timer)

    def counted() -> bool:
        st = _diag_status(diags, "pose2rgbd: localizer")
        return st is not None and int({kv.key: kv.value for kv in st.values}.get("no_fix", "0")) >= 1

    h.spin_until(counted, WAIT_S, "no_fix in the diagnostics", node)
    assert all(truth.get(_ns(m.header.stamp)) is not None for m in poses[n_poses:])  # no pose for the foreign image
    # SIGTERM after images were localized (pycolmap imported by then): rclpy's shutdown, not an instant kill (-15)
    rc = node.interrupt(sig=signal.SIGTERM)
    assert rc == 0, f"exit code {rc}:\n{node.output()[-3000:]}"


def test_a_node_that_cannot_configure_says_why_once_and_exits_1(ros: Harness, tmp_path: Path) -> None:
    """A render node given a checkpoint that does not exist: the reason once (ERROR, with the misspelt-parameter
    hint where there is one), then one FATAL line that it exits, not the reason a second time; exit code 1."""
    node = ros.start("render", "-p", f"engine.checkpoint:={tmp_path / 'nope.pt'}")
    assert node.proc.wait(60) == 1
    out = node.output()
    assert out.count("checkpoint not found") == 1, out[-3000:]
    assert "exiting: configure failed (the error above)" in out, out[-3000:]
    node.kill()
