"""Frames of a periodic stream lost before the node, told from the gaps in their stamps
(pose2rgbd.sync.stamp_gaps), and the record node saying so: a transport that drops half of a camera's frames
otherwise leaves a recording that looks like a slower camera."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.sync.stamp_gaps import StampGaps, missing_frames

PERIOD_NS = 33_333_333  # a 30 Hz camera


def _camera(n: int, keep: np.ndarray, jitter_ns: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) * PERIOD_NS + rng.normal(0, jitter_ns, n)
    return t[keep].astype(np.int64)


def test_a_camera_that_loses_nothing_loses_nothing() -> None:
    g = StampGaps()
    for s in _camera(300, np.ones(300, bool), 1e6):  # 1 ms of jitter on a 33 ms period
        assert g.add(int(s)) == 0
    assert g.lost == 0
    recent = g.recent()
    assert recent is not None and abs(recent[0] - 30) < 2 and recent[1] == 0


def test_lost_frames_are_counted_even_where_most_intervals_are_doubled() -> None:
    """A random 55 % of the frames lost (most intervals then span two periods or more): every lost frame is
    counted, and the share over the latest window and the camera's rate are the truth's."""
    rng = np.random.default_rng(1)
    keep = rng.random(600) > 0.55
    keep[:30] = True  # a clean start; a lossy one: the next test
    stamps = _camera(600, keep, 1e6)
    g = StampGaps()
    for s in stamps:
        g.add(int(s))
    first, last = np.flatnonzero(keep)[[0, -1]]
    assert g.lost == (last - first + 1) - keep.sum()
    rate, share = g.recent()  # type: ignore[misc]
    window = np.flatnonzero(keep)[-65:]
    truth = 1 - 64 / (window[-1] - window[0])
    assert abs(rate - 30) < 2 and abs(share - truth) < 0.02, (rate, share, truth)


def test_losses_from_the_first_frame_are_counted_once_the_period_is_known() -> None:
    """Most odd frames lost from the start: the period comes from the single intervals (two in five), and the
    frames lost once it is known are counted."""
    keep = np.ones(400, bool)
    keep[1::2] = False
    keep[::8] = True
    keep[1::8] = True  # frames 8k, 8k + 1, 8k + 2: two intervals of one period, then three of two
    g = StampGaps()
    lost = [g.add(int(s)) for s in _camera(400, keep, 0.5e6)]
    assert g.period_ns() is not None and abs(g.period_ns() - PERIOD_NS) < 2e6  # type: ignore[operator]
    assert sum(lost[40:]) == sum(1 for k in range(400) if not keep[k] and k > np.flatnonzero(keep)[40])


def test_a_stamp_that_goes_back_restarts_without_counting() -> None:
    g = StampGaps()
    for s in _camera(100, np.ones(100, bool), 0):
        g.add(int(s))
    assert g.add(5) == 0 and g.recent() is None  # a bag played again: the window starts over
    for k in range(1, 20):
        assert g.add(5 + k * PERIOD_NS) == 0
    assert g.lost == 0


def _recorder() -> tuple[object, object]:
    from pose2rgbd.messages import TypestoreFactory, new_typestore, register_custom_msgs
    from pose2rgbd.nodes import Recorder, RecorderConfig
    from pose2rgbd.testing.flight_bag import DATUM

    cfg = RecorderConfig(datum=f"{DATUM.lat_deg!r},{DATUM.lon_deg!r},{DATUM.alt_m!r}")
    cfg.mount.source = "config"
    ts = TypestoreFactory(register_custom_msgs(new_typestore("humble")))
    return Recorder(cfg, ts), ts


def _images(rec: object, ts: object, stamps: np.ndarray) -> None:
    from pose2rgbd.messages import image

    for k, s in enumerate(stamps):
        pixels = np.full((4, 4, 3), k % 251, np.uint8)  # distinct images (a repeat would be dropped)
        rec.on_image(image(ts, int(s), "cam", pixels, "rgb8"), int(s))  # type: ignore[attr-defined]


def test_the_record_node_says_when_half_the_cameras_frames_never_arrive() -> None:
    rec, ts = _recorder()
    keep = np.random.default_rng(2).random(300) > 0.5
    keep[:20] = True
    _images(rec, ts, _camera(300, keep, 1e6))
    first, last = np.flatnonzero(keep)[[0, -1]]
    assert rec.counters["images_lost_upstream"] == (last - first + 1) - keep.sum()  # type: ignore[attr-defined]
    diag = rec.diagnostics(10**10).status[0]  # type: ignore[attr-defined]
    assert diag.level == 1 and "of the camera's latest frames (its stamps: 30." in diag.message
    assert "never reached this node" in diag.message and "fastdds_large_images.xml" in diag.message


def test_the_record_node_is_quiet_about_a_camera_that_loses_nothing_and_about_a_pause() -> None:
    rec, ts = _recorder()
    stamps = _camera(200, np.ones(200, bool), 1e6)
    _images(rec, ts, stamps[:100])
    rec.set_recording(False)  # type: ignore[attr-defined]
    _images(rec, ts, stamps[100:150])  # not recorded: not seen by the gaps
    rec.set_recording(True)  # type: ignore[attr-defined]
    _images(rec, ts, stamps[150:])
    assert rec.counters["images_lost_upstream"] == 0  # type: ignore[attr-defined]
    assert "never reached" not in rec.diagnostics(10**10).status[0].message  # type: ignore[attr-defined]


def test_record_bag_says_how_many_camera_frames_are_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bag whose camera lost 12 of its frames before it was written: `record bag` says so."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path / "flight"
    lost = [*range(20, 60, 4), 33, 34]
    write_flight_bag(bag, duration_s=5.9, camera_hz=10.0, size=16, lost_images=lost)
    assert main(["record", "bag", "--bag", str(bag), "--out", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    m = re.search(r"from (\d+) images.*\n  at least (\d+) of the camera's frames are missing between its (\d+) ", out)
    assert m is not None and int(m[2]) == len(lost) and m[1] == m[3], out
    assert "images_lost_upstream" not in out  # said in words, not again among the dropped counters


def test_a_whole_recording_counts_the_losses_before_the_period_is_known_too() -> None:
    """``missing_frames`` (a bag, every interval known): most odd frames lost from the very first, every one
    counted (the live :class:`StampGaps` only counts them once it has learned the period)."""
    keep = np.ones(400, bool)
    keep[1::2] = False
    keep[::8] = True
    keep[1::8] = True
    stamps = _camera(400, keep, 0.5e6)
    first, last = np.flatnonzero(keep)[[0, -1]]
    assert missing_frames(stamps) == (last - first + 1) - keep.sum()
    g = StampGaps()
    assert sum(g.add(int(s)) for s in stamps) < missing_frames(stamps)
    assert missing_frames(stamps[:10]) == 0  # too few intervals to know the period
    doubled = np.sort(np.concatenate([stamps, stamps[::5]]))  # repeated stamps (a bag's duplicates): no interval
    assert missing_frames(doubled) == missing_frames(stamps)


def test_convert_bag_reports_and_warns_about_the_cameras_missing_frames(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import logging

    from pose2rgbd.cli.main import main
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path / "flight"
    lost = list(range(10, 60, 3))  # from the 11th frame on: 17 of 60
    write_flight_bag(bag, duration_s=6.0, size=16, lost_images=lost, unreadable_images=[5, 30])
    with caplog.at_level(logging.WARNING):
        assert main(["convert", "bag", str(bag), "--out", str(tmp_path / "ds"), "--no-progress"]) == 0
    frames = json.loads((tmp_path / "ds" / "report" / "summary.json").read_text())["frames"]
    # an unreadable image is in the bag: counted once, as unreadable, not also as a gap
    missing = "missing from the bag (gaps in the camera's stamps)"
    assert frames["dropped"] == {"unreadable image": 2, missing: len(lost)}, frames
    assert frames["total"] == frames["kept"] + len(lost) + 2 == 60
    assert any(f"{len(lost)} of the camera's frames are missing" in r.getMessage() for r in caplog.records)


def test_jitter_a_pause_and_a_slower_camera_are_not_losses() -> None:
    """A 30 Hz camera whose stamps jitter by 3 ms (Gaussian) loses nothing; at 5 ms a few late stamps read as gaps,
    far below the record node's warning; a 60 s pause (a driver restarted) is no loss; a camera that drops from 30 to
    15 Hz is counted as losing frames only while the window learns the new period."""
    rng = np.random.default_rng(5)
    for jitter_ms, most in ((3.0, 0), (5.0, 0.03 * 3000)):
        stamps = np.sort(_camera(3000, np.ones(3000, bool), jitter_ms * 1e6, seed=int(jitter_ms)))
        g = StampGaps()
        for s in stamps:
            g.add(int(s))
        assert missing_frames(stamps) <= most and g.lost <= most, (jitter_ms, missing_frames(stamps), g.lost)
    paused = np.concatenate([np.arange(300), 300 + 1800 + np.arange(300)]) * PERIOD_NS  # 60 s without frames
    g = StampGaps()
    assert missing_frames(paused) == 0 and sum(g.add(int(s)) for s in paused) == 0
    slower = np.concatenate([np.arange(500), 500 + 2 * np.arange(1, 1500)]) * PERIOD_NS + rng.normal(0, 1e6, 1999)
    g = StampGaps()
    live = sum(g.add(int(s)) for s in slower)
    assert missing_frames(slower.astype(np.int64)) <= 32 and live <= 64, (missing_frames(slower), live)
    assert g.recent() is not None and abs(g.recent()[0] - 15) < 1  # type: ignore[index]


def test_the_record_node_counts_no_gaps_in_receive_times_and_is_quiet_while_stopped() -> None:
    """Images with zero header stamps get their receive time (which carries the transport's delays): no gap is
    counted from them. And a warning about lost frames ends with the recording: stopped, the window is gone."""
    rec, ts = _recorder()
    zero = _camera(200, np.ones(200, bool), 0)
    keep = np.ones(200, bool)
    keep[40::2] = False
    from pose2rgbd.messages import image

    for k, s in enumerate(zero[keep]):  # every other frame missing, but the stamps are zero: receive times
        msg = image(ts, 0, "cam", np.full((4, 4, 3), k % 251, np.uint8), "rgb8")
        rec.on_image(msg, int(s))  # type: ignore[attr-defined]
    assert rec.counters["images_lost_upstream"] == 0 and rec.counters["stamps_from_receive_time"] > 0  # type: ignore[attr-defined]
    rec2, ts2 = _recorder()
    _images(rec2, ts2, _camera(200, keep, 0))
    assert "never reached" in rec2.diagnostics(10**10).status[0].message  # type: ignore[attr-defined]
    rec2.set_recording(False)  # type: ignore[attr-defined]
    assert "never reached" not in rec2.diagnostics(10**10).status[0].message  # type: ignore[attr-defined]


def test_the_record_node_takes_at_most_max_rate_hz_images_evenly() -> None:
    """output.max_rate_hz with a 30 Hz camera whose stamps jitter by 2 ms: at 10 every third image, at 15 every
    other one, never a gap of one more (a plain "1 / rate since the last one taken" skips a fourth now and then);
    with a 20 Hz camera at 16, 4 of 5 and never more than 16 a second over the run (a slack taken from the rate
    rather than the camera would take all 20); 0 takes every image; the skipped ones are counted, not taken for
    lost."""
    from pose2rgbd.messages import image

    cases = ((30.0, 10.0, {3}), (30.0, 15.0, {2}), (30.0, 0.0, {1}), (20.0, 16.0, {1, 2}))
    for camera_hz, rate, steps in cases:
        n = 300
        stamps = (np.arange(n) * 1e9 / camera_hz + np.random.default_rng(3).normal(0, 2e6, n)).astype(np.int64)
        rec, ts = _recorder()
        rec.cfg.output.max_rate_hz = rate  # type: ignore[attr-defined]
        taken: list[int] = []
        rec._queue_image = lambda st, msg, now, taken=taken: taken.append(st) or []  # type: ignore[attr-defined]
        for k, s in enumerate(stamps):
            rec.on_image(image(ts, int(s), "cam", np.full((4, 4, 3), k % 251, np.uint8), "rgb8"), int(s))  # type: ignore[attr-defined]
        idx = np.searchsorted(stamps, taken)
        assert set(np.diff(idx)) == steps, (camera_hz, rate, sorted(set(np.diff(idx))))
        if rate > 0:
            span_s = (stamps[-1] - stamps[0]) / 1e9
            assert len(taken) <= rate * span_s + 1, (camera_hz, rate, len(taken), span_s)
        assert rec.counters["skipped_rate"] == n - len(taken)  # type: ignore[attr-defined]
        assert rec.counters["images_lost_upstream"] == 0  # type: ignore[attr-defined]
