"""Bad input fails clearly and leaves nothing half written."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.cli.main import main
from pose2rgbd.errors import BagError, Pose2RGBDError, SyncError

FIXTURES = [
    "evo_nav2_turtlebot_sim_mcap/nav2_turtlebot.mcap",
    "evo_tf_example_sqlite3",
    "nav2_cm_moving_obstacle_mcap_zstd",
    "rosbag2_talker_mcap",
    "rosbag2_talker_sqlite3",
    "rosbag2_topics_and_service_events_mcap",
    "rosbag2_topics_and_service_events_sqlite3",
]


@pytest.mark.parametrize("name", FIXTURES)
def test_convert_bag_without_camera_fails_clearly(shared_data: Path, tmp_path: Path, name: str) -> None:
    from pose2rgbd.convert.sources.bag import convert_bag

    out = tmp_path / "out"
    with pytest.raises(BagError) as e:
        convert_bag(shared_data / "ros2-bag-fixtures" / name, out, progress=False)
    msg = str(e.value)
    # either the bag opens and we say what is missing, or the reader says why it cannot open it
    assert ("no camera topic" in msg and "topics present" in msg) or name.endswith("events_mcap"), msg
    assert not out.exists()


@pytest.mark.parametrize("name", ["rosbag2_talker_mcap", "rosbag2_talker_sqlite3"])
def test_talker_bags_give_their_messages_or_an_error(shared_data: Path, name: str) -> None:
    from pose2rgbd.bags import open_bag

    try:
        with open_bag(shared_data / "ros2-bag-fixtures" / name) as bag:
            n = sum(1 for _ in bag.messages())
    except BagError as e:
        assert str(e)
        return
    assert n == 20


def test_cli_lists_topics_when_the_gps_topic_is_missing(shared_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(["convert", "bag", str(shared_data / "husky-gps-odom-imu-bag" / "test1.bag"), "--out", str(out),
               "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "no camera topic" in err and "/fix" in err and "NavSatFix" in err
    assert "pose2rgbd convert gps-odom" in err and "record.launch.py" in err  # what such a bag is good for
    assert not out.exists()


def test_truncated_bag(shared_data: Path, tmp_path: Path) -> None:
    from pose2rgbd.convert.sources.bag import convert_bag

    src = shared_data / "husky-gps-odom-imu-bag" / "test1.bag"
    bad = tmp_path / "cut.bag"
    bad.write_bytes(src.read_bytes()[:300_000])
    out = tmp_path / "out"
    with pytest.raises(Pose2RGBDError):
        convert_bag(bad, out, progress=False)
    assert not out.exists()
    junk = tmp_path / "junk.bag"
    junk.write_bytes(b"\x00not a bag" * 100)
    with pytest.raises(Pose2RGBDError):
        convert_bag(junk, out, progress=False)
    assert not out.exists()


def _video(path: Path, n: int = 60, size: tuple[int, int] = (160, 120)) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    tex = (rng.random((size[1] * 2, size[0] * 4)) * 255).astype(np.uint8)
    tex = cv2.GaussianBlur(tex, (0, 0), 2)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
    for i in range(n):
        x = int(2 * i)
        wr.write(cv2.cvtColor(np.ascontiguousarray(tex[: size[1], x : x + size[0]]), cv2.COLOR_GRAY2BGR))
    wr.release()
    return path


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("time_s,lat,lon,alt,speed_mps,fix\n" + "\n".join(rows) + "\n")
    return path


def test_video_errors_leave_nothing(tmp_path: Path) -> None:
    from pose2rgbd.convert.sources.video import convert_video

    vid = _video(tmp_path / "v.mp4")
    out = tmp_path / "out"
    good = [f"{t:.2f},44.43,{26.1 + 1e-5 * t:.7f},80,,1" for t in np.arange(0, 2.0, 0.1)]
    cases = {
        "no valid GPS fix": _csv(tmp_path / "nofix.csv", [r[:-1] + "0" for r in good]),
        "empty": _csv(tmp_path / "empty.csv", []),
        "backwards": _csv(tmp_path / "back.csv", [good[0], good[5], good[2], *good[6:]]),
        "missing": tmp_path / "missing.csv",
    }
    expect = {"no valid GPS fix": "no valid GPS fix", "empty": "no GPS rows", "backwards": "backwards",
              "missing": "not found"}  # fmt: skip
    for k, log in cases.items():
        with pytest.raises(SyncError) as e:
            convert_video(vid, log, out, progress=False)
        assert expect[k] in str(e.value), (k, str(e.value))
        assert not out.exists()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    with pytest.raises(SyncError) as e:
        convert_video(bad, cases["empty"], out, progress=False)
    assert "video" in str(e.value)
    assert not out.exists()
    # columns missing: the error names them and the header
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("t,la,lo\n0,1,2\n")
    with pytest.raises(SyncError) as e:
        convert_video(vid, wrong, out, progress=False)
    assert "time_s" in str(e.value) and "header" in str(e.value)


def test_interrupt_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.video import convert_video

    vid = _video(tmp_path / "v.mp4")
    log = _csv(tmp_path / "g.csv", [f"{t:.2f},44.43,{26.1 + 1e-5 * t:.7f},80,,1" for t in np.arange(0, 2.0, 0.1)])

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("pose2rgbd.convert.report.write_report", boom)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        convert_video(vid, log, out, ConvertConfig(estimate_offset=False), progress=False)
    assert not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    shutil.rmtree(tmp_path / "unused", ignore_errors=True)


def test_every_registered_source_keeps_the_source_contract() -> None:
    """Each SOURCES entry resolves to a class with the pipeline's Source methods (pose2rgbd.convert.pipeline)."""
    from pose2rgbd.convert import SOURCES, source_class
    from pose2rgbd.errors import ConfigError

    for name in SOURCES:
        cls = source_class(name)
        assert isinstance(cls.kind, str) and cls.kind, name
        for method in ("inputs", "plan", "frames", "report", "__enter__", "__exit__"):
            assert callable(getattr(cls, method, None)), (name, method)
    with pytest.raises(ConfigError, match="no conversion source"):
        source_class("fax")


