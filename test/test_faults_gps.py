"""Fault injection, GPS and stamps: bad input never gives a silently wrong dataset (docs/reliability.md, GPS).

Each row writes a small synthetic flight bag with a known truth (``write_flight_bag`` with a fault), records
and / or converts it, and checks the outcome (frames on the true path, counts, the message) and that the input
and any earlier output are byte-identical afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.config import from_dict
from pose2rgbd.convert.config import ConvertConfig
from pose2rgbd.convert.sources.bag import convert_bag
from pose2rgbd.errors import ConfigError, DatasetError, SyncError
from pose2rgbd.nodes.recorder import RecorderConfig
from pose2rgbd.runtime.offline import run_recorder_bag
from pose2rgbd.sync.gps import horizontal_distance_m
from pose2rgbd.testing.flight_bag import DATUM, T0_NS, T_world_base, write_flight_bag

DURATION_S = 5.0
NORTH_1KM_DEG = 1000.0 / 111_195.0


def _snapshot(*paths: Path) -> dict[str, bytes]:
    out = {}
    for p in paths:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                out[str(f)] = f.read_bytes()
    return out


def _flight(tmp_path: Path, name: str = "flight", **kw) -> Path:
    path = tmp_path / name
    write_flight_bag(path, duration_s=DURATION_S, size=32, **kw)
    return path


def _record(bag: Path, out: Path, **over) -> dict[str, int]:
    cfg = from_dict(RecorderConfig, {"output": {"dataset": str(out)}, **over})
    return run_recorder_bag(cfg, bag).counters


def _convert(bag: Path, out: Path, **over) -> Path:
    base = {"estimate_offset": False, "time_offset_s": 0.0, "orientation": "odom"}
    return convert_bag(bag, out, from_dict(ConvertConfig, base | over), progress=False)


def _off_path_m(ds_path: Path) -> np.ndarray:
    """Horizontal distance (m) of each frame's lat/lon from the true GPS antenna (base) position at its stamp."""
    from pose2rgbd.dataset import Dataset

    f = Dataset(ds_path).frames
    t = (f.stamp_ns - T0_NS) / 1e9
    lat, lon, _ = DATUM.from_enu(T_world_base(t)[:, :3, 3])
    return horizontal_distance_m(f.latlonalt[:, 0], f.latlonalt[:, 1], lat, lon)


def _on_path(ds_path: Path, min_frames: int) -> None:
    d = _off_path_m(ds_path)
    assert len(d) >= min_frames, f"only {len(d)} frames"
    assert d.max() < 1.0, f"frames up to {d.max():.0f} m from the true path"


def _bad_first(i: int, lat: float, lon: float, alt: float) -> tuple[float, float, float]:
    return (lat + NORTH_1KM_DEG, lon, alt) if i == 0 else (lat, lon, alt)


def _cold_start(i: int, lat: float, lon: float, alt: float) -> tuple[float, float, float]:
    return (0.0, 0.0, alt) if i < 10 else (lat, lon, alt)


def _outlier(i: int, lat: float, lon: float, alt: float) -> tuple[float, float, float]:
    return (lat + NORTH_1KM_DEG, lon, alt) if i == 25 else (lat, lon, alt)


def _nan_alt(i: int, lat: float, lon: float, alt: float) -> tuple[float, float, float]:
    return (lat, lon, float("nan"))


# ------------------------------------------------------------------ 5, 6: bad fixes (record and convert)
@pytest.mark.parametrize(
    ("fault", "dropped_text", "counter"),
    [
        pytest.param(_bad_first, "1 jump faster than max_speed_mps", "fixes_dropped_jump", id="5-first-fix-1km-off"),
        pytest.param(_cold_start, "10 lat/lon exactly 0,0", "fixes_dropped_cold_start", id="5-cold-start-at-0-0"),
        pytest.param(_outlier, "1 jump faster than max_speed_mps", "fixes_dropped_jump", id="6-one-outlier-fix"),
    ],
)
def test_bad_fixes_are_dropped_and_frames_stay_on_the_true_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault, dropped_text: str, counter: str
) -> None:
    bag = _flight(tmp_path, fix_fault=fault)
    before = _snapshot(bag)
    with caplog.at_level(logging.WARNING):
        counters = _record(bag, tmp_path / "rec")
    _on_path(tmp_path / "rec", 40)
    assert counters[counter] >= 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _convert(bag, tmp_path / "conv")
    _on_path(tmp_path / "conv", 40)
    assert f"GPS fixes dropped: {dropped_text}" in caplog.text  # printed, not only in summary.json
    from pose2rgbd.dataset import Dataset

    datum = Dataset(tmp_path / "conv").manifest.datum
    assert datum is not None and horizontal_distance_m(datum.lat_deg, datum.lon_deg, DATUM.lat_deg, DATUM.lon_deg) < 50
    assert _snapshot(bag) == before


