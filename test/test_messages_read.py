"""The message layer's readers of GPS fixes and orientations: one validity rule, ROS 1 and ROS 2 shapes."""

from __future__ import annotations

import numpy as np
import pytest

from pose2rgbd import messages as M
from pose2rgbd.errors import GeometryError
from pose2rgbd.geometry import T_from_tq


@pytest.fixture(params=["humble", "noetic"])
def F(request: pytest.FixtureRequest) -> M.TypestoreFactory:
    return M.TypestoreFactory(M.new_typestore(request.param))


def test_read_navsatfix_status_covariance_and_problems(F: M.TypestoreFactory) -> None:
    cov = np.diag([1.0, 2.0, 3.0])
    r = M.read_navsatfix(M.navsatfix(F, 5, "gps", 47.5, 8.5, 400.0, status=2, service=1, covariance=cov))
    assert r.lla.tolist() == [47.5, 8.5, 400.0] and r.status == 2 and r.service == 1
    assert r.covariance.tolist() == cov.reshape(-1).tolist() and r.covariance_type == 2  # diagonal known
    assert r.problem() is None and r.problem(min_status=2) is None
    assert "status GBAS_FIX (2) is below 3" in str(r.problem(min_status=3))
    no_fix = M.read_navsatfix(M.navsatfix(F, 5, "gps", 47.5, 8.5, 400.0, status=-1))
    assert no_fix.status == -1 and "NO_FIX" in str(no_fix.problem())
    assert no_fix.problem(min_status=-1) is None  # the recorder may be told to take NO_FIX fixes
    nan = M.read_navsatfix(M.navsatfix(F, 5, "gps", float("nan"), 8.5, 400.0))
    assert nan.problem(min_status=-1) == "NaN or inf coordinates"
    far = M.read_navsatfix(M.navsatfix(F, 5, "gps", 47.5, 200.0, 400.0))
    assert "out of range" in str(far.problem())


@pytest.mark.parametrize(
    ("q", "ok"),
    [
        ([0.0, 0.0, 0.0, 1.0], True),
        ([0.0, 0.0, 0.0, 1.005], True),  # float32 round trips
        ([0.0, 0.0, 0.0, 0.0], False),
        ([0.0, 0.0, float("nan"), 1.0], False),
        ([0.0, 0.0, 0.0, 0.9], False),
        ([0.0, 0.0, 0.0, 2.0], False),
    ],
)
def test_one_orientation_rule_for_streams_and_poses(F: M.TypestoreFactory, q: list[float], ok: bool) -> None:
    imu = M.imu(F, 5, "imu", quat_xyzw=q)
    odom = M.odometry(F, 5, "odom", "base_link", np.eye(4))
    odom.pose.pose.orientation.x, odom.pose.pose.orientation.y = q[0], q[1]
    odom.pose.pose.orientation.z, odom.pose.pose.orientation.w = q[2], q[3]
    for msg in (imu, odom):
        got = M.orientation_xyzw(msg)
        assert (got is not None) == ok
        if ok:
            assert got is not None and abs(np.linalg.norm(got) - 1.0) < 1e-12
    # a single pose that must be right raises for the same quaternions (with the reason)
    if ok:
        assert np.allclose(M.pose_to_matrix(odom)[:3, :3], np.eye(3), atol=1e-2)
    else:
        with pytest.raises(GeometryError, match="orientation"):
            M.pose_to_matrix(odom)
    assert (M.quat_problem(np.asarray(q)) is None) == ok


def test_imu_without_orientation_estimate_and_pose_tq(F: M.TypestoreFactory) -> None:
    assert M.orientation_xyzw(M.imu(F, 5, "imu")) is None  # covariance[0] = -1: no orientation (REP-145)
    q = np.array([0.0, 0.0, np.sin(0.3), np.cos(0.3)])
    odom = M.odometry(F, 5, "odom", "base_link", T_from_tq(np.array([1.0, 2.0, 3.0]), q))
    t, got = M.pose_tq(odom)
    assert t.tolist() == [1.0, 2.0, 3.0] and np.allclose(got, q)
    odom.pose.pose.position.x = float("inf")
    with pytest.raises(GeometryError, match="position contains NaN or inf"):
        M.pose_tq(odom)


def test_a_few_bad_imu_samples_do_not_stop_a_conversion(F: M.TypestoreFactory) -> None:
    from types import SimpleNamespace

    from pose2rgbd.convert.sources.bag_orientation import orientation_series
    from pose2rgbd.errors import BagError

    good = [0.0, 0.0, np.sin(0.1), np.cos(0.1)]
    quats = [good, [0.0, 0.0, 0.0, 0.0], good, [float("nan"), 0.0, 0.0, 1.0], good, [0.0, 0.0, 0.0, 0.5]]
    msgs = [SimpleNamespace(msg=M.imu(F, (k + 1) * 10**8, "imu", quat_xyzw=q), stamp_ns=0) for k, q in enumerate(quats)]
    bag = SimpleNamespace(path="b", messages=lambda topics: iter(msgs))
    t, R, _ = orientation_series(bag, "/imu", "imu", 0)
    assert t.tolist() == pytest.approx([0.1, 0.3, 0.5]) and R.shape == (3, 3, 3)
    bag_bad = SimpleNamespace(path="b", messages=lambda topics: iter(msgs[1:2]))
    with pytest.raises(BagError, match="no usable orientation"):
        orientation_series(bag_bad, "/imu", "imu", 0)
