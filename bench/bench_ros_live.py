"""Live benchmark over DDS (not a test): the real node processes, as ``ros2 run`` starts them.

    .venv/bin/python bench/bench_ros_live.py                       # Base + Slice-10 at 128/256/512, recorder
    .venv/bin/python bench/bench_ros_live.py --sizes 256 --threads 2 --poses 100
    .venv/bin/python bench/bench_ros_live.py --presets hybrid-fast --sizes 64 256 512 --poses 0 --tf-hz 200 --record-s 0

**Renderer, end to end**: ``ros_nodes/render_node`` with ``pose_source: topic`` and ``rate_hz: 0`` (one render per
PoseStamped). This process publishes a PoseStamped and takes the time until the rendered ``rgb/image_raw`` with
that stamp arrives: pose serialization and DDS delivery, the node's callback, the render (pose-to-images), the
Image / depth / CameraInfo / RGBD messages and their delivery back. One pose at a time (the next is sent when the
image arrived, after a short pause), so no queueing is measured. Weights are untrained (speed does not depend on
training); the first ``--skip`` renders are left out (warm-up). The split: the node's own latency (the render and
the building of every output message, the node's ``/diagnostics`` ``latency_p50_ms`` / ``latency_p99_ms`` over
every render of the run, the warm-up included) beside the end-to-end time; the rest is publishing, DDS delivery
both ways and the callbacks.
``--node-param publish.points:=false`` (repeatable) runs the node with other parameters, e.g. fewer outputs.

**Renderer from TF** (``--tf-hz HZ``; ``--poses 0`` skips the one-pose-at-a-time run): ``pose_source: tf`` at
``rate_hz`` 10 while this process publishes ``/tf`` at HZ (``map -> odom -> base_link`` in every message, the robot
moving 1 m/s between the hybrid's query places) and the camera mount on ``/tf_static``, for ``--tf-seconds``: the
images per second that arrive, their age on arrival (now - the TF stamp rendered), the node's ``output_hz`` and
latency from its diagnostics (docs/ros.md, "Threads and TF").

**Recorder, sustained**: ``ros_nodes/record_node`` writing a dataset (PNG RGB, ``--record-encoding``) and publishing
SyncedFrame while this process publishes a 30 Hz rgb8 camera (``--record-size``, 640x480; frames of the GoPro hero7
clip, ``--record-video``), NavSatFix and Odometry at 50 Hz for ``--record-s``
seconds: frames written per second against images sent.

Every run uses a random ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; ``--dds-profile`` gives this
process and the nodes a Fast DDS profile (``config/fastdds_large_images.xml``: docs/ros.md, "Large images over
DDS"). Prints a Markdown table with the command and the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_common import settle_free_page_reporting  # noqa: E402
from bench_engine import NAMES, _checkpoint, _machine  # noqa: E402

NS = "/pose2rgbd"


def _stamp(ns: int) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class Node:
    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [str(REPO / "ros_nodes" / f"{name}_node"), "--ros-args", "-r", f"__ns:={NS}", *args],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def _spin_until(executor: Any, cond: Any, timeout_s: float, node: Node, what: str) -> bool:
    end = time.monotonic() + timeout_s
    while not cond():
        if node.proc.poll() is not None:
            raise SystemExit(f"{what}: the node exited; see {node.log.name}")
        if time.monotonic() > end:
            return False
        executor.spin_once(timeout_sec=0.001)
    return True


def _render_node(ck: Path, args: argparse.Namespace, tmp: Path, label: str, params: list[str]) -> Node:
    """The render node process serving ``ck`` with config/render.yaml, the bench's engine flags, ``params`` and the
    ``--node-param`` ones (in that order: the user's last)."""
    engine = [f"engine.checkpoint:={ck}", f"engine.device:={args.device}", f"engine.threads:={args.threads}"]
    flags = [a for p in (*engine, *params, *args.node_param) for a in ("-p", p)]
    return Node(
        "render", ["--params-file", str(REPO / "config" / "render.yaml"), *flags], tmp / f"{label}-{ck.stem}.log"
    )


def bench_render(
    rclpy_node: Any, executor: Any, ck: Path, args: argparse.Namespace, tmp: Path, keyframes: int = 0
) -> tuple[list[float], dict[str, float]]:
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from scipy.spatial.transform import Rotation
    from sensor_msgs.msg import Image

    from pose2rgbd.testing.ground_plane import look_down_pose
    from pose2rgbd.testing.hybrid_keyframes import query_poses

    node = _render_node(ck, args, tmp, "render", ["pose_source:=topic", "rate_hz:=0.0", "max_pose_age_s:=0.0"])
    sent: dict[int, float] = {}
    latencies: list[float] = []
    node_ms: dict[str, float] = {}  # the node's own latency percentiles, from its newest diagnostics

    def on_diagnostics(msg: Any) -> None:
        for st in msg.status:
            if st.name == "pose2rgbd: renderer":
                kv = {v.key: v.value for v in st.values}
                if "latency_p50_ms" in kv:
                    node_ms["p50"], node_ms["p99"] = float(kv["latency_p50_ms"]), float(kv["latency_p99_ms"])

    queries = query_poses(200, n_keyframes=keyframes) if keyframes > 0 else None

    def on_image(msg: Any) -> None:
        t = sent.pop(_ns(msg.header.stamp), None)
        if t is not None:
            latencies.append((time.perf_counter() - t) * 1e3)

    sub = rclpy_node.create_subscription(Image, f"{NS}/rgb/image_raw", on_image, 10)
    diag = rclpy_node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    pub = rclpy_node.create_publisher(PoseStamped, f"{NS}/pose", 10)
    try:
        k = 0
        ready = False
        start = time.monotonic()
        while len(latencies) < args.poses + args.skip:
            if queries is None:
                T = look_down_pose(-20.0 + 0.5 * (k % 80), 3.0, 30.0)
            else:  # among the hybrid's keyframes, as bench_engine's queries
                T = queries[k % len(queries)]
            m = PoseStamped()
            ns = int(rclpy_node.get_clock().now().nanoseconds)
            m.header.stamp, m.header.frame_id = _stamp(ns), "map"
            m.pose.position.x, m.pose.position.y, m.pose.position.z = map(float, T[:3, 3])
            qx, qy, qz, qw = Rotation.from_matrix(T[:3, :3]).as_quat()  # scalar last, as geometry_msgs
            m.pose.orientation.x, m.pose.orientation.y = float(qx), float(qy)
            m.pose.orientation.z, m.pose.orientation.w = float(qz), float(qw)
            n0 = len(latencies)
            sent[ns] = time.perf_counter()
            pub.publish(m)
            k += 1
            # until the first image: the node starts and discovers us (a pose every 2 s); then one render each
            got = _spin_until(executor, lambda n0=n0: len(latencies) > n0, 30.0 if ready else 2.0, node, "render")
            if got and not ready:  # the node is up: let the memory its load and the build freed go back first
                print(f"render node up; {settle_free_page_reporting()}", flush=True)  # (bench_common)
            ready = ready or got
            if not ready and time.monotonic() - start > 180:
                raise SystemExit(f"no image from the render node in 180 s; see {node.log.name}")
            sent.clear()
            end = time.monotonic() + args.gap_s
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.001)
        end = time.monotonic() + 3.0  # the node's next diagnostics (about one a second) cover every render
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
    finally:
        rclpy_node.destroy_subscription(diag)
        rclpy_node.destroy_subscription(sub)
        rclpy_node.destroy_publisher(pub)
        node.stop()
    return latencies[args.skip :], node_ms