# ------------------------------------------------------------------ 7: zero header stamps
@pytest.mark.parametrize(
    "topics",
    [
        pytest.param(("/camera/image_raw", "/camera/camera_info", "/gps/fix", "/odom"), id="7-all-stamps-zero"),
        pytest.param(("/gps/fix",), id="7-gps-stamps-zero"),
    ],
)
def test_zero_header_stamps_fall_back_to_the_log_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, topics: tuple[str, ...]
) -> None:
    bag = _flight(tmp_path, zero_stamps=topics)
    before = _snapshot(bag)
    with caplog.at_level(logging.WARNING):
        counters = _record(bag, tmp_path / "rec")
    assert "zero header stamp; using the receive time" in caplog.text
    assert counters["stamps_from_receive_time"] > 0
    _on_path(tmp_path / "rec", 40)
    first = _snapshot(tmp_path / "rec")
    counters = _record(bag, tmp_path / "rec")  # a resume finds every frame recorded, adds nothing
    assert counters["frames"] == 0 and counters["skipped_already_recorded"] > 40
    assert _snapshot(tmp_path / "rec") == first
    _convert(bag, tmp_path / "conv")  # the same policy: the bag log time
    _on_path(tmp_path / "conv", 40)
    assert _snapshot(bag) == before


# ------------------------------------------------------------------ 8: a different flight into an existing dataset
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        pytest.param({"t0_ns": T0_NS - 3600 * 10**9}, r"starts 3600 s before the first frame", id="8-earlier-flight"),
        pytest.param({"t0_ns": T0_NS + 3600 * 10**9}, r"starts 3595 s after the last frame", id="8-later-flight"),
        pytest.param(
            {"t0_ns": T0_NS + 60 * 10**9, "fix_fault": lambda i, la, lo, al: (la + 5 * NORTH_1KM_DEG, lo, al)},
            r"starts 5\.\d km from the last frame",
            id="8-later-flight-elsewhere",
        ),
    ],
)
def test_a_different_flight_is_not_appended_to_a_dataset(tmp_path: Path, kw: dict, match: str) -> None:
    first = _flight(tmp_path, "a")
    _record(first, tmp_path / "rec")
    other = _flight(tmp_path, "b", **kw)
    before = _snapshot(tmp_path / "rec", other)
    with pytest.raises(DatasetError, match=match + r".*different flight.*new dataset") as e:
        _record(other, tmp_path / "rec")
    assert _snapshot(tmp_path / "rec", other) == before
    if "km" not in match:  # the same place at another time: its own dataset, joined by dataset merge
        assert "`pose2rgbd dataset merge`" in str(e.value)


def test_8_resume_with_another_datum_is_an_error_naming_both(tmp_path: Path) -> None:
    bag = _flight(tmp_path)
    _record(bag, tmp_path / "rec")
    before = _snapshot(tmp_path / "rec")
    with pytest.raises(ConfigError, match=r"datum 47\.4,8\.5,400 \(--datum\) differs .* 47\.37\d*,8\.54\d*,4"):
        _record(bag, tmp_path / "rec", datum="47.4,8.5,400")
    assert _snapshot(tmp_path / "rec") == before


# ------------------------------------------------------------------ 9: bad transforms are counted and logged
def test_9_bad_transforms_are_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bag = _flight(tmp_path, bad_static_tf=True)
    with caplog.at_level(logging.WARNING):
        counters = _record(bag, tmp_path / "rec")
    assert counters["tf_rejected"] == 2
    assert "rejected a transform on /tf_static" in caplog.text
    assert "translation contains NaN" in caplog.text or "zero" in caplog.text
    _on_path(tmp_path / "rec", 40)  # the good mount is still used


# ------------------------------------------------------------------ 11: NaN altitude (2-D receivers)
def test_11_nan_altitude_names_the_option_and_fixed_altitude_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bag = _flight(tmp_path, fix_fault=_nan_alt)
    before = _snapshot(bag)
    with pytest.raises(SyncError, match=r"NaN altitude .*gps\.altitude: fixed.*gps\.fixed_altitude_m"):
        _convert(bag, tmp_path / "conv")
    assert not (tmp_path / "conv").exists()
    with caplog.at_level(logging.WARNING):
        counters = _record(bag, tmp_path / "rec")
    assert counters["frames"] == 0
    assert "NaN altitude" in caplog.text and "gps.altitude: fixed" in caplog.text
    gps = {"altitude": "fixed", "fixed_altitude_m": 440.0}
    _convert(bag, tmp_path / "conv", gps=gps)
    _record(bag, tmp_path / "rec2", gps=gps)
    from pose2rgbd.dataset import Dataset

    for out in ("conv", "rec2"):
        _on_path(tmp_path / out, 40)
        np.testing.assert_allclose(Dataset(tmp_path / out).frames.latlonalt[:, 2], 440.0)
    assert _snapshot(bag) == before


