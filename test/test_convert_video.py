"""Video + GPS log -> dataset through the CLI (karma drone clip), and the log formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.cli.main import main
from pose2rgbd.convert.gps_logs import read_attitude_log, read_gps_log


def test_karma_cli_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    from pose2rgbd.dataset import Dataset

    d = shared_data / "gopro-gps-video"
    out = tmp_path / "karma"
    rc = main(["convert", "video", str(d / "karma.mp4"), "--gps", str(d / "derived_csv/karma_global_position.csv"),
               "--gps-format", "karma", "--attitude", str(d / "derived_csv/karma_attitude.csv"), "--out", str(out),
               "--size", "214x120", "--max-lag", "3", "--jpg", "--no-progress"])  # fmt: skip
    assert rc == 0
    ds = Dataset(out)
    s = json.loads((out / "report" / "summary.json").read_text())
    assert s["frames"]["kept"] == len(ds) and len(ds) > 300
    assert s["orientation_source"] == "attitude"
    est = s["time_offset"]["estimator"]
    assert abs(est["estimate_s"]) < 0.5
    # weak -> falls back to 0 and says so; ok -> uses the estimate
    assert s["time_offset"]["offset_s"] == (est["estimate_s"] if est["verdict"] == "ok" else 0.0)
    assert ds.manifest.depth_kind == "none" and ds.camera.width == 214
    # the drone heads ~330 deg (NNW) at 8 m/s: the track goes north-west, ~60-90 m in 12 s
    p = ds.frames.translation
    assert p[-1, 1] - p[0, 1] > 40 and p[-1, 0] < p[0, 0]
    # camera looks roughly along the heading (optical z in ENU): north-west, level-ish
    z = ds.frames.T_world_cam[len(ds) // 2][:3, 2]
    assert z[1] > 0.5 and z[0] < 0
    for f in ("sync.png", "track.png"):
        assert (out / "report" / f).stat().st_size > 10_000


def test_gps_formats(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "gopro-gps-video" / "derived_csv"
    h = read_gps_log(d / "hero7_gps5.csv", "gopro-gps5")
    assert len(h) == 199 and np.isfinite(h.speed).all() and (h.status == 0).all()
    k = read_gps_log(d / "karma_global_position.csv", "karma")
    assert len(k) == 47 and np.all(np.diff(k.t_s) > 0) and abs(k.t_s[0]) < 0.3
    # GPX: same fixes written as a track, first point = video time 0 unless --video-start-utc
    import datetime as dt

    t0 = dt.datetime(2019, 5, 6, 18, 15, 7, tzinfo=dt.timezone.utc)
    pts = "".join(
        f'<trkpt lat="{la}" lon="{lo}"><ele>{al}</ele><time>{(t0 + dt.timedelta(seconds=float(t))).isoformat()}'
        f"</time></trkpt>"
        for t, la, lo, al in zip(h.t_s, h.lat, h.lon, h.alt)
    )
    gpx = tmp_path / "h.gpx"
    gpx.write_text(f'<?xml version="1.0"?><gpx xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>{pts}'
                   "</trkseg></trk></gpx>")  # fmt: skip
    g = read_gps_log(gpx, "gpx")
    assert np.allclose(g.t_s, h.t_s - h.t_s[0], atol=1e-3) and np.allclose(g.lat, h.lat)
    g2 = read_gps_log(gpx, "gpx", video_start_utc=(t0 - dt.timedelta(seconds=2)).isoformat())
    assert np.allclose(g2.t_s, h.t_s + 2.0, atol=1e-3)
    # documented CSV with an empty speed column and a NO_FIX row
    c = tmp_path / "g.csv"
    c.write_text("time_s,lat,lon,alt,speed_mps,fix\n0.0,44.4,26.1,80,,1\n0.1,,,,,0\n0.2,44.4,26.1,80,3.5,1\n")
    t = read_gps_log(c, "csv")
    assert list(t.status) == [0, -1, 0] and np.isnan(t.speed[0])


def test_attitude_logs(shared_data: Path, tmp_path: Path) -> None:
    a = read_attitude_log(shared_data / "gopro-gps-video/derived_csv/karma_attitude.csv")
    assert a.frame == "ned" and a.rpy.shape == (47, 3)
    c = tmp_path / "att.csv"
    c.write_text("time_s,roll,pitch,yaw\n0,0,0,90\n1,0,0,180\n")
    b = read_attitude_log(c, degrees=True, frame="enu")
    assert np.allclose(b.rpy[:, 2], [np.pi / 2, np.pi])


def test_clean_fixes_counts_drops() -> None:
    from pose2rgbd.convert.gps_logs import GpsTrack, clean_fixes
    from pose2rgbd.geometry import Datum

    n = 50
    t = np.arange(n) * 0.1
    lat = 44.43 + 1e-5 * np.arange(n)
    lon = np.full(n, 26.1)
    lat[10] = 44.6  # ~19 km jump
    lon[20] = np.nan
    st = np.zeros(n, int)
    st[30] = -1
    tr = GpsTrack(t, lat, lon, np.full(n, 80.0), np.full(n, np.nan), st, "test")
    kept, enu = clean_fixes(tr, Datum(44.43, 26.1, 80).to_enu, max_speed_mps=60)
    assert len(kept) == n - 3 and enu.shape == (n - 3, 3)
    assert kept.dropped == {"no fix (status -1)": 1, "NaN field": 1, "jump faster than max_speed_mps": 1}


def test_config_describe_and_yaml(tmp_path: Path) -> None:
    from pose2rgbd.config import describe, load_yaml, to_dict
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.errors import ConfigError

    flat = describe(ConvertConfig)
    assert "sync.max_lag_s" in flat and "sync.flow.width" in flat and flat["size"][1]
    y = tmp_path / "c.yaml"
    y.write_text("size: 320x240\nsync:\n  max_lag_s: 3.0\n  flow:\n    frame_step: 2\n")
    c = load_yaml(ConvertConfig, y)
    assert c.size_wh() == (320, 240) and c.sync.max_lag_s == 3.0 and c.sync.flow.frame_step == 2
    assert to_dict(c)["sync"]["flow"]["frame_step"] == 2
    with pytest.raises(ConfigError):
        ConvertConfig(size="big")
    with pytest.raises(ConfigError):
        ConvertConfig(datum="1,2")
