"""Lens distortion: OpenCV's models (pose2rgbd.geometry.lens), the query camera of the structure localizer
(`localize --camera`, with distortion; `--camera map`), and a distorted synthetic camera localized against a map
of pinhole keyframes as well as the pinhole camera itself."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.lens import Distortion, QueryCamera, parse_camera_spec

K = np.array([[300.0, 0.0, 319.5], [0.0, 310.0, 239.5], [0.0, 0.0, 1.0]])
LENSES = [
    Distortion("opencv", (-0.3, 0.08, 0.0, 0.0)),  # barrel, as COLMAP RADIAL
    Distortion("opencv", (-0.25, 0.05, 0.002, -0.001, 0.01)),  # OPENCV + k3
    Distortion("opencv", (-0.3, 0.1, 0.001, 0.0, 0.01, 0.02, 0.0, 0.0)),  # FULL_OPENCV (rational)
    Distortion("fisheye", (0.05, 0.01, -0.002, 0.0)),  # OPENCV_FISHEYE
]


@pytest.mark.parametrize("lens", LENSES, ids=lambda d: f"{d.model}{len(d.coeffs)}")
def test_undistort_points_inverts_the_lens(lens: Distortion) -> None:
    """A point imaged through the lens (OpenCV's projection) comes back where the pinhole K sees it."""
    rng = np.random.default_rng(0)
    p = np.c_[rng.uniform(-0.9, 0.9, (200, 2)), np.ones(200)]
    pin = p[:, :2] * [K[0, 0], K[1, 1]] + K[:2, 2]
    dist = lens.project(p, K)
    assert np.abs(dist - pin).max() > 5.0  # the lens moves the points (else the test proves nothing)
    np.testing.assert_allclose(lens.undistort_points(dist, K), pin, atol=1e-3)


def test_camera_spec_forms_and_errors() -> None:
    assert parse_camera_spec("") is None
    q = parse_camera_spec("300,310,319.5,239.5")
    assert q == QueryCamera(300.0, 310.0, 319.5, 239.5) and q.distortion is None
    q = parse_camera_spec("300,310,319.5,239.5,-0.3,0.08,0,0")
    assert q is not None and q.distortion == Distortion("opencv", (-0.3, 0.08, 0.0, 0.0))
    q = parse_camera_spec("fisheye:300,300,320,240,0.05,0.01,0,0")
    assert q is not None and q.distortion is not None and q.distortion.model == "fisheye"
    assert parse_camera_spec("300,300,320,240,0,0,0,0") == QueryCamera(300.0, 300.0, 320.0, 240.0)  # zero: pinhole
    for bad in ("300,300,320", "300,300,320,240,0.1", "fisheye:300,300,320,240,0.1,0,0", "a,b,c,d", "-1,300,1,1",
                "kb:300,300,320,240,0,0,0,0"):  # fmt: skip
        with pytest.raises(ConfigError, match="FX,FY,CX,CY"):
            parse_camera_spec(bad)
    # a camera with a size is scaled to the image (distortion unchanged: it acts on normalized coordinates)
    own = QueryCamera(300.0, 300.0, 319.5, 239.5, LENSES[0], 640, 480)
    cam, lens = own.at(320, 240)
    assert (cam.fx, cam.cx, cam.cy) == (150.0, 159.5, 119.5) and lens == LENSES[0]
    with pytest.raises(ConfigError, match="aspect ratio"):
        own.at(300, 300)


def test_camera_map_is_the_maps_source_camera() -> None:
    """`--camera map`: the single source camera recorded by the dataset import (with its lens); a map without one
    (its images are the source's) answers its own pinhole camera (before: refused, after the warning had asked for
    the camera); one of several cameras is refused with what to give instead."""
    from pose2rgbd.inference.query_camera import query_camera, unknown_camera_warning

    src = {"width": 640, "height": 480, "fx": 300.0, "fy": 300.0, "cx": 319.5, "cy": 239.5, "model": "fisheye",
           "distortion": [0.05, 0.01, 0.0, 0.0]}  # fmt: skip
    pm = SimpleNamespace(path=Path("m"), manifest={"dataset": {"source_cameras": [src]}})
    q = query_camera("map", pm)
    assert q is not None and q.distortion == Distortion("fisheye", (0.05, 0.01, 0.0, 0.0)) and q.width == 640
    assert "--camera map" in unknown_camera_warning(pm, 320, 240) and "fisheye" in unknown_camera_warning(pm, 1, 1)
    assert query_camera("", pm) is None
    with pytest.raises(ConfigError, match="2 cameras; give the queries' camera as FX,FY,CX,CY"):
        query_camera("map", SimpleNamespace(path=Path("m"), manifest={"dataset": {"source_cameras": [src, src]}}))
    own = PinholeCamera(256, 144, 200.0, 201.0, 127.5, 71.5)
    pinhole = SimpleNamespace(path=Path("m"), manifest={"dataset": {}}, camera=lambda i: own)
    assert query_camera("map", pinhole) == QueryCamera(200.0, 201.0, 127.5, 71.5, None, 256, 144)
    assert query_camera("map", pinhole).at(512, 288)[0] == own.scaled(512, 288)  # type: ignore[union-attr]


def _distorted(img: np.ndarray, lens: Distortion, K: np.ndarray) -> np.ndarray:
    """The image a camera with intrinsics ``K`` and ``lens`` takes of the scene the pinhole image ``img`` (same
    K) shows: each distorted pixel samples the pinhole image where its ray lands (black outside)."""
    h, w = img.shape[:2]
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    und = lens.undistort_points(np.stack([u, v], -1).reshape(-1, 2), K).reshape(h, w, 2).astype(np.float32)
    return cv2.remap(img, und[..., 0], und[..., 1], cv2.INTER_LINEAR)


def _route(loc, imgs: list[np.ndarray], T_true: np.ndarray) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    from pose2rgbd.evaluation.localization import pose_errors

    fixes = [loc.localize_one(im) for im in imgs]
    ok = np.array([f.ok for f in fixes])
    pos, rot = pose_errors(np.stack([f.T_world_cam for f in fixes])[ok], T_true[ok])
    return float(ok.mean()), float(np.median(pos)), float(np.median(rot))


def test_distorted_query_localized_within_the_pinhole_error(map_world: dict, caplog) -> None:  # type: ignore[no-untyped-def]
    """The held-out route seen through known lenses (OpenCV barrel distortion and OpenCV fisheye, made from the
    simulator's pinhole frames): with the lens given (`--camera ...,K1,K2,P1,P2`) the query keypoints are
    undistorted and the fixes are as good as the pinhole frames' (fix rate within 10 points, median position
    error within 25 %); taken as a pinhole the error is several times larger; a query without a camera gets
    one warning."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import PlaceMap

    ds, pm = Dataset(map_world["dataset"]), PlaceMap(map_world["map"])
    rows = np.flatnonzero(ds.frames.source_id == 1)[::2]
    T_true, imgs = ds.frames.T_world_cam[rows], [ds.read_rgb(int(i)) for i in rows]
    cam = pm.camera(0)

    def localizer(q: QueryCamera | None) -> StructureLocalizer:
        loc = StructureLocalizer(pm, StructureConfig(use_previous_fix=False))
        loc.query_lens = q
        return loc

    with caplog.at_level(logging.WARNING, logger="pose2rgbd.inference.structure"):
        rate0, pos0, rot0 = _route(localizer(None), imgs, T_true)
    assert sum("query camera not given" in r.message for r in caplog.records) == 1  # once, not per image
    assert rate0 > 0.5 and pos0 < 0.5
    for lens in (LENSES[0], LENSES[3]):
        dimgs = [_distorted(im, lens, cam.K) for im in imgs]
        rate, pos, rot = _route(localizer(QueryCamera(cam.fx, cam.fy, cam.cx, cam.cy, lens)), dimgs, T_true)
        assert rate >= rate0 - 0.1 and pos <= 1.25 * pos0 and rot <= 1.5 * rot0 + 0.05, (lens, rate, pos, rot)
        _, pos_pinhole, _ = _route(localizer(None), dimgs, T_true)
        assert pos_pinhole > 3 * pos, (lens, pos_pinhole, pos)


def test_node_camera_parameter_takes_the_same_spec() -> None:
    """The localize node's `camera` parameter is read by the same parser as `--camera` (distortion included)."""
    from pose2rgbd.nodes.localizer import LocalizerConfig

    q = LocalizerConfig(camera="fisheye:300,300,320,240,0.05,0.01,0,0").query_camera()
    assert q is not None and q.distortion == Distortion("fisheye", (0.05, 0.01, 0.0, 0.0))
    assert LocalizerConfig().query_camera() is None
    with pytest.raises(ConfigError, match="FX,FY,CX,CY"):
        LocalizerConfig(camera="300,300,320")
