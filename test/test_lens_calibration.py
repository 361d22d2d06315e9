"""A video's fisheye lens calibrated from the video itself (``convert video --lens fisheye``): frames of the simulated
city seen through a known fisheye, COLMAP's lens against the truth (the rays of every pixel), the frames undistorted
onto a pinhole, the conversion's manifest, and the errors for frames that cannot calibrate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.convert.lens_calibration import VideoLens, calibrate_fisheye, calibration_stride
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry import PinholeCamera
from pose2rgbd.geometry.lens import Distortion

W, H = 256, 192
F_TRUE = 124.0  # equidistant focal: about a 116 deg horizontal field (a GoPro's wide lens) at this size
TRUE = Distortion("fisheye", (0.07, -0.06, 0.09, -0.04))  # near what COLMAP finds for the HERO7 clip
K_TRUE = np.array([[F_TRUE, 0.0, (W - 1) / 2], [0.0, F_TRUE, (H - 1) / 2], [0.0, 0.0, 1.0]])
N_FRAMES = 36
START_HFOV = 100.0  # the calibration's start: an equidistant focal 18 % longer than the truth


def _rays(lens: Distortion, K: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Unit rays (N, 3) of the distorted pixels ``px`` (N, 2) through ``lens`` with intrinsics ``K``."""
    und = lens.undistort_points(px, K)
    xy = (und - K[:2, 2]) / np.diag(K)[:2]
    r = np.concatenate([xy, np.ones((len(xy), 1))], 1)
    return r / np.linalg.norm(r, axis=1, keepdims=True)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip((a * b).sum(1), -1.0, 1.0)))


@pytest.fixture(scope="module")
def fisheye_flight() -> list[np.ndarray]:
    """BGR frames of a low pass over the simulated city through the fisheye ``TRUE`` (a pinhole canvas wide
    enough for its field, each fisheye pixel sampling it where its ray lands)."""
    from pose2rgbd.sim import Renderer, look_at, make_world

    world = make_world(seed=5, size_m=160)
    half = 2.2 * F_TRUE  # the canvas reaches 73 deg from the axis at its sides, more than the lens sees
    cw, ch = int(2 * half + W), int(2 * half + H)
    canvas = PinholeCamera(cw, ch, F_TRUE, F_TRUE, (cw - 1) / 2, (ch - 1) / 2)
    poses = np.stack([
        look_at(np.array([-50.0 + 3.0 * k, -60.0 + 0.8 * k, 55.0 + 0.2 * k]),
                np.array([-45.0 + 3.0 * k, -10.0 + 0.8 * k, 2.0 + 3.0 * math.sin(0.3 * k)]))
        for k in range(N_FRAMES)
    ])  # fmt: skip
    big, _ = Renderer(world, canvas).render_batch(poses)
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    und = TRUE.undistort_points(np.stack([u, v], -1).reshape(-1, 2), K_TRUE).reshape(H, W, 2)
    mx = (und[..., 0] - K_TRUE[0, 2] + canvas.cx).astype(np.float32)
    my = (und[..., 1] - K_TRUE[1, 2] + canvas.cy).astype(np.float32)
    return [cv2.remap(np.ascontiguousarray(b[..., ::-1]), mx, my, cv2.INTER_LINEAR) for b in big]


@pytest.fixture(scope="module")
def calibrated(fisheye_flight: list[np.ndarray]) -> VideoLens:
    return calibrate_fisheye(iter(fisheye_flight), START_HFOV, threads=1)


def test_the_calibrated_lens_sees_the_rays_the_true_one_sees(calibrated: VideoLens) -> None:
    """COLMAP's lens, started from a 100 deg field, gives every pixel within 0.6 deg of its true ray; the pinhole
    the conversion assumed without it is 10+ deg off at the image's edge (what the calibration is for)."""
    lens = calibrated
    assert lens.registered >= 0.8 * N_FRAMES and lens.frames_used == N_FRAMES
    assert lens.camera.model == "fisheye" and (lens.camera.width, lens.camera.height) == (W, H)
    u, v = np.meshgrid(np.linspace(4, W - 5, 9), np.linspace(4, H - 5, 7))
    px = np.stack([u.ravel(), v.ravel()], 1)
    truth = _rays(TRUE, K_TRUE, px)
    dist = lens.camera.distortion
    assert dist is not None
    err = _angle_deg(_rays(dist, lens.camera.K, px), truth)
    assert err.max() < 0.6, err.max()  # 0.39 here
    # the principal point stays the centre (not refined): COLMAP's pixel corners back to OpenCV's pixel centres
    assert lens.camera.cx == pytest.approx((W - 1) / 2, abs=1e-9) and lens.camera.cy == pytest.approx((H - 1) / 2)
    assumed = PinholeCamera.from_fov(W, H, 118.0)
    xy = (px - [assumed.cx, assumed.cy]) / [assumed.fx, assumed.fy]
    pin = np.concatenate([xy, np.ones((len(xy), 1))], 1)
    pin /= np.linalg.norm(pin, axis=1, keepdims=True)
    assert _angle_deg(pin, truth).max() > 10.0


