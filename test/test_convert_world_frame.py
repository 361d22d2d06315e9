"""The world frame a bag's dataset is written in (pose2rgbd.convert.stages.world_frame): the robot's own TF map,
fitted to the GPS's ENU frame, so that the render and localize nodes find the training poses where the robot's TF
puts its camera; the datum keeps the transform (GPS fixes -> the world), and its consumers use it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose2rgbd.convert.config import ConvertConfig
from pose2rgbd.convert.stages.world_frame import fit_world, fit_yaw_shift, poses_in_world
from pose2rgbd.errors import BagError, ConfigError
from pose2rgbd.geometry import Datum

YAW_DEG = 33.0
SHIFT = np.array([120.0, -45.0, 3.0])


def _T_map_enu(yaw_deg: float = YAW_DEG, shift: np.ndarray = SHIFT) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    T[:3, 3] = shift
    return T


def _angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    return np.degrees(Rotation.from_matrix(np.swapaxes(Ra, -1, -2) @ Rb).magnitude())


def test_the_turn_sigma_is_its_standard_error_on_a_short_track() -> None:
    """Over many noise draws on 8 points, the reported sigma of the turn matches the spread of the fitted turns (the
    residual's 2N - 3 degrees of freedom: dividing by 2(N - 3) reported it 14 % too large here)."""
    rng = np.random.default_rng(3)
    p_enu = np.array([[0, 0, 0], [10, 2, 0], [20, -3, 1], [25, 8, 1], [12, 15, 2], [0, 12, 2], [-6, 5, 1], [5, 6, 0.0]])
    T = _T_map_enu()
    yaws, sigmas = [], []
    for _ in range(3000):
        p_map = p_enu @ T[:3, :3].T + T[:3, 3] + rng.normal(0, 0.5, p_enu.shape)
        Tf, _, sigma = fit_yaw_shift(p_enu, p_map)
        yaws.append(math.atan2(Tf[1, 0], Tf[0, 0]))
        sigmas.append(sigma)
    spread = float(np.std(yaws))
    reported = math.sqrt(float(np.mean(np.square(sigmas))))
    assert abs(reported / spread - 1) < 0.06, (reported, spread)


def test_the_yaw_and_shift_fit_recovers_a_known_transform_through_noise() -> None:
    rng = np.random.default_rng(0)
    t = np.linspace(0, 20, 200)
    p_enu = np.stack([3 * t, 10 * np.sin(0.3 * t), 0.2 * t], -1)
    T = _T_map_enu()
    p_map = p_enu @ T[:3, :3].T + T[:3, 3] + rng.normal(0, 0.5, p_enu.shape)
    Tf, res, sigma = fit_yaw_shift(p_enu, p_map)
    yaw = math.degrees(math.atan2(Tf[1, 0], Tf[0, 0]))
    assert abs(yaw - YAW_DEG) < 0.3 and np.abs(Tf[:3, 3] - SHIFT).max() < 0.3, (yaw, Tf[:3, 3])
    assert 0.3 < np.sqrt(np.mean(res[:, :2] ** 2)) < 0.7 and 0 < math.degrees(sigma) < 0.3
    np.testing.assert_allclose(Tf[2, :3], [0, 0, 1])  # a turn about up only: GPS altitude noise cannot tilt it


def test_the_fit_refuses_what_it_cannot_see() -> None:
    still = np.zeros((50, 3)) + np.random.default_rng(1).normal(0, 0.3, (50, 3))
    fit, why = fit_world("map", "/tf: map -> base_link", still, still)
    assert fit is None and "moved" in why and "RMS horizontally" in why
    fit, why = fit_world("map", "x", still[:5], still[:5])
    assert fit is None and "at least 10" in why
    line = np.stack([np.linspace(0, 12, 40), np.zeros(40), np.zeros(40)], -1)  # 3.5 m RMS spread
    fit, why = fit_world("map", "x", line, line + np.random.default_rng(3).normal(0, 6.0, line.shape))
    assert fit is None and "uncertain by" in why, why
    fit, why = fit_world("map", "x", line, line + np.random.default_rng(3).normal(0, 0.05, line.shape))
    assert fit is not None and fit.yaw_sigma_deg < 0.5 and abs(fit.yaw_deg) < 0.5, why


def test_the_fit_leaves_out_a_jump_and_counts_drifting_noise() -> None:
    """A GPS jump (multipath) on a tenth of the frames does not turn the fit; noise that drifts from frame to frame
    (a random walk) widens the turn's uncertainty against the same amount of independent noise."""
    rng = np.random.default_rng(4)
    t = np.linspace(0, 60, 300)
    p_enu = np.stack([2 * t, 20 * np.sin(0.1 * t), np.zeros_like(t)], -1)
    T = _T_map_enu()
    p_map = p_enu @ T[:3, :3].T + T[:3, 3] + rng.normal(0, 0.1, p_enu.shape)
    jumped = p_enu.copy()
    jumped[100:130, 0] += 30.0
    fit, _ = fit_world("map", "x", jumped, p_map)
    assert fit is not None and abs(fit.yaw_deg - YAW_DEG) < 0.1 and fit.max_m > 25, (fit.yaw_deg, fit.max_m)
    white = rng.normal(0, 0.5, p_enu.shape)
    walk = np.cumsum(rng.normal(0, 0.5, p_enu.shape), 0)
    walk *= 0.5 / walk.std(0)
    a, _ = fit_world("map", "x", p_enu, p_enu @ T[:3, :3].T + T[:3, 3] + white)
    b, _ = fit_world("map", "x", p_enu, p_enu @ T[:3, :3].T + T[:3, 3] + walk)
    assert a is not None and b is not None and b.yaw_sigma_deg > 4 * a.yaw_sigma_deg, (a.yaw_sigma_deg, b.yaw_sigma_deg)


def test_where_the_far_frames_stay_in_the_fit_their_residuals_count_for_its_correlation() -> None:
    """12 frames, 3 of them far off the rest: too many to leave out (10 must stay), so the fit keeps all 12, and the
    correlation widening its sigma comes from the residuals of the frames it used, all 12 in time order (it took the
    9 near ones, whose sigma the fit had not used: the widening belongs to the sigma it multiplies)."""
    rng = np.random.default_rng(7)
    t = np.linspace(0, 30, 12)
    p_enu = np.stack([2 * t, 15 * np.sin(0.2 * t), np.zeros_like(t)], -1)
    T = _T_map_enu()
    noise = rng.normal(0, 0.2, p_enu.shape)
    noise[[2, 6, 9], 0] += [6.0, -7.0, 5.0]
    p_map = p_enu @ T[:3, :3].T + T[:3, 3] + noise
    fit, why = fit_world("map", "x", p_enu, p_map)
    assert fit is not None, why
    _, res, sigma = fit_yaw_shift(p_enu, p_map)
    r = res[:, :2] - res[:, :2].mean(0)
    rho = min(max(float(np.sum(r[1:] * r[:-1])) / float(np.sum(r[:-1] * r[:-1])), 0.0), 0.99)
    expected = math.degrees(sigma * math.sqrt((1 + rho) / (1 - rho)))
    assert fit.yaw_sigma_deg == pytest.approx(expected, rel=1e-9), (fit.yaw_sigma_deg, expected)


def test_poses_in_world_turn_rotations_by_the_frame_their_source_is_in() -> None:
    T = np.repeat(np.eye(4)[None], 3, 0)
    T[:, :3, 3] = [[1, 0, 0], [0, 2, 0], [0, 0, 3]]
    T[:, :3, :3] = Rotation.from_euler("z", [[0.0], [90.0], [180.0]], degrees=True).as_matrix()
    M = _T_map_enu()
    out = poses_in_world(T, np.eye(4), M)
    np.testing.assert_allclose(out, M @ T)
    from pose2rgbd.testing.flight_bag import T_BASE_CAM

    np.testing.assert_allclose(poses_in_world(T @ T_BASE_CAM, T_BASE_CAM, M), M @ T @ T_BASE_CAM, atol=1e-12)
    # rotations already in the world: the body's position moves, its rotation stays, the camera hangs from it
    kept = poses_in_world(T @ T_BASE_CAM, T_BASE_CAM, M, np.eye(3))
    body = (M @ T)[:, :3, 3]
    expect = T.copy()
    expect[:, :3, 3] = body
    np.testing.assert_allclose(kept, expect @ T_BASE_CAM, atol=1e-12)
    # a track whose frame TF places in the world: each rotation turned by that frame's own rotation there
    R_link = Rotation.from_euler("z", [[5.0], [6.0], [7.0]], degrees=True).as_matrix()
    linked = poses_in_world(T @ T_BASE_CAM, T_BASE_CAM, M, R_link)
    expect[:, :3, :3] = R_link @ T[:, :3, :3]
    np.testing.assert_allclose(linked, expect @ T_BASE_CAM, atol=1e-12)


def test_datum_keeps_the_transform_and_gps_fixes_land_in_the_world() -> None:
    d = Datum(47.0, 8.0, 400.0)
    assert d.world_from_enu is None and d.to_dict() == {"lat_deg": 47.0, "lon_deg": 8.0, "alt_m": 400.0}
    np.testing.assert_allclose(d.T_world_enu, np.eye(4))
    w = d.with_world(_T_map_enu())
    np.testing.assert_allclose(w.T_world_enu, _T_map_enu(), atol=1e-12)
    assert Datum.from_dict(json.loads(json.dumps(w.to_dict()))) == w
    lla = d.from_enu(np.array([10.0, 5.0, 1.0]))
    np.testing.assert_allclose(w.to_world(*lla), _T_map_enu()[:3, :3] @ [10.0, 5.0, 1.0] + SHIFT, atol=1e-6)
    np.testing.assert_allclose(d.to_world(*lla), [10.0, 5.0, 1.0], atol=1e-6)
    from pose2rgbd.errors import GeometryError

    with pytest.raises(GeometryError, match="unit quaternion"):
        Datum(47.0, 8.0, 400.0, (0, 0, 0, 0, 0, 0, 2))
    short = Datum(47.0, 8.0, 400.0, (1, 2, 3, 0, 0, 0.2840, 0.9588))  # a hand-edited manifest: 4 decimals
    assert short.world_from_enu is not None and abs(np.linalg.norm(short.world_from_enu[3:]) - 1) < 1e-12
    with pytest.raises(GeometryError, match="list of 7"):
        Datum.from_dict({"lat_deg": 47.0, "lon_deg": 8.0, "alt_m": 1.0, "world_from_enu_xyz_qxyzw": [1, 2]})


def test_the_localizer_gps_prior_and_the_recorder_use_the_world_of_the_datum() -> None:
    from pose2rgbd.messages import default_factory, navsatfix
    from pose2rgbd.nodes.localizer.structure import Priors

    d = Datum(47.0, 8.0, 400.0).with_world(_T_map_enu())
    lla = [float(v) for v in d.from_enu(np.array([10.0, 5.0, 1.0]))]
    pri = Priors()
    pri.add_gps(navsatfix(default_factory(), 5, "gps", *lla, covariance=[1.0] * 3), d, 10.0, 5)
    assert pri.gps is not None
    np.testing.assert_allclose(pri.gps[1], d.to_world(*lla), atol=1e-9)
    assert np.linalg.norm(pri.gps[1] - [10.0, 5.0, 1.0]) > 50


def test_a_merge_refuses_maps_whose_datum_sits_differently_in_the_world() -> None:
    """Two datasets converted into one robot frame fit the GPS into it apart by their GPS noise: within 0.5 m at every
    keyframe they are one frame (a note says by how much); a turn of 1 deg over 100 m, or one ENU and one fitted
    dataset, are not."""
    from pose2rgbd.placemap import MapError
    from pose2rgbd.placemap.merge import check_same_frame

    T = np.repeat(np.eye(4)[None], 3, 0)
    T[:, :3, 3] = [[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [100.0, 80.0, 5.0]]

    class Fake:
        def __init__(self, name: str, datum: Datum) -> None:
            self.path, self.world_frame, self.datum, self.fingerprint = Path(name), "map", datum, name
            self.T_world_cam = T

    d = Datum(47.0, 8.0, 400.0)
    assert check_same_frame([Fake("a", d.with_world(_T_map_enu())), Fake("b", d.with_world(_T_map_enu()))]) == []  # type: ignore[list-item]
    near = _T_map_enu(shift=SHIFT + np.array([0.2, -0.1, 0.0]))
    notes = check_same_frame([Fake("a", d.with_world(_T_map_enu())), Fake("b", d.with_world(near))])  # type: ignore[list-item]
    assert len(notes) == 1 and "differ by up to 0.22 m" in notes[0], notes
    with pytest.raises(MapError, match=r"place its ENU frame differently.*up to 2\.24 m apart"):
        check_same_frame([Fake("a", d.with_world(_T_map_enu())), Fake("b", d.with_world(_T_map_enu(34.0)))])  # type: ignore[list-item]
    with pytest.raises(MapError, match="place its ENU frame differently"):
        check_same_frame([Fake("a", d), Fake("b", d.with_world(_T_map_enu()))])  # type: ignore[list-item]


def test_a_video_cannot_take_a_tf_frame(tmp_path: Path) -> None:
    from pose2rgbd.convert.sources.video import VideoSource

    with pytest.raises(ConfigError, match="no TF tree"):
        VideoSource(tmp_path / "v.mp4", tmp_path / "g.csv", cfg=ConvertConfig(world_frame="map"))
    with pytest.raises(ConfigError, match="world_frame must be"):
        ConvertConfig(world_frame="/map")


@pytest.fixture(scope="module")
def turned_bag(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A 10 s flight whose robot map (/tf, /odom, ground truth) is turned 33 deg and shifted against the GPS's ENU."""
    from pose2rgbd.testing.flight_bag import write_flight_bag

    d = tmp_path_factory.mktemp("turned")
    truth = write_flight_bag(d / "bag", duration_s=10.0, size=32, T_map_enu=_T_map_enu())
    return d / "bag", truth


def _convert(bag: Path, out: Path, **kw: object) -> tuple[object, dict]:
    from pose2rgbd.convert.sources.bag import convert_bag
    from pose2rgbd.dataset import Dataset

    path = convert_bag(bag, out, ConvertConfig(**kw), progress=False)  # type: ignore[arg-type]
    return Dataset(path), json.loads((path / "report" / "summary.json").read_text())


def test_a_bag_is_written_in_its_robots_map(turned_bag: tuple[Path, object], tmp_path: Path) -> None:
    """The dataset's poses are the robot's map poses of the camera (the truth in the turned map): the GPS's positions
    moved into it, the TF track's rotations (of that frame) taken as they are."""
    bag, truth = turned_bag
    ds, summary = _convert(bag, tmp_path / "ds", orientation="tf")
    M = _T_map_enu()
    assert ds.manifest.world_frame == "map"
    wf = summary["world_frame"]
    assert wf["kind"] == "tf" and abs(wf["yaw_deg"] - YAW_DEG) < 0.05 and wf["rms_horizontal_m"] < 0.05, wf
    assert any(a.startswith("world frame: the bag's TF frame 'map'") for a in summary["assumptions"])
    # TF's rotations are written as they are, not taken as ENU
    assert any("the 'map' frame, the frame the poses are written in" in a for a in summary["assumptions"])
    assert not any("assumed ENU-aligned" in a for a in summary["assumptions"])
    assert ds.manifest.extra["conversion"]["world_frame"] == wf
    assert (ds.path / "report" / "world.png").stat().st_size > 10_000  # the two tracks and their distance, drawn
    T_true = M @ np.asarray(truth.T_world_cam)  # type: ignore[attr-defined]
    idx = np.searchsorted(truth.camera_stamps_ns, ds.frames.stamp_ns)  # type: ignore[attr-defined]
    T = ds.frames.T_world_cam
    assert np.abs(T[:, :3, 3] - T_true[idx, :3, 3]).max() < 0.1
    assert np.median(_angle_deg(T[:, :3, :3], T_true[idx, :3, :3])) < 1.0
    # a GPS fix of a frame lands at its camera's position in the map (the datum carries the turn and shift)
    lla = ds.frames.latlonalt
    assert ds.manifest.datum is not None
    gps = ds.manifest.datum.to_world(lla[:, 0], lla[:, 1], lla[:, 2])
    from pose2rgbd.testing.flight_bag import T_BASE_CAM

    base = T @ np.linalg.inv(T_BASE_CAM)
    assert np.abs(gps - base[:, :3, 3]).max() < 0.1
    # a place map of it keeps the transform (its GPS prior, merge and ground use it)
    from pose2rgbd.placemap.build import dataset_entry

    entry = json.loads(json.dumps(dataset_entry(ds, ds.path)))
    assert entry["world_frame"] == "map" and Datum.from_dict(entry["datum"]) == ds.manifest.datum


def test_enu_keeps_the_gps_frame_and_a_missing_frame_is_named(turned_bag: tuple[Path, object], tmp_path: Path) -> None:
    """``enu``: the GPS's frame, no transform kept. The same conversion with ``auto`` is those poses turned and shifted
    by the transform it keeps, rotations too where they are ENU's (the GPS course here)."""
    bag, truth = turned_bag
    ds, summary = _convert(bag, tmp_path / "enu", world_frame="enu", orientation="course")
    assert summary["world_frame"] == {"frame": "map", "kind": "enu", "why": "world_frame enu"}
    assert not (ds.path / "report" / "world.png").exists()  # no fit, no figure
    assert ds.manifest.datum is not None and ds.manifest.datum.world_from_enu is None
    T = ds.frames.T_world_cam
    idx = np.searchsorted(truth.camera_stamps_ns, ds.frames.stamp_ns)  # type: ignore[attr-defined]
    true_enu = np.asarray(truth.T_world_cam)[idx, :3, 3]  # type: ignore[attr-defined]
    d = true_enu - T[:, :3, 3]  # ENU about the first fix: the truth less one constant shift
    assert np.abs(d - d.mean(0)).max() < 0.1
    auto, s2 = _convert(bag, tmp_path / "auto", orientation="course")
    assert auto.manifest.datum is not None and s2["world_frame"]["kind"] == "tf"
    np.testing.assert_allclose(auto.frames.T_world_cam, auto.manifest.datum.T_world_enu @ T, atol=1e-4)
    assert abs(s2["world_frame"]["yaw_deg"] - YAW_DEG) < 0.05
    with pytest.raises(BagError, match=r"world_frame 'odom'.*none of the TF frames \['odom'\]"):
        _convert(bag, tmp_path / "x", world_frame="odom")
    with pytest.raises(ConfigError, match="'earth' is ECEF"):
        ConvertConfig(world_frame="earth")
    assert not (tmp_path / "x").exists()


def test_auto_keeps_enu_where_the_robot_did_not_move_enough(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pose2rgbd.testing.flight_bag import write_flight_bag

    write_flight_bag(tmp_path / "bag", duration_s=3.0, size=32, T_map_enu=_T_map_enu())  # 1.7 m RMS of motion
    ds, summary = _convert(tmp_path / "bag", tmp_path / "ds")
    assert summary["world_frame"]["kind"] == "enu" and "RMS horizontally" in summary["world_frame"]["why"]
    assert ds.manifest.world_frame == "enu"  # not 'map': the bag's map is another frame
    assert "the poses stay in the GPS's ENU frame" in caplog.text
    with pytest.raises(BagError, match=r"world_frame 'map'.*RMS horizontally"):
        _convert(tmp_path / "bag", tmp_path / "named", world_frame="map")


def test_the_console_says_which_frame_was_written(
    turned_bag: tuple[Path, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pose2rgbd.cli.main import main

    bag, _ = turned_bag
    assert main(["convert", "bag", str(bag), "--out", str(tmp_path / "a"), "--no-progress", "--orientation", "tf"]) == 0
    out = capsys.readouterr().out
    assert "world frame: the bag's TF 'map' (/tf: map -> base_link): the GPS poses turned +33.0" in out, out
    argv = ["convert", "bag", str(bag), "--out", str(tmp_path / "b"), "--no-progress", "--world-frame", "enu"]
    assert main(argv) == 0
    assert "world frame: ENU about the datum, named 'map' (world_frame enu)" in capsys.readouterr().out


def test_a_recording_resumed_into_a_converted_dataset_stays_in_its_frame(
    turned_bag: tuple[Path, object], tmp_path: Path
) -> None:
    """The record node appending to a dataset that convert bag wrote in the robot's map keeps its frame, its datum's
    transform and its conversion record, and places the new frames in that map."""
    from pose2rgbd.config import from_dict
    from pose2rgbd.convert.config import ConvertTopics
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.nodes.recorder.config import RecorderConfig
    from pose2rgbd.runtime.offline import run_recorder_bag
    from pose2rgbd.testing.flight_bag import T0_NS, T_world_base, write_flight_bag

    bag, _ = turned_bag
    # a dataset without depth (the recorder writes none; it resumes only a dataset of its own kind)
    ds, summary = _convert(bag, tmp_path / "ds", orientation="tf", topics=ConvertTopics(depth=""))
    n0 = len(ds)
    later = write_flight_bag(
        tmp_path / "later", duration_s=4.0, size=32, T_map_enu=_T_map_enu(), t0_ns=T0_NS + 20 * 10**9
    )
    cfg = from_dict(RecorderConfig, {"output": {"dataset": str(ds.path)}, "world_frame": "elsewhere"})
    assert run_recorder_bag(cfg, tmp_path / "later").counters["frames"] > 20
    after = Dataset(ds.path)
    assert after.manifest.world_frame == "map" and after.manifest.datum == ds.manifest.datum
    assert after.manifest.extra["conversion"]["world_frame"] == summary["world_frame"]
    new = after.frames.stamp_ns > ds.frames.stamp_ns.max()
    assert new.sum() == len(after) - n0 > 20
    # the dataset's name and sources kept; the recording is a source of its own (another flight: split apart)
    assert after.manifest.name == ds.manifest.name and after.manifest.sources[:-1] == ds.manifest.sources
    own = after.manifest.sources[-1]
    assert own["kind"] == "recording" and int(own["id"]) == max(int(s["id"]) for s in ds.manifest.sources) + 1
    assert set(after.frames.source_id[new].tolist()) == {int(own["id"])}
    assert set(after.frames.source_id[~new].tolist()) == set(ds.frames.source_id.tolist())
    t = (after.frames.stamp_ns[new] - T0_NS - 20 * 10**9) / 1e9
    body_true = (_T_map_enu() @ T_world_base(t))[:, :3, 3]  # the GPS antenna is the base's origin
    from pose2rgbd.testing.flight_bag import T_BASE_CAM

    body = (after.frames.T_world_cam[new] @ np.linalg.inv(T_BASE_CAM))[:, :3, 3]
    assert np.abs(body - body_true).max() < 0.1, np.abs(body - body_true).max()
    assert later.camera_stamps_ns.size > 0


def test_odometry_whose_frame_tf_places_in_the_map_is_written_in_it(
    tmp_path: Path, turned_bag: tuple[Path, object], caplog: pytest.LogCaptureFixture
) -> None:
    """The default orientation (auto: the odometry) of a robot whose odom hangs from its map (REP-105): its rotations
    are put in the map by TF's map -> odom, not taken as ENU and turned by the fit (33 deg off). Where the odometry's
    frame is not in TF, the rotations are turned, with a warning that names the way out."""
    from pose2rgbd.testing.flight_bag import write_flight_bag

    truth = write_flight_bag(tmp_path / "bag", duration_s=10.0, size=32, T_map_enu=_T_map_enu(), odom_in_tf=True)
    ds, summary = _convert(tmp_path / "bag", tmp_path / "ds")
    assert summary["orientation_source"] == "odom" and summary["world_frame"]["kind"] == "tf"
    assert any("its frame 'odom' placed in 'map'" in a for a in summary["assumptions"]), summary["assumptions"]
    idx = np.searchsorted(truth.camera_stamps_ns, ds.frames.stamp_ns)
    T_true = _T_map_enu() @ np.asarray(truth.T_world_cam)[idx]
    T = ds.frames.T_world_cam
    assert np.median(_angle_deg(T[:, :3, :3], T_true[:, :3, :3])) < 0.5
    assert np.abs(T[:, :3, 3] - T_true[:, :3, 3]).max() < 0.1
    # the turned bag's /odom frame is not in its TF: taken as ENU-aligned and turned, said so
    bag, _ = turned_bag
    _convert(bag, tmp_path / "ds2")
    assert "is not in the bag's TF" in caplog.text and "--orientation tf" in caplog.text


def test_align_odom_yaw_into_a_tf_frame_is_warned(
    turned_bag: tuple[Path, object], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bag, _ = turned_bag
    _convert(bag, tmp_path / "ds", orientation="tf", align_odom_yaw=True)
    assert "leave align_odom_yaw off" in caplog.text
