"""Recorder node logic: synchronization policies, drops, start/stop, pose composition."""

from __future__ import annotations

import numpy as np
import pytest

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry import PinholeCamera
from pose2rgbd.messages import (
    TypestoreFactory,
    camera_info,
    default_factory,
    image,
    navsatfix,
    new_typestore,
    odometry,
    register_custom_msgs,
)
from pose2rgbd.nodes import Recorder, RecorderConfig
from pose2rgbd.nodes.sync import ApproximateTimeSync, InterpolatingStream
from pose2rgbd.testing.flight_bag import DATUM

S = 1_000_000_000
MS = 1_000_000


def test_interpolating_stream_status() -> None:
    s = InterpolatingStream(horizon_ns=10 * S)
    assert s.status(5, S)[0] == "wait"
    s.add(0, "a")
    s.add(100 * MS, "b")
    s.add(900 * MS, "c")
    st, (v0, v1, a) = s.status(25 * MS, 200 * MS)
    assert st == "ready" and (v0, v1) == ("a", "b") and a == pytest.approx(0.25)
    assert s.status(100 * MS, 1)[1][0] == "b"  # exact stamp
    assert s.status(500 * MS, 200 * MS)[0] == "drop"  # 800 ms gap > max gap
    assert s.status(500 * MS, S)[0] == "ready"
    assert s.status(950 * MS, S)[0] == "wait"  # nothing after it yet
    assert s.status(-1, S)[0] == "drop"  # before the first sample


def test_approximate_time_sync_semantics() -> None:
    got: list[tuple[int, ...]] = []
    sync = ApproximateTimeSync(3, queue_size=3, slop_ns=50, callback=lambda *m: got.append(m))
    sync.add(0, 1000, 1000)
    sync.add(1, 1030, 1030)
    assert got == []  # third input missing
    sync.add(2, 1100, 1100)  # 100 from the image: beyond slop
    assert got == []
    sync.add(2, 1020, 1020)
    assert got == [(1000, 1030, 1020)]
    assert all(1000 not in q and 1030 not in q and 1020 not in q for q in sync.queues)
    # closest candidates first, spread must be below the slop
    sync.add(1, 2040, 2040)
    sync.add(1, 2010, 2010)
    sync.add(0, 2000, 2000)
    sync.add(2, 2005, 2005)
    assert got[-1] == (2000, 2010, 2005)
    # bounded queues: oldest dropped
    for k in range(5):
        sync.add(0, 10_000 + k * 1000, k)
    assert len(sync.queues[0]) == 3 and sync.dropped >= 2


def _feed_synthetic(rec: Recorder, ts: object, *, gps_gap_at: float | None = None) -> list:
    """10 Hz images, 10 Hz GPS, 50 Hz odometry, 1 s; the vehicle moves 1 m/s east at 10 m."""
    events = []
    cam = PinholeCamera.from_fov(8, 8, 90.0)
    for k in range(51):
        t = k * 20 * MS
        T = np.eye(4)
        T[:3, 3] = [t / S, 0.0, 10.0]
        events.append((t, 1, "odom", odometry(ts, t, "odom", "base_link", T)))
    for k in range(11):
        t = k * 100 * MS
        if gps_gap_at is not None and abs(t / S - gps_gap_at) < 0.25:
            continue
        lat, lon, alt = DATUM.from_enu(np.array([t / S, 0.0, 10.0]))
        events.append((t, 0, "gps", navsatfix(ts, t, "gps", float(lat), float(lon), float(alt))))
    for k in range(10):
        t = 50 * MS + k * 100 * MS
        events.append((t, 2, "info", camera_info(ts, t, "camera_optical_frame", cam)))
        events.append((t, 3, "image", image(ts, t, "cam", np.full((8, 8, 3), k, np.uint8), "rgb8")))
    out = []
    for t, _, kind, msg in sorted(events, key=lambda e: (e[0], e[1])):
        if kind == "odom":
            out += rec.on_odom(msg, t)
        elif kind == "gps":
            out += rec.on_gps(msg, t)
        elif kind == "info":
            rec.on_camera_info(msg)
        else:
            out += rec.on_image(msg, t)
    rec.finish()
    return out


