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
from pose2rgbd.inference.calibration import Calibration
from pose2rgbd.inference.self_calibration import held_out_rows, held_out_windows, keyframe_runs
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


def _blocks(held: np.ndarray) -> list[np.ndarray]:
    """Runs of consecutive rows: two windows that overlapped or touched would make one longer run."""
    h = np.sort(held)
    return np.split(h, np.flatnonzero(np.diff(h) > 1) + 1)


def _check_windows(n: int, w: int, runs: list[np.ndarray] | None = None) -> list[int]:
    """The windows of a map of ``n`` keyframes are apart, each of exactly its length, inside one run and touching
    neither end of it; returns the number of windows per length."""
    runs = [np.arange(n)] if runs is None else runs
    run_of = np.empty(n, np.int64)
    pos = np.empty(n, np.int64)
    for j, r in enumerate(runs):
        run_of[r], pos[r] = j, np.arange(len(r))
    counts = []
    for length, held, queries in held_out_windows(n, SelfCalibrationConfig(gap_windows=w), runs):
        assert length <= n // 4 and len(np.unique(held)) == len(held)  # no row in two windows
        assert np.isin(queries, held).all() and len(queries) <= 5 * len(held) // length
        wins = held.reshape(-1, length)  # each window: its rows, in its run's time order
        assert 1 <= len(wins) <= w
        for win in wins:
            r = runs[run_of[win[0]]]
            assert (run_of[win] == run_of[win[0]]).all() and (np.diff(pos[win]) == 1).all()  # consecutive, one run
            assert pos[win].min() > 0 and pos[win].max() < len(r) - 1  # never the run's first or last keyframe
        # apart: between two windows of a run at least one keyframe that is in neither
        for j in range(len(runs)):
            mine = sorted(pos[win[0]] for win in wins if run_of[win[0]] == j)
            assert (np.diff(mine) > length).all()
        counts.append(len(wins))
    return counts


def test_held_out_windows_are_contiguous_interior_and_grow_to_a_quarter_of_the_map() -> None:
    wins = held_out_windows(400, SelfCalibrationConfig())
    assert [length for length, _, _ in wins] == [4, 8, 16, 32, 64]
    for length, held, queries in wins:
        assert len(held) == 3 * length and held.min() > 0 and held.max() < 399
        assert np.isin(queries, held).all() and len(queries) <= 15
    assert held_out_windows(400, SelfCalibrationConfig(gap_windows=0)) == []
    assert held_out_windows(12, SelfCalibrationConfig()) == []  # too small a map for a window