def test_a_folder_given_as_the_video_names_convert_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "0001.jpg").write_bytes(b"jpeg")
    rc = main(["convert", "video", str(photos), "--out", str(tmp_path / "ds")])
    err = capsys.readouterr().err
    assert rc == 2 and "a folder, not a video file" in err and "pose2rgbd convert images" in err, err
    assert not (tmp_path / "ds").exists()


def test_gps_odom_offers_only_its_own_settings(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`convert gps-odom` reads no camera and writes no dataset: its --help lists the GPS, topic and estimator keys,
    not a conversion's image, lens, size or output keys, and such a key is refused instead of ignored."""
    with pytest.raises(SystemExit):
        main(["convert", "gps-odom", "--help"])
    text = capsys.readouterr().out
    for key in ("--topics.gps", "--topics.odom", "--sync.max_lag_s", "--max-lag", "--datum", "--gps.altitude"):
        assert key in text, key
    for key in ("--size", "--hfov_deg", "--orientation", "--lens", "--check_gps_log", "--output.name",
                "--topics.image", "--mount.source", "--world_frame"):  # fmt: skip
        assert key not in text, key
    # the GPS keys are one definition (GpsSettings) in both schemas: the same defaults, help and rules
    from pose2rgbd.convert.config import ConvertConfig, GpsOdomConfig, GpsSettings

    shared = {f.name: f for f in dataclasses.fields(GpsSettings)}
    assert {"time_offset_s", "datum", "max_speed_mps", "gps", "jump_tolerance_m", "speed_window_s", "sync"} <= set(
        shared
    )
    for cls in (ConvertConfig, GpsOdomConfig):
        mine = {f.name: f for f in dataclasses.fields(cls)}
        for name, f in shared.items():
            assert mine[name].metadata == f.metadata and mine[name].default == f.default, (cls, name)
    assert set(f.name for f in dataclasses.fields(GpsOdomConfig)) == set(shared) | {"topics"}
    bag = shared_data / "husky-gps-odom-imu-bag" / "husky_test1_rosbag2_mcap"
    rc = main(["convert", "gps-odom", str(bag), "--report", str(tmp_path / "r"), "--set", "size=64x64"])
    assert rc == 2 and "unknown key 'size'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_depth_topic_named_is_refused_unless_the_bag_has_it_as_depth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--depth-topic /depth` (not in the bag) was left out in silence: exit 0 and a dataset without depth. A depth
    topic named is refused like a wrong --image-topic, listing the bag's image topics with their encodings; the
    default topic (the simulator's /ground_truth/depth) absent still gives an RGB-only dataset."""
    from pose2rgbd.convert.config import DEFAULT_DEPTH_TOPIC
    from pose2rgbd.convert.sources.bag import find_depth_topic
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path / "flight"
    write_flight_bag(bag, duration_s=1.0, size=32)
    out = tmp_path / "ds"
    cases = {
        "/depth": "depth topic '/depth' (--depth-topic, topics.depth) is not in the bag",
        "/camera/image_raw": "depth topic '/camera/image_raw' (--depth-topic, topics.depth) holds rgb8 images, not "
        "depth",
        "/gps/fix": "has type sensor_msgs/msg/NavSatFix, not sensor_msgs/msg/Image",
    }
    for topic, what in cases.items():
        rc = main(["convert", "bag", str(bag), "--out", str(out), "--no-progress", "--depth-topic", topic])
        err = capsys.readouterr().err
        assert rc == 2 and what in err, err
        assert "the bag's image topics: /camera/image_raw (rgb8), /ground_truth/depth (32FC1: depth)" in err, err
        assert "--depth-topic TOPIC" in err and "--depth-topic ''" in err, err
        assert not out.exists()

    class _Bag:  # a bag without the default depth topic, or with it as another type
        def __init__(self, topics: dict[str, str]) -> None:
            from pose2rgbd.bags import TopicInfo

            self.topics = {t: TopicInfo(t, mt, 1) for t, mt in topics.items()}

        def topic_name(self, name: str) -> str:
            return name

    assert find_depth_topic(_Bag({"/camera/image_raw": "sensor_msgs/msg/Image"}), DEFAULT_DEPTH_TOPIC) is None  # type: ignore[arg-type]
    odd = _Bag({DEFAULT_DEPTH_TOPIC: "sensor_msgs/msg/CompressedImage"})
    assert find_depth_topic(odd, DEFAULT_DEPTH_TOPIC) is None  # type: ignore[arg-type]
    assert find_depth_topic(_Bag({}), "") is None  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["hero7.mp4", "GX010042.MP4", "clip.mov", "c.MTS"])
def test_a_video_given_to_convert_images_names_convert_video(tmp_path: Path, capsys, name: str) -> None:
    vid = tmp_path / name
    vid.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    rc = main(["convert", "images", str(vid), "--out", str(tmp_path / "ds")])
    err = capsys.readouterr().err
    assert rc == 2 and "a video file" in err and f"pose2rgbd convert video {vid}" in err, err
    assert "cannot tell the format" not in err
    assert not (tmp_path / "ds").exists()


def test_a_one_frame_video_names_its_frames_and_the_way_out(tmp_path: Path, capsys) -> None:
    """Too few frames to estimate the time offset: the error says how many the video had and the flags that convert
    it anyway, and those flags do."""
    vid = _video(tmp_path / "one.mp4", n=1)
    log = _csv(tmp_path / "g.csv", [f"{t:.2f},44.43,{26.1 + 1e-5 * t:.7f},80,,1" for t in np.arange(0, 2.0, 0.1)])
    args = ["convert", "video", str(vid), "--gps", str(log), "--out", str(tmp_path / "ds"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 frame, 0 with an optical-flow value" in err and "--time-offset S --no-estimate" in err, err
    assert not (tmp_path / "ds").exists()
    assert main([*args, "--time-offset", "0", "--no-estimate"]) == 0
    assert (tmp_path / "ds" / "manifest.yaml").is_file()


def test_a_depth_topic_given_as_the_image_topic_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """`--image-topic /ground_truth/depth` (a 32FC1 topic) read every frame, logged one "frame N unreadable" line per
    frame (601 for the simulator's survey) and then failed; the reverse mistake (`--depth-topic /camera/image_raw`)
    was refused at once. Now this one is too: one error, naming the bag's colour topics, nothing written."""
    import logging

    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path / "flight"
    write_flight_bag(bag, duration_s=1.0, size=16)
    out = tmp_path / "ds"
    with caplog.at_level(logging.WARNING, logger="pose2rgbd"):
        rc = main(["convert", "bag", str(bag), "--out", str(out), "--no-progress", "--image-topic",
                   "/ground_truth/depth"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "image topic '/ground_truth/depth' is a depth image topic (32FC1)" in err, err
    assert "its camera topics: /camera/image_raw (give one with --image-topic)" in err, err
    assert "a depth topic goes to --depth-topic (this one is read by default)" in err, err
    assert "unreadable" not in caplog.text and not out.exists()


def test_unreadable_frames_are_said_once_per_reason_with_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Frames of a camera topic that cannot be read for one reason are said once (the first) and counted, not one
    warning line each."""
    import logging

    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.bag import BagSource
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path / "flight"
    write_flight_bag(bag, duration_s=3.0, size=16, unreadable_images=[5, 9, 14, 20])
    with caplog.at_level(logging.WARNING, logger="pose2rgbd"), BagSource(bag, ConvertConfig()) as src:
        im = src._image_pass("/camera/image_raw", None, progress=False)
    assert im.unreadable == 4
    lines = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(lines) == 2 and "frame 5 unreadable" in lines[0], lines
    assert "4 of 30 frames unreadable (its reason is said once above, at its first frame)" in lines[1], lines


@pytest.mark.parametrize(
    ("flag", "name", "expected"),
    [
        ("--gps-topic", "/fix", "the bag's topics of type sensor_msgs/msg/NavSatFix: /gps/fix (give one with"),
        ("--odom-topic", "/gps/fix", "the bag's topics of type nav_msgs/msg/Odometry: /odom (give one with"),
        ("--imu-topic", "/imu", "the bag has no topic of type sensor_msgs/msg/Imu"),
    ],
)
def test_a_misnamed_topic_names_the_bags_topics_of_its_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, name: str, expected: str
) -> None:
    """A topic named that the bag lacks (or has as another type): the error names the bag's topics of the type the
    flag takes, as `record bag` does, not only the whole topic list."""
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path / "flight"
    write_flight_bag(bag, duration_s=1.0, size=16)
    out = tmp_path / "ds"
    assert main(["convert", "bag", str(bag), "--out", str(out), "--no-progress", flag, name]) == 2
    err = capsys.readouterr().err
    assert expected in err and f"topic {name!r}" in err, err
    assert not out.exists()


def test_the_camera_topic_found_by_type_is_not_a_depth_image_by_its_encoding() -> None:
    """With no --image-topic, an Image topic whose messages are depth (32FC1) is not the camera even where its name
    does not say depth (it was, and every frame was then unreadable); a name that says depth is not either."""
    from types import SimpleNamespace

    from pose2rgbd.convert.sources.bag import find_image_topic

    topics = {n: SimpleNamespace(name=n, msgtype="sensor_msgs/msg/Image") for n in ("/cam/rgb", "/cam/range", "/depth")}
    enc = {"/cam/rgb": "rgb8", "/cam/range": "32FC1", "/depth": "rgb8"}
    bag = SimpleNamespace(topics=topics, first_encoding=enc.get, path=Path("bag"), describe_topics=lambda: "")
    assert find_image_topic(bag) == "/cam/rgb"  # type: ignore[arg-type]
