"""Metric poses for a video + GPS: SfM poses aligned to GPS by a robust Sim(3), per-segment fallback to the pose
network where structure from motion does not register frames (synthetic SfM results: no COLMAP run)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose2rgbd.errors import ConfigError
from pose2rgbd.methods.selfsup_depth.metric import (
    POSENET,
    MetricPoses,
    MetricPosesConfig,
    metric_poses_from_sfm,
)
from pose2rgbd.methods.selfsup_depth.sfm import SfmResult

S = 0.25  # SfM units per metre
R_SFM = Rotation.from_euler("xyz", [30.0, -10.0, 75.0], degrees=True).as_matrix()
T_SFM = np.array([3.0, -1.0, 2.0])
N = 90
EVERY = 3
WORLD_POINT = np.array([50.0, 10.0, 0.0])


def _truth(n: int = N) -> np.ndarray:
    """Camera looking down, 60 m up, flying an arc at ~3 m per frame."""
    T = np.tile(np.eye(4), (n, 1, 1))
    a = np.linspace(0.0, 1.5, n)
    T[:, :3, 3] = np.stack([150.0 * np.sin(a), 150.0 * (1 - np.cos(a)), 60.0 + 3 * np.sin(3 * a)], 1)
    base = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
    for k in range(n):
        T[k, :3, :3] = Rotation.from_euler("z", a[k]).as_matrix() @ base
    return T


def _sfm(T_true: np.ndarray, registered: np.ndarray) -> SfmResult:
    """The SfM result of ``registered`` frames: the true poses in COLMAP's frame and scale, with the camera-frame
    coordinates of one world point as the only triangulated point of each frame."""
    n = len(T_true)
    T = np.full((n, 4, 4), np.nan)
    pts = {}
    for k in np.flatnonzero(registered):
        T[k] = np.eye(4)
        T[k, :3, :3] = R_SFM @ T_true[k, :3, :3]
        T[k, :3, 3] = S * R_SFM @ T_true[k, :3, 3] + T_SFM
        x_cam = np.linalg.inv(T_true[k]) @ np.append(WORLD_POINT, 1.0)
        pts[int(k)] = np.array([[*(S * x_cam[:3]), 6.0, 0.4]])
    model = np.where(registered, 0, -1)
    return SfmResult(T, registered, model, tried=len(range(0, n, EVERY)), seconds=1.0, points=pts)


def _gps(T_true: np.ndarray, noise: float = 1.0, seed: int = 0) -> np.ndarray:
    return T_true[:, :3, 3] + np.random.default_rng(seed).normal(0, noise, (len(T_true), 3))


def test_sfm_poses_become_metric_and_a_gap_falls_back_to_the_pose_network() -> None:
    T_true = _truth()
    reg = np.zeros(N, bool)
    reg[::EVERY] = True
    reg[N - 1] = True  # COLMAP is given the last frame too (sfm.colmap_poses)
    reg[36:60] = False  # COLMAP lost track here: registered ... 33, 60 ...
    mp = metric_poses_from_sfm({0: _sfm(T_true, reg)}, _gps(T_true), np.zeros(N, np.int64), MetricPosesConfig(),
                               colmap_every=EVERY)  # fmt: skip
    # frames between registered ones are interpolated; the gap between 33 and 60 is the pose network's
    assert np.all(mp.label[:34] != POSENET) and np.all(mp.label[60:] != POSENET)
    assert np.all(mp.label[34:60] == POSENET)
    segs = [(s["start"], s["end"], s["pose_source"]) for s in mp.info["segments"]]
    assert [p for *_, p in segs] == ["sfm", "posenet", "sfm"]
    assert segs[0][0] == 0 and segs[-1][1] == N - 1
    ok = mp.ok
    pos_err = np.linalg.norm(mp.T_world_cam[ok, :3, 3] - T_true[ok, :3, 3], axis=1)
    assert np.max(pos_err) < 1.5
    rot_err = Rotation.from_matrix(np.swapaxes(mp.T_world_cam[ok, :3, :3], 1, 2) @ T_true[ok, :3, :3]).magnitude()
    assert np.degrees(rot_err).max() < 0.5
    assert np.all(np.isnan(mp.T_world_cam[~ok]))
    src = mp.info["sources"]["0"]
    assert "fallback" not in src and src["registered"] == int(reg.sum()) and src["metric_frames"] == 34 + 30
    m = src["models"][0]
    assert m["used"] and m["scale"] == pytest.approx(1 / S, rel=0.02) and m["residual_rms_m"] < 3.0
    assert m["scale_ci95"][0] <= 1 / S <= m["scale_ci95"][1]
    # the triangulated point has its metric camera-frame depth, with a weight
    k = int(np.flatnonzero(reg)[0])
    z_true = (np.linalg.inv(T_true[k]) @ np.append(WORLD_POINT, 1.0))[2]
    assert mp.points[k][0, 2] == pytest.approx(z_true, rel=0.02)
    assert 0 < mp.points[k][0, 3] <= 1


def test_too_few_registered_frames_fall_back_with_a_clear_reason(caplog: pytest.LogCaptureFixture) -> None:
    T_true = _truth()
    reg = np.zeros(N, bool)
    reg[[0, 3, 6, 9, 12]] = True
    with caplog.at_level(logging.WARNING):
        mp = metric_poses_from_sfm({0: _sfm(T_true, reg)}, _gps(T_true), np.zeros(N, np.int64))
    assert np.all(mp.label == POSENET) and mp.n_metric == 0
    reason = mp.info["sources"]["0"]["fallback"]
    assert "registered 5 of 30" in reason and "min_registered" in reason
    assert "pose network" in caplog.text and "registered 5 of 30" in caplog.text
    assert [s["pose_source"] for s in mp.info["segments"]] == ["posenet"]


def test_colmap_failure_and_a_misaligned_model_fall_back() -> None:
    T_true = _truth()
    mp = metric_poses_from_sfm({0: ConfigError("COLMAP registered 2 of 30 frames")}, _gps(T_true),
                               np.zeros(N, np.int64))  # fmt: skip
    assert mp.n_metric == 0 and "COLMAP registered 2 of 30" in mp.info["sources"]["0"]["fallback"]
    # an SfM trajectory that is not a similarity of the GPS track (scrambled): residual too large, not used
    reg = np.zeros(N, bool)
    reg[::EVERY] = True
    bad = _sfm(T_true, reg)
    rng = np.random.default_rng(1)
    bad.T_world_cam[reg, :3, 3] = rng.permutation(bad.T_world_cam[reg, :3, 3])
    mp = metric_poses_from_sfm({0: bad}, _gps(T_true), np.zeros(N, np.int64))
    assert mp.n_metric == 0
    assert "min_inlier_share" in mp.info["sources"]["0"]["fallback"]


def test_two_sources_are_decided_separately_and_the_result_round_trips(tmp_path: Path) -> None:
    T_true = _truth()
    reg = np.zeros(N, bool)
    reg[::EVERY] = True
    reg[N - 1] = True
    T2 = np.concatenate([T_true, T_true])
    sid = np.repeat([0, 1], N)
    mp = metric_poses_from_sfm({0: _sfm(T_true, reg)}, _gps(T2), sid, colmap_every=EVERY)  # no SfM for source 1
    assert np.all(mp.label[:N] != POSENET) and np.all(mp.label[N:] == POSENET)
    assert "no structure from motion" in mp.info["sources"]["1"]["fallback"]
    back = MetricPoses.load(mp.save(tmp_path / "metric_poses.npz"))
    np.testing.assert_array_equal(back.label, mp.label)
    np.testing.assert_allclose(back.T_world_cam, mp.T_world_cam, equal_nan=True)
    assert back.points.keys() == mp.points.keys() and back.info == mp.info


def _straight(n: int = 60, sideways: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Upright forward cameras (10 deg down, rolled ``roll_deg``) walking 1.5 m per frame along world x, zig-zagging
    ``sideways`` metres to the side."""
    from pose2rgbd.testing.ground_plane import forward_pose

    return np.stack([forward_pose(1.5 * k, sideways * np.sin(0.5 * k), 1.6, pitch_deg=10.0,
                                  roll=np.radians(roll_deg)) for k in range(n)])  # fmt: skip