def bench_render_tf(
    rclpy_node: Any, executor: Any, ck: Path, args: argparse.Namespace, tmp: Path, keyframes: int = 0
) -> dict[str, float]:
    """The render node as a robot runs it: ``pose_source: tf`` at ``rate_hz`` 10 while this process publishes
    ``/tf`` at ``--tf-hz`` (``map -> odom -> base_link``) and the camera mount on
    ``/tf_static``, for ``--tf-seconds``. Returns the images per second that reached this process, their age on
    arrival (now - stamp: the pose's age plus the render and delivery), the node's own ``output_hz`` and latency."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TransformStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from scipy.spatial.transform import Rotation
    from sensor_msgs.msg import Image
    from tf2_msgs.msg import TFMessage

    from pose2rgbd.testing.ground_plane import look_down_pose
    from pose2rgbd.testing.hybrid_keyframes import query_poses

    node = _render_node(ck, args, tmp, "render-tf", ["pose_source:=tf", "rate_hz:=10.0", "world_frame:=map"])
    queries = query_poses(200, n_keyframes=keyframes) if keyframes > 0 else None
    ages: list[float] = []
    arrivals: list[float] = []
    diag: dict[str, float] = {}

    def on_image(msg: Any) -> None:
        now = int(rclpy_node.get_clock().now().nanoseconds)
        ages.append((now - _ns(msg.header.stamp)) / 1e6)
        arrivals.append(time.monotonic())

    def on_diagnostics(msg: Any) -> None:
        for st in msg.status:
            if st.name == "pose2rgbd: renderer":
                for v in st.values:
                    if v.key in ("output_hz", "latency_p50_ms", "latency_p99_ms"):
                        with contextlib.suppress(ValueError):
                            diag[v.key] = float(v.value)

    def tf(parent: str, child: str, ns: int, T: np.ndarray) -> Any:
        m = TransformStamped()
        m.header.stamp, m.header.frame_id, m.child_frame_id = _stamp(ns), parent, child
        m.transform.translation.x, m.transform.translation.y, m.transform.translation.z = map(float, T[:3, 3])
        qx, qy, qz, qw = Rotation.from_matrix(T[:3, :3]).as_quat()  # scalar last, as geometry_msgs
        r = m.transform.rotation
        r.x, r.y, r.z, r.w = float(qx), float(qy), float(qz), float(qw)
        return m

    static_qos = QoSProfile(
        depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
    )
    tf_pub = rclpy_node.create_publisher(
        TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    )
    static_pub = rclpy_node.create_publisher(TFMessage, "/tf_static", static_qos)
    sub = rclpy_node.create_subscription(Image, f"{NS}/rgb/image_raw", on_image, 10)
    dsub = rclpy_node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    static_pub.publish(TFMessage(transforms=[tf("base_link", "camera_optical_frame", 0, np.eye(4))]))
    tick = {"k": 0}

    def publish_tf() -> None:
        k = tick["k"]
        tick["k"] += 1
        ns = int(rclpy_node.get_clock().now().nanoseconds)
        j, a = divmod(k / args.tf_hz, 1.0)  # a robot moving at 1 m/s: from one place to the next in a second
        j = int(j)
        if queries is not None:
            T = queries[j % len(queries)].copy()
            T[:3, 3] += a * (queries[(j + 1) % len(queries)][:3, 3] - T[:3, 3])
        else:
            T = look_down_pose(-20.0 + 0.5 * (j % 80) + 0.5 * a, 3.0, 30.0)
        tf_pub.publish(TFMessage(transforms=[tf("map", "odom", ns, np.eye(4)), tf("odom", "base_link", ns, T)]))

    timer = rclpy_node.create_timer(1.0 / args.tf_hz, publish_tf)
    try:
        if not _spin_until(executor, lambda: len(ages) > 3, 180.0, node, "render (tf)"):
            raise SystemExit(f"no image from the render node in 180 s; see {node.log.name}")
        print(f"render node up (tf); {settle_free_page_reporting()}", flush=True)
        ages.clear()
        arrivals.clear()
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.tf_seconds:
            executor.spin_once(timeout_sec=0.001)
        seconds = time.monotonic() - t0
        n = len(ages)
        a = np.asarray(ages) if ages else np.asarray([float("nan")])
        out = {"images_per_s": n / seconds, "age_p50_ms": float(np.percentile(a, 50)),
               "age_p99_ms": float(np.percentile(a, 99)), "images": float(n)}  # fmt: skip
        _spin_until(executor, lambda: False, 1.5, node, "render (tf)")  # the next diagnostics
        out.update({f"node_{k}": v for k, v in diag.items()})
        return out
    finally:
        rclpy_node.destroy_timer(timer)
        for s_ in (sub, dsub):
            rclpy_node.destroy_subscription(s_)
        rclpy_node.destroy_publisher(tf_pub)
        rclpy_node.destroy_publisher(static_pub)
        node.stop()


def _camera_frames(video: str, W: int, H: int, n: int = 90) -> list[bytes]:
    """``n`` consecutive frames of ``video`` (a real clip) as rgb8 bytes at ``W`` x ``H``; ``video`` "" or absent: a
    synthetic image (noise over a gradient), shifted one column per frame."""
    import cv2

    cap = cv2.VideoCapture(video) if video and Path(video).is_file() else None
    out: list[bytes] = []
    if cap is not None:
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) // 3)
        while len(out) < n:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.resize(bgr, (W, H), interpolation=cv2.INTER_AREA)[..., ::-1]
            out.append(np.ascontiguousarray(rgb).tobytes())
        cap.release()
    if not out:
        base = (np.random.default_rng(0).random((H, W, 3)) * 60).astype(np.uint8)
        base += np.linspace(0, 180, W, dtype=np.uint8)[None, :, None]
        out = [np.roll(base, k, 1).tobytes() for k in range(n)]
    return out


def bench_record(
    rclpy_node: Any, executor: Any, args: argparse.Namespace, tmp: Path
) -> tuple[int, int, int, float, dict[str, int]]:
    """(images sent, SyncedFrames received, frames in the dataset, seconds; and over the node's whole run, warm-up
    included: ``sent``, and from its last diagnostics the node's ``images``, ``images_lost_upstream``,
    ``skipped_rate``)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from pose2rgbd.msg import SyncedFrame
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image, NavSatFix, NavSatStatus

    from pose2rgbd.dataset import Dataset

    dataset = tmp / "recorded"
    node = Node(
        "record",
        ["--params-file", str(REPO / "config" / "record.yaml"), "-p", f"output.dataset:={dataset}",
         "-p", "mount.source:=config", "-p", f"output.rgb_encoding:={args.record_encoding}",
         *(a for p in args.record_param for a in ("-p", p))],
        tmp / "record.log",
    )  # fmt: skip
    received: list[int] = []
    rclpy_node.create_subscription(SyncedFrame, f"{NS}/synced_frame", lambda m: received.append(1), 100)
    image_pub = rclpy_node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    info_pub = rclpy_node.create_publisher(CameraInfo, "/camera/camera_info", qos_profile_sensor_data)
    gps_pub = rclpy_node.create_publisher(NavSatFix, "/gps/fix", qos_profile_sensor_data)
    odom_pub = rclpy_node.create_publisher(Odometry, "/odom", qos_profile_sensor_data)
    W, H = args.record_size
    frames = _camera_frames(args.record_video, W, H)
    sent = {"images": 0, "total": 0, "on": False}
    counters: dict[str, int] = {}
    diag_seen = [0.0]

    def on_diagnostics(msg: Any) -> None:
        for st in msg.status:
            if st.name == "pose2rgbd: recorder":
                kv = {v.key: v.value for v in st.values}
                counters.update({k: int(kv[k]) for k in ("images", "images_lost_upstream", "skipped_rate") if k in kv})
                diag_seen[0] = time.monotonic()

    rclpy_node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)

    def sensors() -> None:
        ns = int(rclpy_node.get_clock().now().nanoseconds)
        fix = NavSatFix(latitude=48.0 + 1e-6 * (ns % 10**9) / 1e9, longitude=11.0, altitude=500.0)
        fix.status.status = NavSatStatus.STATUS_FIX
        fix.header.stamp, fix.header.frame_id = _stamp(ns), "gps"
        gps_pub.publish(fix)
        od = Odometry()
        od.header.stamp, od.header.frame_id, od.child_frame_id = _stamp(ns), "odom", "base_link"
        od.pose.pose.orientation.w = 1.0
        odom_pub.publish(od)

    def camera() -> None:
        if not sent["on"]:
            return
        ns = int(rclpy_node.get_clock().now().nanoseconds) - 30_000_000
        info = CameraInfo(width=W, height=H, k=[500.0, 0, W / 2, 0, 500.0, H / 2, 0, 0, 1.0])
        info.header.stamp, info.header.frame_id = _stamp(ns), "camera_optical_frame"
        info_pub.publish(info)
        img = Image(height=H, width=W, encoding="rgb8", step=3 * W, data=frames[sent["total"] % len(frames)])
        img.header.stamp, img.header.frame_id = _stamp(ns), "camera_optical_frame"
        image_pub.publish(img)
        sent["images"] += 1
        sent["total"] += 1

    timers = [rclpy_node.create_timer(0.02, sensors), rclpy_node.create_timer(1.0 / 30.0, camera)]
    try:
        sent["on"] = True  # wait until frames come through, then count from zero
        if not _spin_until(executor, lambda: len(received) > 0, 90.0, node, "record"):
            raise SystemExit(f"no SyncedFrame from the record node; see {node.log.name}")
        received.clear()
        sent["images"] = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.record_s:
            executor.spin_once(timeout_sec=0.001)
        sent["on"] = False
        seconds = time.monotonic() - t0
        n_sent, n_received = sent["images"], len(received)
        _spin_until(executor, lambda: False, 2.0, node, "record")  # let the node drain
        drained = time.monotonic()
        _spin_until(executor, lambda: diag_seen[0] > drained, 5.0, node, "record")  # its counters after the run
    finally:
        for t in timers:
            rclpy_node.destroy_timer(t)
        node.stop()
    return n_sent, n_received, len(Dataset(dataset)), seconds, {"sent": sent["total"], **counters}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["base", "slice10"], choices=sorted(NAMES))
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 256, 512])
    ap.add_argument("--threads", type=int, default=1, help="engine.threads of the render node")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--poses", type=int, default=60, help="measured renders per configuration (0: none)")
    ap.add_argument("--skip", type=int, default=5, help="first renders left out (warm-up)")
    ap.add_argument("--gap-s", type=float, default=0.05, help="pause between an image and the next pose")
    ap.add_argument("--record-s", type=float, default=10.0, help="seconds of 30 Hz camera for the recorder (0: off)")
    ap.add_argument(
        "--record-video",
        default=str(REPO.parent / "shared" / "data" / "gopro-gps-video" / "hero7.mp4"),
        help="the recorder's camera: frames of this clip (default: the GoPro hero7 clip beside the repository; "
        "'' or absent: a synthetic image, noise over a gradient)",
    )
    ap.add_argument("--record-size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    ap.add_argument("--record-encoding", choices=["png", "jpg"], default="png", help="the dataset's images")
    ap.add_argument(
        "--record-param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="one more record node parameter, e.g. output.max_rate_hz:=15.0 (repeatable)",
    )
    ap.add_argument(
        "--tf-hz",
        type=float,
        default=0.0,
        help="also run the node from TF at rate_hz 10 with /tf at this rate (0: off)",
    )
    ap.add_argument("--tf-seconds", type=float, default=20.0, help="seconds measured in the TF run")
    ap.add_argument("--keyframes", type=int, default=1801, help="a hybrid's keyframes (ground-plane frames)")
    ap.add_argument(
        "--node-param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="one more render node parameter, e.g. publish.points:=false (repeatable)",
    )
    ap.add_argument(
        "--dds-profile",
        type=Path,
        default=None,
        help="a Fast DDS XML profile for this process and the nodes (FASTRTPS_DEFAULT_PROFILES_FILE), e.g. "
        "config/fastdds_large_images.xml (default: the environment's)",
    )
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    if args.dds_profile is not None:
        if not args.dds_profile.is_file():
            raise SystemExit(f"--dds-profile {args.dds_profile}: no such file")
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(args.dds_profile.resolve())

    os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    rnode = rclpy.create_node("bench_ros_live")
    executor = SingleThreadedExecutor()
    executor.add_node(rnode)
    load0 = os.getloadavg()[0]
    rows = []
    tf_rows: list[tuple[str, int, dict[str, float]]] = []
    record_row = None
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            for preset in args.presets:
                for size in args.sizes:
                    if args.tf_hz <= 0 and args.poses <= 0:
                        break  # no render run asked for (the recorder's alone)
                    kf = args.keyframes if preset.startswith("hybrid") else 0
                    ck = _checkpoint(tmp, preset, size, kf)
                    if args.tf_hz > 0:
                        r = bench_render_tf(rnode, executor, ck, args, tmp, kf)
                        tf_rows.append((NAMES[preset], size, r))
                        print(f"{NAMES[preset]} {size} from TF: {r}", flush=True)
                    if args.poses <= 0:
                        continue
                    lat, node_ms = bench_render(rnode, executor, ck, args, tmp, kf)
                    p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
                    n50, n99 = node_ms.get("p50", float("nan")), node_ms.get("p99", float("nan"))
                    rows.append((NAMES[preset], size, p50, p99, n50, n99, len(lat)))
                    print(
                        f"{NAMES[preset]} {size}: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(lat)} renders); "
                        f"in the node (render + messages) p50 {n50:.1f} ms, p99 {n99:.1f} ms",
                        flush=True,
                    )
            if args.record_s > 0:
                record_row = bench_record(rnode, executor, args, tmp)
                print(f"recorder: {record_row}", flush=True)
    finally:
        rnode.destroy_node()
        rclpy.shutdown()
    cmd = shlex.join([".venv/bin/python", "bench/bench_ros_live.py", *sys.argv[1:]])
    note = f"; {args.note}" if args.note else ""
    print(f"\n`{cmd}`\n")
    print(
        f"Machine: {_machine(args)}; ROS 2 Jazzy wheels (FastDDS, "
        f"localhost, profile {os.environ.get('FASTRTPS_DEFAULT_PROFILES_FILE') or 'none'}); "
        f"load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end{note}. Render node "
        f"engine.threads {args.threads}, engine.precision auto (config/render.yaml), device {args.device}; "
        f"hybrids with {args.keyframes} keyframes; one pose at a time"
        + (f"; node parameters {' '.join(args.node_param)}" if args.node_param else "")
        + ".\n"
    )
    print(
        "| model | size | pose published -> Image received p50 / p99 (ms) | in the node: render + messages "
        "p50 / p99 (ms) | renders |"
    )
    print("|---|---|---|---|---|")
    for name, size, p50, p99, n50, n99, n in rows:
        print(f"| {name} | {size} | {p50:.1f} / {p99:.1f} | {n50:.1f} / {n99:.1f} | {n} |")
    if tf_rows:
        print(
            f"\nFrom TF (pose_source tf, rate_hz 10, /tf at {args.tf_hz:g} Hz: map -> odom -> base_link in every "
            f"message; {args.tf_seconds:g} s):\n"
        )
        print(
            "| model | size | images/s received | image age on arrival p50 / p99 (ms) | node output_hz "
            "| node latency p50 / p99 (ms) |"
        )
        print("|---|---|---|---|---|---|")
        for name, size, r in tf_rows:
            print(
                f"| {name} | {size} | {r['images_per_s']:.1f} | {r['age_p50_ms']:.0f} / {r['age_p99_ms']:.0f} | "
                f"{r.get('node_output_hz', float('nan')):.1f} | {r.get('node_latency_p50_ms', float('nan')):.1f} / "
                f"{r.get('node_latency_p99_ms', float('nan')):.1f} |"
            )
    if record_row:
        n_sent, n_recv, n_ds, secs, whole = record_row
        print(
            f"\nRecorder (dataset with {args.record_encoding.upper()} RGB + SyncedFrame), "
            f"{args.record_size[0]}x{args.record_size[1]} rgb8 camera at 30 Hz "
            f"({Path(args.record_video).name if Path(args.record_video).is_file() else 'synthetic'} frames) "
            f"for {secs:.0f} s: "
            f"{n_sent} images sent, {n_recv} SyncedFrames received ({n_recv / secs:.1f} Hz), "
            f"{n_ds} frames in the dataset. Over the node's whole run (warm-up included): {whole['sent']} images "
            f"sent, {whole.get('images', '?')} received by the node, {whole.get('images_lost_upstream', '?')} "
            "lost on the way by the gaps in their stamps (its diagnostics)"
            + (f", {whole['skipped_rate']} skipped by output.max_rate_hz." if whole.get("skipped_rate") else ".")
        )


if __name__ == "__main__":
    main()
