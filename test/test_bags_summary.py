"""Bag summaries (pose2rgbd.bags.summary) on the real recordings under ../shared/data, and `bag info` output."""

from __future__ import annotations

from pathlib import Path

import pytest

from pose2rgbd.bags import open_bag
from pose2rgbd.bags.summary import BagSummary, TopicSummary, summarize_bag, topic_spans

HUSKY = {"test1.bag": "rosbag1", "husky_test1_rosbag2_mcap": "mcap", "husky_test1_rosbag2_sqlite3": "sqlite3"}


def test_topic_rate_is_count_minus_one_over_the_topics_own_span() -> None:
    assert TopicSummary("/a", "t", 11, 0, 5_000_000_000).rate_hz == pytest.approx(2.0)
    assert TopicSummary("/a", "t", 3, 1_000, 1_000_001_000).rate_hz == pytest.approx(2.0)
    assert TopicSummary("/a", "t", 1, 5, 5).rate_hz is None  # one message: no rate
    assert TopicSummary("/a", "t", 4, 7, 7).rate_hz is None  # all at one time
    assert TopicSummary("/a", "t", 10).rate_hz is None  # not scanned


@pytest.mark.parametrize("name", list(HUSKY))
def test_husky_recording_in_every_storage(shared_data: Path, name: str) -> None:
    s = summarize_bag(shared_data / "husky-gps-odom-imu-bag" / name)
    assert isinstance(s, BagSummary) and s.scanned
    assert s.storage == HUSKY[name]
    assert s.start_ns == 1432235498025043042 and s.duration_ns == 395307116140
    assert s.start_utc == "2015-05-21T19:11:38.025+00:00"
    assert s.message_count == 16806 == sum(t.count for t in s.topics)
    by = {t.name: t for t in s.topics}
    assert [t.name for t in s.topics] == ["/fix", "/husky_velocity_controller/odom", "/imu/data"]
    assert (by["/fix"].msgtype, by["/fix"].count) == ("sensor_msgs/msg/NavSatFix", 989)
    assert (by["/fix"].first_ns, by["/fix"].last_ns) == (1432235498039331631, 1432235893228464099)
    assert by["/fix"].rate_hz == pytest.approx(988 / 395.189132468, rel=1e-9)
    assert round(by["/husky_velocity_controller/odom"].rate_hz or 0, 2) == 9.99
    assert round(by["/imu/data"].rate_hz or 0, 2) == 30.01
    # the earliest first message and the latest last message are the bag's own span
    assert min(t.first_ns or 0 for t in s.topics) == s.start_ns
    assert max(t.last_ns or 0 for t in s.topics) == s.start_ns + s.duration_ns
    assert all(t.error is None for t in s.topics)


def test_no_scan_reads_no_messages_and_gives_no_rates(shared_data: Path) -> None:
    s = summarize_bag(shared_data / "husky-gps-odom-imu-bag" / "test1.bag", scan=False)
    assert not s.scanned and s.message_count == 16806
    assert all(t.first_ns is None and t.rate_hz is None for t in s.topics)


def test_empty_topic_and_undecodable_topics(shared_data: Path) -> None:
    talker = summarize_bag(shared_data / "ros2-bag-fixtures" / "rosbag2_talker_mcap")
    by = {t.name: t for t in talker.topics}
    assert by["/parameter_events"].count == 0 and by["/parameter_events"].rate_hz is None
    assert round(by["/rosout"].rate_hz or 0, 2) == 2.00 and round(by["/topic"].rate_hz or 0, 2) == 1.99
    events = summarize_bag(shared_data / "ros2-bag-fixtures" / "rosbag2_topics_and_service_events_sqlite3")
    ev = {t.name: t for t in events.topics}
    svc = ev["/test_service1/_service_event"]
    assert svc.count == 4 and svc.error and "BasicTypes_Event" in svc.error
    assert round(svc.rate_hz or 0, 2) == 296.23  # timed without decoding
    assert ev["/test_topic1"].count == 1 and ev["/test_topic1"].rate_hz is None


def test_topic_spans_of_an_open_bag_and_of_chosen_topics(shared_data: Path) -> None:
    with open_bag(shared_data / "ros2-bag-fixtures" / "rosbag2_talker_sqlite3") as bag:
        spans = topic_spans(bag)
        assert spans == {
            "/rosout": (1585866235112411371, 1585866239612761798),
            "/topic": (1585866235112609068, 1585866239643508139),
        }
        assert topic_spans(bag, ["/topic"]) == {"/topic": spans["/topic"]}
        assert summarize_bag(bag).topics == summarize_bag(bag.path).topics


def test_cli_bag_info_output(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pose2rgbd.cli.main import main

    path = shared_data / "ros2-bag-fixtures" / "rosbag2_talker_mcap"
    assert main(["bag", "info", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        str(path),
        "  storage   mcap",
        "  start     2020-04-02T22:23:55.112+00:00 (1585866235112411371 ns)",
        "  duration  4.531 s",
        "  messages  20 on 3 topic(s)",
        "  /parameter_events  rcl_interfaces/msg/ParameterEvent         0              ",
        "  /rosout            rcl_interfaces/msg/Log                   10       2.00 Hz",
        "  /topic             std_msgs/msg/String                      10       1.99 Hz",
    ]
    assert main(["bag", "info", "--no-scan", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "  /topic             std_msgs/msg/String                      10              "
    )
