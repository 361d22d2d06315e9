"""Renderer node logic at the message level: outputs, bad input, TF failures, pose floods, the service."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.config import describe
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.tf_buffer import LookupException, TFBuffer
from pose2rgbd.inference import EngineConfig, RenderEngine
from pose2rgbd.messages import (
    TypestoreFactory,
    camera_from_info,
    default_factory,
    image_to_numpy,
    new_typestore,
    pack_rgb,
    point_cloud2_fields,
    pose_stamped,
    pose_to_matrix,
    register_custom_msgs,
    stamp_to_ns,
)
from pose2rgbd.nodes import Renderer, RendererConfig
from pose2rgbd.testing.ground_plane import look_down_pose, make_ground_plane_checkpoint

S = 1_000_000_000
F = default_factory()


@pytest.fixture(scope="module")
def engine() -> RenderEngine:
    return RenderEngine(EngineConfig(warmup=0), make_ground_plane_checkpoint(32))


@pytest.fixture(scope="module")
def factory() -> TypestoreFactory:
    return TypestoreFactory(register_custom_msgs(new_typestore("humble")))


def make(engine: RenderEngine, factory: TypestoreFactory, **kw: object) -> Renderer:
    cfg = RendererConfig(**kw)  # type: ignore[arg-type]
    return Renderer(cfg, engine, factory)


def test_tf_tick_outputs(engine: RenderEngine, factory: TypestoreFactory) -> None:
    r = make(engine, factory)
    tf = TFBuffer()
    T = look_down_pose(3.0, 4.0, 12.0)
    tf.set_transform("map", "camera_optical_frame", 5 * S, T[:3, 3], [1.0, 0.0, 0.0, 0.0])
    out = dict(r.tick(5 * S + 10_000_000, tf.lookup_transform))
    assert set(out) == {
        "rgb/image_raw", "depth/image_raw", "confidence/image_raw", "camera_info", "rgbd", "depth/points",
        "mask/image_raw",
    }  # fmt: skip
    rgb, depth, info, rgbd = out["rgb/image_raw"], out["depth/image_raw"], out["camera_info"], out["rgbd"]
    assert rgb.encoding == "rgb8" and depth.encoding == "32FC1" and out["confidence/image_raw"].encoding == "32FC1"
    for m in (rgb, depth, info, rgbd):
        assert stamp_to_ns(m.header.stamp) == 5 * S  # the pose's stamp, not the tick time
        assert m.header.frame_id == "camera_optical_frame"
    assert (info.width, info.height) == (rgb.width, rgb.height) == (32, 32)
    assert camera_from_info(info) == engine.camera
    np.testing.assert_allclose(image_to_numpy(depth), 12.0, rtol=1e-4)
    np.testing.assert_allclose(pose_to_matrix(rgbd.query_pose.pose), T, atol=1e-9)
    assert rgbd.query_pose.header.frame_id == "map" and not rgbd.out_of_bounds
    # messages serialize with the registered custom types
    ts = factory.typestore
    back = ts.deserialize_cdr(ts.serialize_cdr(rgbd, "pose2rgbd/msg/RGBD"), "pose2rgbd/msg/RGBD")
    assert back.depth.height == 32
    # the same TF stamp is not rendered twice
    assert r.tick(5 * S + 20_000_000, tf.lookup_transform) == []


def _tilted_pose(x: float, y: float, z: float, pitch_deg: float) -> np.ndarray:
    """A camera above the ground plane tilted ``pitch_deg`` up from straight down: the horizon is in view, so the
    top rows see sky (+inf depth: no point) and the rest the ground at varying depths."""
    T = look_down_pose(x, y, z, yaw=0.2)
    a = np.deg2rad(pitch_deg)
    R_tilt = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])
    T[:3, :3] = T[:3, :3] @ R_tilt  # about the optical x axis
    return T


@pytest.mark.parametrize("stride", [1, 3])
def test_point_cloud_back_projects_to_the_depth_image_and_the_mask_matches(
    engine: RenderEngine, factory: TypestoreFactory, stride: int
) -> None:
    """Every point of the organized cloud is the depth pixel it came from, back-projected: x = (u - cx) z / fx,
    y = (v - cy) z / fy, z = depth; NaN exactly where the depth is invalid (sky above the horizon, beyond
    max_range), the mask 255 exactly where a point is; the packed colour is the rgb image's."""
    r = make(engine, factory, pose_source="topic", rate_hz=0.0)
    r.cfg.cloud.stride = stride
    r.cfg.cloud.max_range_m = 30.0
    out = dict(r.on_pose(pose_stamped(F, S, "map", _tilted_pose(1.0, 2.0, 12.0, 60.0)), S))
    cloud, mask_msg = out["depth/points"], out["mask/image_raw"]
    depth = image_to_numpy(out["depth/image_raw"])
    rgb = image_to_numpy(out["rgb/image_raw"])
    cam = engine.camera
    assert cloud.header.frame_id == mask_msg.header.frame_id == "camera_optical_frame"
    assert stamp_to_ns(cloud.header.stamp) == S and not cloud.is_dense
    n = -(-cam.width // stride)
    assert (cloud.height, cloud.width) == (n, n) and cloud.point_step == 16 and cloud.row_step == 16 * n
    assert [fd.name for fd in cloud.fields] == ["x", "y", "z", "rgb"]
    # serialized and read back, as a subscriber gets it
    ts = factory.typestore
    cloud = ts.deserialize_cdr(ts.serialize_cdr(cloud, "sensor_msgs/msg/PointCloud2"), "sensor_msgs/msg/PointCloud2")
    pts = point_cloud2_fields(cloud)
    v, u = np.mgrid[0 : cam.height : stride, 0 : cam.width : stride].astype(np.float64)
    z = depth[::stride, ::stride].astype(np.float64)
    ok = np.isfinite(z) & (z > 0) & (z <= 30.0)
    assert 0.2 < ok.mean() < 0.9  # sky, far ground and near ground all in view
    assert np.isinf(z).any() and (np.isfinite(z) & (z > 30.0)).any()
    np.testing.assert_array_equal(pts["z"][ok], depth[::stride, ::stride][ok])  # the depth itself, bit for bit
    np.testing.assert_allclose(pts["x"][ok], ((u - cam.cx) * z / cam.fx)[ok], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(pts["y"][ok], ((v - cam.cy) * z / cam.fy)[ok], rtol=1e-6, atol=1e-6)
    for k in ("x", "y", "z"):
        assert np.isnan(pts[k][~ok]).all(), k
    # projecting the points lands on their own pixel
    uv, _ = cam.project(np.stack([pts["x"], pts["y"], pts["z"]], axis=-1)[ok].astype(np.float64))
    np.testing.assert_allclose(uv, np.stack([u[ok], v[ok]], axis=-1), atol=1e-3)
    packed = pts["rgb"].view(np.uint32)
    np.testing.assert_array_equal(packed, pack_rgb(rgb[::stride, ::stride]).view(np.uint32))
    np.testing.assert_array_equal((packed >> 16) & 255, rgb[::stride, ::stride, 0])
    # the mask: full resolution, the same validity rule
    mask = image_to_numpy(mask_msg)
    assert mask_msg.encoding == "mono8" and mask.shape == (cam.height, cam.width)
    full_ok = np.isfinite(depth) & (depth > 0) & (depth <= 30.0)
    np.testing.assert_array_equal(mask, np.where(full_ok, 255, 0))


def test_planner_outputs_follow_their_settings(engine: RenderEngine, factory: TypestoreFactory) -> None:
    r = make(engine, factory, pose_source="topic", rate_hz=0.0)
    assert r.on_parameter_change("cloud.colour", False)[0]
    assert r.on_parameter_change("publish.mask", False)[0]
    out = dict(r.on_pose(pose_stamped(F, S, "map", look_down_pose(0, 0, 10)), S))
    assert "mask/image_raw" not in out
    cloud = out["depth/points"]
    assert [fd.name for fd in cloud.fields] == ["x", "y", "z"] and cloud.point_step == 12 and cloud.is_dense
    np.testing.assert_allclose(point_cloud2_fields(cloud)["z"], 10.0, rtol=1e-5)
    assert r.on_parameter_change("cloud.min_confidence", 0.5)[0]
    assert not r.on_parameter_change("cloud.stride", 0)[0]  # range 1..64
    assert r.on_parameter_change("publish.points", False)[0]
    out = dict(r.on_pose(pose_stamped(F, 2 * S, "map", look_down_pose(0, 0, 10)), 2 * S))
    assert "depth/points" not in out and "depth/image_raw" in out


def test_missing_and_stale_tf_throttled(engine: RenderEngine, factory: TypestoreFactory, caplog) -> None:
    r = make(engine, factory, warn_throttle_s=5.0, max_pose_age_s=0.5)

    def missing(target: str, source: str, t: int) -> tuple[np.ndarray, int]:
        raise LookupException('"camera_optical_frame" passed to lookupTransform argument source_frame does not exist.')

    with caplog.at_level(logging.WARNING, logger="pose2rgbd.renderer"):
        for k in range(100):  # 10 s at 10 Hz
            assert r.tick(k * S // 10, missing) == []
    warnings = [rec for rec in caplog.records if "no transform" in rec.getMessage()]
    assert len(warnings) == 2  # t = 0 and t = 5 s
    assert "suppressed" in warnings[1].getMessage()
    assert r.counters["tf_failures"] == 100
    tf = TFBuffer()
    # stamped 1 ns (stamp 0 is a /tf_static chain's: current at every time, test_a_camera_fixed_on_tf_static_...)
    tf.set_transform("map", "camera_optical_frame", 1, [0, 0, 10], [1.0, 0, 0, 0])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.renderer"):
        assert r.tick(2 * S, tf.lookup_transform) == []  # TF 2 s old: stale
    assert r.counters["stale_poses"] == 1 and "old" in caplog.text


def test_nan_and_wrong_frame_poses_rejected(engine: RenderEngine, factory: TypestoreFactory, caplog) -> None:
    r = make(engine, factory, pose_source="topic", rate_hz=0.0)
    bad = pose_stamped(F, S, "map", look_down_pose(0, 0, 10))
    bad.pose.position.x = float("nan")
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.renderer"):
        assert r.on_pose(bad, S) == []
    assert "NaN" in caplog.text
    wrong = pose_stamped(F, S, "odom", look_down_pose(0, 0, 10))
    assert r.on_pose(wrong, S) == []
    assert r.counters["rejected_poses"] == 2 and r.counters["frames"] == 0
    good = pose_stamped(F, S, "map", look_down_pose(0, 0, 10))
    assert len(r.on_pose(good, S)) == 7  # rate 0: rendered at once


def test_pose_flood_keeps_latest_only(engine: RenderEngine, factory: TypestoreFactory) -> None:
    r = make(engine, factory, pose_source="topic", rate_hz=10.0)
    calls = {"n": 0}
    orig = engine.render_lookahead

    def counting(T: np.ndarray, stamp: int):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return orig(T, stamp)

    engine.render_lookahead = counting  # type: ignore[method-assign]
    try:
        for k in range(1000):  # 1 kHz for one second between two ticks
            assert (
                r.on_pose(pose_stamped(F, S + k * 1_000_000, "map", look_down_pose(k * 0.01, 0, 10)), S + k * 1_000_000)
                == []
            )
        out = dict(r.tick(2 * S - 500_000_000))
    finally:
        del engine.render_lookahead
    assert calls["n"] == 1  # one render for the whole flood
    assert r.counters["superseded_poses"] == 999
    assert stamp_to_ns(out["rgbd"].header.stamp) == S + 999 * 1_000_000
    np.testing.assert_allclose(pose_to_matrix(out["rgbd"].query_pose.pose)[0, 3], 9.99)
    assert r.tick(2 * S) == []  # nothing pending any more


def test_render_at_pose_service(engine: RenderEngine, factory: TypestoreFactory) -> None:
    r = make(engine, factory)

    class Req:
        pose = pose_stamped(F, 3 * S, "map", look_down_pose(1, 1, 40))

    class Resp:
        success = False
        message = ""
        rgbd = None

    resp = r.render_at_pose(Req(), Resp(), 4 * S)
    assert resp.success and resp.message == "ok"
    assert stamp_to_ns(resp.rgbd.header.stamp) == 3 * S
    np.testing.assert_allclose(image_to_numpy(resp.rgbd.depth), 40.0, rtol=1e-4)
    Req.pose.pose.orientation.w = float("nan")
    resp = r.render_at_pose(Req(), Resp(), 4 * S)
    assert not resp.success and "NaN" in resp.message
    oob = type("R", (), {"pose": pose_stamped(F, 3 * S, "map", look_down_pose(500, 0, 40))})()
    assert "out of bounds" in r.render_at_pose(oob, Resp(), 4 * S).message


def test_diagnostics_report_latency_and_oob(
    engine: RenderEngine, factory: TypestoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    r = make(engine, factory, pose_source="topic", rate_hz=0.0)
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.renderer"):
        r.on_pose(pose_stamped(F, S, "map", look_down_pose(500, 0, 10)), S)
    # the warning names the world frame as a possible cause (and, for a checkpoint with training cameras, the
    # distance to the nearest: this one has none)
    said = [m.getMessage() for m in caplog.records if "outside the training poses" in m.getMessage()]
    assert len(said) == 1 and "'map' in TF may not be where the model's training poses are" in said[0], said
    assert ("from the nearest training camera" in said[0]) == (engine.coverage(look_down_pose(500, 0, 10)[None])[0]
                                                             is not None)  # fmt: skip
    d = r.diagnostics(2 * S)
    st = d.status[0]
    values = {kv.key: kv.value for kv in st.values}
    assert st.level == 1 and "out of the training bounds" in st.message
    assert float(values["latency_p99_ms"]) > 0 and values["out_of_bounds"] == "1"


def test_diagnostics_warn_when_renders_are_slower_than_the_rate(
    engine: RenderEngine, factory: TypestoreFactory
) -> None:
    """A node whose renders take longer than the time between frames says so, with the rate it really reaches;
    not before it has rendered enough frames to know, and not when the renders keep up."""
    from pose2rgbd.nodes.renderer import SLOW_AFTER_FRAMES

    def status(r: Renderer) -> tuple[int, str]:
        st = r.diagnostics(2 * S).status[0]
        return st.level, st.message

    r = make(engine, factory, rate_hz=30.0)
    for n in range(SLOW_AFTER_FRAMES):
        r.latency.add(45.0)  # 45 ms per render against 33.3 ms between frames at 30 Hz
        r.count("frames")
        if n + 1 < SLOW_AFTER_FRAMES:
            assert "longer than" not in status(r)[1]
    level, text = status(r)
    assert level == 1 and "renders take 45.0 ms (median), longer than the 33.3 ms between frames" in text
    assert "about 22.2 Hz reach the topics" in text
    fast = make(engine, factory, rate_hz=10.0)
    for _ in range(SLOW_AFTER_FRAMES):
        fast.latency.add(45.0)
        fast.count("frames")
    assert status(fast) == (0, "rendering")
    # fast renders that reach the topics at 2 Hz of 10 (poses late, TF starved): said, with the counters
    now = time.monotonic()
    fast._published_s.extend(now - 0.5 * k for k in reversed(range(30)))
    fast.counters["stale_poses"] = 7
    level, text = status(fast)
    assert level == 1 and "publishing 2.0 Hz of rate_hz 10 (the latest 30 renders)" in text and "7 stale" in text
    assert any(kv.key == "output_hz" and kv.value == "2.00" for kv in fast.diagnostics(2 * S).status[0].values)


def test_config_schema() -> None:
    flat = describe(RendererConfig)
    assert flat["engine.checkpoint"][0] == "" and flat["rate_hz"][0] == 10.0
    assert all(help_text for _, help_text in flat.values())
    with pytest.raises(ConfigError):
        RendererConfig(pose_source="gps")
    with pytest.raises(ConfigError):
        RendererConfig(pose_source="tf", rate_hz=0.0)


def test_a_render_bag_that_rendered_nothing_names_stale_poses_before_tf_failures() -> None:
    """A bag recorded with simulated time: its TF stamps are the simulator's clock, its log time the wall clock, so
    every pose looked up is stale; the reason says so and how to render anyway, not that TF could not be looked up."""
    from pose2rgbd.cli.render import no_frame_reason
    from pose2rgbd.nodes.renderer import RendererConfig

    cfg = RendererConfig()
    why = no_frame_reason(cfg, {"tf_failures": 10, "stale_poses": 963})
    assert "963 pose(s) were older than max_pose_age_s" in why and "--max_pose_age_s 0" in why, why
    assert "could be looked up" in no_frame_reason(cfg, {"tf_failures": 10})
    assert "never gave a pose" in no_frame_reason(cfg, {})


def test_a_camera_fixed_on_tf_static_renders_at_every_tick(engine: RenderEngine, factory: TypestoreFactory) -> None:
    """A pose from /tf_static alone (a fixed camera) looks up with stamp 0: it is current at every tick (not
    stale, not 'TF did not move on') and each tick's frame carries the tick's time."""
    r = make(engine, factory)
    tf = TFBuffer()
    T = look_down_pose(3.0, 4.0, 12.0)
    tf.set_transform("map", "camera_optical_frame", 0, T[:3, 3], [1.0, 0.0, 0.0, 0.0], static=True)
    for k in (5, 6):
        out = dict(r.tick(k * S, tf.lookup_transform))
        assert "rgbd" in out, k
        assert stamp_to_ns(out["rgbd"].header.stamp) == k * S
    assert r.counters["stale_poses"] == 0


def test_the_world_frame_defaults_to_the_models(
    engine: RenderEngine, factory: TypestoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """world_frame empty (the default): poses are looked up in the model's own world frame (a converted bag's TF
    frame, e.g. 'world'); a world_frame named otherwise is used, with a warning that names both."""
    assert RendererConfig().world_frame == ""
    saved = engine.world_frame
    engine.world_frame = "world"
    try:
        r = make(engine, factory)
        tf = TFBuffer()
        T = look_down_pose(3.0, 4.0, 12.0)
        tf.set_transform("world", "camera_optical_frame", 5 * S, T[:3, 3], [1.0, 0.0, 0.0, 0.0])
        out = dict(r.tick(5 * S + 10_000_000, tf.lookup_transform))
        assert out["rgbd"].query_pose.header.frame_id == "world"
        with caplog.at_level(logging.WARNING):
            other = make(engine, factory, world_frame="map")
        assert other.world_frame == "map" and "is not the model's world frame 'world'" in caplog.text
    finally:
        engine.world_frame = saved


def _diag(r: Renderer, now_ns: int) -> tuple[int, str, dict[str, str]]:
    st = r.diagnostics(now_ns).status[0]
    return st.level, st.message, {kv.key: kv.value for kv in st.values}


def test_diagnostics_warn_when_tf_stops(engine: RenderEngine, factory: TypestoreFactory) -> None:
    """TF that stops (the last transform stays the newest): the ticks count the pose as stale once it is older than
    max_pose_age_s, and the diagnostics turn WARN once nothing was published for longer than the largest of 1 s,
    three periods and max_pose_age_s, saying for how long and why."""
    r = make(engine, factory, rate_hz=10.0, max_pose_age_s=0.5)
    assert r.stall_after_s() == 1.0
    tf = TFBuffer()
    tf.set_transform("map", "camera_optical_frame", 5 * S, [0, 0, 10], [1.0, 0, 0, 0])
    assert r.tick(5 * S, tf.lookup_transform)
    assert _diag(r, 5 * S + S // 2)[:2] == (0, "rendering")
    for k in range(1, 100):  # 10 s of ticks, no new transform
        assert r.tick(5 * S + k * S // 10, tf.lookup_transform) == []
    assert r.counters["stale_poses"] == 94  # from 0.6 s on
    level, text, values = _diag(r, 15 * S)
    assert level == 1, text
    assert text.startswith("nothing published for 10.0 s (more than 1 s, the last frame's pose stamped 5.000)"), text
    assert "no new pose: TF map -> camera_optical_frame has not moved on for 9.90 s (max_pose_age_s 0.5)" in text
    assert values["last_frame_age_s"] == "10.00" and values["stale_poses"] == "94"
    # a slower rate or a longer max_pose_age_s gives a pose longer to come
    assert make(engine, factory, rate_hz=1.0).stall_after_s() == 3.0
    assert make(engine, factory, rate_hz=10.0, max_pose_age_s=5.0).stall_after_s() == 5.0
    assert make(engine, factory, pose_source="topic", rate_hz=0.0, max_pose_age_s=0.0).stall_after_s() == 1.0


def test_diagnostics_warn_about_stale_poses(engine: RenderEngine, factory: TypestoreFactory) -> None:
    """TF stamped 2 s behind the node's clock: nothing is rendered and the diagnostics say that the poses are stale,
    before the first frame and after frames stopped."""
    r = make(engine, factory, rate_hz=10.0, max_pose_age_s=0.5)
    tf = TFBuffer()
    for k in range(1, 31):  # 3 s
        now = 10 * S + k * S // 10
        tf.set_transform("map", "camera_optical_frame", now - 2 * S, [0, 0, 10], [1.0, 0, 0, 0])
        assert r.tick(now, tf.lookup_transform) == []
    level, text, _ = _diag(r, 13 * S)
    assert (level, text) == (1, "no frame rendered yet: poses are stale: the newest is 2.00 s old (max_pose_age_s 0.5)")
    tf.set_transform("map", "camera_optical_frame", 13 * S, [0, 0, 10], [1.0, 0, 0, 0])
    assert r.tick(13 * S, tf.lookup_transform)  # a fresh one
    for k in range(1, 21):  # 2 s stale again
        now = 13 * S + k * S // 10
        tf.set_transform("map", "camera_optical_frame", now - 2 * S + 1, [0, 0, 10], [1.0, 0, 0, 0])
        r.tick(now, tf.lookup_transform)
    level, text, _ = _diag(r, 15 * S)
    assert level == 1 and text.startswith("nothing published for 2.0 s") and "poses are stale" in text, text


def test_out_of_bounds_is_said_only_while_it_is_current(engine: RenderEngine, factory: TypestoreFactory) -> None:
    """An out-of-bounds frame, then TF lost: the diagnostics no longer call the pose out of bounds but say that
    nothing was published, and why (the lookup's error, without a stray '.' before the ';')."""
    r = make(engine, factory, rate_hz=10.0)
    tf = TFBuffer()
    tf.set_transform("map", "camera_optical_frame", 5 * S, [500.0, 0, 10], [1.0, 0, 0, 0])
    assert dict(r.tick(5 * S, tf.lookup_transform))["rgbd"].out_of_bounds
    level, text, _ = _diag(r, 5 * S + S // 2)
    assert level == 1 and text.startswith("current pose is out of the training bounds"), text
    lost = TFBuffer()  # no transform at all
    for k in range(1, 50):
        assert r.tick(5 * S + k * S // 10, lost.lookup_transform) == []
    level, text, _ = _diag(r, 10 * S)
    assert level == 1 and "out of the training bounds" not in text, text
    assert text.startswith("nothing published for 5.0 s") and "no transform map -> camera_optical_frame: " in text
    assert " . " not in text and ".;" not in text and "does not exist" in text, text


def test_a_missing_transform_is_warned_about_without_a_stray_full_stop(
    engine: RenderEngine, factory: TypestoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    r = make(engine, factory)
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.renderer"):
        assert r.tick(S, TFBuffer().lookup_transform) == []
    said = [m.getMessage() for m in caplog.records if "no transform" in m.getMessage()]
    assert len(said) == 1 and said[0].endswith("does not exist; nothing published"), said


def test_out_of_bounds_renders_give_planners_no_points(engine: RenderEngine, factory: TypestoreFactory) -> None:
    """A pose far outside the training poses: the cloud is all NaN (is_dense false) and the mask 0 by default, so a
    planner sees no obstacle it cannot trust; the depth image stays as rendered (flagged in RGBD);
    cloud.keep_out_of_bounds (live) keeps them."""
    r = make(engine, factory, pose_source="topic", rate_hz=0.0)
    out = dict(r.on_pose(pose_stamped(F, S, "map", look_down_pose(500, 0, 10)), S))
    assert out["rgbd"].out_of_bounds
    np.testing.assert_allclose(image_to_numpy(out["depth/image_raw"]), 10.0, rtol=1e-4)
    cloud = out["depth/points"]
    assert not cloud.is_dense and (cloud.height, cloud.width) == (32, 32)
    assert all(np.isnan(v).all() for k, v in point_cloud2_fields(cloud).items() if k != "rgb")
    assert (image_to_numpy(out["mask/image_raw"]) == 0).all()
    assert "depth/points and the mask hold no valid point" in r.diagnostics(S).status[0].message
    assert RendererConfig().cloud.keep_out_of_bounds is False
    assert r.on_parameter_change("cloud.keep_out_of_bounds", True)[0]
    out = dict(r.on_pose(pose_stamped(F, 2 * S, "map", look_down_pose(500, 0, 10)), 2 * S))
    assert out["rgbd"].out_of_bounds and out["depth/points"].is_dense
    np.testing.assert_allclose(point_cloud2_fields(out["depth/points"])["z"], 10.0, rtol=1e-4)
    assert (image_to_numpy(out["mask/image_raw"]) == 255).all()
    # back in bounds: points again, whatever the setting
    assert r.on_parameter_change("cloud.keep_out_of_bounds", False)[0]
    out = dict(r.on_pose(pose_stamped(F, 3 * S, "map", look_down_pose(0, 0, 10)), 3 * S))
    assert not out["rgbd"].out_of_bounds and out["depth/points"].is_dense


def test_a_pose_without_a_header_stamp_is_taken_at_its_receive_time(
    engine: RenderEngine, factory: TypestoreFactory
) -> None:
    """A PoseStamped with a zero stamp (`ros2 topic pub` without one) was "1795921168 s old" and skipped; it is
    rendered at the time it is received, counted and warned about, as the record node takes such stamps."""
    r = make(engine, factory, pose_source="topic", rate_hz=0.0)
    out = dict(r.on_pose(pose_stamped(F, 0, "map", _tilted_pose(1.0, 2.0, 12.0, 60.0)), S))
    assert "rgb/image_raw" in out and stamp_to_ns(out["rgb/image_raw"].header.stamp) == S
    assert r.counters["zero_stamp_poses"] == 1 and r.counters["stale_poses"] == 0


def test_the_measured_rate_starts_anew_after_an_outage_and_a_new_rate_hz(
    engine: RenderEngine, factory: TypestoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renders at 10 Hz, 30 s without TF, then 10 Hz again: the diagnostics measured the window across the gap
    ("publishing 1.5 Hz of rate_hz 10 ... poses arrive late") for the next 50 renders; the rate after an outage, and
    after rate_hz is changed live, is measured anew."""
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    r = make(engine, factory, rate_hz=10.0)
    T = look_down_pose(0.0, 0.0, 20.0)

    def render(n: int) -> None:
        for _ in range(n):
            clock[0] += 0.1
            now = int(clock[0] * 1e9)
            assert r.tick(now, lambda target, source, t, now=now: (T, now))
            r.latency.add(5.0)

    render(25)
    clock[0] += 30.0  # TF gone for 30 s
    render(25)
    assert r.output_hz() == pytest.approx(10.0, rel=0.01)
    st = r.diagnostics(int(clock[0] * 1e9)).status[0]
    assert "publishing" not in st.message, st.message
    assert r.on_parameter_change("rate_hz", 20.0) == (True, "")
    assert len(r._published_s) == 0  # measured again at 20 Hz, not over the renders at 10


def test_the_start_line_and_a_relative_checkpoint_say_what_they_mean(
    engine: RenderEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start line of a node rendering every PoseStamped (rate_hz 0) said "at 0.0 Hz"; a relative checkpoint path
    that is not found names the working directory it was taken against (a launched node's is not the shell's)."""
    from pose2rgbd.errors import CheckpointError
    from pose2rgbd.inference.common import load_for_serving
    from pose2rgbd.nodes.renderer import _describe_renderer

    line = _describe_renderer(RendererConfig(pose_source="topic", rate_hz=0.0), {"engine": engine})
    assert line.endswith("from the poses on 'pose' each as it arrives (rate_hz 0)") and "0.0 Hz" not in line
    assert _describe_renderer(RendererConfig(rate_hz=10.0), {"engine": engine}).endswith("at 10 Hz")
    monkeypatch.chdir(tmp_path)
    says = rf"runs/best\.pt \(relative to the working directory {re.escape(str(tmp_path))}; give an absolute path\)"
    with pytest.raises(CheckpointError, match=f"checkpoint not found: {says}"):
        load_for_serving(EngineConfig(checkpoint="runs/best.pt"))
    with pytest.raises(CheckpointError, match=r"checkpoint not found: /nowhere/best\.pt$"):
        load_for_serving(EngineConfig(checkpoint="/nowhere/best.pt"))


def test_a_body_frame_given_as_camera_frame_is_named(engine: RenderEngine, factory: TypestoreFactory, caplog) -> None:
    """camera_frame base_link (z up) renders a view straight into the sky: warned, naming the optical frame; a camera
    looking down or ahead is not."""
    r = make(engine, factory, rate_hz=10.0, camera_frame="base_link")
    up = np.eye(4)
    up[:3, 3] = [0.0, 0.0, 20.0]  # the world's axes: z (the optical axis) straight up
    with caplog.at_level(logging.WARNING):
        r.tick(S, lambda target, source, t: (up, S))
    assert any("camera_frame 'base_link' looks 90 deg up, into the sky" in m for m in caplog.messages), caplog.messages
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        r.tick(2 * S, lambda target, source, t: (look_down_pose(0.0, 0.0, 20.0), 2 * S))
    assert not any("into the sky" in m for m in caplog.messages)
