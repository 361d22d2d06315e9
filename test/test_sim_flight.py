"""Flight plans: altitude band, speed profile, hovers, camera looking at the city, held-out within survey;
the transect mapping route and the gimbal-stabilized camera."""

from __future__ import annotations

import numpy as np
import pytest

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry import matrix_to_rpy
from pose2rgbd.sim import ROUTES, FlightPlan, SimConfig, plan_route
from pose2rgbd.sim.export import camera_trajectory, route_start_ns
from pose2rgbd.sim.flight import DEFAULT_ROUTES


@pytest.fixture(scope="module")
def plans():
    cfg = SimConfig()
    return {r: FlightPlan(r, cfg.world_size_m, cfg.duration_of(r), seed=0) for r in ROUTES}


@pytest.fixture(scope="module")
def transect():
    """The mapping route, long enough for several legs, body-fixed and gimbal-stabilized."""
    return FlightPlan("transect", 300.0, 200.0, seed=0), FlightPlan("transect", 300.0, 200.0, seed=0, stabilized=True)


def _sample(plan: FlightPlan, hz: float = 5.0) -> np.ndarray:
    return np.arange(0.0, plan.duration_s, 1.0 / hz)


def test_altitude_speed_and_hovers(plans):
    for name, plan in plans.items():
        t = _sample(plan)
        z = plan.position_at(t)[:, 2]
        assert z.min() >= 50.0 and z.max() <= 55.0, name
        v = np.linalg.norm(np.diff(plan.position_at(t), axis=0), axis=1) * 5.0
        assert v.max() <= 10.0 + 1e-6, name
        assert v.mean() > 2.5, name  # it does fly
        acc = np.abs(np.diff(plan.speed_at(t))) * 5.0
        assert acc.max() < 2.0, name  # smooth speed changes
    # hovers: at least one stretch of >= 1 s below 0.3 m/s, besides the start
    sp = plans["survey"].speed_at(np.arange(5.0, plans["survey"].duration_s, 0.1))
    slow = sp < 0.3
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], slow.astype(int), [0]]))).reshape(-1, 2), axis=1)
    assert runs.size and runs.max() >= 10
    assert sp.max() > 8.0  # and cruises fast


def test_camera_looks_towards_the_city(plans):
    for name in DEFAULT_ROUTES:
        plan = plans[name]
        t = _sample(plan, 2.0)
        Twc = plan.pose_at(t) @ plan.T_base_cam
        axis = Twc[:, :3, 2]  # optical z in the world
        c = Twc[:, :3, 3]
        to_centre = -c[:, :2] / np.linalg.norm(c[:, :2], axis=1, keepdims=True)
        h = axis[:, :2] / np.linalg.norm(axis[:, :2], axis=1, keepdims=True)
        ang = np.degrees(np.arccos(np.clip(np.sum(h * to_centre, axis=1), -1, 1)))
        assert ang.max() < 25.0, (name, ang.max())
        down = np.degrees(np.arcsin(-axis[:, 2]))
        assert down.min() > 25.0 and down.max() < 55.0, name
        # image x axis stays roughly horizontal (the camera does not roll away)
        assert np.abs(Twc[:, 2, 0]).max() < np.sin(np.radians(20))


def test_heldout_routes_within_survey_extremes(plans):
    def extremes(plan):
        T = plan.pose_at(_sample(plan, 5.0))
        rpy = np.degrees(matrix_to_rpy(T[:, :3, :3]))
        return np.column_stack([T[:, :3, 3], rpy[:, :2]])

    s = extremes(plans["survey"])
    lo, hi = s.min(0), s.max(0)
    for name in DEFAULT_ROUTES[1:]:
        e = extremes(plans[name])
        assert (e.min(0) >= lo - 1e-6).all() and (e.max(0) <= hi + 1e-6).all(), (name, e.min(0), lo, e.max(0), hi)
        r = np.linalg.norm(e[:, :2], axis=1)
        rs = np.linalg.norm(s[:, :2], axis=1)
        assert r.min() >= rs.min() - 1.0 and r.max() <= rs.max() + 1.0


def test_plan_route_stamps_and_determinism():
    a = plan_route("orbit", 300.0, rate_hz=30, n_frames=45, seed=5)
    b = plan_route("orbit", 300.0, rate_hz=30, n_frames=45, seed=5)
    c = plan_route("orbit", 300.0, rate_hz=30, n_frames=45, seed=6)
    assert len(a) == 45 and a.stamps_ns.dtype == np.int64
    assert (np.diff(a.stamps_ns) > 0).all()
    np.testing.assert_allclose(np.diff(a.stamps_ns), 1e9 / 30, atol=1)
    assert np.array_equal(a.T_world_base, b.T_world_base)
    assert not np.array_equal(a.T_world_base, c.T_world_base)
    np.testing.assert_allclose(a.T_world_cam, a.T_world_base @ a.T_base_cam)
    with pytest.raises(ConfigError):
        plan_route("nowhere", 300.0, 30, 10)


def test_routes_are_sequential_in_time():
    cfg = SimConfig(frames=10, routes=["survey", "orbit"])
    s, o = camera_trajectory(cfg, "survey"), camera_trajectory(cfg, "orbit")
    assert s.stamps_ns[0] == cfg.start_time_ns == route_start_ns(cfg, "survey")
    assert o.stamps_ns[0] > s.stamps_ns[-1]


def test_twist_matches_motion(plans):
    plan = plans["orbit"]
    t = np.array([20.0, 40.0])
    lin, ang = plan.twist_at(t)
    T = plan.pose_at(t)
    v_world = np.einsum("nij,nj->ni", T[:, :3, :3], lin)
    h = 1e-3
    fd = (plan.position_at(t + h) - plan.position_at(t - h)) / (2 * h)
    np.testing.assert_allclose(v_world, fd, atol=0.05)
    assert np.abs(ang[:, 2]).max() < 0.3  # gentle yaw rate


