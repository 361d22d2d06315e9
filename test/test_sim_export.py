"""Exports of the synthetic world: dataset v1, rosbag2 bag, MP4 + CSV, CLI."""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest

from pose2rgbd.dataset import Dataset
from pose2rgbd.geometry import Datum
from pose2rgbd.sim import SimConfig, export_bag, export_dataset, export_video, make_world


@pytest.fixture(scope="module")
def world():
    return make_world(seed=1)


def test_dataset_export_validates_and_is_deterministic(tmp_path, world):
    cfg = SimConfig(seed=1, width=32, height=24, frames=6, routes=["survey", "orbit"], dataset_stride=2)
    a = export_dataset(cfg, tmp_path / "a", progress=False, world=world)
    b = export_dataset(cfg, tmp_path / "b", progress=False)
    ds, db = Dataset(a), Dataset(b)
    assert len(ds) == 6  # 3 frames per route
    assert [s["name"] for s in ds.manifest.sources] == ["survey", "orbit"]
    assert ds.manifest.depth_kind == "metric" and ds.manifest.datum is not None
    f = ds.frames
    assert list(f.source_id) == [0, 0, 0, 1, 1, 1]
    for s in (0, 1):
        assert (np.diff(f.stamp_ns[f.source_id == s]) > 0).all()
    np.testing.assert_allclose(np.diff(f.stamp_ns[:3]), 2e9 / 30, atol=1)
    # lat/lon/alt is the camera centre through the datum
    enu = Datum(44.43, 26.10, 80.0).to_enu(f.latlonalt[:, 0], f.latlonalt[:, 1], f.latlonalt[:, 2])
    np.testing.assert_allclose(enu, f.translation, atol=1e-3)
    assert f.translation[:, 2].min() > 50 and f.translation[:, 2].max() < 56
    for i in range(len(ds)):
        assert np.array_equal(ds.read_rgb(i), db.read_rgb(i))
        da, dbb = ds.read_depth(i), db.read_depth(i)
        assert np.array_equal(da, dbb) and da.dtype == np.float32
    assert (tmp_path / "a" / "rgb" / "000000.png").read_bytes() == (tmp_path / "b" / "rgb" / "000000.png").read_bytes()
    c = export_dataset(
        SimConfig(seed=2, width=32, height=24, frames=2, routes=["survey"]), tmp_path / "c", progress=False
    )
    assert not np.array_equal(Dataset(c).read_rgb(0), ds.read_rgb(0))


def _read_bag(path):
    from pose2rgbd.bags import open_bag

    out = defaultdict(list)
    with open_bag(path) as bag:
        types = {t.name: t.msgtype for t in bag.topics.values()}
        for m in bag.messages():
            out[m.topic].append((m.stamp_ns, m.msg))
    return types, out


