"""Real recordings from ../shared/data: Husky GPS/odom/IMU (ROS 1 + rosbag2 conversions) and rosbag2 fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.bags import open_bag
from pose2rgbd.errors import BagError
from pose2rgbd.geometry import Datum
from pose2rgbd.messages import stamp_to_ns

HUSKY_COUNTS = {"/fix": 989, "/husky_velocity_controller/odom": 3952, "/imu/data": 11865}
HUSKY_TYPES = {
    "/fix": "sensor_msgs/msg/NavSatFix",
    "/husky_velocity_controller/odom": "nav_msgs/msg/Odometry",
    "/imu/data": "sensor_msgs/msg/Imu",
}
HUSKY_FORMS = ["test1.bag", "husky_test1_rosbag2_sqlite3", "husky_test1_rosbag2_mcap"]

# Per SOURCE.txt of ros2-bag-fixtures.
FIXTURES = {
    "evo_nav2_turtlebot_sim_mcap": {"/odom": 2639, "/tf": 5422, "/tf_static": 1, "/amcl_pose": 135},
    "evo_tf_example_sqlite3": {"/tf": 517, "/tf_static": 1},
    "nav2_cm_moving_obstacle_mcap_zstd": {"/local_costmap/costmap": 231, "/cmd_vel_smoothed": 231, "/clock": 231},
    "rosbag2_talker_sqlite3": {"/topic": 10, "/rosout": 10, "/parameter_events": 0},
    "rosbag2_talker_mcap": {"/topic": 10, "/rosout": 10, "/parameter_events": 0},
    "rosbag2_topics_and_service_events_sqlite3": None,  # service events carry no definition: see below
    "rosbag2_topics_and_service_events_mcap": {
        "/test_topic1": 1,
        "/test_topic2": 1,
        "/test_service1/_service_event": 4,
        "/test_service2/_service_event": 4,
        "/events/write_split": 0,
    },
}


@pytest.fixture(scope="module")
def husky_fixes(shared_data: Path) -> dict[str, list[tuple[int, int, float, float, float]]]:
    out = {}
    for form in HUSKY_FORMS:
        with open_bag(shared_data / "husky-gps-odom-imu-bag" / form) as bag:
            out[form] = [
                (m.stamp_ns, stamp_to_ns(m.msg.header.stamp), m.msg.latitude, m.msg.longitude, m.msg.altitude)
                for m in bag.messages(["/fix"])
            ]
    return out


@pytest.mark.parametrize("form", HUSKY_FORMS)
def test_husky_all_forms_same_topics_and_counts(shared_data: Path, form: str) -> None:
    with open_bag(shared_data / "husky-gps-odom-imu-bag" / form) as bag:
        assert {k: v.count for k, v in bag.topics.items()} == HUSKY_COUNTS
        assert {k: v.msgtype for k, v in bag.topics.items()} == HUSKY_TYPES
        assert bag.storage == {"test1.bag": "rosbag1"}.get(form, form.rsplit("_", 1)[-1])
        assert bag.duration_ns / 1e9 == pytest.approx(395.3, abs=0.1)
        assert bag.find_topic("sensor_msgs/NavSatFix") == "/fix"
        n = {}
        last = 0
        for m in bag.messages(["/husky_velocity_controller/odom", "/imu/data"]):
            assert m.stamp_ns >= last
            last = m.stamp_ns
            n[m.topic] = n.get(m.topic, 0) + 1
        assert n == {k: v for k, v in HUSKY_COUNTS.items() if k != "/fix"}
        # ROS 1 header fields are exposed with ROS 2 names (stamp.sec / stamp.nanosec)
        assert m.msg.header.stamp.sec > 1_400_000_000 and hasattr(m.msg.header.stamp, "nanosec")


def test_husky_forms_identical_fixes(husky_fixes: dict) -> None:
    ref = husky_fixes["test1.bag"]
    assert len(ref) == 989
    for form in HUSKY_FORMS[1:]:
        assert husky_fixes[form] == ref


def test_husky_track_in_local_enu(husky_fixes: dict) -> None:
    fixes = np.array([f[2:] for f in husky_fixes["test1.bag"]])
    assert fixes[0, 0] == pytest.approx(42.3758, abs=1e-3) and fixes[0, 1] == pytest.approx(-71.1474, abs=1e-3)
    datum = Datum(*fixes[0])
    enu = datum.to_enu(fixes[:, 0], fixes[:, 1], fixes[:, 2])
    np.testing.assert_allclose(enu[0], 0.0, atol=1e-6)
    span = enu.max(0) - enu.min(0)
    assert span[1] == pytest.approx(146.0, abs=4.0)  # north-south
    assert span[0] == pytest.approx(57.0, abs=4.0)  # east-west


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_bags_read_fully(shared_data: Path, name: str) -> None:
    path = shared_data / "ros2-bag-fixtures" / name
    with open_bag(path) as bag:
        expected = FIXTURES[name]
        counts = {k: v.count for k, v in bag.topics.items()}
        if expected is None:  # sqlite3 service events: no embedded definition and no typestore has test_msgs/srv
            assert counts["/test_topic1"] == 1 and counts["/test_service1/_service_event"] == 4
            err = bag.topics["/test_service1/_service_event"].error
            assert err and "test_msgs/srv/BasicTypes_Event" in err and "no usable definition" in err
            with pytest.raises(BagError, match=r"cannot be decoded.*BasicTypes_Event"):
                list(bag.messages(["/test_service1/_service_event"]))
            readable = {k: v for k, v in counts.items() if not bag.topics[k].error}
            got = {}
            for m in bag.messages():  # readable topics still come out (a warning names the skipped ones)
                got[m.topic] = got.get(m.topic, 0) + 1
            assert got == {k: v for k, v in readable.items() if v}
            assert sum(1 for _ in bag.raw_messages()) == 10  # raw access needs no definition
            return
        assert counts == expected
        assert all(t.error is None for t in bag.topics.values())
        got: dict[str, int] = {}
        stamps = []
        for m in bag.messages():
            got[m.topic] = got.get(m.topic, 0) + 1
            stamps.append(m.stamp_ns)
        assert got == {k: v for k, v in expected.items() if v}
        assert stamps == sorted(stamps)
        assert stamps[0] == bag.start_ns and stamps[-1] == bag.end_ns


def test_talker_gives_twenty_decoded_messages(shared_data: Path) -> None:
    """metadata.yaml QoS differs from the storage's: AnyReader yields 0 here; we trust the storage."""
    for storage in ("sqlite3", "mcap"):
        with open_bag(shared_data / "ros2-bag-fixtures" / f"rosbag2_talker_{storage}") as bag:
            msgs = list(bag.messages())
            assert len(msgs) == 20
            data = [m.msg.data for m in msgs if m.topic == "/topic"]
            assert data == [f"Hello, world! {i}" for i in range(10)]
            logs = [m.msg for m in msgs if m.topic == "/rosout"]
            assert len(logs) == 10 and all(isinstance(x.msg, str) and x.name for x in logs)