def test_the_largest_windows_do_not_merge() -> None:
    """576 keyframes (the TUM route-split map): three windows of 128 evenly spread used to overlap into one block of
    352 (a map of 39 %); the 128-keyframe windows are now two, apart. 64 keyframes: one window of 16."""
    assert _check_windows(576, 3) == [3, 3, 3, 3, 3, 2]
    for length, held, _ in held_out_windows(576, SelfCalibrationConfig()):
        assert [len(b) for b in _blocks(held)] == [length] * (len(held) // length)
    assert _check_windows(64, 3) == [3, 3, 1]
    for length, held, _ in held_out_windows(64, SelfCalibrationConfig()):
        assert [len(b) for b in _blocks(held)] == [length] * (len(held) // length)


@pytest.mark.parametrize("w", [1, 2, 3, 5, 20])
def test_windows_never_overlap_for_any_map_size(w: int) -> None:
    for n in range(3, 700):
        _check_windows(n, w)


def test_windows_lie_inside_one_flight() -> None:
    """A map of two flights (rows interleaved, as a merged map may order them) and a flight too short for a window:
    each window is consecutive keyframes of one flight in time order; the short flight gets none."""
    rng = np.random.default_rng(3)
    source = np.repeat([0, 1, 2], [300, 200, 9])
    rng.shuffle(source)
    stamps = rng.permutation(len(source)).astype(np.int64)
    runs = keyframe_runs(len(source), source, stamps)
    assert [len(r) for r in runs] == [300, 200, 9]
    assert all((np.diff(stamps[r]) > 0).all() and (source[r] == source[r[0]]).all() for r in runs)
    _check_windows(len(source), 3, runs)
    held = np.concatenate([h for _, h, _ in held_out_windows(len(source), SelfCalibrationConfig(), runs)])
    assert not np.isin(runs[2], held).any()


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
    assert fitted["gap_fixes"] >= 12 and "gap_max_pose_ratio" in cal.gate, fitted
    # the gate as written: max_* the near range (what a reader without gap ranges gates by), gap_max_* the outer one
    assert (cal.gate["max_position_ratio"], cal.gate["max_pose_ratio"]) == (near["max_position_ratio"],
                                                                          near["max_pose_ratio"])  # fmt: skip
    assert cal.gate["gap_max_position_ratio"] > near["max_position_ratio"]
    assert cal.gate["gap_max_pose_ratio"] > near["max_pose_ratio"]
    assert not {"near_position_ratio", "near_pose_ratio"} & set(cal.gate)
    assert fitted["gap_position_scale"] > 1.5 and fitted["gap_orientation_scale"] > 1.5, fitted

    q = _fix(T_all[240], rng, 4.0)  # the block's middle: a small error
    pr, qr = coverage_ratios(poses, q.T_world_cam, cal.gate)
    assert pr[0] > near["max_position_ratio"] and qr[0] > near["max_pose_ratio"]  # beyond the singles' range

    old = Calibration.from_dict({**cal.to_dict(), "gate": near})  # the calibration before the extension
    before = _fix(q.T_world_cam, rng, 0.0)
    before.T_world_cam = q.T_world_cam.copy()
    finish_fix(before, old, poses, ood_covariance_scale=100.0)
    assert before.flag.startswith("beyond the map's coverage"), before.flag

    # an older reader knows max_* only: to it the gate is the near one, and the gap query is flagged (its covariance
    # x 100), not published with the near covariance
    older = {k: v for k, v in cal.gate.items() if not k.startswith("gap_")}
    assert older == near
    older_reason = Calibration.from_dict({**cal.to_dict(), "gate": older}).gate_reason(pr[0], qr[0], 150, 0.8)
    assert older_reason.startswith("beyond the map's coverage"), older_reason

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
    assert "gap_max_pose_ratio" not in cal.gate and fitted["gap_position_scale"] > 100.0


def test_a_gate_in_the_first_gap_form_reads_alike() -> None:
    """The gap range's first, unreleased form (``near_*`` the near range, ``max_*`` the outer one) gives the same
    ranges, flags and gap covariance as the written form."""
    from pose2rgbd.inference.calibration import gate_ranges
    from pose2rgbd.inference.structure_calibration import in_gap

    gate = {"max_position_ratio": 2.0, "max_pose_ratio": 1.5, "gap_max_position_ratio": 40.0,
            "gap_max_pose_ratio": 20.0, "gap_position_scale": 3.0, "gap_orientation_scale": 5.0}  # fmt: skip
    first = {**gate, "near_position_ratio": 2.0, "near_pose_ratio": 1.5, "max_position_ratio": 40.0,
             "max_pose_ratio": 20.0}  # fmt: skip
    del first["gap_max_position_ratio"], first["gap_max_pose_ratio"]
    assert gate_ranges(gate) == gate_ranges(first) == (2.0, 1.5, 40.0, 20.0)
    cal = Calibration(covariance=np.eye(6), n_frames=12)
    for p, q in [(1.0, 1.0), (10.0, 1.0), (1.0, 10.0), (50.0, 1.0), (1.0, 30.0)]:
        cal.gate = gate
        reason = cal.gate_reason(p, q, 150, 0.8)
        cal.gate = first
        assert cal.gate_reason(p, q, 150, 0.8) == reason and in_gap(gate, p, q) == in_gap(first, p, q)
        assert in_gap(gate, p, q) == (p > 2.0 or q > 1.5) and bool(reason) == (p > 40.0 or q > 20.0)
    assert not in_gap({"max_position_ratio": 2.0, "max_pose_ratio": 1.5}, 10.0, 10.0)  # no gap range: never


def test_no_windows_without_a_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """A calibration without a gate has no range to extend: the windows are not localized."""
    from types import SimpleNamespace

    from pose2rgbd.inference import self_calibration as sc

    T = _trajectory(200)
    rng = np.random.default_rng(2)
    calls: list[str] = []

    def localize(view: object, held: np.ndarray, queries: np.ndarray, progress: bool, desc: str) -> tuple:
        calls.append(desc)
        rest = SimpleNamespace(poses=PoseSet(np.delete(T, held, axis=0), rot_weight_m=ROT_WEIGHT_M))
        return [_fix(T[i], rng, 4.0) for i in queries], rest

    real_fit = sc.fit_structure_calibration

    def fit_without_gate(*args: object, **kwargs: object) -> Calibration:
        cal = real_fit(*args, **kwargs)  # type: ignore[arg-type]
        cal.gate = {}
        return cal

    class View:
        T_world_cam, rot_weight_m, source_id, stamp_ns = T, ROT_WEIGHT_M, None, None

        def __len__(self) -> int:
            return len(T)

    monkeypatch.setattr(sc, "_localize", localize)
    entry = sc.self_calibrate(View(), SelfCalibrationConfig())  # type: ignore[arg-type]
    assert entry["status"] == "calibrated" and "gaps" in entry and len(calls) > 1  # with a gate: the windows too
    calls.clear()
    monkeypatch.setattr(sc, "fit_structure_calibration", fit_without_gate)
    entry = sc.self_calibrate(View(), SelfCalibrationConfig())  # type: ignore[arg-type]
    assert entry["status"] == "calibrated" and "gaps" not in entry and calls == ["self-calibration"]
