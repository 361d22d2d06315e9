"""Offline runtime end to end on small synthetic bags: render (TF / topic), record, crash + resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.bags import open_bag
from pose2rgbd.dataset import Dataset
from pose2rgbd.errors import BagError, ConfigError
from pose2rgbd.geometry import pose_errors
from pose2rgbd.inference import EngineConfig, RenderEngine
from pose2rgbd.messages import camera_from_info, image_to_numpy, point_cloud2_fields, pose_to_matrix, stamp_to_ns
from pose2rgbd.nodes import RecorderConfig, RendererConfig
from pose2rgbd.runtime import run_recorder_bag, run_renderer_bag
from pose2rgbd.testing.flight_bag import T0_NS as T0
from pose2rgbd.testing.flight_bag import T_BASE_CAM, T_world_base, write_flight_bag
from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def flight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    d = tmp_path_factory.mktemp("flight")
    truth = write_flight_bag(d / "in", duration_s=3.0, size=64)
    return d / "in", truth


@pytest.fixture(scope="module")
def engine() -> RenderEngine:
    return RenderEngine(EngineConfig(warmup=0), make_ground_plane_checkpoint(64))


def _read(path: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    with open_bag(path) as r:
        for m in r.messages():
            out.setdefault(m.topic, []).append(m)
    return out


def test_render_bag_from_tf(flight, engine, tmp_path: Path) -> None:
    bag, _ = flight
    stats = run_renderer_bag(RendererConfig(rate_hz=10.0), bag, tmp_path / "out", engine=engine, namespace="p2r")
    msgs = _read(tmp_path / "out")
    n = stats.counters["frames"]
    assert n >= 29
    for topic, enc in (("/p2r/rgb/image_raw", "rgb8"), ("/p2r/depth/image_raw", "32FC1"),
                       ("/p2r/confidence/image_raw", "32FC1")):  # fmt: skip
        assert len(msgs[topic]) == n
        assert all(m.msg.encoding == enc and m.msg.header.frame_id == "camera_optical_frame" for m in msgs[topic])
    assert len(msgs["/p2r/camera_info"]) == n and len(msgs["/p2r/rgbd"]) == n
    assert len(msgs["/diagnostics"]) >= 2
    stamps = np.array([stamp_to_ns(m.msg.header.stamp) for m in msgs["/p2r/rgbd"]])
    assert np.all(np.diff(stamps) > 0)
    np.testing.assert_allclose(np.diff(stamps), 100_000_000, atol=20_000_000)  # 10 Hz, TF at 50 Hz
    assert np.all((stamps - T0) % 20_000_000 == 0)  # stamped with the TF data's time
    for m_info, m_depth, m_rgbd in zip(msgs["/p2r/camera_info"], msgs["/p2r/depth/image_raw"], msgs["/p2r/rgbd"]):
        info, depth, rgbd = m_info.msg, m_depth.msg, m_rgbd.msg
        assert stamp_to_ns(info.header.stamp) == stamp_to_ns(depth.header.stamp) == stamp_to_ns(rgbd.header.stamp)
        assert (info.width, info.height) == (depth.width, depth.height)
        assert camera_from_info(info) == engine.camera
        # the query pose is the TF camera pose at the stamp
        t = (stamp_to_ns(rgbd.header.stamp) - T0) / 1e9
        np.testing.assert_allclose(pose_to_matrix(rgbd.query_pose.pose), T_world_base(t)[0] @ T_BASE_CAM, atol=1e-6)
        assert m_rgbd.stamp_ns >= stamp_to_ns(rgbd.header.stamp)  # published after the pose existed
    # for planners: the organized cloud (optical frame, the depth back-projected) and the mono8 validity mask
    assert len(msgs["/p2r/depth/points"]) == len(msgs["/p2r/mask/image_raw"]) == n
    for m_cloud, m_mask, m_depth in zip(msgs["/p2r/depth/points"], msgs["/p2r/mask/image_raw"],
                                        msgs["/p2r/depth/image_raw"]):  # fmt: skip
        cloud, depth = m_cloud.msg, image_to_numpy(m_depth.msg)
        assert cloud.header.frame_id == "camera_optical_frame" and (cloud.height, cloud.width) == depth.shape
        assert stamp_to_ns(cloud.header.stamp) == stamp_to_ns(m_depth.msg.header.stamp)
        pts = point_cloud2_fields(cloud)
        ok = np.isfinite(depth)
        np.testing.assert_array_equal(pts["z"][ok], depth[ok])
        assert np.isnan(pts["z"][~ok]).all()
        np.testing.assert_array_equal(image_to_numpy(m_mask.msg) == 255, ok)


def test_render_bag_from_pose_topic_matches_ground_truth_depth(flight, engine, tmp_path: Path) -> None:
    bag, truth = flight
    cfg = RendererConfig(pose_source="topic", rate_hz=0.0)
    cfg.topics.pose = "/ground_truth/pose"
    run_renderer_bag(cfg, bag, tmp_path / "out", engine=engine)
    msgs = _read(tmp_path / "out")
    gt = {stamp_to_ns(m.msg.header.stamp): image_to_numpy(m.msg) for m in _read(bag)["/ground_truth/depth"]}
    rendered = msgs["/depth/image_raw"]
    assert len(rendered) == len(truth.camera_stamps_ns)
    for m in rendered:
        d = image_to_numpy(m.msg)
        g = gt[stamp_to_ns(m.msg.header.stamp)]
        both = np.isfinite(d) & np.isfinite(g)
        assert both.mean() > 0.9
        np.testing.assert_allclose(d[both], g[both], rtol=1e-3)


def test_render_bag_bad_inputs(flight, engine, tmp_path: Path) -> None:
    bag, _ = flight
    cfg = RendererConfig(camera_frame="no_such_frame")
    stats = run_renderer_bag(cfg, bag, tmp_path / "o1", engine=engine)
    assert stats.counters["frames"] == 0 and stats.counters["tf_failures"] > 0
    cfg = RendererConfig(pose_source="topic")
    cfg.topics.pose = "/missing"
    with pytest.raises(BagError, match=r"not in bag; the bag's topics of that type: /ground_truth/pose; give the one "
                       r"to use with --topics.pose TOPIC"):  # fmt: skip
        run_renderer_bag(cfg, bag, tmp_path / "o2", engine=engine)
    from pose2rgbd.runtime.offline import _topics_of_the_type

    with open_bag(bag) as r:  # the flight bag has no PoseWithCovarianceStamped
        assert _topics_of_the_type(r, ("geometry_msgs/msg/PoseWithCovarianceStamped",), "topics.pose") == (
            "the bag has no topic of that type"
        )


def test_record_names_the_bags_topics_of_the_type_and_the_flag(flight, tmp_path: Path) -> None:
    bag, _ = flight
    with open_bag(bag) as r:
        images = sorted(t for t, i in r.topics.items() if i.msgtype == "sensor_msgs/msg/Image")
        encodings = {t: next(iter(r.messages([t]))).msg.encoding for t in images}
    assert encodings == {"/camera/image_raw": "rgb8", "/ground_truth/depth": "32FC1"}
    cfg = _record_cfg(tmp_path / "ds")
    cfg.topics.image = "/front/image_raw"  # not in the bag
    # the camera input is offered the colour images, not the depth image (told apart by their encoding)
    with pytest.raises(BagError, match=r"not in bag; the bag's topics of that type: /camera/image_raw \(rgb8\); give "
                                       r"the one to use with --topics.image TOPIC"):  # fmt: skip
        run_recorder_bag(cfg, bag)
    cfg.topics.image = "/gps/fix"  # in the bag, of another type
    with pytest.raises(BagError, match=r"has type sensor_msgs/msg/NavSatFix, expected .*; the bag's topics of that "
                                       r"type: /camera/image_raw \(rgb8\);"):  # fmt: skip
        run_recorder_bag(cfg, bag)
    from pose2rgbd.runtime.offline import _topics_of_the_type

    with open_bag(bag) as r:  # a depth input is offered the depth image
        hint = _topics_of_the_type(r, ("sensor_msgs/msg/Image",), "topics.depth")
        assert hint.startswith("the bag's topics of that type: /ground_truth/depth (32FC1); give"), hint


def _record_cfg(dataset: Path | None) -> RecorderConfig:
    cfg = RecorderConfig()
    cfg.output.dataset = str(dataset) if dataset else ""
    return cfg


def test_record_bag_poses_match_ground_truth(flight, tmp_path: Path) -> None:
    bag, truth = flight
    cfg = _record_cfg(tmp_path / "ds")
    d = truth.datum
    cfg.datum = f"{d.lat_deg!r},{d.lon_deg!r},{d.alt_m!r}"
    stats = run_recorder_bag(cfg, bag, out_bag=tmp_path / "synced")
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == len(truth.camera_stamps_ns) == stats.counters["frames"]
    np.testing.assert_array_equal(ds.frames.stamp_ns, truth.camera_stamps_ns)
    dt, dr = pose_errors(ds.frames.T_world_cam, truth.T_world_cam)
    assert dt.max() < 0.01 and np.degrees(dr.max()) < 0.05
    assert ds.read_rgb(0).shape == (64, 64, 3) and ds.manifest.datum == d
    synced = _read(tmp_path / "synced")["/synced_frame"]
    assert len(synced) == len(ds)
    assert all(m.msg.image.encoding == "rgb8" and m.msg.camera_info.width == 64 for m in synced)


def test_record_compressed_with_first_fix_datum(tmp_path: Path) -> None:
    truth = write_flight_bag(tmp_path / "in", duration_s=1.0, size=32, compressed=True)
    cfg = _record_cfg(tmp_path / "ds")
    cfg.topics.image = "/camera/image_raw/compressed"
    run_recorder_bag(cfg, tmp_path / "in")
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == len(truth.camera_stamps_ns)
    # ENU about the first fix (base_link at t = 0): positions are the truth minus that origin
    origin = T_world_base(0.0)[0, :3, 3]
    np.testing.assert_allclose(ds.frames.translation, truth.T_world_cam[:, :3, 3] - origin, atol=0.01)


def test_record_needs_an_output(flight) -> None:
    with pytest.raises(ConfigError, match="nothing to record"):
        run_recorder_bag(_record_cfg(None), flight[0])


def test_recorder_killed_mid_run_leaves_readable_dataset_that_resumes(flight, tmp_path: Path) -> None:
    bag, truth = flight
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "pose2rgbd", "record", "bag", "--bag", str(bag), "--out", str(out), "--rate", "1.0"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        frames = out / "frames.csv"
        while time.monotonic() < deadline:
            if frames.exists() and frames.read_text().count("\n") >= 6:  # header + >= 5 frames
                break
            if proc.poll() is not None:
                pytest.fail(f"recorder exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    partial = Dataset(out)  # readable as is
    n_partial = len(partial)
    assert 5 <= n_partial < len(truth.camera_stamps_ns)
    # running again on the same output resumes after the last recorded frame
    stats = run_recorder_bag(_record_cfg(out), bag)
    assert stats.counters["skipped_already_recorded"] >= n_partial
    full = Dataset(out)
    np.testing.assert_array_equal(full.frames.stamp_ns, truth.camera_stamps_ns)
    np.testing.assert_array_equal(full.frames.index, np.arange(len(full)))
    dt, _ = pose_errors(full.frames.T_world_cam[:n_partial], partial.frames.T_world_cam)
    assert dt.max() < 1e-9  # same datum after the resume


def _failing_after(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """The input bag's messages stop with a read error (a corrupt chunk) after ``n`` of them."""
    from pose2rgbd.bags.reader import BagReader

    read = BagReader.messages

    def messages(self, *a, **k):  # type: ignore[no-untyped-def]
        for i, m in enumerate(read(self, *a, **k)):
            if i == n:
                raise BagError(f"{self.path}: cannot read messages from x.mcap (corrupt or truncated?)")
            yield m

    monkeypatch.setattr(BagReader, "messages", messages)