def _rot_err_deg(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return np.degrees(Rotation.from_matrix(np.swapaxes(A[:, :3, :3], 1, 2) @ B[:, :3, :3]).magnitude())


def test_a_straight_track_is_turned_until_its_cameras_stand_upright(caplog: pytest.LogCaptureFixture) -> None:
    """Along a straight walk GPS leaves the turn about the track to its noise; the aligned poses are turned about
    the track until the cameras stand upright (within a degree of the truth), and the report says so; without
    the setting the turn is the noise's."""
    T_true = _straight()
    reg = np.ones(len(T_true), bool)
    gps = _gps(T_true, noise=0.3, seed=3)
    src = np.zeros(len(T_true), np.int64)
    got = {}
    caplog.set_level(logging.INFO, logger="pose2rgbd.methods.selfsup_depth.metric")
    for level in (True, False):
        mp = metric_poses_from_sfm({0: _sfm(T_true, reg)}, gps, src, MetricPosesConfig(level_straight_track=level),
                                   colmap_every=1)  # fmt: skip
        got[level] = mp
    err_on, err_off = _rot_err_deg(got[True].T_world_cam, T_true), _rot_err_deg(got[False].T_world_cam, T_true)
    assert err_on.max() < 1.0 < err_off.max()
    turn = got[True].info["sources"]["0"]["models"][0]["track_turn"]
    assert turn["applied"] and turn["roll_rms_deg"][1] < 1.0 < turn["roll_rms_deg"][0]
    assert "track_turn" not in got[False].info["sources"]["0"]["models"][0]
    assert "about its straight track to stand the cameras upright" in caplog.text
    pos = np.linalg.norm(got[True].T_world_cam[:, :3, 3] - T_true[:, :3, 3], axis=1)
    assert pos.max() < 1.5


def test_level_about_track_turns_only_what_gps_leaves_free() -> None:
    from pose2rgbd.geometry.similarity import level_about_track
    from pose2rgbd.testing.ground_plane import forward_pose

    T = _straight()
    turned = level_about_track(T, T[:, :3, 3])  # already upright: no turn
    assert turned is not None and turned.applied and abs(turned.degrees) < 0.1
    # the same walk turned 70 deg about its track: turned back
    R = Rotation.from_rotvec([np.radians(70.0), 0.0, 0.0]).as_matrix()
    off = T.copy()
    off[:, :3, :3] = R @ T[:, :3, :3]
    off[:, :3, 3] = T[:, :3, 3] @ R.T
    centre = T[:, :3, 3].mean(0)
    off[:, :3, 3] += centre - centre @ R.T  # about the track's centroid line
    back = level_about_track(off, T[:, :3, 3])
    assert back is not None and back.applied
    assert np.allclose(back.apply(off)[:, :3, :3], T[:, :3, :3], atol=1e-3)
    # a camera mounted rolled 20 deg on a walk that zig-zags 3 m: GPS sees the turn, which is refused
    rolled = _straight(sideways=3.0, roll_deg=20.0)
    refused = level_about_track(rolled, rolled[:, :3, 3])
    assert refused is not None and not refused.applied and "GPS" in refused.why
    # a track that is not straight: nothing to level
    assert level_about_track(_truth(), _truth()[:, :3, 3]) is None
    # cameras looking sideways, image x along the track: turning about it leaves their roll as it is, so they do not
    # tell the turn and nothing is turned (a guess would pass as levelled)
    side = np.stack([forward_pose(1.5 * k, 0.0, 1.6, yaw=np.pi / 2, pitch_deg=5.0) for k in range(60)])
    side_off = side.copy()
    side_off[:, :3, :3] = R @ side[:, :3, :3]
    side_off[:, :3, 3] = side[:, :3, 3] @ R.T
    assert level_about_track(side_off, side[:, :3, 3] @ R.T) is None


def _two_models(T_true: np.ndarray, seam: int, turn_second: np.ndarray | None, turn_first: np.ndarray | None = None):
    """All frames registered, in two SfM models split at ``seam``; a model's camera orientations turned by
    ``turn_*`` in COLMAP's frame (its positions right: the Sim(3) to GPS, which sees positions only, keeps the
    turn)."""
    reg = np.ones(len(T_true), bool)
    sfm = _sfm(T_true, reg)
    sfm.model[seam:] = 1
    for turn, part in ((turn_first, slice(0, seam)), (turn_second, slice(seam, None))):
        if turn is not None:
            sfm.T_world_cam[part, :3, :3] = sfm.T_world_cam[part, :3, :3] @ turn
    return sfm


def test_a_model_whose_cameras_turn_away_at_the_seam_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """Two SfM models meet and the camera turns 175 deg between neighbouring frames (a drone clip's second model,
    aligned to GPS with the wrong turn about its straight track): the one with fewer frames goes to the pose
    network, the report says why; two models that agree are both kept."""
    T_true = _truth()
    src = np.zeros(N, np.int64)
    flip = Rotation.from_euler("x", 175.0, degrees=True).as_matrix()
    with caplog.at_level(logging.WARNING):
        mp = metric_poses_from_sfm({0: _two_models(T_true, 60, flip)}, _gps(T_true), src, colmap_every=1)
    models = {m["model"]: m for m in mp.info["sources"]["0"]["models"]}
    assert models[0]["used"] and not models[1]["used"]
    assert re.search(r"turn 17\d deg from model 0's between frames 59 and 60", models[1]["why"]), models[1]["why"]
    assert "model 0 has more frames" in models[1]["why"] and "model 1 dropped" in caplog.text
    assert np.all(mp.label[60:] == POSENET) and np.all(mp.label[:60] != POSENET)
    assert _rot_err_deg(mp.T_world_cam[:60], T_true[:60]).max() < 1.0
    both = metric_poses_from_sfm({0: _two_models(T_true, 60, None)}, _gps(T_true), src, colmap_every=1)
    assert all(m["used"] for m in both.info["sources"]["0"]["models"])


def test_of_two_models_that_disagree_the_one_whose_cameras_stand_upright_is_kept() -> None:
    """Forward cameras: the larger model upside down (turned 180 deg about the view), the smaller upright: the
    upright one is kept, whatever the sizes."""
    T_true = _straight(90, sideways=2.0)
    flip = Rotation.from_euler("z", 180.0, degrees=True).as_matrix()  # about the optical axis: upside down
    sfm = _two_models(T_true, 60, None, turn_first=flip)
    cfg = MetricPosesConfig(level_straight_track=False)
    mp = metric_poses_from_sfm({0: sfm}, _gps(T_true, noise=0.1), np.zeros(len(T_true), np.int64), cfg,
                               colmap_every=1)  # fmt: skip
    models = {m["model"]: m for m in mp.info["sources"]["0"]["models"]}
    assert models[1]["used"] and not models[0]["used"]
    assert "model 1's cameras stand upright" in models[0]["why"]
    assert _rot_err_deg(mp.T_world_cam[60:], T_true[60:]).max() < 1.0