def test_transect_is_straight_lines_with_stops_and_turns_in_place(transect):
    plan, _ = transect
    t = np.arange(0.0, plan.duration_s, 0.05)
    pos, yaw, sp = plan.position_at(t), plan.rpy_at(t)[:, 2], plan.speed_at(t)
    assert SimConfig().routes == list(DEFAULT_ROUTES) and "transect" not in DEFAULT_ROUTES
    assert pos[:, 2].min() >= 52.0 and pos[:, 2].max() <= 53.0  # constant altitude (+-0.5 m)
    assert np.abs(pos[:, :2]).max() <= 0.8 * 150.0 + 1e-6  # over the city
    # yaw along the course while moving (velocity direction vs yaw); straight legs: x or y constant
    v = np.gradient(pos[:, :2], t, axis=0)
    moving = sp > 1.0
    course = np.arctan2(v[moving, 1], v[moving, 0])
    err = np.degrees(np.abs(np.angle(np.exp(1j * (course - yaw[moving])))))
    assert err.max() < 5.0, err.max()
    assert np.minimum(np.abs(v[moving, 0]), np.abs(v[moving, 1])).max() < 0.05  # axis-parallel legs
    # turns in place: the yaw turns by ~90 deg only while hovering, at <= 30 deg/s
    w = np.degrees(np.abs(plan.twist_at(t)[1][:, 2]))
    assert w.max() <= 31.0 and (w > 20).any()
    assert sp[w > 5.0].max() < 0.05
    # speed profile: accelerate from a hover, cruise at 3-10 m/s with changes, hovers at the line ends
    assert sp[0] < 0.05 and 8.0 < sp.max() <= 10.0
    acc = np.abs(np.gradient(sp, t))
    assert acc.max() < 1.5
    stops = np.flatnonzero(np.diff((sp < 0.05).astype(int)) == 1)
    assert len(stops) >= 4  # several hovers (line ends + mid-line) in 200 s
    levels = np.round(sp[(acc < 0.01) & (sp > 2.5)])
    assert len(np.unique(levels)) >= 3  # several cruise speeds


def test_stabilized_camera_has_no_tilt_and_same_track(transect, plans):
    body, gimbal = transect
    t = np.arange(0.0, body.duration_s, 0.1)
    np.testing.assert_array_equal(body.position_at(t), gimbal.position_at(t))
    np.testing.assert_array_equal(body.rpy_at(t)[:, 2], gimbal.rpy_at(t)[:, 2])
    rp_body = np.degrees(np.abs(body.rpy_at(t)[:, :2])).max(0)
    rp_gimbal = np.degrees(np.abs(gimbal.rpy_at(t)[:, :2])).max(0)
    assert rp_body[1] > 4.0  # the airframe tilts into the acceleration
    assert rp_gimbal.max() <= 0.3 + 1e-9 and rp_gimbal.min() > 0.05  # small jitter only
    # the option works on every route; the default (False) leaves a route unchanged
    orbit = plans["orbit"]
    g = FlightPlan("orbit", 300.0, orbit.duration_s, seed=0, stabilized=True)
    np.testing.assert_array_equal(orbit.position_at(t[:50]), g.position_at(t[:50]))
    assert np.degrees(np.abs(g.rpy_at(t[:50])[:, :2])).max() <= 0.3 + 1e-9
    assert SimConfig().stabilized is False


def test_stabilized_bag_tf_tree_is_consistent(tmp_path):
    """/odom, /tf and /tf_static give the /ground_truth/pose of every camera frame (stabilized transect)."""
    from pose2rgbd.bags import open_bag
    from pose2rgbd.messages import pose_to_matrix, transform_to_matrix
    from pose2rgbd.sim import export_bag

    cfg = SimConfig(width=8, height=8, frames=16, routes=["transect"], bag_routes=["transect"],
                    video_routes=["transect"], stabilized=True, odom_rate_hz=30.0, shadows=False)  # fmt: skip
    path = export_bag(cfg, tmp_path / "bag", "transect", progress=False)
    with open_bag(path) as bag:
        msgs = list(bag.messages(["/odom", "/tf", "/tf_static", "/ground_truth/pose"]))
    static = next(m.msg for m in msgs if m.topic == "/tf_static").transforms
    T_bc = transform_to_matrix(next(x for x in static if x.child_frame_id == "camera_optical_frame").transform)
    odom = {m.stamp_ns: pose_to_matrix(m.msg.pose.pose) for m in msgs if m.topic == "/odom"}
    tf = {}  # REP-105: map -> odom -> base_link in one message, composed
    for m in (m for m in msgs if m.topic == "/tf"):
        links = [(x.header.frame_id, x.child_frame_id) for x in m.msg.transforms]
        assert links == [("map", "odom"), ("odom", "base_link")], links
        tf[m.stamp_ns] = transform_to_matrix(m.msg.transforms[0].transform) @ transform_to_matrix(
            m.msg.transforms[1].transform
        )
    gt = {m.stamp_ns: pose_to_matrix(m.msg.pose) for m in msgs if m.topic == "/ground_truth/pose"}
    assert len(gt) == 16 and set(gt) <= set(odom) and set(gt) <= set(tf)  # odom at the camera rate: same stamps
    for s, T_wc in gt.items():
        np.testing.assert_allclose(odom[s] @ T_bc, T_wc, atol=1e-6)
        np.testing.assert_allclose(tf[s] @ T_bc, T_wc, atol=1e-6)
        assert np.degrees(np.arccos(np.clip(odom[s][2, 2], -1, 1))) < 0.5  # base_link is the levelled carrier
