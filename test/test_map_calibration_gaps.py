"""The self-calibration reaches the gaps of a dense map: on a video the single held-out keyframes are about one
keyframe spacing from the rest, while a route split's held-out block (or a later pass) is many spacings away.
``map build`` also holds out contiguous windows of keyframes; a query in such a gap, with a small error, is then
published unflagged with the covariance the windows' errors call for, and a query far beyond the map still is
flagged. Synthetic fixes (true pose + a drawn error) on a dense trajectory: no images, only the calibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose2rgbd.geometry.coverage import PoseSet
from pose2rgbd.inference.self_calibration import held_out_rows, held_out_windows
from pose2rgbd.inference.structure_calibration import (
    coverage_ratios,
    extend_to_gaps,
    finish_fix,
    fit_structure_calibration,
    gap_scaled,
    keyframe_spacing,
)
from pose2rgbd.inference.structure_fix import Fix
from pose2rgbd.placemap.build import SelfCalibrationConfig

ROT_WEIGHT_M = 1.0
INFO = np.diag([1e-6] * 3 + [1e-7] * 3)  # a fix's raw information covariance (m^2, rad^2)


def _trajectory(n: int) -> np.ndarray:
    """A dense video: 1 cm and 0.2 degrees between frames, along a line, turning slowly."""
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.from_euler("z", np.radians(0.2) * np.arange(n)[:, None]).as_matrix()
    T[:, 0, 3] = 0.01 * np.arange(n)
    return T


def _fix(T_true: np.ndarray, rng: np.random.Generator, variance_scale: float) -> Fix:
    """A fix at the true pose plus an error drawn from ``variance_scale`` x the information covariance."""
    e = rng.multivariate_normal(np.zeros(6), INFO * variance_scale)
    T = np.array(T_true, np.float64)
    T[:3, 3] += e[:3]
    T[:3, :3] = Rotation.from_rotvec(e[3:]).as_matrix() @ T[:3, :3]
    return Fix(True, "", T, INFO.copy(), 1.0, inliers=150, spread=0.8)


def _calibrate(T_map: np.ndarray, rng: np.random.Generator, gap_variance: float) -> tuple:
    """The calibration of a map of poses ``T_map`` as ``map build`` fits it: single held-out keyframes (errors of
    4x the information) against the rest, then held-out windows (errors ``gap_variance`` x) against the rest."""
    cfg = SelfCalibrationConfig()
    spacing = keyframe_spacing(T_map, ROT_WEIGHT_M)
    n = len(T_map)
    held = held_out_rows(n, cfg)
    rest = PoseSet(np.delete(T_map, held, axis=0), rot_weight_m=ROT_WEIGHT_M)
    fixes = [_fix(T_map[i], rng, 4.0) for i in held]
    pr, qr = coverage_ratios(rest, np.stack([f.T_world_cam for f in fixes]), spacing)
    cal = fit_structure_calibration(fixes, T_map[held], pr, qr, spacing)
    near = dict(cal.gate)
    wfix, wT, wpr, wqr = [], [], [], []
    for _, w_held, queries in held_out_windows(n, cfg):
        rest = PoseSet(np.delete(T_map, w_held, axis=0), rot_weight_m=ROT_WEIGHT_M)
        fx = [_fix(T_map[i], rng, gap_variance) for i in queries]
        p, q = coverage_ratios(rest, np.stack([f.T_world_cam for f in fx]), spacing)
        wfix += fx
        wT.append(T_map[queries])
        wpr.append(p)
        wqr.append(q)
    fitted = extend_to_gaps(cal, wfix, np.concatenate(wT), np.concatenate(wpr), np.concatenate(wqr))
    return cal, near, fitted


def test_held_out_windows_are_contiguous_interior_and_grow_to_a_quarter_of_the_map() -> None:
    wins = held_out_windows(400, SelfCalibrationConfig())
    assert [length for length, _, _ in wins] == [4, 8, 16, 32, 64]
    for length, held, queries in wins:
        assert len(held) == 3 * length and held.min() > 0 and held.max() < 399
        assert np.isin(queries, held).all() and len(queries) <= 15
    assert held_out_windows(400, SelfCalibrationConfig(gap_windows=0)) == []
    assert held_out_windows(12, SelfCalibrationConfig()) == []  # too small a map for a window


def test_a_query_in_a_held_out_block_is_vouched_for_and_one_far_beyond_is_flagged() -> None:
    """A map of a dense video with an 80-frame block held out (a route split): the block's middle frame is many
    spacings from the map, beyond the single keyframes' range (the old gate flags it, though its error is small).
    With the windows' extension it is published unflagged, its covariance scaled by the gap factors (larger than
    the near one: the windows' errors were larger); a query 2 m beside the trajectory is still flagged."""
    rng = np.random.default_rng(0)
    T_all = _trajectory(480)
    block = np.arange(200, 280)
    T_map = np.delete(T_all, block, axis=0)
    cal, near, fitted = _calibrate(T_map, rng, gap_variance=16.0)
    poses = PoseSet(T_map, rot_weight_m=ROT_WEIGHT_M)
    assert fitted["gap_fixes"] >= 12 and "near_pose_ratio" in cal.gate, fitted
    assert fitted["gap_position_scale"] > 1.5 and fitted["gap_orientation_scale"] > 1.5, fitted

    q = _fix(T_all[240], rng, 4.0)  # the block's middle: a small error
    pr, qr = coverage_ratios(poses, q.T_world_cam, cal.gate)
    assert pr[0] > near["max_position_ratio"] and qr[0] > near["max_pose_ratio"]  # beyond the singles' range

    from pose2rgbd.inference.calibration import Calibration

    old = Calibration.from_dict({**cal.to_dict(), "gate": near})  # the calibration before the extension
    before = _fix(q.T_world_cam, rng, 0.0)
    before.T_world_cam = q.T_world_cam.copy()
    finish_fix(before, old, poses, ood_covariance_scale=100.0)
    assert before.flag.startswith("beyond the map's coverage"), before.flag

    after = _fix(q.T_world_cam, rng, 0.0)
    after.T_world_cam = q.T_world_cam.copy()
    finish_fix(after, cal, poses, ood_covariance_scale=100.0)
    assert after.flag == "", after.flag
    assert np.allclose(after.covariance, gap_scaled(cal.covariance_of_fix(INFO), cal.gate))

    far = _fix(T_all[240], rng, 0.0)
    far.T_world_cam[:3, 3] += [0.0, 2.0, 0.0]  # 2 m beside the trajectory: 200 spacings
    finish_fix(far, cal, poses, ood_covariance_scale=100.0)
    assert far.flag.startswith("beyond the map's coverage"), far.flag

    near_fix = _fix(T_map[150], rng, 0.0)  # on a keyframe: the near scale, as before
    finish_fix(near_fix, cal, poses, ood_covariance_scale=100.0)
    assert near_fix.flag == "" and np.allclose(near_fix.covariance, cal.covariance_of_fix(INFO))


def test_windows_whose_fixes_are_wrong_do_not_widen_the_gate() -> None:
    """Window fixes of a wrong place (errors of metres where a fix errs by millimetres) are no evidence: their gap
    factor is above what a flagged fix's covariance gets (MAX_GAP_SCALE), and the range stays the single
    keyframes' (x the margin)."""
    rng = np.random.default_rng(1)
    T_map = np.delete(_trajectory(480), np.arange(200, 280), axis=0)
    cal, near, fitted = _calibrate(T_map, rng, gap_variance=1e8)  # errors of ~10 m: wrong places
    assert cal.gate["max_pose_ratio"] == pytest.approx(near["max_pose_ratio"])
    assert cal.gate["max_position_ratio"] == pytest.approx(near["max_position_ratio"])
    assert "near_pose_ratio" not in cal.gate and fitted["gap_position_scale"] > 100.0
