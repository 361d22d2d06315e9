"""A video's lens, calibrated from the video itself (``convert video --lens fisheye``).

A video comes without a calibration, so the conversion has assumed a pinhole camera with ``--hfov`` (118 deg, a
GoPro's wide field). An action camera's wide lens is a fisheye, though: its centre sees about 1.6x the pixels per
degree that a pinhole of the same field gives it, and straight lines bend towards the edges. Every warp between
frames (the depth network's view synthesis, structure from motion, the renderer's keyframes) then moves pixels by
the wrong amounts. ``--lens fisheye`` asks COLMAP for the lens instead: structure from motion on frames of the
video with one shared ``OPENCV_FISHEYE`` camera (OpenCV's equidistant model, ``k1..k4``), started from ``--hfov``
(equidistant focal ``(w / 2) / (hfov / 2)``), whose focal lengths and ``k1..k4`` bundle adjustment refines (the
principal point stays at the centre: a video does not constrain it well). The frames are then undistorted once
onto a pinhole camera (OpenCV's ``estimateNewCameraMatrixForUndistortRectify``, balance 0: only pixels the lens
saw, so the field narrows) and the rest of the conversion sees a pinhole video. COLMAP does the calibration
(pycolmap, through :mod:`pose2rgbd.geometry.colmap_sfm`, the set-up the flight's structure from motion uses),
OpenCV the undistortion (:mod:`pose2rgbd.geometry.lens`); this module picks the frames, reads COLMAP's camera back
and checks it.

The frames: every ``stride``-th decoded frame, ``stride`` at least ``every`` and large enough that at most
``max_frames`` are used (spread over the whole video), at most ``max_size`` pixels wide or high. Calibration needs
parallax, as structure from motion does: a camera that only turns, or stands, calibrates badly or not at all; the
error says so and what to do.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pose2rgbd.convert.posed_images.common import SourceCamera
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.colmap_sfm import SequentialSfm, colmap_workspace, load_pycolmap, sequential_sfm

log = logging.getLogger(__name__)

LENS_EVERY = 3  # at most every 3rd frame of a video (30 fps: 0.1 s apart, parallax enough for a moving camera)
LENS_MAX_FRAMES = 150  # COLMAP's time grows with the frames; 150 fix four coefficients and two focal lengths well
MIN_REGISTERED_FRACTION = 0.5  # at least this share of the calibration frames in COLMAP's largest model
FOCAL_RANGE = (0.4, 2.5)  # the refined focal length within this factor of the one --hfov implies
MAX_FOCAL_ASPECT = 1.15  # fx / fy of a calibrated lens beyond this: no camera (hero7: 1.014)
MAX_FISHEYE_K = 5.0  # |k1..k4| of OPENCV_FISHEYE beyond this: the bundle adjustment diverged, no lens (hero7: < 0.05)
ADVICE = (
    "calibrating the lens needs frames with parallax (a camera that moves, not one that only turns or stands): "
    "use a part of the recording where the camera travels, or --lens pinhole with --hfov set to the camera's "
    "field of view"
)


@dataclass(frozen=True)
class VideoLens:
    """A video's calibrated lens (``camera``: OpenCV fisheye model at the video's size, OpenCV pixel convention)
    and the pinhole ``target`` its frames are undistorted onto (same size)."""

    camera: SourceCamera
    target: PinholeCamera
    frames_used: int
    registered: int
    reprojection_error_px: float  # COLMAP's mean, at the calibration frames' size
    seconds: float

    @property
    def target_hfov_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.target.width / (2.0 * self.target.fx)))

    def undistorter(self) -> Callable[[np.ndarray], np.ndarray]:
        """A function that undistorts one frame of the video (any channels, the video's size) onto ``target``."""
        lens = self.camera.distortion
        assert lens is not None
        mx, my = lens.maps(self.camera.K, self.target)

        def undistort(img: np.ndarray) -> np.ndarray:
            if (img.shape[1], img.shape[0]) != (self.camera.width, self.camera.height):
                raise ConfigError(
                    f"a frame of {img.shape[1]}x{img.shape[0]} in a video calibrated at {self.camera.width}x"
                    f"{self.camera.height}: the video changes size; convert its parts separately"
                )
            return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

        return undistort

    def summary(self) -> dict[str, object]:
        """For the dataset report and the manifest's conversion notes."""
        return {
            "model": "fisheye (OpenCV equidistant; COLMAP OPENCV_FISHEYE, self-calibrated)",
            "source_camera": self.camera.to_dict(),
            "undistorted_to": {"hfov_deg": round(self.target_hfov_deg, 2), **self.target.to_dict()},
            "frames_used": self.frames_used,
            "registered": self.registered,
            "reprojection_error_px": round(self.reprojection_error_px, 4),
            "seconds": round(self.seconds, 1),
        }

    def words(self) -> str:
        c = self.camera
        k = ", ".join(f"{x:+.3f}" for x in c.dist)
        return (f"fisheye lens calibrated from the video by COLMAP (OPENCV_FISHEYE, {self.registered} of "
                f"{self.frames_used} frames, {self.reprojection_error_px:.2f} px): fx {c.fx:.1f} fy {c.fy:.1f} at "
                f"{c.width}x{c.height}, k1..k4 {k}; frames undistorted onto a pinhole of {self.target_hfov_deg:.1f} "
                "deg horizontal field")  # fmt: skip


def calibration_stride(n_frames: int, every: int, max_frames: int) -> int:
    """Every how many decoded frames one is used: at least ``every``, at most ``max_frames`` frames in all."""
    if every < 1 or max_frames < 3:
        raise ConfigError("lens calibration needs every >= 1 and max_frames >= 3")
    return max(every, math.ceil(max(n_frames, 1) / max_frames))


def check_fisheye_params(params: Sequence[float], f0: float, hfov_deg: float) -> None:
    """Refuse COLMAP's ``OPENCV_FISHEYE`` parameters ``(fx, fy, cx, cy, k1..k4)`` that are no real lens, with
    :class:`ConfigError` saying what to do: not finite; k1..k4 beyond :data:`MAX_FISHEYE_K` (a diverged bundle
    adjustment); focal lengths that differ by more than :data:`MAX_FOCAL_ASPECT` (a camera's pixels are square
    within a few per cent: the karma clip's model fitted fx 749.8 and fy 188.8); their mean outside
    :data:`FOCAL_RANGE` of ``f0``, the one ``--hfov`` implies."""
    fx, fy, _cx, _cy, *k = (float(x) for x in params)
    if not all(math.isfinite(x) for x in params) or fx <= 0 or fy <= 0:
        raise ConfigError(f"lens calibration: COLMAP's lens is not finite ({list(params)}); {ADVICE}")
    if any(abs(x) > MAX_FISHEYE_K for x in k):  # diverged in the last bundle adjustment
        raise ConfigError(f"lens calibration: COLMAP's fisheye coefficients k1..k4 {', '.join(f'{x:.3g}' for x in k)} "
                          f"diverged (a real lens's are within +-{MAX_FISHEYE_K:g}); {ADVICE}")  # fmt: skip
    if max(fx, fy) / min(fx, fy) > MAX_FOCAL_ASPECT:
        raise ConfigError(f"lens calibration: COLMAP's focal lengths fx {fx:.1f} and fy {fy:.1f} px differ by "
                          f"{max(fx, fy) / min(fx, fy):.2f}x, which no camera's pixels do (at most "
                          f"{MAX_FOCAL_ASPECT:g}x): the calibration failed; convert with --lens pinhole")  # fmt: skip
    ratio = math.sqrt(fx * fy) / f0
    if not FOCAL_RANGE[0] <= ratio <= FOCAL_RANGE[1]:
        raise ConfigError(f"lens calibration: COLMAP's focal length {fx:.1f} px is {ratio:.2f}x the one a "
                          f"{hfov_deg:.0f} deg field implies; set --hfov nearer the camera's field, or --lens "
                          "pinhole")  # fmt: skip


def calibrate_fisheye(
    frames: Iterable[np.ndarray],
    hfov_deg: float,
    *,
    max_size: int = 640,
    threads: int = -1,
    progress: bool = False,
) -> VideoLens:
    """Calibrate one fisheye lens from ``frames`` (BGR uint8, all of the video's size, in time order; the caller
    picks them, :func:`calibration_stride`). Raises :class:`ConfigError` saying what to do when COLMAP cannot."""
    from pose2rgbd.progress import bar

    if not 10.0 <= hfov_deg < 180.0:
        raise ConfigError(f"--hfov {hfov_deg}: a field of view for the lens calibration's start must be in [10, 180)")
    pycolmap = load_pycolmap("--lens fisheye (a lens calibration by COLMAP)", "convert with --lens pinhole")
    t0 = time.monotonic()
    names: list[str] = []
    size: tuple[int, int] | None = None
    small_size = (0, 0)
    with colmap_workspace(pycolmap, "pose2rgbd-lens-", log) as root:
        img_dir = root / "images"
        for i, bgr in enumerate(bar(frames, desc="frames for the lens", unit="frame", progress=progress)):
            h, w = bgr.shape[:2]
            if size is None:
                size = (w, h)
            elif size != (w, h):
                raise ConfigError(f"the video changes size ({size[0]}x{size[1]} -> {w}x{h}): a lens calibration "
                                  "needs frames of one size; convert its parts separately")  # fmt: skip
            f = min(1.0, max_size / max(h, w))
            small = cv2.resize(bgr, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA) if f < 1.0 else bgr
            small_size = (small.shape[1], small.shape[0])
            name = f"{i:06d}.png"
            if not cv2.imwrite(str(img_dir / name), small):
                raise OSError(f"{img_dir / name}: could not write a frame for the lens calibration")
            names.append(name)
        if size is None or len(names) < 3:
            raise ConfigError(f"lens calibration got {len(names)} frames (need at least 3); {ADVICE}")
        w, h = size
        cw, ch = small_size
        f0 = (cw / 2.0) / math.radians(hfov_deg / 2.0)  # equidistant: r = f theta
        log.info("lens calibration: COLMAP on %d frames at %dx%d, fisheye started from %.0f deg", len(names), cw, ch,
                 hfov_deg)  # fmt: skip
        # focal lengths and k1..k4 refined, the principal point fixed at the centre; a clip that cannot calibrate
        # fails in a minute or two, not after COLMAP's 200 initial pairs x 50 models
        run = SequentialSfm(
            "OPENCV_FISHEYE", (f0, f0, cw / 2.0, ch / 2.0, 0.0, 0.0, 0.0, 0.0), refine_intrinsics=True,
            threads=threads, max_image_size=max_size, overlap=10, init_num_trials=20, max_num_models=3,
            distortion_after_mapping=True,
        )  # fmt: skip
        recs = sequential_sfm(pycolmap, root, names, run, progress=progress)
        if not recs:
            raise ConfigError(f"lens calibration: COLMAP registered none of {len(names)} frames; {ADVICE}")
        rec = recs[0]
        reg = int(rec.num_reg_images())
        cam = next(iter(rec.cameras.values()))
        params = [float(x) for x in cam.params]
        err = float(rec.compute_mean_reprojection_error())
    if reg < max(3, MIN_REGISTERED_FRACTION * len(names)):
        raise ConfigError(f"lens calibration: COLMAP registered {reg} of {len(names)} frames in one model (need "
                          f"{MIN_REGISTERED_FRACTION:.0%}); {ADVICE}")  # fmt: skip
    check_fisheye_params(params, f0, hfov_deg)
    fx_c, fy_c, cx_c, cy_c, *k = params
    s = w / cw  # COLMAP's pixel corners -> OpenCV's pixel centres, at the video's size
    camera = SourceCamera(w, h, fx_c * s, fy_c * (h / ch), cx_c * s - 0.5, cy_c * (h / ch) - 0.5, tuple(k),
                          "fisheye")  # fmt: skip
    lens = camera.distortion
    if lens is None:  # all four coefficients exactly zero: an equidistant lens, still a fisheye
        lens_k = (1e-12, 0.0, 0.0, 0.0)
        camera = SourceCamera(w, h, camera.fx, camera.fy, camera.cx, camera.cy, lens_k, "fisheye")
        lens = camera.distortion
        assert lens is not None
    K = lens.new_camera(camera.K, (w, h), 0.0)
    target = PinholeCamera(w, h, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    out = VideoLens(camera, target, len(names), reg, err, time.monotonic() - t0)
    log.info("lens: %s (%.0f s)", out.words(), out.seconds)
    return out
