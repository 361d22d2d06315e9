"""GoPro telemetry (GPMF) read from the MP4 against the CSVs derived from the same files, GPS log format
detection, and `convert video clip.mp4` without a GPS log."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.cli.main import main
from pose2rgbd.convert.gopro import has_gpmf, read_gpmf
from pose2rgbd.convert.gps_logs import _col, _karma_video_time, _read_rows, detect_gps_format, read_gps_log
from pose2rgbd.errors import SyncError


def _clips(shared_data: Path) -> Path:
    return shared_data / "gopro-gps-video"


def test_hero7_gps5_matches_the_derived_csv(shared_data: Path) -> None:
    d = _clips(shared_data)
    tel = read_gpmf(d / "hero7.mp4")
    g = tel.gps
    assert g is not None and g.stream == "GPS5" and "Hero7" in tel.device
    _, rows = _read_rows(d / "derived_csv/hero7_gps5.csv")
    assert len(g) == len(rows) == 199
    # the same samples, scaled the same way: lat/lon to 1e-7 deg (the stored resolution), alt / speed to 1 mm
    assert np.allclose(g.lat, _col(rows, "lat_deg"), rtol=0, atol=1e-7)
    assert np.allclose(g.lon, _col(rows, "lon_deg"), rtol=0, atol=1e-7)
    assert np.allclose(g.alt, _col(rows, "alt_m"), rtol=0, atol=1e-3)
    assert np.allclose(g.speed2d, _col(rows, "speed2d_mps"), rtol=0, atol=1e-3)
    assert np.allclose(g.speed3d, _col(rows, "speed3d_mps"), rtol=0, atol=1e-3)
    assert (g.fix == _col(rows, "gps_fix")).all()
    assert np.allclose(g.dop * 100, _col(rows, "gps_dop_x100"), atol=1e-6)
    # Time: the CSV spreads each ~1 s payload's samples evenly over it (an approximation); the parser fits one
    # rate over the file. They agree within 0.1 s except in the last payload, whose length the CSV guessed.
    t_csv = _col(rows, "video_time_s")
    gpsu = [r["gpsu_utc"] for r in rows]
    last = gpsu.index(gpsu[-1])
    assert np.abs(g.t_s[:last] - t_csv[:last]).max() < 0.1
    assert np.all(np.diff(g.t_s) > 0) and 0 <= g.t_s[0] < 0.2 and abs(g.t_s[-1] - 11.0) < 0.2
    # GPSU (UTC of each payload's first fix) against our video-clock times: a constant offset within 0.1 s,
    # which is the check that the timing is right (the CSV's even spacing is off by up to 0.12 s here)
    first = np.r_[True, np.diff(g.utc_s) > 0.5]
    first[0] = True
    u0 = dt.datetime(2019, 5, 6, 18, 15, 7, 395000, tzinfo=dt.timezone.utc).timestamp()
    assert g.utc_s[0] == pytest.approx(u0, abs=1e-3)
    off = g.utc_s[first] - g.t_s[first]
    assert np.ptp(off) < 0.1
    # IMU: about 200 Hz over the clip, gravity in the accelerometer, small rates in the gyro
    a, w = tel.imu["ACCL"], tel.imu["GYRO"]
    assert a.units == "m/s^2" and w.units == "rad/s" and a.axes == "ZXY"
    for s in (a, w):
        assert s.data.shape == (s.t_s.size, 3) and np.all(np.diff(s.t_s) > 0)
        assert 190 < (s.t_s.size - 1) / (s.t_s[-1] - s.t_s[0]) < 210
    assert 8.5 < np.median(np.linalg.norm(a.data, axis=1)) < 12.0  # gravity plus the walk
    assert np.median(np.abs(w.data)) < 1.0


def test_karma_drone_gps_matches_the_derived_csv(shared_data: Path) -> None:
    d = _clips(shared_data)
    tel = read_gpmf(d / "karma.mp4")
    g = tel.gps
    assert g is not None and g.stream == "GPRI" and "Karma" in tel.device
    _, rows = _read_rows(d / "derived_csv/karma_gps_raw.csv")
    assert len(g) == len(rows) == 47
    assert np.allclose(g.lat, _col(rows, "lat_deg"), rtol=0, atol=1e-7)
    assert np.allclose(g.lon, _col(rows, "lon_deg"), rtol=0, atol=1e-7)
    assert np.allclose(g.alt, _col(rows, "alt_m"), rtol=0, atol=1e-3)
    assert np.allclose(g.speed2d, _col(rows, "speed_mps"), rtol=0, atol=1e-3)
    assert (g.fix == _col(rows, "fix_type")).all()
    # the drone's own (irregular) stamps, moved onto the video clock: the CSV reader's mapping within 50 ms
    assert np.abs(g.t_s - _karma_video_time(rows)).max() < 0.05
    assert tel.imu["GYRO"].t_s.size > 4000  # ~385 Hz on the camera in the drone


def test_read_gps_log_from_the_mp4_and_format_detection(shared_data: Path, tmp_path: Path) -> None:
    d = _clips(shared_data)
    assert detect_gps_format(d / "hero7.mp4") == "gopro-mp4"
    tr = read_gps_log(d / "hero7.mp4")  # auto
    assert len(tr) == 199 and (tr.status == 0).all() and "GPMF GPS5" in tr.source
    assert detect_gps_format(d / "derived_csv/hero7_gps5.csv") == "gopro-gps5"
    assert detect_gps_format(d / "derived_csv/karma_global_position.csv") == "karma"
    csv = tmp_path / "g.csv"
    csv.write_text("time_s,lat,lon,alt,speed_mps,fix\n0,44.4,26.1,80,,1\n1,44.4,26.1,80,1,1\n")
    assert detect_gps_format(csv) == "csv" and len(read_gps_log(csv)) == 2
    gpx = tmp_path / "t.gpx"
    gpx.write_text('<?xml version="1.0"?>\n<gpx version="1.1"><trk><trkseg>'
                   '<trkpt lat="1" lon="2"><time>2020-01-01T00:00:00Z</time></trkpt></trkseg></trk></gpx>')  # fmt: skip
    assert detect_gps_format(gpx) == "gpx"
    # a header that fits two formats: an error that lists both and names --gps-format
    both = tmp_path / "both.csv"
    both.write_text("time_s,lat,lon,alt,video_time_s,lat_deg,lon_deg,alt_m\n0,1,2,3,0,1,2,3\n")
    with pytest.raises(SyncError, match=r"several GPS log formats \(csv, gopro-gps5\).*--gps-format csv"):
        detect_gps_format(both)
    unknown = tmp_path / "u.csv"
    unknown.write_text("t,latitude,longitude\n0,1,2\n")
    with pytest.raises(SyncError, match=r"could not be detected.*gopro-gps5: video_time_s"):
        detect_gps_format(unknown)
    with pytest.raises(SyncError, match="without a <gpx>"):
        (tmp_path / "x.xml").write_text("<kml></kml>")
        detect_gps_format(tmp_path / "x.xml")


def _plain_video(path: Path) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(5):
        w.write(np.full((48, 64, 3), i * 40, np.uint8))
    w.release()
    return path


def test_video_without_gpmf_and_without_gps_log_is_a_clear_error(tmp_path: Path, capsys) -> None:
    v = _plain_video(tmp_path / "plain.mp4")
    assert not has_gpmf(v) and not has_gpmf(tmp_path / "missing.mp4")
    with pytest.raises(SyncError, match="no GoPro telemetry"):
        read_gpmf(v)
    rc = main(["convert", "video", str(v), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "no GPS log given (--gps)" in err and "GoPro telemetry (GPMF)" in err
    assert not (tmp_path / "o").exists()


def test_convert_gopro_mp4_without_a_csv(shared_data: Path, tmp_path: Path, capsys, caplog) -> None:
    from pose2rgbd.dataset import Dataset

    out = tmp_path / "h7"
    rc = main(["convert", "video", str(_clips(shared_data) / "hero7.mp4"), "--out", str(out), "--size", "106x60",
               "--jpg", "--max-lag", "2", "--sync.flow.width", "64", "--sync.flow.dis_preset", "ultrafast",
               "--no-progress"])  # fmt: skip
    assert rc == 0
    s = json.loads((out / "report" / "summary.json").read_text())
    ds = Dataset(out)
    assert s["frames"]["kept"] == len(ds) > 300
    # walked ~20 m in 11 s at 1.5-2.1 m/s
    p = ds.frames.translation
    assert 10 < np.linalg.norm(p[-1, :2] - p[0, :2]) < 30
    text = json.dumps(s)
    assert "GPMF GPS5" in text
    # hero7 is the fragile clip: the estimate is weak (docs/convert.md). The warning is logged once, and the
    # summary on stdout names the verdict without repeating it.
    assert s["time_offset"]["estimator"]["verdict"] == "weak"
    warned = [r for r in caplog.records if "too weak" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
    out_text = capsys.readouterr().out
    assert "too weak" not in out_text and "estimate weak (see the warning above)" in out_text
    # the frames past the telemetry's last fix (its track ends 0.7 s before the video's) are named, with the spans
    lost = s["frames"]["total"] - s["frames"]["kept"]
    assert f"frames dropped: {lost} outside GPS coverage" in out_text
    assert re.search(r"the kept GPS fixes cover 0\.\d\d\.\.10\.\d\d s, the frames 0\.00\.\.11\.7\d s", out_text)


def test_gps9_fields_and_payload_timing_fallback() -> None:
    """GPS9 (HERO11+; no such clip in the shared data): per-sample UTC from days since 2000 + seconds since
    midnight, DOP and fix; without a fitted rate, samples are spread evenly over their payload."""
    from types import SimpleNamespace

    from pose2rgbd.convert.gopro import _Chunk, _gps

    def no_rate(*_a: object) -> tuple[float, float, float]:
        return 0.0, 0.0, 0.0

    p = SimpleNamespace(GetGPMFSampleRate=no_rate, Str2FourCC=lambda s: s)
    day = (dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc) - dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)).days
    rows = np.array([[45.0 + 1e-5 * k, 7.0, 300.0, 1.5, 1.6, day, 3600.0 + 0.1 * k, 1.2, 3] for k in range(20)])
    chunks = [_Chunk(0, 0.0, 1.0, rows[:10]), _Chunk(1, 1.0, 2.0, rows[10:])]
    g = _gps(p, 0, "GPS9", chunks)
    assert np.allclose(g.t_s, np.arange(20) * 0.1) and "evenly spaced" in g.timing
    want = dt.datetime(2024, 3, 1, 1, 0, tzinfo=dt.timezone.utc).timestamp()
    assert g.utc_s[0] == pytest.approx(want) and g.utc_s[19] == pytest.approx(want + 1.9)
    assert (g.fix == 3).all() and np.allclose(g.dop, 1.2) and np.allclose(g.lat, rows[:, 0])
