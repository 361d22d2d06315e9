"""Flight plans: altitude band, speed profile, hovers, camera looking at the city, held-out within survey."""

from __future__ import annotations

import numpy as np
import pytest

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry import matrix_to_rpy
from pose2rgbd.sim import ROUTES, FlightPlan, SimConfig, plan_route
from pose2rgbd.sim.export import camera_trajectory, route_start_ns


@pytest.fixture(scope="module")
def plans():
    cfg = SimConfig()
    return {r: FlightPlan(r, cfg.world_size_m, cfg.duration_of(r), seed=0) for r in ROUTES}


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
    for name, plan in plans.items():
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
    for name in ROUTES[1:]:
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
