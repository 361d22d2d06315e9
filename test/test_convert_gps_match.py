"""A --gps log checked against the GPS inside the video (a GoPro's GPMF): a log of another place or time is refused
(`--no-gps-check` warns and takes it), a GPX log is placed on the video clock by the camera's GPS time."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.cli.main import main
from pose2rgbd.convert.config import ConvertConfig
from pose2rgbd.convert.gopro import read_gpmf_gps
from pose2rgbd.convert.gps_logs import GpsTrack, read_gps_log
from pose2rgbd.convert.gps_match import APART_M, allowed_m, apart_m, log_mismatch
from pose2rgbd.convert.sources.video import VideoSource
from pose2rgbd.errors import SyncError

M_PER_DEG = 111_195.0  # along a meridian, on the sphere the check uses


def _track(t: np.ndarray, north_m: np.ndarray, *, east_m: float = 0.0, lat0: float = 33.0,
           utc0: float = float("nan")) -> GpsTrack:  # fmt: skip
    n = t.size
    lat = lat0 + np.asarray(north_m, np.float64) / M_PER_DEG
    lon = np.full(n, -117.0 + east_m / (M_PER_DEG * np.cos(np.deg2rad(lat0))))
    return GpsTrack(t, lat, lon, np.zeros(n), np.full(n, np.nan), np.zeros(n, int), "test", utc0_s=utc0)


def test_same_flight_passes_other_place_is_named() -> None:
    t = np.arange(0.0, 12.0, 0.1)
    own = _track(t, 1.8 * t, east_m=4.0)  # a camera 4 m off the log: one flight, two receivers
    log = _track(t, 1.8 * t)
    assert apart_m(log, own) == pytest.approx(4.0, abs=0.2)
    assert log_mismatch(log, own, log_name="log", video_name="clip") is None
    # a log of a longer flight that contains the clip: the clip's fixes each near one of the log's
    long = _track(np.arange(-600.0, 600.0, 1.0), 1.8 * np.arange(-600.0, 600.0, 1.0))
    assert log_mismatch(long, own, log_name="log", video_name="clip") is None
    # the same field, 400 m away: another place
    far = _track(t, 1.8 * t, east_m=400.0)
    why = log_mismatch(far, own, log_name="far.csv", video_name="clip.mp4")
    assert why is not None and "396 m from the track of the GPS log far.csv" in why and "another place" in why
    # another continent
    why = log_mismatch(_track(t, 1.8 * t, lat0=48.0), own, log_name="far.csv", video_name="clip.mp4")
    assert why is not None and " km from the track" in why
    # no usable fix in one of them: nothing to judge by
    nofix = _track(t, 1.8 * t + 400.0)
    nofix.status[:] = -1
    assert log_mismatch(nofix, own, log_name="log", video_name="clip") is None


def test_sparse_fast_log_is_given_half_its_step() -> None:
    """A drone at 30 m/s logging every 3 s: its fixes are 90 m apart, so an own fix between two is up to 45 m
    from both; that is allowed on top of APART_M, and a log 200 m off is still refused."""
    t = np.arange(0.0, 60.0, 3.0)
    log = _track(t, 30.0 * t)
    own = _track(np.arange(10.0, 20.0, 0.05), 30.0 * np.arange(10.0, 20.0, 0.05) + 60.0)  # 60 m along, and off
    assert allowed_m(log) == pytest.approx(APART_M + 45.0, rel=0.01)
    assert log_mismatch(log, own, log_name="log", video_name="clip") is None
    shifted = _track(t, 30.0 * t, east_m=200.0)  # 200 m east of the path
    assert log_mismatch(shifted, own, log_name="log", video_name="clip") is not None


def test_another_day_is_named_by_its_dates() -> None:
    t = np.arange(0.0, 12.0, 0.1)
    utc = dt.datetime(2019, 5, 10, 18, 0, tzinfo=dt.timezone.utc).timestamp()
    own = _track(t, 1.8 * t, utc0=utc)
    same_place_next_day = _track(t, 1.8 * t, utc0=utc + 86_400.0)
    why = log_mismatch(same_place_next_day, own, log_name="log.gpx", video_name="clip.mp4")
    assert why is not None and "2019-05-11 18:00:00 UTC" in why and "2019-05-10 18:00:00 UTC" in why
    # a log started ten minutes before the camera and still running: one flight
    longer = _track(np.arange(0.0, 1200.0, 1.0), np.zeros(1200), utc0=utc - 600.0)
    assert log_mismatch(longer, own, log_name="log.gpx", video_name="clip.mp4") is None


def _gpx_of_hero7(clip: Path, path: Path, *, shift_s: float, lead_s: float) -> Path:
    """A GPX log of hero7's own GPS at 1 Hz, its times moved by ``shift_s``, starting ``lead_s`` before the clip
    (the first position held): a drone's or a phone's log of the same walk."""
    g = read_gpmf_gps(clip)
    utc = g.utc_s + shift_s
    times = np.arange(utc[0] - lead_s, utc[-1], 1.0)
    lat, lon = np.interp(times, utc, g.lat), np.interp(times, utc, g.lon)
    pts = "".join(
        f'<trkpt lat="{a:.7f}" lon="{o:.7f}"><ele>10</ele>'
        f"<time>{dt.datetime.fromtimestamp(s, dt.timezone.utc).isoformat()}</time></trkpt>"
        for s, a, o in zip(times, lat, lon, strict=True)
    )
    path.write_text(f'<?xml version="1.0"?>\n<gpx version="1.1"><trk><trkseg>{pts}</trkseg></trk></gpx>')
    return path


def test_gpx_placed_on_the_video_clock_by_the_cameras_gps_time(shared_data: Path, tmp_path: Path) -> None:
    clip = shared_data / "gopro-gps-video" / "hero7.mp4"
    gpx = _gpx_of_hero7(clip, tmp_path / "walk.gpx", shift_s=0.0, lead_s=20.0)
    src = VideoSource(clip, gpx, ConvertConfig())
    track = read_gps_log(gpx)
    assert track.t_s[0] == 0.0  # on its own, the log's first point is taken for the first frame
    placed, said = src._checked_against_own_gps(track, gpx)
    assert placed.t_s[0] == pytest.approx(-20.0, abs=1.1)  # it started 20 s before the camera
    assert len(said) == 1 and "camera's own GPS time" in said[0] and "-2" in said[0]
    # --video-start-utc given: the user's clock is kept
    src = VideoSource(clip, gpx, ConvertConfig(), video_start_utc="2019-05-06T18:15:00Z")
    kept = read_gps_log(gpx, video_start_utc="2019-05-06T18:15:00Z")
    assert src._checked_against_own_gps(kept, gpx)[1] == []
    # the same walk's log of the next day: refused by its dates
    nextday = _gpx_of_hero7(clip, tmp_path / "next.gpx", shift_s=86_400.0, lead_s=0.0)
    dates = r"recorded from 2019-05-07 18:15.*from 2019-05-06 18:15.*its own GPS time.*another flight.*--no-gps-check"
    with pytest.raises(SyncError, match=dates):
        VideoSource(clip, nextday, ConvertConfig())._checked_against_own_gps(read_gps_log(nextday), nextday, "gpx")
    # taken anyway (--no-gps-check): not placed a day away by the camera's time, but by its first point, and said so
    taken, said = VideoSource(clip, nextday, ConvertConfig(check_gps_log=False))._checked_against_own_gps(
        read_gps_log(nextday), nextday, "gpx"
    )
    assert taken.t_s[0] == 0.0 and any("first point taken as the first frame" in n for n in said), said
    assert any(n.startswith("the GPS log taken although the GPS log") for n in said), said
    # ... and with --video-start-utc given, placed by that time: no first-point note
    given = "2019-05-07T18:15:07Z"
    _, said = VideoSource(
        clip, nextday, ConvertConfig(check_gps_log=False), video_start_utc=given
    )._checked_against_own_gps(read_gps_log(nextday, video_start_utc=given), nextday, "gpx")
    assert not any("first point" in n for n in said) and any(n.startswith("the GPS log taken although") for n in said)


def test_convert_video_refuses_another_flights_log(shared_data: Path, tmp_path: Path, capsys, caplog) -> None:
    """hero7 (a walk) with the Karma drone's log (a flight 380 m away): refused before the video is read; with
    --no-gps-check warned, taken and listed among the assumptions."""
    d = shared_data / "gopro-gps-video"
    out = tmp_path / "h7"
    args = ["convert", "video", str(d / "hero7.mp4"), "--gps", str(d / "derived_csv/karma_global_position.csv"),
            "--out", str(out), "--size", "106x60", "--jpg", "--max-lag", "2", "--sync.flow.width", "64",
            "--sync.flow.dis_preset", "ultrafast", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "from the track of the GPS log" in err and "another place or flight" in err and "--no-gps-check" in err
    assert "leave out --gps" in err and not out.exists()
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--no-gps-check"]) == 0
    assert any("taken anyway (--no-gps-check)" in r.getMessage() for r in caplog.records)
    s = json.loads((out / "report" / "summary.json").read_text())
    assert "the GPS log taken although the video" in json.dumps(s)
    # the clip's own log (the CSV derived from its telemetry) passes
    capsys.readouterr()
    own = ["--gps", str(d / "derived_csv/hero7_gps5.csv"), "--out", str(tmp_path / "own")]
    with caplog.at_level(logging.INFO):
        assert main([*args[:3], *own, *args[7:]]) == 0
    assert any("passes 0 m (median)" in r.getMessage() for r in caplog.records)


def test_gpx_beside_a_video_without_gps_says_its_first_point_is_the_first_frame(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No camera GPS time to place it by, no --video-start-utc: the assumption is listed, and warned where the log
    runs longer than the video by more than the offset search reaches (it may have started before the camera)."""
    import cv2

    video = tmp_path / "plain.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(20):
        w.write(np.full((48, 64, 3), i * 10, np.uint8))
    w.release()

    def gpx(name: str, seconds: int) -> Path:
        t0 = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone.utc).timestamp()
        pts = "".join(
            f'<trkpt lat="{33 + k * 1e-5:.6f}" lon="-117"><ele>5</ele>'
            f"<time>{dt.datetime.fromtimestamp(t0 + k, dt.timezone.utc).isoformat()}</time></trkpt>"
            for k in range(seconds)
        )
        p = tmp_path / name
        p.write_text(f'<?xml version="1.0"?>\n<gpx version="1.1"><trk><trkseg>{pts}</trkseg></trk></gpx>')
        return p

    with caplog.at_level(logging.WARNING):
        s = VideoSource(video, gpx("long.gpx", 120), ConvertConfig()).read(progress=False)
    assert any("GPX log" in n and "first point taken as the first frame" in n for n in s.extra_assumptions)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("spans 119 s, the video 2 s" in m and "--video-start-utc" in m for m in warned), warned
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        s = VideoSource(video, gpx("short.gpx", 4), ConvertConfig()).read(progress=False)
    assert any("first point taken as the first frame" in n for n in s.extra_assumptions)
    assert not [r for r in caplog.records if "--video-start-utc" in r.getMessage()]
    s = VideoSource(video, gpx("given.gpx", 120), ConvertConfig(), video_start_utc="2024-06-01T12:00:30Z").read(
        progress=False
    )
    assert not any("first point" in n for n in s.extra_assumptions)