def test_service_event_mcap_decoded(shared_data: Path) -> None:
    """rosbags cannot parse the embedded .srv text; the _Event wrapper is rebuilt and decodes exactly."""
    with open_bag(shared_data / "ros2-bag-fixtures" / "rosbag2_topics_and_service_events_mcap") as bag:
        evs = [m.msg for m in bag.messages(["/test_service1/_service_event"])]
    assert len(evs) == 4
    assert {e.info.event_type for e in evs} <= {0, 1, 2, 3}
    assert all(len(e.request) + len(e.response) == 1 for e in evs)


def test_bare_mcap_file_and_db3_file(shared_data: Path) -> None:
    fx = shared_data / "ros2-bag-fixtures"
    with open_bag(fx / "evo_nav2_turtlebot_sim_mcap" / "nav2_turtlebot.mcap") as bag:
        assert bag.topics["/odom"].count == 2639 and bag.storage == "mcap"
    with open_bag(fx / "evo_tf_example_sqlite3" / "tf_example.db3") as bag:
        assert bag.topics["/tf"].count == 517 and bag.storage == "sqlite3"


def test_find_topic_error_lists_topics_and_types(shared_data: Path) -> None:
    with open_bag(shared_data / "ros2-bag-fixtures" / "evo_nav2_turtlebot_sim_mcap") as bag:
        with pytest.raises(BagError) as ei:
            bag.find_topic("sensor_msgs/msg/Image")
        msg = str(ei.value)
        assert "no topic of type sensor_msgs/msg/Image: the bag does not carry it" in msg
        assert "name the" not in msg  # naming a topic cannot help
        for topic, typ in [("/odom", "nav_msgs/msg/Odometry"), ("/tf", "tf2_msgs/msg/TFMessage")]:
            assert topic in msg and typ in msg
        with pytest.raises(
            BagError, match=r"2 topics of type tf2_msgs/msg/TFMessage \(/tf, /tf_static\); name the one"
        ):
            bag.find_topic("tf2_msgs/TFMessage")
        assert bag.find_topic("tf2_msgs/TFMessage", "/tf_static") == "/tf_static"
        assert bag.find_topic("tf2_msgs/TFMessage", "tf_static") == "/tf_static"  # without its leading slash
        with pytest.raises(BagError, match=r"name the one to use \(--topics.tf TOPIC\)"):
            bag.find_topic("tf2_msgs/TFMessage", key="topics.tf")
        with pytest.raises(BagError, match=r"has type nav_msgs/msg/Odometry"):
            bag.find_topic("tf2_msgs/TFMessage", "/odom")
        with pytest.raises(BagError, match=r"'/nope' not in bag"):
            bag.find_topic("tf2_msgs/TFMessage", "/nope")
        with pytest.raises(BagError, match=r"\['/nope'\] not in bag"):
            list(bag.messages(["/nope"]))