def _stamp(msg) -> int:
    if not hasattr(msg, "header"):  # TFMessage
        msg = msg.transforms[0]
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def test_bag_export_topics_rates_frames_and_offset(tmp_path, world):
    cfg = SimConfig(
        seed=1, width=16, height=16, frames=31, gps_time_offset_s=0.25, gps_noise_h_m=0.0, gps_noise_v_m=0.0
    )
    path = export_bag(cfg, tmp_path / "bag", "survey", progress=False, world=world)
    types, msgs = _read_bag(path)
    assert types == {
        "/camera/image_raw": "sensor_msgs/msg/Image",
        "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
        "/gps/fix": "sensor_msgs/msg/NavSatFix",
        "/odom": "nav_msgs/msg/Odometry",
        "/tf": "tf2_msgs/msg/TFMessage",
        "/tf_static": "tf2_msgs/msg/TFMessage",
        "/ground_truth/depth": "sensor_msgs/msg/Image",
        "/ground_truth/pose": "geometry_msgs/msg/PoseStamped",
    }
    t0 = cfg.start_time_ns
    assert t0 > 1e18

    def rate(topic):
        s = np.array([_stamp(m) for _, m in msgs[topic]])
        return 1e9 / np.median(np.diff(s))

    assert len(msgs["/camera/image_raw"]) == 31 and rate("/camera/image_raw") == pytest.approx(30, rel=1e-3)
    assert rate("/camera/camera_info") == pytest.approx(30, rel=1e-3)
    assert rate("/gps/fix") == pytest.approx(10, rel=1e-3) and len(msgs["/gps/fix"]) == 11
    assert rate("/odom") == pytest.approx(50, rel=1e-3) and len(msgs["/odom"]) == 51
    assert rate("/tf") == pytest.approx(50, rel=1e-3)
    assert len(msgs["/tf_static"]) == 1
    img = msgs["/camera/image_raw"][0][1]
    assert img.encoding == "rgb8" and img.header.frame_id == "camera_optical_frame" and img.width == 16
    assert _stamp(img) == t0 and msgs["/camera/image_raw"][0][0] == t0
    assert msgs["/camera/camera_info"][0][1].header.frame_id == "camera_optical_frame"
    depth = msgs["/ground_truth/depth"][0][1]
    assert depth.encoding == "32FC1"
    assert msgs["/ground_truth/pose"][0][1].header.frame_id == "map"
    odom = msgs["/odom"][0][1]
    assert odom.header.frame_id == "odom" and odom.child_frame_id == "base_link"
    links = [(t.header.frame_id, t.child_frame_id) for t in msgs["/tf"][0][1].transforms]
    assert links == [("map", "odom"), ("odom", "base_link")]  # REP-105
    static = {(t.header.frame_id, t.child_frame_id) for t in msgs["/tf_static"][0][1].transforms}
    assert ("base_link", "camera_optical_frame") in static
    # GPS: stamped measurement time + offset; the position is the antenna at the measurement time
    fixes = msgs["/gps/fix"]
    g_stamps = np.array([_stamp(m) for _, m in fixes])
    np.testing.assert_array_equal(g_stamps - t0, np.round((np.arange(11) / 10 + 0.25) * 1e9).astype(np.int64))
    assert fixes[0][1].header.frame_id == "gps_link" and fixes[0][1].status.status == 0
    from pose2rgbd.sim import make_datum
    from pose2rgbd.sim.export import T_BASE_GPS, flight_plan

    enu = make_datum(cfg).to_enu(fixes[5][1].latitude, fixes[5][1].longitude, fixes[5][1].altitude)
    expect = (flight_plan(cfg, "survey").pose_at(0.5)[0] @ T_BASE_GPS)[:3, 3]
    np.testing.assert_allclose(enu, expect, atol=1e-3)
    # odom pose matches the ground-truth camera pose through the static mount
    from pose2rgbd.messages import pose_to_matrix, transform_to_matrix

    T_bc = transform_to_matrix(
        next(t for t in msgs["/tf_static"][0][1].transforms if t.child_frame_id.startswith("camera")).transform
    )
    T_wb = pose_to_matrix(msgs["/odom"][0][1].pose.pose)
    T_wc = pose_to_matrix(msgs["/ground_truth/pose"][0][1].pose)
    np.testing.assert_allclose(T_wb @ T_bc, T_wc, atol=1e-6)


def test_bag_compressed_sqlite_deterministic(tmp_path, world):
    from pose2rgbd.bags import open_bag

    cfg = SimConfig(seed=1, width=16, height=16, frames=4, compressed=True, bag_storage="sqlite3", gps_dropouts=1,
                    gps_dropout_s=0.2, ground_truth_topics=False)  # fmt: skip
    a = export_bag(cfg, tmp_path / "a", progress=False, world=world)
    b = export_bag(cfg, tmp_path / "b", progress=False, world=world)
    assert list(a.glob("*.db3"))
    with open_bag(a) as ra, open_bag(b) as rb:
        assert list(ra.raw_messages()) == list(rb.raw_messages())
        assert "/camera/image_raw/compressed" in ra.topics and "/ground_truth/depth" not in ra.topics
        img = next(ra.messages(["/camera/image_raw/compressed"])).msg
        assert "jpeg" in img.format
        st = [m.msg.status.status for m in ra.messages(["/gps/fix"])]
        assert -1 in st and 0 in st


def test_video_export(tmp_path, world):
    import cv2

    cfg = SimConfig(seed=1, width=32, height=32, frames=12, gps_time_offset_s=-0.1)
    mp4, gcsv = export_video(cfg, tmp_path, "survey", progress=False, world=world)
    cap = cv2.VideoCapture(str(mp4))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (32, 32, 3)
        n += 1
    cap.release()
    assert n == 12
    rows = list(csv.reader(gcsv.read_text().splitlines()))
    assert rows[0] == ["time_s", "lat", "lon", "alt", "speed_mps", "fix"]
    assert float(rows[1][0]) == pytest.approx(-0.1) and float(rows[2][0]) == pytest.approx(0.0)
    assert rows[1][5] == "1" and 44 < float(rows[1][1]) < 45
    poses = list(csv.reader((tmp_path / "survey_poses.csv").read_text().splitlines()))
    assert poses[0] == ["frame", "time_s", "tx", "ty", "tz", "qx", "qy", "qz", "qw"] and len(poses) == 13
    assert float(poses[2][1]) == pytest.approx(1 / 30, abs=1e-6)


def test_cli_sim(tmp_path, capsys):
    from pose2rgbd.cli.main import main

    out = tmp_path / "sim"
    rc = main(["sim", "--out", str(out), "--size", "16", "--frames", "3", "--routes", "survey,orbit", "--no-bag",
               "--no-progress", "--seed", "2"])  # fmt: skip
    assert rc == 0
    assert len(Dataset(out / "dataset")) == 6
    assert "dataset" in capsys.readouterr().out
    assert main(["sim", "--out", str(out), "--routes", "nowhere", "--no-progress"]) == 2