def test_calibrating_on_smaller_frames_scales_the_lens_back(fisheye_flight: list[np.ndarray]) -> None:
    """Frames larger than ``max_size`` are calibrated downscaled (here 160x120 of 256x192): the lens comes back at the
    video's size, the same lens COLMAP finds on those 160x120 frames given as they are, its focal lengths scaled
    and its centre moved from COLMAP's pixel corners to OpenCV's pixel centres."""
    big = calibrate_fisheye(iter(fisheye_flight), START_HFOV, max_size=160, threads=1)
    small_frames = [cv2.resize(f, (160, 120), interpolation=cv2.INTER_AREA) for f in fisheye_flight]
    small = calibrate_fisheye(iter(small_frames), START_HFOV, max_size=160, threads=1)
    assert (big.camera.width, big.camera.height) == (W, H) and (small.camera.width, small.camera.height) == (160, 120)
    s = W / 160
    assert big.camera.fx == pytest.approx(small.camera.fx * s, rel=1e-6)
    assert big.camera.fy == pytest.approx(small.camera.fy * s, rel=1e-6)
    assert big.camera.cx == pytest.approx((small.camera.cx + 0.5) * s - 0.5) == (W - 1) / 2
    assert big.camera.cy == pytest.approx((small.camera.cy + 0.5) * s - 0.5) == (H - 1) / 2
    assert big.camera.dist == pytest.approx(small.camera.dist)
    assert big.camera.fx == pytest.approx(F_TRUE, rel=0.05)  # a coarser calibration than at full size, still near


def test_frames_are_undistorted_onto_the_pinhole_target(calibrated: VideoLens,
                                                        fisheye_flight: list[np.ndarray]) -> None:  # fmt: skip
    """The target pinhole sees only what the lens saw (balance 0) and keeps the centre's resolution within a few
    per cent; a pixel of the undistorted frame looks along the pinhole ray the true lens maps it to."""
    lens = calibrated
    t = lens.target
    assert (t.width, t.height) == (W, H)
    assert 0.7 * F_TRUE < t.fx < 1.3 * F_TRUE
    assert 60.0 < lens.target_hfov_deg < 130.0
    und = lens.undistorter()(fisheye_flight[10])
    assert und.shape == fisheye_flight[10].shape and und.dtype == np.uint8
    # where the true lens images the target's pixel (u, v): the undistorted frame holds the fisheye frame's colour
    u, v = np.meshgrid(np.linspace(20, W - 21, 8), np.linspace(16, H - 17, 6))
    rays = np.stack([(u.ravel() - t.cx) / t.fx, (v.ravel() - t.cy) / t.fy, np.ones(u.size)], 1)
    src = TRUE.project(rays, K_TRUE)
    blur = cv2.GaussianBlur(fisheye_flight[10], (0, 0), 1.5).astype(np.float64)
    got = cv2.GaussianBlur(und, (0, 0), 1.5).astype(np.float64)
    want = np.array([cv2.getRectSubPix(blur.astype(np.float32), (1, 1), (float(x), float(y)))[0, 0] for x, y in src])
    have = got[v.ravel().astype(int), u.ravel().astype(int)]
    assert np.abs(want - have).mean() < 8.0  # 3.1 here; the frame as it came, not undistorted: 14.5
    with pytest.raises(ConfigError, match="changes size"):
        lens.undistorter()(fisheye_flight[0][:-2])
    words = lens.words()
    assert "fisheye" in words and "COLMAP" in words and "pinhole" in words
    assert lens.summary()["source_camera"] == lens.camera.to_dict()


def test_frames_without_parallax_say_what_to_do(fisheye_flight: list[np.ndarray]) -> None:
    """A camera that stands still cannot calibrate: a clear error naming the cure, not a made-up lens."""
    still = [fisheye_flight[0]] * 8
    with pytest.raises(ConfigError, match="parallax"):
        calibrate_fisheye(iter(still), 118.0, threads=1)
    with pytest.raises(ConfigError, match="at least 3"):
        calibrate_fisheye(iter(fisheye_flight[:2]), 118.0, threads=1)
    with pytest.raises(ConfigError, match="one size"):
        calibrate_fisheye(iter([fisheye_flight[0], fisheye_flight[1][:-2]]), 118.0, threads=1)
    with pytest.raises(ConfigError, match="hfov"):
        calibrate_fisheye(iter(fisheye_flight), 190.0, threads=1)