def _truncate(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.mark.parametrize(
    "rel,name",
    [
        ("husky-gps-odom-imu-bag/test1.bag", "t.bag"),
        ("ros2-bag-fixtures/evo_nav2_turtlebot_sim_mcap/nav2_turtlebot.mcap", "t.mcap"),
        ("ros2-bag-fixtures/evo_tf_example_sqlite3/tf_example.db3", "t.db3"),
        ("ros2-bag-fixtures/nav2_cm_moving_obstacle_mcap_zstd/_tmp_cm_bag_0.mcap.zstd", "t.mcap.zstd"),
    ],
)
@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_bags_raise_bag_error(shared_data: Path, tmp_path: Path, rel: str, name: str, keep: float) -> None:
    bad = _truncate(shared_data / rel, tmp_path / name, keep)
    with pytest.raises(BagError) as ei, open_bag(bad) as bag:
        for _ in bag.messages():
            pass
    assert str(bad) in str(ei.value)
    # the tool that copies out what is intact is named (a zstd file that does not decompress has none)
    tool = {".bag": "rosbag reindex t.bag", ".mcap": "mcap recover t.mcap -o", ".db3": "sqlite3 t.db3 .recover"}
    if keep == 0.0:  # nothing in it to recover: no tool
        assert "The file is empty (0 bytes): nothing in it to recover" in str(ei.value)
    elif bad.suffix in tool:
        assert tool[bad.suffix] in str(ei.value)


def test_repair_hints_name_the_storage_file_the_tools_read(tmp_path: Path) -> None:
    from pose2rgbd.bags.reader import repair_hint

    f = tmp_path / "t.mcap.zstd"
    f.write_bytes(b"x")
    hint = repair_hint("mcap", f)
    assert hint.startswith("Decompress it first (`zstd -d t.mcap.zstd`), then the mcap CLI's `mcap recover t.mcap -o")
    g = tmp_path / "t.db3"
    g.write_bytes(b"x")
    assert "pose2rgbd reads a bare .db3 file as a bag" in repair_hint("sqlite3", g)
    active = tmp_path / "rec.bag.active"  # ROS 1's rosbag record, stopped before it closed the bag
    active.write_bytes(b"#ROSBAG V2.0\n")
    with pytest.raises(BagError, match=r"never closed .*`rosbag reindex rec.bag.active` .* rename it to rec.bag"):
        open_bag(active)


def test_corrupt_directory_bags(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "ros2-bag-fixtures" / "evo_tf_example_sqlite3"
    d = tmp_path / "bag"
    shutil.copytree(src, d)
    (d / "tf_example.db3").unlink()
    with pytest.raises(BagError, match=r"missing.*tf_example.db3"):
        open_bag(d)
    (d / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, mapping")
    with pytest.raises(BagError, match=r"metadata\.yaml"):
        open_bag(d)
    (d / "metadata.yaml").unlink()
    with pytest.raises(BagError, match=r"no metadata.yaml and no .mcap/.db3"):
        open_bag(d)
    with pytest.raises(BagError, match=r"no such bag"):
        open_bag(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(BagError, match=r"unrecognised bag file"):
        open_bag(tmp_path / "x.txt")


def test_cli_bag_info(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pose2rgbd.cli.main import main

    assert main(["bag", "info", str(shared_data / "husky-gps-odom-imu-bag" / "test1.bag")]) == 0
    out = capsys.readouterr().out
    assert "rosbag1" in out and "395.3" in out
    line = next(x for x in out.splitlines() if "/fix" in x)
    assert "sensor_msgs/msg/NavSatFix" in line and "989" in line and "2.50 Hz" in line
    assert main(["bag", "info", "/nonexistent/bag"]) == 2