def _recorder(**sync: object) -> tuple[Recorder, object]:
    ts = default_factory()
    cfg = RecorderConfig()
    cfg.mount.source = "config"
    cfg.mount.translation = [0.0, 0.0, -0.5]
    cfg.datum = f"{DATUM.lat_deg!r},{DATUM.lon_deg!r},{DATUM.alt_m!r}"
    for k, v in sync.items():
        setattr(cfg.sync, k, v)
    return Recorder(cfg, TypestoreFactory(register_custom_msgs(new_typestore("humble")))), ts


def test_interpolated_frames_and_poses() -> None:
    rec, ts = _recorder()
    out = _feed_synthetic(rec, ts)
    assert rec.counters["frames"] == 10 and len(out) == 10
    for i, (topic, msg) in enumerate(out):
        assert topic == "synced_frame"
        t = 0.05 + 0.1 * i
        T = np.eye(4)
        T[:3, 3] = [msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z]
        # camera 0.5 m below base_link (mount), at x = t (interpolated GPS between 10 Hz fixes)
        np.testing.assert_allclose(T[:3, 3], [t, 0.0, 9.5], atol=1e-3)
        assert msg.fix.latitude == pytest.approx(float(DATUM.from_enu(np.array([t, 0.0, 10.0]))[0]), abs=1e-9)
        assert msg.odom.pose.pose.position.x == pytest.approx(t, abs=1e-9)


def test_frames_without_gps_support_are_dropped_and_counted() -> None:
    rec, ts = _recorder(max_gap_s=0.15)
    _feed_synthetic(rec, ts, gps_gap_at=0.5)  # fixes at 0.3 .. 0.7 s missing: 0.2 -> 0.8 is a 0.6 s gap
    assert rec.counters["dropped_no_support"] == 6  # images at 0.25 .. 0.75 s
    assert rec.counters["frames"] == 4


def test_close_says_what_was_recorded_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """At the end (Ctrl-C of the live node, the bag's end) the recorder says in one line how many frames it wrote
    of the images it saw, and each kind of drop."""
    import logging

    rec, ts = _recorder(max_gap_s=0.15)
    _feed_synthetic(rec, ts, gps_gap_at=0.5)
    with caplog.at_level(logging.INFO):
        rec.close()
    assert "recorded 4 frames of 10 images (dropped_no_support 6" in caplog.text


