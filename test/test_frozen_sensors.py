"""A frozen camera (one image re-sent under new stamps) is flagged where frames come in: the recorder (one node
logic, live and `record bag`) drops, counts and warns about repeated images as `convert` does; `map build` leaves
repeated keyframes out, refuses a selection that is (nearly) all repeats, and never stores a degenerate
place-recognition descriptor."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.cli.main import main


@pytest.fixture(scope="module")
def frozen_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path_factory.mktemp("frozen") / "flight"
    write_flight_bag(bag, duration_s=3.0, size=32, frozen_camera=4)  # 30 images, 8 distinct
    return bag


def _distinct(ds: object) -> int:
    from pose2rgbd.dataset.repeats import digest

    return len({digest(ds.read_rgb(i)) for i in range(len(ds))})  # type: ignore[attr-defined]


def test_record_bag_drops_and_reports_a_frozen_cameras_repeats(
    frozen_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: 30 images, 30 frames recorded without a word. Now the 22 repeats are dropped, counted, warned
    about and summarized; every recorded frame is a distinct image."""
    from pose2rgbd.dataset import Dataset

    out = tmp_path / "ds"
    with caplog.at_level(logging.WARNING):
        assert main(["record", "bag", "--bag", str(frozen_bag), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "22 of 30 images repeat the previous image byte for byte" in text and "dropped" in text
    assert text.count("22 of 30") == 1 and "repeated_images" not in text  # said once, in words
    ds = Dataset(out)
    assert 6 <= len(ds) <= 8 and _distinct(ds) == len(ds)
    warned = [r.getMessage() for r in caplog.records if "repeats the previous one byte for byte" in r.getMessage()]
    assert warned and len(warned) < 22 and "of 2 images so far" in warned[0]  # throttled, with the counts


def test_record_bag_keep_repeats_keeps_and_still_counts(
    frozen_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pose2rgbd.dataset import Dataset

    out = tmp_path / "ds"
    assert main(["record", "bag", "--bag", str(frozen_bag), "--out", str(out), "--output.keep_repeats"]) == 0
    text = capsys.readouterr().out
    assert "22 of 30 images repeat the previous image byte for byte" in text and "kept (output.keep_repeats)" in text
    ds = Dataset(out)
    assert len(ds) >= 26 and _distinct(ds) <= 8


def test_recorder_diagnostics_say_the_camera_is_frozen() -> None:
    """The node logic (live and offline): a run of identical images turns the diagnostics to WARN."""
    from pose2rgbd.geometry import PinholeCamera
    from pose2rgbd.messages import (
        TypestoreFactory,
        camera_info,
        image,
        navsatfix,
        new_typestore,
        odometry,
        register_custom_msgs,
    )
    from pose2rgbd.nodes import Recorder, RecorderConfig
    from pose2rgbd.testing.flight_bag import DATUM

    ms = 1_000_000
    cfg = RecorderConfig(datum=f"{DATUM.lat_deg!r},{DATUM.lon_deg!r},{DATUM.alt_m!r}")
    cfg.mount.source = "config"
    ts = TypestoreFactory(register_custom_msgs(new_typestore("humble")))
    rec = Recorder(cfg, ts)
    cam = PinholeCamera.from_fov(8, 8, 90.0)
    for k in range(51):
        rec.on_odom(odometry(ts, k * 20 * ms, "odom", "base_link", np.eye(4)), k * 20 * ms)
    for k in range(11):
        lat, lon, alt = DATUM.from_enu(np.array([0.0, 0.0, 10.0]))
        rec.on_gps(navsatfix(ts, k * 100 * ms, "gps", float(lat), float(lon), float(alt)), k * 100 * ms)
    for k in range(6):
        t = 50 * ms + k * 100 * ms
        rec.on_camera_info(camera_info(ts, t, "cam", cam))
        pixels = np.full((8, 8, 3), min(k, 1), np.uint8)  # image 0, then image 1 five times
        rec.on_image(image(ts, t, "cam", pixels, "rgb8"), t)
    assert rec.counters["repeated_images"] == 4
    diag = rec.diagnostics(10**9).status[0]
    assert diag.level == 1 and "camera frozen? the last 5 images are one image" in diag.message


# ------------------------------------------------------------------------------------------------ map build
def _copy_with_repeats(src: Path, dst: Path, rows: np.ndarray, of: np.ndarray) -> None:
    """A copy of dataset ``src`` whose frames ``rows`` carry the image and depth files of frames ``of``."""
    shutil.copytree(src, dst)
    for sub in ("rgb", "depth"):
        files = sorted((dst / sub).iterdir())
        for r, o in zip(rows, of):
            if r != o:
                shutil.copyfile(files[o], files[r])


def test_map_build_refuses_a_frozen_camera(map_world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a map of identical images was built, with all-zero place-recognition descriptors."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.placemap import MapError, build_map

    survey = np.flatnonzero(Dataset(map_world["dataset"]).frames.source_id == 0)
    frozen = tmp_path / "frozen"
    _copy_with_repeats(map_world["dataset"], frozen, survey, np.full(len(survey), survey[0]))
    with pytest.raises(MapError, match=r"119 of the 120 selected keyframes .* repeat .*\(1 distinct\): a frozen"):
        build_map(frozen, tmp_path / "m", progress=False, rows=survey[:120])
    capsys.readouterr()
    rc = main(["map", "build", "--dataset", str(frozen), "--out", str(tmp_path / "m"), "--sources", "0",
               "--stride", "3", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "a frozen camera" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".m")]


def test_map_build_drops_repeated_keyframes_with_a_warning(
    map_world: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.placemap import PlaceMap, build_map

    survey = np.flatnonzero(Dataset(map_world["dataset"]).frames.source_id == 0)[:120]
    odd = survey[1::2]
    part = tmp_path / "part"
    _copy_with_repeats(map_world["dataset"], part, odd, odd - 1)  # every other frame repeats its predecessor
    with caplog.at_level(logging.WARNING):
        manifest = build_map(part, tmp_path / "m", progress=False, rows=survey)
    assert f"{len(odd)} of {len(survey)} selected keyframes repeat an earlier keyframe's image" in caplog.text
    pm = PlaceMap(tmp_path / "m", verify=True)
    assert np.array_equal(pm.frames, survey[::2]) and manifest["repeats"]["dropped"] == len(odd)
    assert np.allclose(np.linalg.norm(pm.global_desc, axis=1), 1.0, atol=1e-4)


def test_a_degenerate_descriptor_is_never_stored() -> None:
    from pose2rgbd.placemap import MapError
    from pose2rgbd.placemap.build import _check_descriptors

    glob = np.eye(4, 8, dtype=np.float32)
    _check_descriptors(glob, np.arange(4), "vlad")
    glob[2] = 0.0  # what PCA-centred VLADs of identical images gave
    with pytest.raises(MapError, match=r"1 of 4 keyframes \(dataset rows 2\) got a degenerate vlad"):
        _check_descriptors(glob, np.arange(4), "vlad")
