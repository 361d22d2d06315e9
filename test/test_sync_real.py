"""Algorithm 1 on real data: the GoPro clips (GPS muxed in the MP4, true offset ~0) and the Husky bag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.convert.gps_logs import read_gps_log
from pose2rgbd.sync import FlowMagnitude, SyncConfig, correlate_signals

FRAME = 1 / 29.97
SHIFTS = (-1.0, -0.5, 0.5, 1.0)


def _flow(video: Path) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    from pose2rgbd.convert.sources.video import read_video_frames

    fm = FlowMagnitude()
    ts, vs = [], []
    for _, t, bgr in read_video_frames(video):
        vs.append(fm.add_image(t, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)))
        ts.append(fm.last_mid_t)
    t, v = np.asarray(ts), np.asarray(vs)
    ok = np.isfinite(v)
    return t[ok], v[ok]


@pytest.fixture(scope="session")
def gopro(shared_data: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Flow per clip (computed once per session) and the GPS speed from the derived CSVs."""
    d = shared_data / "gopro-gps-video"
    out = {}
    for name, log, fmt in (("karma", "karma_global_position.csv", "karma"), ("hero7", "hero7_gps5.csv", "gopro-gps5")):
        tf, vf = _flow(d / f"{name}.mp4")
        g = read_gps_log(d / "derived_csv" / log, fmt)
        out[name] = (tf, vf, g.t_s, g.speed)
    return out


def test_karma_as_recorded_is_near_zero_and_follows_shifts(gopro) -> None:
    tf, vf, tg, sg = gopro["karma"]
    cfg = SyncConfig(max_lag_s=3.0)
    base = correlate_signals(tf, vf, tg, sg, cfg)
    assert abs(base.estimate_s) < 0.5, base.describe()
    assert base.peak_ncc > 0.9
    for s in SHIFTS:
        r = correlate_signals(tf, vf, tg + s, sg, cfg)
        assert abs((r.estimate_s - base.estimate_s) - s) < 2 * FRAME, (s, r.describe())
        # a weak verdict must fall back to 0, never to the raw guess
        assert r.offset_s == (r.estimate_s if r.ok else 0.0)


def test_hero7_is_consistent_or_says_it_is_unsure(gopro) -> None:
    tf, vf, tg, sg = gopro["hero7"]
    cfg = SyncConfig(max_lag_s=3.0)
    for s in (0.0, *SHIFTS):
        r = correlate_signals(tf, vf, tg + s, sg, cfg, fallback_offset_s=None)
        if r.ok:  # a confident answer must be right (true offset ~0 + the shift)
            assert abs(r.estimate_s - s) < 2 * FRAME, (s, r.describe())
        else:
            assert r.reasons and r.offset_s == 0.0


@pytest.mark.parametrize("form", ["test1.bag", "husky_test1_rosbag2_sqlite3", "husky_test1_rosbag2_mcap"])
def test_husky_gps_vs_wheel_odometry(shared_data: Path, tmp_path: Path, form: str) -> None:
    from pose2rgbd.convert.gps_odom import align_gps_to_odometry

    a = align_gps_to_odometry(shared_data / "husky-gps-odom-imu-bag" / form, report_dir=tmp_path / "rep")
    r = a.result
    # same clock (one robot computer): the estimate is near zero, whatever the verdict says
    assert abs(r.estimate_s) < 0.5, r.describe()
    assert r.peak_ncc > 0.5
    assert a.summary["fixes"]["kept"] == 989
    ext = a.enu.max(0) - a.enu.min(0)
    assert 130 < ext[1] < 160 and 45 < ext[0] < 70  # ~146 m N-S x ~57 m E-W (SOURCE.txt)
    for f in ("sync.png", "track.png", "summary.json"):
        assert (tmp_path / "rep" / f).stat().st_size > 500


def test_gps_odom_report_goes_through_the_output_checks(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`convert gps-odom --report`: never into the input bag, never over a folder of the user's, an earlier report
    only with --overwrite; each refused before the bag is read, nothing written."""
    import shutil

    from pose2rgbd.cli.main import main

    bag = tmp_path / "husky"
    shutil.copytree(shared_data / "husky-gps-odom-imu-bag" / "husky_test1_rosbag2_mcap", bag)
    before = sorted(p.name for p in bag.iterdir())

    def run(report: Path, *extra: str) -> tuple[int, str]:
        rc = main(["convert", "gps-odom", str(bag), "--report", str(report), *extra])
        return rc, capsys.readouterr().err

    rc, err = run(bag / "report")
    assert rc == 2 and "lies inside the input" in err
    rc, err = run(bag, "--overwrite")
    assert rc == 2 and "is the input" in err
    assert sorted(p.name for p in bag.iterdir()) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for extra in ((), ("--overwrite",)):
        rc, err = run(mine, *extra)
        assert rc == 2 and "not a GPS-odometry report" in err and "(nothing was written)" in err, err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    rep = tmp_path / "rep"
    rep.mkdir()  # an empty folder is taken
    assert run(rep)[0] == 0
    assert sorted(p.name for p in rep.iterdir()) == ["summary.json", "sync.png", "track.png"]
    first = (rep / "summary.json").read_bytes()
    rc, err = run(rep)
    assert rc == 2 and "holds an earlier report; pass --overwrite to replace it" in err
    assert (rep / "summary.json").read_bytes() == first
    (rep / "labels.csv").write_text("x")  # the user's file put into the report: --overwrite would delete it
    rc, err = run(rep, "--overwrite")
    assert rc == 2 and "labels.csv" in err
    (rep / "labels.csv").unlink()
    assert run(rep, "--overwrite")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["husky", "mine", "rep"]  # no temporary left


def test_gps_odom_report_refuses_a_datasets_report_and_the_current_folder(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pose2rgbd.convert.gps_odom import check_report_dir
    from pose2rgbd.errors import OutputError

    bag = shared_data / "husky-gps-odom-imu-bag" / "husky_test1_rosbag2_mcap"
    ds = tmp_path / "ds"
    (ds / "report").mkdir(parents=True)
    (ds / "manifest.yaml").write_text("format: pose2rgbd-dataset\n")
    for name in ("sync.png", "track.png", "summary.json"):  # a conversion's report looks like this one's
        (ds / "report" / name).write_text("x")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match=r"lies in the dataset .*ds \(its manifest.yaml\)"):
            check_report_dir(ds / "report", bag, overwrite=overwrite)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    with pytest.raises(OutputError, match="is the folder the command runs in"):
        check_report_dir(".", bag)
    with pytest.raises(OutputError, match="holds the folder the command runs in"):
        check_report_dir("..", bag)
    assert check_report_dir("rep", bag) == here / "rep"  # a relative name: made absolute