def test_record_stopped_by_a_read_error_keeps_dataset_and_bag_and_says_so(
    flight, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pose2rgbd.cli.main import main

    bag, truth = flight
    _failing_after(monkeypatch, 200)
    ds, synced = tmp_path / "ds", tmp_path / "synced"
    rc = main(["record", "bag", str(bag), "--out", str(ds), "--out-bag", str(synced)])
    err = capsys.readouterr().err
    assert rc == 2 and "corrupt or truncated" in err
    n = len(Dataset(ds))
    assert 0 < n < len(truth.camera_stamps_ns)  # the frames up to the error, readable
    kept = _read(synced)["/synced_frame"]  # the bag of the same frames, finished
    assert [stamp_to_ns(m.msg.header.stamp) for m in kept] == list(Dataset(ds).frames.stamp_ns)
    # the message names both, with what to do
    assert f"kept {synced} (bag, " in err and "up to the error" in err
    assert f"{ds} (dataset, {n} frames, {n} new; its frames up to the error are whole" in err
    assert "with a new output bag" in err
    # resumed into a new bag once the input reads: the dataset whole, the new bag starting after the kept frames
    monkeypatch.undo()
    stats = run_recorder_bag(_record_cfg(ds), bag, out_bag=tmp_path / "rest")
    np.testing.assert_array_equal(Dataset(ds).frames.stamp_ns, truth.camera_stamps_ns)
    assert stats.dataset_frames_before == n
    rest = _read(tmp_path / "rest")["/synced_frame"]
    assert len(kept) + len(rest) == len(truth.camera_stamps_ns)


def test_a_read_error_before_the_first_new_frame_keeps_nothing_new(
    flight, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pose2rgbd.atomic import take_kept

    bag, _ = flight
    _failing_after(monkeypatch, 0)
    with pytest.raises(BagError):
        run_recorder_bag(_record_cfg(tmp_path / "ds"), bag, out_bag=tmp_path / "synced")
    assert take_kept() == [] and not (tmp_path / "synced").exists()


def test_record_cli_says_a_resumed_recordings_bag_starts_after_the_kept_frames(
    flight, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from pose2rgbd.cli.main import main

    bag, _ = flight
    ds = tmp_path / "ds"
    run_recorder_bag(_record_cfg(ds), bag)  # a dataset recorded without a bag (or a killed run's, its bag lost)
    n = len(Dataset(ds))
    assert main(["record", "bag", str(bag), "--out", str(ds), "--out-bag", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert f"starts after the dataset's first {n} frames" in out
    assert f"holds {n} frames already" in caplog.text


def test_render_overwrite_replaces_an_earlier_render_but_never_a_recording(flight, engine, tmp_path: Path) -> None:
    import shutil

    from pose2rgbd.errors import OutputError

    bag, _ = flight
    recording = tmp_path / "recording"  # a raw recording given as --out by a typo
    shutil.copytree(bag, recording)
    before = sorted((p.name, p.stat().st_size) for p in recording.iterdir())
    cfg = RendererConfig(rate_hz=5.0)
    with pytest.raises(OutputError, match=r"not one the pose2rgbd_renderer node writes: it holds .*NavSatFix.*no "
                                          r"pose2rgbd\.node mark .*\(a recording\?.*nothing was written"):  # fmt: skip
        run_renderer_bag(cfg, bag, recording, engine=engine, overwrite=True)
    assert sorted((p.name, p.stat().st_size) for p in recording.iterdir()) == before
    out = tmp_path / "render"
    n = run_renderer_bag(cfg, bag, out, engine=engine).counters["frames"]
    assert run_renderer_bag(cfg, bag, out, engine=engine, overwrite=True).counters["frames"] == n  # replaced
    from pose2rgbd.bags import BagWriter

    camera = tmp_path / "camera"  # a camera's recording: types the node publishes, under a name none of its has
    with BagWriter(camera) as w:
        w.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
    with pytest.raises(OutputError, match=r"it holds /camera/image_raw \(sensor_msgs/msg/Image\)"):
        run_renderer_bag(cfg, bag, camera, engine=engine, overwrite=True)
    (out / "metadata.yaml").write_text("rosbag2_bagfile_information: [damaged")
    with pytest.raises(OutputError, match="cannot be read"):
        run_renderer_bag(cfg, bag, out, engine=engine, overwrite=True)


def _files(path: Path) -> list[tuple[str, bytes]]:
    return sorted((p.name, p.read_bytes()) for p in path.iterdir())


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_overwrite_replaces_only_a_bag_with_the_nodes_mark(flight, engine, tmp_path: Path, storage: str) -> None:
    from pose2rgbd.bags import BagWriter
    from pose2rgbd.errors import OutputError
    from pose2rgbd.messages import image
    from pose2rgbd.runtime.offline import NODE_MARK

    bag, _ = flight
    cfg = RendererConfig(rate_hz=2.0)
    # a camera's recording laid out like the node's output: Images alone, under a name that ends like its rgb topic
    # (rgb/image_raw, relative: under any namespace); its topics cannot tell it from an earlier render
    camera = tmp_path / "camera"
    with BagWriter(camera, storage=storage) as w:
        for k in range(3):
            frame = image(w.factory, T0 + k, "cam", np.zeros((4, 4, 3), np.uint8), "rgb8")
            w.write("/camera/rgb/image_raw", T0 + k, frame)
    before = _files(camera)
    with pytest.raises(OutputError) as ei:
        run_renderer_bag(cfg, bag, camera, engine=engine, overwrite=True, storage=storage)
    msg = str(ei.value)
    assert msg.startswith(f"{camera} is a bag, but not one the pose2rgbd_renderer node writes: it holds "
                          "/camera/rgb/image_raw (sensor_msgs/msg/Image), and its metadata.yaml has no pose2rgbd.node "
                          "mark in custom_data"), msg  # fmt: skip
    assert "(a recording?" in msg and f"move {camera} away yourself (nothing was written)" in msg, msg
    assert _files(camera) == before  # the recording byte-identical
    # an earlier output of the node, written by the runtime, carries the mark (in either storage) and is replaced
    out = tmp_path / "render"
    n = run_renderer_bag(cfg, bag, out, engine=engine, storage=storage).counters["frames"]
    with open_bag(out) as r:
        assert r.storage == storage and r.custom_data == {NODE_MARK: "pose2rgbd_renderer"}
    assert n > 0 and run_renderer_bag(cfg, bag, out, engine=engine, overwrite=True).counters["frames"] == n
    with open_bag(out) as r:  # replaced (by the default storage), marked again
        assert r.storage == "mcap" and r.custom_data == {NODE_MARK: "pose2rgbd_renderer"}


def test_overwrite_refuses_an_output_of_another_node(flight, engine, tmp_path: Path) -> None:
    from pose2rgbd.errors import OutputError
    from pose2rgbd.runtime.offline import NODE_MARK

    bag, _ = flight
    synced = tmp_path / "synced"
    run_recorder_bag(_record_cfg(None), bag, out_bag=synced)  # the record node's output bag, marked as its own
    with open_bag(synced) as r:
        assert r.custom_data == {NODE_MARK: "pose2rgbd_recorder"}
    before = _files(synced)
    other = r"not one the pose2rgbd_renderer node writes: it holds /diagnostics .*its metadata\.yaml marks it as an "
    other += r"output of the pose2rgbd_recorder node \(pose2rgbd\.node: pose2rgbd_recorder\); .*nothing was written"
    with pytest.raises(OutputError, match=other):
        run_renderer_bag(RendererConfig(rate_hz=2.0), bag, synced, engine=engine, overwrite=True)
    assert _files(synced) == before


def test_render_bag_without_tf_says_what_the_bag_has_and_the_next_step(shared_data: Path, engine, tmp_path) -> None:
    husky = shared_data / "husky-gps-odom-imu-bag" / "husky_test1_rosbag2_mcap"  # odometry, GPS, IMU; no TF
    with pytest.raises(BagError) as ei:
        run_renderer_bag(RendererConfig(), husky, tmp_path / "out", engine=engine)
    msg = str(ei.value)
    assert "neither /tf nor /tf_static; it has /husky_velocity_controller/odom (nav_msgs/msg/Odometry)" in msg
    assert "publishes as TF (odom -> base_link)" in msg and "Record the bag with /tf and /tf_static" in msg
    assert "--pose-source topic --pose-topic TOPIC" in msg
    assert not (tmp_path / "out").exists()


def test_record_bag_of_gps_and_odometry_without_a_camera_names_what_can_be_done(shared_data: Path, tmp_path) -> None:
    """The Husky bag (GPS, odometry, IMU; no camera) given to the recorder: the error names `convert gps-odom`, as
    `convert bag` does, not only the missing image topic."""
    husky = shared_data / "husky-gps-odom-imu-bag" / "husky_test1_rosbag2_mcap"
    with pytest.raises(BagError) as ei:
        run_recorder_bag(_record_cfg(tmp_path / "ds"), husky)
    msg = str(ei.value)
    assert "topic '/camera/image_raw'" in msg and "not in bag" in msg
    assert f"it has GPS and odometry without a camera; `pose2rgbd convert gps-odom {husky} --report DIR`" in msg
    assert not (tmp_path / "ds").exists()


def test_an_existing_or_file_named_output_bag_is_refused_before_the_model_loads(flight, tmp_path: Path) -> None:
    from pose2rgbd.bags import BagWriter
    from pose2rgbd.errors import OutputExistsError

    bag, _ = flight
    cfg = RendererConfig()
    cfg.engine.checkpoint = str(tmp_path / "not_loaded.pt")  # loading it would fail: the refusals come first
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "metadata.yaml").write_text("x")
    with pytest.raises(OutputExistsError, match="pass --overwrite to replace it"):
        run_renderer_bag(cfg, bag, tmp_path / "earlier")
    for name in ("out.mcap", "out.db3", "out.bag"):
        with pytest.raises(BagError, match=r"is a rosbag2 folder .* name the folder without \.\w+, e\.g\. .*out \("):
            run_renderer_bag(cfg, bag, tmp_path / name)
        with pytest.raises(BagError, match="rosbag2 folder"):
            BagWriter(tmp_path / name)
        assert not (tmp_path / name).exists()


def test_a_read_error_after_only_already_recorded_frames_keeps_no_bag(
    flight, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resumed over frames already in the dataset, the node publishes only its diagnostics before the error: no
    bag of them is kept, nothing is noted."""
    from pose2rgbd.atomic import take_kept

    bag, truth = flight
    ds = tmp_path / "ds"
    run_recorder_bag(_record_cfg(ds), bag)
    _failing_after(monkeypatch, 150)  # past 1 s of bag time: the diagnostics timer has fired
    with pytest.raises(BagError):
        run_recorder_bag(_record_cfg(ds), bag, out_bag=tmp_path / "synced")
    assert take_kept() == [] and not (tmp_path / "synced").exists()
    assert len(Dataset(ds)) == len(truth.camera_stamps_ns)


def test_a_bug_partway_discards_the_bag_and_notes_nothing(
    flight, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pose2rgbd.atomic import take_kept
    from pose2rgbd.bags.reader import BagReader

    bag, _ = flight
    read = BagReader.messages

    def messages(self, *a, **k):  # type: ignore[no-untyped-def]
        for i, m in enumerate(read(self, *a, **k)):
            if i == 200:
                raise RuntimeError("a bug")
            yield m

    monkeypatch.setattr(BagReader, "messages", messages)
    with pytest.raises(RuntimeError, match="a bug"):
        run_recorder_bag(_record_cfg(tmp_path / "ds"), bag, out_bag=tmp_path / "synced")
    assert take_kept() == [] and not (tmp_path / "synced").exists()


def test_a_bag_whose_finishing_failed_is_not_said_kept(
    flight, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    import pose2rgbd.bags.writer as writer_mod
    from pose2rgbd.cli.main import main

    bag, _ = flight

    def no_space(*_a, **_k):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_mod, "swap_in", no_space)
    ds, synced = tmp_path / "ds", tmp_path / "synced"
    assert main(["record", "bag", str(bag), "--out", str(ds), "--out-bag", str(synced)]) == 2
    err = capsys.readouterr().err
    assert not synced.exists() and f"kept {synced}" not in err and str(synced) + " (bag" not in err, err
    assert f"{ds} (dataset, " in err  # the dataset's frames are whole and said so


def test_record_without_tf_static_names_the_mount_flags(tmp_path: Path) -> None:
    write_flight_bag(tmp_path / "in", duration_s=1.0, size=32, static_tf=False)
    cfg = _record_cfg(tmp_path / "ds")
    cfg.mount.source = "tf_static"
    with pytest.raises(BagError) as ei:
        run_recorder_bag(cfg, tmp_path / "in")
    msg = str(ei.value)
    assert "Record /tf_static with the bag, or give the camera's mount on base_link with --mount config" in msg
    assert "odometry" not in msg  # no pose topic stands in for a mount


def test_convert_finds_topics_named_without_their_leading_slash(flight) -> None:
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.bag import BagTopics, find_image_topic

    bag, _ = flight
    cfg = ConvertConfig()
    cfg.topics.image, cfg.topics.gps, cfg.topics.odom, cfg.topics.depth = "camera/image_raw", "gps/fix", "odom", ""
    with open_bag(bag) as r:
        assert find_image_topic(r, "camera/image_raw") == "/camera/image_raw"
        t = BagTopics.choose(r, cfg)
        assert (t.image, t.gps, t.odom) == ("/camera/image_raw", "/gps/fix", "/odom")
        cfg.topics.depth = "ground_truth/depth"
        assert BagTopics.choose(r, cfg).depth == "/ground_truth/depth"
        # a camera topic that is not there: the bag's camera topics named, with the flag
        with pytest.raises(BagError, match=r"image topic '/camera/img' is not in the bag; its camera topics: "
                           r"/camera/image_raw \(give one with --image-topic\)"):  # fmt: skip
            find_image_topic(r, "/camera/img")


def test_the_demo_sets_aside_an_earlier_versions_render_and_nothing_else(flight, engine, tmp_path: Path) -> None:
    """The README's demo renders into OUT/rendered_orbit with --overwrite; an earlier version's demo left one there
    without the node's mark, which the runtime now refuses. The demo renames exactly such a bag aside (kept) and
    renders; a bag holding anything the render node does not write, or a marked one, is left to the runtime."""
    import yaml

    from pose2rgbd.bags import BagWriter
    from pose2rgbd.cli.demo import set_aside_an_earlier_demos_render
    from pose2rgbd.messages import image

    bag, _ = flight
    cfg = RendererConfig(rate_hz=2.0)
    out = tmp_path / "rendered_orbit"
    run_renderer_bag(cfg, bag, out, engine=engine)
    assert set_aside_an_earlier_demos_render(out, cfg) is None  # marked: replaced by the runtime as usual
    meta = yaml.safe_load((out / "metadata.yaml").read_text())
    meta["rosbag2_bagfile_information"].pop("custom_data", None)  # as an earlier version wrote it
    (out / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    before = _files(out)
    aside = set_aside_an_earlier_demos_render(out, cfg)
    assert aside == tmp_path / "rendered_orbit.before-mark" and not out.exists() and _files(aside) == before
    assert run_renderer_bag(cfg, bag, out, engine=engine, overwrite=True).counters["frames"] > 0
    # a camera's recording at that name: not the demo's, left as it is (the runtime refuses it with its message)
    camera = tmp_path / "camera"
    with BagWriter(camera) as w:
        w.write("/camera/rgb/image_raw", T0, image(w.factory, T0, "cam", np.zeros((4, 4, 3), np.uint8), "rgb8"))
    before = _files(camera)
    assert set_aside_an_earlier_demos_render(camera, cfg) is None and _files(camera) == before


def test_a_camera_info_logged_at_its_images_instant_is_given_before_it() -> None:
    """A bag holding an image and then its CameraInfo at one log time (the simulator's bags) was replayed in that
    order: the localize node took every first image as one before any CameraInfo. Messages of one instant are
    replayed with the CameraInfo first; nothing else changes order."""
    from pose2rgbd.bags import BagMessage
    from pose2rgbd.runtime.offline import camera_info_first

    info, img, fix = "sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/Image", "sensor_msgs/msg/NavSatFix"
    msgs = [BagMessage("/fix", 5, "f0", fix), BagMessage("/img", 10, "i1", img), BagMessage("/fix", 10, "f1", fix),
            BagMessage("/info", 10, "c1", info), BagMessage("/img", 20, "i2", img), BagMessage("/info", 21, "c2", info),
            BagMessage("/img", 30, "i3", img)]  # fmt: skip
    assert [m.msg for m in camera_info_first(msgs)] == ["f0", "c1", "i1", "f1", "i2", "c2", "i3"]
    assert list(camera_info_first([])) == []