def test_without_pycolmap_the_lens_error_names_the_lens(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap now raises ImportError
    with pytest.raises(ConfigError, match=r"--lens fisheye.*COLMAP.*needs pycolmap.*--lens pinhole"):
        calibrate_fisheye(iter([]), 118.0)


def test_calibration_stride() -> None:
    assert calibration_stride(362, 3, 150) == 3
    assert calibration_stride(18000, 3, 150) == 120
    assert calibration_stride(0, 3, 150) == 3
    with pytest.raises(ConfigError):
        calibration_stride(100, 0, 150)


def test_convert_video_with_the_fisheye_lens(tmp_path: Path, fisheye_flight: list[np.ndarray]) -> None:
    """``convert video --lens fisheye`` without GPS: the manifest's camera is the undistorted pinhole (scaled to
    --size), the lens kept in source_cameras and named in the assumptions; ``--lens pinhole`` keeps the assumed
    118 deg camera and no source camera."""
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.pipeline import convert
    from pose2rgbd.convert.sources.video import VideoFramesSource
    from pose2rgbd.dataset import Dataset

    clip = tmp_path / "clip.mp4"
    vw = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    if not vw.isOpened():
        pytest.skip("OpenCV has no mp4v encoder here")
    for f in fisheye_flight:
        vw.write(f)
    vw.release()
    cfg = ConvertConfig(lens="fisheye", size="96x64")
    src = VideoFramesSource(clip, cfg)
    convert(src, tmp_path / "fish", cfg.output, progress=False)
    ds = Dataset(tmp_path / "fish")
    assert src.lens is not None
    assert ds.manifest.camera == src.lens.target.scaled(96, 64)
    assert ds.manifest.source_cameras == [src.lens.camera.to_dict()]
    assert ds.manifest.source_cameras[0]["model"] == "fisheye"
    summary = (tmp_path / "fish" / "report" / "summary.json").read_text()
    assert "fisheye lens calibrated from the video by COLMAP" in summary
    lens = json.loads(summary)["lens"]  # how the lens was calibrated, in the report
    assert lens["frames_used"] == N_FRAMES // 3 and lens["registered"] >= 0.8 * lens["frames_used"]  # every 3rd frame
    assert lens["source_camera"] == src.lens.camera.to_dict()
    cfg = ConvertConfig(size="96x64")
    convert(VideoFramesSource(clip, cfg), tmp_path / "pin", cfg.output, progress=False)
    pin = Dataset(tmp_path / "pin")
    assert pin.manifest.camera == PinholeCamera.from_fov(W, H, 118.0).scaled(96, 64)
    assert pin.manifest.source_cameras == []
    with pytest.raises(ConfigError, match="lens"):
        ConvertConfig(lens="wide")
    from pose2rgbd.convert.sources.bag import BagSource

    with pytest.raises(ConfigError, match="is for videos"):  # a bag's camera is its CameraInfo's
        BagSource(tmp_path / "any.mcap", ConvertConfig(lens="fisheye"))


def test_a_lens_no_camera_has_is_refused() -> None:
    """What COLMAP fitted on clips it could not calibrate: the karma clip's fx 749.8 / fy 188.8 (121 of 121 frames
    registered, so the registration count passed), k1..k4 diverged in the last bundle adjustment, a focal length
    far from the field given; hero7's lens passes."""
    from pose2rgbd.convert.lens_calibration import check_fisheye_params

    f0 = 320.0 / math.radians(59.0)  # 640 px wide, 118 deg
    check_fisheye_params((326.1, 330.5, 320.0, 181.0, 0.049, 0.026, -0.035, 0.015), f0, 118.0)  # hero7, at 640
    cases = {
        (749.8, 188.8, 320.0, 181.0, 0.306, 0.245, -0.380, 0.182): r"fx 749\.8 and fy 188\.8 px differ by 3\.97x",
        (326.0, 330.0, 320.0, 181.0, 0.05, -1.7e6, 0.0, 0.0): r"k1\.\.k4 .*diverged",
        (1200.0, 1200.0, 320.0, 181.0, 0.0, 0.0, 0.0, 0.0): r"3\.86x the one a 118 deg field implies",
        (float("nan"), 330.0, 320.0, 181.0, 0.0, 0.0, 0.0, 0.0): r"not finite",
    }
    for params, match in cases.items():
        with pytest.raises(ConfigError, match=match):
            check_fisheye_params(params, f0, 118.0)