def test_gps_and_odometry_without_a_camera_are_said_in_the_diagnostics_and_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The live recorder on a bag without a camera (or with topics.image wrong) said "recording, 0 frames" at level
    OK all along. GPS or odometry for NO_CAMERA_S without one image: WARN, naming the topic; at the end too."""
    import logging

    from pose2rgbd.nodes.recorder.node import NO_CAMERA_S

    rec, ts = _recorder()
    lat0, lon0, alt0 = DATUM.from_enu(np.zeros(3))
    rec.on_gps(navsatfix(ts, 1, "gps", float(lat0), float(lon0), float(alt0)), 0)  # the clock at 0: no start
    for k in range(1, 71):  # 7 s of 10 Hz GPS and odometry from 0.1 s, no image
        t = k * 100 * MS
        lat, lon, alt = DATUM.from_enu(np.array([t / S, 0.0, 10.0]))
        rec.on_gps(navsatfix(ts, t, "gps", float(lat), float(lon), float(alt)), t)
        T = np.eye(4)
        T[:3, 3] = [t / S, 0.0, 10.0]
        rec.on_odom(odometry(ts, t, "odom", "base_link", T), t)
        status = rec.diagnostics(t).status[0]
        quiet = t - 100 * MS < NO_CAMERA_S * S  # counted from the first message with the clock running
        assert (status.level == 0) == quiet, (t, status.message)
        assert ("no image on '/camera/image_raw' (Image)" in status.message) != quiet, status.message
    assert "71 GPS fixes and 70 odometry messages came" in status.message, status.message
    with caplog.at_level(logging.INFO):
        rec.close()
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("recorded 0 frames of 0 images")]
    assert len(said) == 1 and said[0].endswith(
        "; 71 GPS fixes and 70 odometry messages came, no image on '/camera/image_raw' (topics.image)"
    ), said
    # with images, nothing of it: the counters of the inputs are not drops
    rec, ts = _recorder()
    _feed_synthetic(rec, ts)
    assert "no image" not in rec.diagnostics(2 * S).status[0].message
    assert rec.counters["fixes"] == 11 and rec.counters["odometry"] == 51


def test_approximate_policy() -> None:
    rec, ts = _recorder(policy="approximate", slop_s=0.06)
    out = _feed_synthetic(rec, ts)
    assert rec.counters["frames"] == 10
    np.testing.assert_allclose(out[0][1].pose.pose.position.x, 0.0, atol=0.11)  # nearest, not interpolated


def test_start_stop_and_missing_mount() -> None:
    rec, ts = _recorder()
    rec.set_recording(False)
    assert _feed_synthetic(rec, ts) == []
    assert rec.counters["dropped_not_recording"] == 10
    assert rec.set_recording(True) == (True, "recording")
    cfg = RecorderConfig()
    cfg.mount.source = "tf_static"  # mount from /tf_static, never received
    rec2 = Recorder(cfg, TypestoreFactory(register_custom_msgs(new_typestore("humble"))))
    assert _feed_synthetic(rec2, ts) == []
    assert rec2.counters["dropped_no_mount"] == 10


def test_auto_mount_falls_back_to_the_configured_mount() -> None:
    ts = default_factory()
    cfg = RecorderConfig(datum=f"{DATUM.lat_deg!r},{DATUM.lon_deg!r},{DATUM.alt_m!r}")
    assert cfg.mount.source == "auto"  # the default, as convert's
    cfg.mount.translation = [0.0, 0.0, -0.5]
    rec = Recorder(cfg, TypestoreFactory(register_custom_msgs(new_typestore("humble"))))
    out = _feed_synthetic(rec, ts)  # no /tf_static: the configured mount is used
    assert rec.counters["frames"] == 10 and rec.counters["dropped_no_mount"] == 0
    assert rec.mount_source.startswith("configured mount.rpy_deg=[0.0, 0.0, 0.0]")
    assert out[0][1].pose.pose.position.z == pytest.approx(9.5, abs=1e-3)
    assert out[0][1].header.frame_id == rec.camera_frame != ""  # the images' frame_id (mount.camera_frame empty)


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        RecorderConfig(sync=RecorderConfig().sync.__class__(policy="exact"))
    with pytest.raises(ConfigError, match="size: expected WIDTHxHEIGHT"):
        RecorderConfig(size="10")
    with pytest.raises(ConfigError, match="datum: expected 'lat,lon,alt'"):
        RecorderConfig(datum="44.4,26.1")


def test_a_recorder_resuming_a_dataset_in_a_tf_frame_writes_in_that_frame() -> None:
    """A dataset converted into the robot's TF map keeps where the GPS's ENU frame lies in it (the datum's
    transform); frames recorded into it are placed in that world too, not in ENU (the odometry's rotation is taken
    in that frame: a robot's odom hangs from its map)."""
    from scipy.spatial.transform import Rotation

    rec, _ = _recorder()
    assert rec.datum is not None and rec.T_base_cam is not None
    lla = np.array([float(v) for v in DATUM.from_enu(np.array([3.0, 4.0, 10.0]))])
    q = np.array([0.0, 0.0, 0.0, 1.0])
    plain = rec.pose_at(lla, q)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", 40.0, degrees=True).as_matrix()
    T[:3, 3] = [100.0, -20.0, 1.0]
    rec.datum = rec.datum.with_world(T)
    moved = rec.pose_at(lla, q)
    base = moved @ np.linalg.inv(rec.T_base_cam)
    np.testing.assert_allclose(base[:3, 3], (T @ plain @ np.linalg.inv(rec.T_base_cam))[:3, 3], atol=1e-6)
    np.testing.assert_allclose(base[:3, :3], np.eye(3), atol=1e-9)  # the odometry's rotation, in the world
