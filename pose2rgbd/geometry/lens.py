"""Lens distortion: OpenCV's two camera models, and the camera a query image was taken with.

The pipeline works on pinhole images (datasets, maps, the renderers). A source with lens distortion is
undistorted **once**: posed-image imports remap the images onto a pinhole camera (stated in the dataset's
``camera``; the lens it came from in ``source_cameras``, docs/dataset-format.md), and the structure localizer
undistorts a query's keypoints (not its pixels: SIFT runs on the image as taken, only the coordinates move).

Models (OpenCV's, which COLMAP's and nerfstudio's map onto; the coefficients act on normalized image coordinates,
so they do not change when an image is resized):

* ``opencv``: Brown-Conrady, ``k1 k2 p1 p2 [k3 [k4 k5 k6]]`` (OpenCV's plumb bob; 8 coefficients: its rational
  model). COLMAP ``SIMPLE_RADIAL`` (k), ``RADIAL`` (k1 k2), ``OPENCV`` (k1 k2 p1 p2), ``FULL_OPENCV`` (8).
* ``fisheye``: the equidistant model of ``cv2.fisheye``, ``k1 k2 k3 k4`` (theta_d = theta (1 + k1 theta^2 + ...)).
  COLMAP ``OPENCV_FISHEYE`` (k1..k4), ``SIMPLE_RADIAL_FISHEYE`` / ``RADIAL_FISHEYE`` (k / k1 k2, the same
  polynomial with the higher terms zero).

All of it is OpenCV (``undistortPoints``, ``initUndistortRectifyMap``, ``getOptimalNewCameraMatrix`` and their
``cv2.fisheye`` twins); this module only picks the one of the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pose2rgbd.errors import ConfigError, GeometryError
from pose2rgbd.geometry.camera import PinholeCamera

LENS_MODELS = ("opencv", "fisheye")
_COUNTS = {"opencv": (4, 5, 8), "fisheye": (4,)}


@dataclass(frozen=True)
class Distortion:
    """A lens's distortion: ``model`` (``opencv`` or ``fisheye``) and its coefficients in OpenCV's order."""

    model: str = "opencv"
    coeffs: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.model not in LENS_MODELS:
            raise GeometryError(f"distortion model {self.model!r} is not one of {', '.join(LENS_MODELS)}")
        object.__setattr__(self, "coeffs", tuple(float(c) for c in self.coeffs))
        if len(self.coeffs) not in _COUNTS[self.model]:
            want = " or ".join(map(str, _COUNTS[self.model]))
            raise GeometryError(f"{self.model} distortion takes {want} coefficients, got {len(self.coeffs)}")
        if not all(math.isfinite(c) for c in self.coeffs):
            raise GeometryError(f"distortion coefficients must be finite numbers, got {list(self.coeffs)}")

    @property
    def is_zero(self) -> bool:
        return not any(self.coeffs)

    def array(self) -> np.ndarray:
        """The coefficients as OpenCV takes them (``(1, 4|5|8)`` float64)."""
        return np.asarray(self.coeffs, np.float64).reshape(1, -1)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "coeffs": list(self.coeffs)}

    # ------------------------------------------------------------------ OpenCV, by model
    def undistort_points(self, xy: np.ndarray, K: np.ndarray) -> np.ndarray:
        """Pixels ``(N, 2)`` of the distorted image -> where the pinhole camera ``K`` (the same intrinsics without
        the distortion) sees them."""
        import cv2

        p = np.asarray(xy, np.float64).reshape(-1, 1, 2)
        if not len(p):
            return np.zeros((0, 2), np.float64)
        K = np.asarray(K, np.float64)
        if self.model == "fisheye":
            out = cv2.fisheye.undistortPoints(p, K, self.array(), P=K)
        else:  # iterative inverse; more iterations than the default 5 for strong barrel distortion
            crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
            out = cv2.undistortPoints(p, K, self.array(), R=None, P=K, criteria=crit)
        return np.asarray(out, np.float64).reshape(-1, 2)

    def project(self, p_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
        """Optical-frame points ``(N, 3)`` (z > 0) -> distorted pixels ``(N, 2)`` (what the lens images)."""
        import cv2

        p = np.asarray(p_cam, np.float64).reshape(-1, 1, 3)
        if not len(p):
            return np.zeros((0, 2), np.float64)
        zero = np.zeros(3)
        if self.model == "fisheye":
            out, _ = cv2.fisheye.projectPoints(p, zero, zero, np.asarray(K, np.float64), self.array())
        else:
            out, _ = cv2.projectPoints(p, zero, zero, np.asarray(K, np.float64), self.array())
        return np.asarray(out, np.float64).reshape(-1, 2)

    def new_camera(self, K: np.ndarray, size: tuple[int, int], alpha: float) -> np.ndarray:
        """The pinhole ``K`` to undistort onto at ``size`` (w, h): ``alpha`` 0 keeps only valid pixels, 1 keeps
        every source pixel (``getOptimalNewCameraMatrix``; fisheye: ``estimateNewCameraMatrixForUndistortRectify``
        with balance = alpha)."""
        import cv2

        K = np.asarray(K, np.float64)
        if self.model == "fisheye":
            return np.asarray(cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(
                K, self.array(), size, np.eye(3), balance=float(alpha)), np.float64)  # fmt: skip
        newK, _ = cv2.getOptimalNewCameraMatrix(K, self.array(), size, float(alpha), size)
        return np.asarray(newK, np.float64)

    def maps(self, K: np.ndarray, target: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
        """``cv2.remap`` maps from the distorted image of intrinsics ``K`` onto the pinhole ``target``."""
        import cv2

        size = (target.width, target.height)
        K = np.asarray(K, np.float64)
        if self.model == "fisheye":
            m = cv2.fisheye.initUndistortRectifyMap(K, self.array(), np.eye(3), target.K, size, cv2.CV_32FC1)
        else:
            m = cv2.initUndistortRectifyMap(K, self.array(), None, target.K, size, cv2.CV_32FC1)
        return m[0], m[1]


def distortion_from_dict(d: Any, where: str) -> Distortion:
    try:
        return Distortion(str(d["model"]), tuple(d["coeffs"]))
    except (KeyError, TypeError, ValueError, GeometryError) as e:
        raise GeometryError(
            f"{where}: bad distortion {d!r} ({e}); give {{model: opencv|fisheye, coeffs: [...]}}"
        ) from e


@dataclass(frozen=True)
class QueryCamera:
    """The camera of query images: pinhole intrinsics at the images' own size (OpenCV pixel convention), and the
    lens's distortion when it has any. ``width`` / ``height`` 0: the size is the image's (a ``--camera`` spec);
    else the intrinsics are at that size and are scaled to another (a dataset's source camera)."""

    fx: float
    fy: float
    cx: float
    cy: float
    distortion: Distortion | None = None
    width: int = 0
    height: int = 0

    def at(self, w: int, h: int) -> tuple[PinholeCamera, Distortion | None]:
        """The pinhole part and the distortion for an image of ``w x h``."""
        if not self.width:
            return PinholeCamera(w, h, self.fx, self.fy, self.cx, self.cy), self.distortion
        own = PinholeCamera(self.width, self.height, self.fx, self.fy, self.cx, self.cy)
        if abs(own.width / own.height - w / h) > 0.01 * (w / h):
            raise ConfigError(
                f"the image is {w}x{h} and its camera {own.width}x{own.height}, another aspect ratio: give the "
                "images' own intrinsics (--camera FX,FY,CX,CY[,K1,K2,P1,P2[,K3]])"
            )
        return (own if (w, h) == (own.width, own.height) else own.scaled(w, h)), self.distortion


SPEC_HELP = (
    "FX,FY,CX,CY (pinhole), FX,FY,CX,CY,K1,K2,P1,P2[,K3[,K4,K5,K6]] (OpenCV distortion), or "
    "fisheye:FX,FY,CX,CY,K1,K2,K3,K4 (OpenCV's fisheye model); pixels at the images' own size, pixel centres at "
    "integers (OpenCV / ROS)"
)


def parse_camera_spec(text: str, what: str = "--camera") -> QueryCamera | None:
    """``"fx,fy,cx,cy[,k1,k2,p1,p2[,k3...]]"`` or ``"fisheye:fx,fy,cx,cy,k1,k2,k3,k4"`` -> :class:`QueryCamera`
    (None for an empty text); anything else is a :class:`ConfigError` naming the accepted forms."""
    s = text.strip()
    if not s:
        return None
    model, _, rest = s.rpartition(":")
    model = model.strip().lower() or "opencv"
    try:
        v = [float(x) for x in rest.split(",")]
    except ValueError:
        v = []
    ok = model in LENS_MODELS and len(v) >= 4 and all(math.isfinite(x) for x in v) and v[0] > 0 and v[1] > 0
    n = len(v) - 4
    if not ok or (n and n not in _COUNTS[model]) or (model == "fisheye" and n != 4):
        raise ConfigError(f"{what} {text!r}: give {SPEC_HELP}")
    dist = Distortion(model, tuple(v[4:])) if n else None
    return QueryCamera(v[0], v[1], v[2], v[3], None if dist is None or dist.is_zero else dist)
