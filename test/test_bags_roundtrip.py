"""BagWriter -> open_bag round trips (mcap, sqlite3), message builders/readers, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.bags import BagWriter, open_bag
from pose2rgbd.errors import BagError, GeometryError, OutputExistsError
from pose2rgbd.geometry import PinholeCamera, T_from_tq, rpy_to_quat_xyzw
from pose2rgbd.messages import (
    TypestoreFactory,
    camera_from_info,
    camera_info,
    compressed_image,
    default_factory,
    get_typestore,
    header,
    header_stamp_ns,
    image,
    image_to_numpy,
    imu,
    navsatfix,
    new_typestore,
    odometry,
    pose_stamped,
    pose_to_matrix,
    register_msg_definitions,
    stamp,
    stamp_to_ns,
    tf_message,
    transform_stamped,
    transform_to_matrix,
)

RNG = np.random.default_rng(3)
F = default_factory()


def _T(i: int) -> np.ndarray:
    q = rpy_to_quat_xyzw(np.array([0.1 * i, -0.2, 0.3 + i]))
    return T_from_tq(np.array([i, 2.0 * i - 1, 0.5]), q)


def _write_sample(path: Path, storage: str, n: int = 4) -> dict:
    cam = PinholeCamera(32, 24, 30.0, 31.0, 15.5, 11.25)
    expected: dict = {"fix": [], "odom": [], "img": [], "tf": [], "ps": [], "stamps": []}
    with BagWriter(path, storage=storage) as w:
        w.add_topic("/tf_static", "tf2_msgs/msg/TFMessage", qos="transient_local")
        w.write("/tf_static", 10, tf_message(F, [transform_stamped(F, 10, "base_link", "camera", _T(9))]))
        for i in range(n):
            t = 1_700_000_000_123_456_789 + i * 100_000_000
            lat, lon, alt = 42.3758 + i * 1e-5, -71.1474 - i * 2e-5, 30.0 + i
            w.write("/fix", t, navsatfix(F, t, "gps", lat, lon, alt, status=1, covariance=np.diag([1.0, 2.0, 4.0])))
            w.write("/odom", t + 1, odometry(F, t, "odom", "base_link", _T(i), linear=(1.0, 0, 0), angular=(0, 0, 0.5)))
            img = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            w.write("/cam/image", t + 2, image(F, t, "camera", img, "rgb8"))
            w.write("/cam/info", t + 2, camera_info(F, t, "camera", cam))
            w.write("/pose", t + 3, pose_stamped(F, t, "map", _T(i + 1)))
            w.write("/tf", t + 4, tf_message(F, [transform_stamped(F, t, "odom", "base_link", _T(i))]))
            w.write("/cam/compressed", t + 5, compressed_image(F, t, "camera", img, "png", "rgb8"))
            expected["fix"].append((t, lat, lon, alt))
            expected["odom"].append(_T(i))
            expected["img"].append(img)
            expected["ps"].append(_T(i + 1))
            expected["stamps"].append(t)
    expected["cam"] = cam
    return expected


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_writer_reader_roundtrip(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "out_bag"
    exp = _write_sample(path, storage)
    assert path.is_dir() and (path / "metadata.yaml").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_bag"]  # no temporary left behind
    with open_bag(path) as bag:
        assert bag.storage == storage
        counts = {k: v.count for k, v in bag.topics.items()}
        assert counts == {
            "/tf_static": 1,
            "/fix": 4,
            "/odom": 4,
            "/cam/image": 4,
            "/cam/info": 4,
            "/pose": 4,
            "/tf": 4,
            "/cam/compressed": 4,
        }
        assert bag.topics["/fix"].msgtype == "sensor_msgs/msg/NavSatFix"
        assert bag.message_count == 29
        assert bag.start_ns == 10
        assert bag.end_ns == exp["stamps"][-1] + 5
        assert bag.find_topic("sensor_msgs/Image") == "/cam/image"
        assert bag.find_topic("sensor_msgs/msg/CompressedImage") == "/cam/compressed"

        msgs = list(bag.messages())
        stamps = [m.stamp_ns for m in msgs]
        assert stamps == sorted(stamps) and len(msgs) == 29

        fixes = [m for m in msgs if m.topic == "/fix"]
        for m, (t, lat, lon, alt) in zip(fixes, exp["fix"], strict=True):
            assert m.stamp_ns == t and header_stamp_ns(m.msg) == t
            assert (m.msg.latitude, m.msg.longitude, m.msg.altitude) == (lat, lon, alt)
            assert m.msg.status.status == 1 and m.msg.position_covariance_type == 2
            np.testing.assert_array_equal(m.msg.position_covariance, np.diag([1.0, 2.0, 4.0]).ravel())
            assert m.msg.header.frame_id == "gps"

        odoms = list(bag.messages(["/odom"]))
        for m, T in zip(odoms, exp["odom"], strict=True):
            np.testing.assert_allclose(pose_to_matrix(m.msg.pose.pose), T, atol=1e-12)
            np.testing.assert_allclose(pose_to_matrix(m.msg), T, atol=1e-12)
            assert m.msg.child_frame_id == "base_link" and m.msg.twist.twist.angular.z == 0.5

        imgs = list(bag.messages(["/cam/image"]))
        for m, img, t in zip(imgs, exp["img"], exp["stamps"], strict=True):
            np.testing.assert_array_equal(image_to_numpy(m.msg), img)
            assert stamp_to_ns(m.msg.header.stamp) == t

        info = next(iter(bag.messages(["/cam/info"]))).msg
        assert camera_from_info(info) == exp["cam"]

        for m, T in zip(bag.messages(["/pose"]), exp["ps"], strict=True):
            np.testing.assert_allclose(pose_to_matrix(m.msg), T, atol=1e-12)

        static = next(iter(bag.messages(["/tf_static"]))).msg.transforms[0]
        assert (static.header.frame_id, static.child_frame_id) == ("base_link", "camera")
        np.testing.assert_allclose(transform_to_matrix(static), _T(9), atol=1e-12)

        # start/stop filtering by log time
        window = list(bag.messages(["/fix"], start_ns=exp["stamps"][1], stop_ns=exp["stamps"][3]))
        assert [m.stamp_ns for m in window] == exp["stamps"][1:3]


def test_tf_static_is_transient_local(tmp_path: Path) -> None:
    from ruamel.yaml import YAML

    _write_sample(tmp_path / "b", "mcap", n=1)
    meta = YAML(typ="safe").load((tmp_path / "b" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    qos = {
        t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
        for t in meta["topics_with_message_count"]
    }
    assert "durability: 1" in qos["/tf_static"]  # TRANSIENT_LOCAL
    assert "durability: 1" not in qos["/fix"]


def test_atomic_writer_leaves_nothing_on_exception(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    with pytest.raises(RuntimeError, match=r"boom"), BagWriter(path) as w:
        w.write("/fix", 1, navsatfix(F, 1, "gps", 1.0, 2.0, 3.0))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_existing_and_overwrite_replaces(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    _write_sample(path, "sqlite3", n=1)
    with pytest.raises(OutputExistsError, match=r"exists"):
        BagWriter(path)
    # A failed overwrite leaves the old bag intact.
    with pytest.raises(RuntimeError), BagWriter(path, overwrite=True) as w:
        w.write("/x", 1, navsatfix(F, 1, "gps", 1.0, 2.0, 3.0))
        raise RuntimeError
    with open_bag(path) as bag:
        assert bag.topics["/fix"].count == 1
    with BagWriter(path, overwrite=True, storage="mcap") as w:
        w.write("/only", 5, navsatfix(F, 5, "gps", 1.0, 2.0, 3.0))
    with open_bag(path) as bag:
        assert list(bag.topics) == ["/only"] and bag.storage == "mcap"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]


def test_writer_errors(tmp_path: Path) -> None:
    with BagWriter(tmp_path / "b") as w:
        w.write("/fix", 1, navsatfix(F, 1, "gps", 1.0, 2.0, 3.0))
        with pytest.raises(BagError, match=r"is sensor_msgs/msg/NavSatFix"):
            w.write("/fix", 2, pose_stamped(F, 2, "map", np.eye(4)))
        with pytest.raises(BagError, match=r"unknown to the typestore"):
            w.add_topic("/rgbd", "pose2rgbd/msg/Nope")
        with pytest.raises(BagError, match=r"storage must be"):
            BagWriter(tmp_path / "c", storage="rosbag1")
    assert w.counts == {"/fix": 1}


def test_custom_message_definitions(tmp_path: Path) -> None:
    ts = new_typestore("humble")
    register_msg_definitions(
        ts,
        {
            "pose2rgbd/msg/Sample": "std_msgs/Header header\nfloat32[] values\nstring label\n",
        },
    )
    register_msg_definitions(ts, {"pose2rgbd/msg/Sample": "std_msgs/Header header\nfloat32[] values\nstring label\n"})
    with pytest.raises(BagError, match=r"already present|cannot register"):
        register_msg_definitions(ts, {"pose2rgbd/msg/Sample": "int32 other\n"})
    assert "pose2rgbd/msg/Sample" not in get_typestore("humble").fielddefs  # the shared store is untouched
    cls = ts.types["pose2rgbd/msg/Sample"]
    with BagWriter(tmp_path / "b", typestore=ts) as w:
        w.write(
            "/s",
            7,
            cls(header=header(TypestoreFactory(ts), 7, "x"), values=np.array([1.5, 2.5], np.float32), label="hi"),
        )
    with open_bag(tmp_path / "b") as bag:  # decoded from the definition embedded in the bag
        (m,) = list(bag.messages())
        assert m.msgtype == "pose2rgbd/msg/Sample" and m.msg.label == "hi"
        np.testing.assert_array_equal(m.msg.values, [1.5, 2.5])


def test_time_conversions() -> None:
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789, -1, -1_500_000_000):
        st = stamp(F, ns)
        assert 0 <= st.nanosec < 1_000_000_000
        assert stamp_to_ns(st) == ns

    class Ros1Time:  # rospy style
        secs, nsecs = 3, 5

    assert stamp_to_ns(Ros1Time()) == 3_000_000_005


def test_builders_and_duck_typed_readers() -> None:
    m = imu(F, 5, "imu", quat_xyzw=[0, 0, 0, 1], angular_velocity=(0.1, 0.2, 0.3))
    assert m.angular_velocity.z == 0.3 and m.orientation.w == 1.0
    assert imu(F, 5, "imu").orientation_covariance[0] == -1.0
    with pytest.raises(GeometryError, match=r"3x3"):
        navsatfix(F, 0, "gps", 1, 2, 3, covariance=[1, 2])
    assert navsatfix(F, 0, "gps", 1, 2, 3).position_covariance_type == 0
    assert navsatfix(F, 0, "gps", 1, 2, 3, covariance=np.ones((3, 3))).position_covariance_type == 3

    class Obj:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    # rclpy/ROS 1-like CameraInfo with upper-case K/P (ROS 1) and binning
    info = Obj(width=640, height=480, K=[500, 0, 319.5, 0, 510, 239.5, 0, 0, 1], P=[0.0] * 12, binning_x=2, binning_y=2)
    cam = camera_from_info(info)
    assert (cam.width, cam.height) == (320, 240) and cam.fx == pytest.approx(250.0)
    with pytest.raises(GeometryError, match=r"neither a valid P nor a valid K"):
        camera_from_info(Obj(width=4, height=4, k=[0.0] * 9, p=[0.0] * 12))
    pose = Obj(position=Obj(x=1.0, y=2.0, z=3.0), orientation=Obj(x=0.0, y=0.0, z=0.0, w=1.0))
    np.testing.assert_allclose(pose_to_matrix(Obj(pose=pose))[:3, 3], [1, 2, 3])
