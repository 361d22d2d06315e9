"""A photo's intrinsics from its EXIF focal length: the reader, the query path of `localize images` (a photo whose
camera is not given is localized with its own focal length) and the TUM importer without --fx."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pose2rgbd.geometry.exif import (
    FOCAL_35MM,
    FOCAL_LENGTH,
    FOCAL_PLANE_UNIT,
    FOCAL_PLANE_X_RES,
    PIXEL_X_DIM,
    PIXEL_Y_DIM,
    camera_from_exif,
    exif_camera,
)


def _jpeg(path: Path, rgb: np.ndarray, tags: dict[int, object]) -> Path:
    """``rgb`` written as a JPEG whose EXIF sub-IFD holds ``tags`` (as a camera writes them)."""
    im = Image.fromarray(rgb)
    exif = Image.Exif()
    sub = exif.get_ifd(0x8769)
    sub.update(tags)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, exif=exif, quality=95)
    return path


def test_a_jpeg_with_a_35mm_focal_gives_its_fx(tmp_path: Path) -> None:
    """FocalLengthIn35mmFilm 28 mm on a 3:2 photo: fx = 28 / 36 x width (the 35 mm frame is 36 x 24 mm), at any
    size the photo was resized to; the principal point is the centre."""
    p = _jpeg(tmp_path / "a.jpg", np.zeros((400, 600, 3), np.uint8), {FOCAL_35MM: 28})
    e = exif_camera(p)
    assert e is not None and "35mm" in e.source.replace("In35mmFilm", "35mm")
    c = e.camera
    assert (c.width, c.height) == (600, 400)
    assert c.fx == pytest.approx(28 / 36 * 600, rel=1e-6) and c.fy == c.fx
    assert (c.cx, c.cy) == (299.5, 199.5)
    # decoded at another size (a resized copy): the same field of view
    assert exif_camera(p, 300, 200).camera.fx == pytest.approx(28 / 36 * 300, rel=1e-6)  # type: ignore[union-attr]


def test_focal_length_with_the_focal_plane_resolution() -> None:
    """FocalLength (mm) x the sensor's pixels per mm, scaled from the camera's pixel dimensions to the image."""
    tags = {FOCAL_LENGTH: 4.3, FOCAL_PLANE_X_RES: 1000.0, FOCAL_PLANE_UNIT: 4, PIXEL_X_DIM: 4000, PIXEL_Y_DIM: 3000}
    e = camera_from_exif(tags, 800, 600)
    assert e is not None and e.camera.fx == pytest.approx(4.3 * 1000 * 800 / 4000)
    tags.update({FOCAL_PLANE_UNIT: 2, FOCAL_PLANE_X_RES: 25400.0})  # the same density in pixels per inch
    assert camera_from_exif(tags, 800, 600).camera.fx == pytest.approx(4.3 * 1000 * 800 / 4000)  # type: ignore[union-attr]


def test_no_camera_from_missing_cropped_or_broken_tags(tmp_path: Path) -> None:
    assert camera_from_exif({}, 640, 480) is None
    assert camera_from_exif({FOCAL_LENGTH: 4.3}, 640, 480) is None  # no sensor size: the focal in pixels is unknown
    # the camera wrote 4:3, the image is 1:1: cropped, the EXIF field of view is not the image's
    assert camera_from_exif({FOCAL_35MM: 28, PIXEL_X_DIM: 4000, PIXEL_Y_DIM: 3000}, 480, 480) is None
    assert camera_from_exif({FOCAL_35MM: 100000}, 640, 480) is None  # not a lens
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    assert exif_camera(png) is None
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert exif_camera(tmp_path / "bad.jpg") is None


def test_localize_images_takes_a_photos_own_focal_length(map_world: dict, tmp_path: Path) -> None:
    """`--camera exif`: a query zoomed 2x (its centre cropped and scaled back to the map's size: twice the map
    camera's focal length, as its EXIF says) is localized with the focal its EXIF gives; taken as the map's camera
    (the default, and the only choice before) it is not localized near its pose."""
    import cv2

    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.image_sequence import localize_sequence
    from pose2rgbd.inference.query_camera import query_camera, wants_exif
    from pose2rgbd.inference.structure import StructureConfig
    from pose2rgbd.inference.structure_load import load_structure_localizer

    ds = Dataset(map_world["dataset"])
    cam = ds.camera
    rows = np.flatnonzero(ds.frames.source_id == 1)[:6]
    f35 = 2 * cam.fx * math.hypot(36, 24) / math.hypot(cam.width, cam.height)
    files = []
    for k, i in enumerate(rows):
        rgb = ds.read_rgb(int(i))
        h, w = rgb.shape[:2]
        crop = rgb[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2]
        zoom = cv2.resize(crop, (w, h), interpolation=cv2.INTER_CUBIC)
        files.append(_jpeg(tmp_path / f"q{k}.jpg", zoom, {FOCAL_35MM: round(f35)}))
    loc = load_structure_localizer(map_world["map"], StructureConfig(use_previous_fix=False))

    def near() -> list[float]:
        res = list(localize_sequence(loc, files))
        fixes = [r.fix if r.ok else None for r in res]
        return [float(np.linalg.norm(f.T_world_cam[:3, 3] - ds.frames.T_world_cam[i][:3, 3])) if f is not None
                else math.inf for f, i in zip(fixes, rows, strict=True)]  # fmt: skip

    assert wants_exif(" EXIF ") and query_camera("exif", loc.map) is None and not wants_exif("map")
    loc.use_exif = True
    err = near()
    good = sum(e < 2.0 for e in err)
    assert good >= 4, err
    loc.use_exif = False  # the map's camera
    err_map = near()
    assert sum(e < 2.0 for e in err_map) < good, (err, err_map)


def test_camera_exif_names_the_photos_without_a_usable_focal(
    map_world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """`localize images --camera exif` with photos that have no usable EXIF focal (one without tags, one whose
    35 mm focal is zero): the warning names the first such photo and asks for `--camera FX,FY,CX,CY...`, not for
    the `--camera exif` the user gave (before: "query camera not given ... or --camera exif"); the summary lists
    them all. Without `--camera`, the warning is the one that suggests `--camera exif`."""
    import logging

    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset import Dataset

    ds = Dataset(map_world["dataset"])
    cam = ds.camera
    f35 = cam.fx * math.hypot(36, 24) / math.hypot(cam.width, cam.height)
    folder = tmp_path / "photos"
    rows = np.flatnonzero(ds.frames.source_id == 1)[:4]
    tags: list[dict[int, object]] = [{FOCAL_35MM: round(f35)}, {}, {FOCAL_35MM: round(f35)}, {FOCAL_35MM: 0}]
    for k, (i, t) in enumerate(zip(rows, tags, strict=True)):
        _jpeg(folder / f"p{k}.jpg", ds.read_rgb(int(i)), t)
    argv = ["localize", "images", str(folder), "--map", str(map_world["map"]), "--no-progress"]
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.inference"):
        assert main([*argv, "--out", str(tmp_path / "exif.csv"), "--camera", "exif"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    exif_warn = [w for w in warnings if "camera" in w]
    assert len(exif_warn) == 1, warnings  # one, for the first such photo
    assert exif_warn[0].startswith("--camera exif: p1.jpg has no usable EXIF focal length")
    assert "--camera FX,FY,CX,CY" in exif_warn[0] and "or --camera exif" not in exif_warn[0]
    printed = capsys.readouterr().out
    assert "--camera exif: 2 of 4 photos had no usable EXIF focal length and were taken as the map's camera " \
           "(p1.jpg, p3.jpg); give their camera with --camera FX,FY,CX,CY" in printed  # fmt: skip
    # the EXIF camera and the map's are judged apart (inference/focal_check.py); both fit their photos' matches
    assert "camera: 2 cameras; 0 fix(es) flagged because their matches do not fit" in printed, printed
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.inference"):
        assert main([*argv, "--out", str(tmp_path / "map.csv")]) == 0
    plain = [r.getMessage() for r in caplog.records if "camera" in r.getMessage()]
    assert len(plain) == 1 and plain[0].startswith("query camera not given") and "--camera exif" in plain[0]
    assert "no usable EXIF" not in capsys.readouterr().out