# ------------------------------------------------------------------ the shared gate itself (5, 6)
def test_5_the_gate_anchors_on_a_consensus_online_and_offline() -> None:
    from pose2rgbd.sync.gps import FixGate, consensus_keep

    t = np.arange(40) * 0.1
    lat = DATUM.lat_deg + np.arange(40) * 2e-6  # ~0.2 m per fix
    lon = np.full(40, DATUM.lon_deg)
    lat[:3] += NORTH_1KM_DEG  # a bad start that agrees with itself
    lat[20] += NORTH_1KM_DEG  # and one outlier
    keep, dropped = consensus_keep(t, lat, lon, np.ones(40, bool), max_speed_mps=60.0, tolerance_m=10.0)
    assert not keep[:3].any() and not keep[20] and keep[3:20].all() and keep[21:].all()
    assert dropped == {"jump faster than max_speed_mps": 4}
    gate = FixGate(60.0, 10.0)
    kept: list[int] = []
    drops: list[str] = []
    for i in range(40):
        released, why = gate.add(float(t[i]), float(lat[i]), float(lon[i]), i)
        kept += [k for _, k in released]
        drops += why
    # online the bad start agrees first; three good fixes in a row re-anchor the gate on the true track
    assert gate.reanchors == 1 and 20 not in kept and set(range(3, 20)) | set(range(21, 40)) <= set(kept)
    assert kept == sorted(kept) and drops.count("jump faster than max_speed_mps") >= 1


def test_7_an_image_stamp_going_backwards_is_dropped_and_counted() -> None:
    from pose2rgbd.messages import default_factory, image
    from pose2rgbd.nodes.recorder import Recorder

    f = default_factory()
    rec = Recorder(RecorderConfig(), f)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rec.on_image(image(f, T0_NS + 10**9, "cam", rgb, "rgb8"), T0_NS + 10**9)
    rec.on_image(image(f, T0_NS, "cam", rgb, "rgb8"), T0_NS + 2 * 10**9)
    assert rec.counters["dropped_stamp_not_increasing"] == 1


def test_8_a_live_recorder_refusing_a_flight_stops_and_says_why(tmp_path: Path) -> None:
    from pose2rgbd.messages import default_factory, image
    from pose2rgbd.nodes.recorder import Recorder

    _record(_flight(tmp_path, "a"), tmp_path / "rec")
    before = _snapshot(tmp_path / "rec")
    f = default_factory()
    rec = Recorder(from_dict(RecorderConfig, {"output": {"dataset": str(tmp_path / "rec")}}), f)
    late = T0_NS + 7200 * 10**9
    assert rec.on_image(image(f, late, "cam", np.zeros((4, 4, 3), np.uint8), "rgb8"), late) == []
    assert not rec.recording and rec.set_recording(True)[0] is False
    assert "different flight" in str(rec.diagnostics(late).status[0].message)
    with pytest.raises(DatasetError, match="different flight"):
        rec.finish()
    rec.close()
    assert _snapshot(tmp_path / "rec") == before


def test_9_bad_tf_feeding_the_renderer_is_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pose2rgbd.inference import EngineConfig, RenderEngine
    from pose2rgbd.nodes import RendererConfig
    from pose2rgbd.runtime import run_renderer_bag
    from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint

    bag = _flight(tmp_path, bad_tf_every=10)  # 251 /tf messages: 25 bad, 12 NaN translations and 13 zero quaternions
    engine = RenderEngine(EngineConfig(warmup=0), make_ground_plane_checkpoint(32))
    with caplog.at_level(logging.WARNING):
        stats = run_renderer_bag(RendererConfig(rate_hz=10.0), bag, tmp_path / "out", engine=engine)
    assert stats.counters["tf_rejected"] == 25
    assert "rejected a transform on /tf" in caplog.text and "map -> base_link" in caplog.text
    assert stats.counters["frames"] >= 45  # the good transforms around each bad one still serve


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"max_speed_mps": -1.0}, r"max_speed_mps must be a speed > 0"),
        ({"jump_tolerance_m": float("nan")}, r"jump_tolerance_m: nan is not a usable number"),
        ({"gps": {"altitude": "baro"}}, r"gps\.altitude must be 'fix' or 'fixed'"),
    ],
)
def test_gate_settings_that_would_drop_every_fix_are_refused(tmp_path: Path, over: dict, match: str) -> None:
    bag = _flight(tmp_path)
    with pytest.raises(ConfigError, match=match):
        _record(bag, tmp_path / "rec", **over)
    with pytest.raises(ConfigError, match=match):
        _convert(bag, tmp_path / "conv", **over)
    assert not (tmp_path / "rec").exists() and not (tmp_path / "conv").exists()
