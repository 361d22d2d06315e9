"""Per-frame optical-flow magnitude: the image-side speed proxy of Algorithm 1 (paper section 2.1).

Dense flow between consecutive frames (OpenCV DIS, or Farneback) at a reduced resolution; the per-frame
statistic is the mean flow magnitude over textured pixels, in pixels per second at ``width``. Measured on
the GoPro clips (docs/convert.md): rotation-compensated residuals (a fitted small-angle rotation field with an
assumed field of view) and bottom-half-only statistics were *worse* than the plain mean on the drone clip,
because the fisheye lens breaks the rotation model; what mattered was resolution (>= 320 px wide: flow of a
few tenths of a pixel is noise at 160 px) and rejecting the frames where the camera whips around (handled as
outliers in :mod:`pose2rgbd.sync.estimator`). An optional top band can be masked (sky).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from pose2rgbd.config import help_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera


@dataclass
class FlowConfig:
    """How the per-frame optical-flow magnitude is measured."""

    width: int = help_field(320, "flow is computed on frames resized to this width (pixels); >= 320 recommended")
    method: str = help_field("dis", "optical flow: 'dis' (OpenCV DIS) or 'farneback'")
    dis_preset: str = help_field("medium", "DIS preset: 'ultrafast', 'fast' or 'medium'")
    frame_step: int = help_field(
        3, "flow between frame i and i - frame_step: a longer baseline lifts slow motion (far ground, small "
        "images) above the flow noise; the value is still divided by the time between the two frames"
    )  # fmt: skip
    sky_band: float = help_field(0.0, "fraction of the image height at the top ignored (sky), 0 = none")
    texture_quantile: float = help_field(
        0.3, "pixels whose gradient magnitude is below this quantile are ignored (flat sky, water)"
    )
    statistic: str = help_field(
        "mean", "per-frame statistic: 'mean' or 'median' of |flow|, 'quantile' (the `quantile` of |flow|: "
        "for nadir mapping cameras over buildings, where it follows the ground and not the roofs passing "
        "beneath; wrong for a camera that sees the horizon), or 'derotated' (mean |flow - fitted rotation "
        "field|, needs intrinsics; measured worse: it also absorbs ground-plane translation flow)"
    )  # fmt: skip
    quantile: float = help_field(0.25, "the quantile of |flow| used by statistic 'quantile', in (0, 1)")

    def __post_init__(self) -> None:
        if self.width < 16:
            raise ConfigError(f"flow.width must be >= 16, got {self.width}")
        if self.method not in ("dis", "farneback"):
            raise ConfigError(f"flow.method must be 'dis' or 'farneback', got {self.method!r}")
        if self.dis_preset not in ("ultrafast", "fast", "medium"):
            raise ConfigError(f"flow.dis_preset must be ultrafast/fast/medium, got {self.dis_preset!r}")
        if self.frame_step < 1:
            raise ConfigError(f"flow.frame_step must be >= 1, got {self.frame_step}")
        if not 0.0 <= self.sky_band < 0.9:
            raise ConfigError(f"flow.sky_band must be in [0, 0.9), got {self.sky_band}")
        if not 0.0 <= self.texture_quantile < 1.0:
            raise ConfigError(f"flow.texture_quantile must be in [0, 1), got {self.texture_quantile}")
        if self.statistic not in ("auto", "mean", "median", "quantile", "derotated"):
            raise ConfigError(f"flow.statistic must be auto/mean/median/quantile/derotated, got {self.statistic!r}")
        if not 0.0 < self.quantile < 1.0:
            raise ConfigError(f"flow.quantile must be in (0, 1), got {self.quantile}")


_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def to_flow_gray(image: np.ndarray, width: int, *, is_bgr: bool = False) -> np.ndarray:
    """uint8 RGB/BGR/gray image -> uint8 gray resized to ``width`` (aspect kept, area interpolation)."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY if is_bgr else cv2.COLOR_RGB2GRAY)
    if a.dtype != np.uint8:
        a = cv2.normalize(a, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)  # type: ignore[call-overload]
    h, w = a.shape[:2]
    if w > width:  # never upsample
        a = cv2.resize(a, (width, max(8, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return a


def flow_times(t_s: np.ndarray, frame_step: int) -> np.ndarray:
    """The time a flow value describes: the midpoint of its two frames (``t[i - step]`` and ``t[i]``)."""
    t = np.asarray(t_s, dtype=np.float64)
    out = t.copy()
    k = int(frame_step)
    if t.size > k:
        out[k:] = 0.5 * (t[k:] + t[:-k])
    return out


class FlowMagnitude:
    """Feed frames in time order; each call returns the flow statistic for that frame (NaN for the first).

    The value is in pixels per second at ``cfg.width`` (divided by the frame interval), so frame drops do
    not show up as speed changes. It describes the midpoint between the two frames (:attr:`last_mid_t`,
    :func:`flow_times`).
    """

    def __init__(self, cfg: FlowConfig | None = None, camera: PinholeCamera | None = None) -> None:
        """``camera``: intrinsics of the full-size images; enables the ``derotated`` statistic."""
        self.cfg = cfg or FlowConfig()
        self.camera = camera
        stat = self.cfg.statistic
        if stat == "auto":
            stat = "mean"
        if stat == "derotated" and camera is None:
            raise ConfigError(
                "flow.statistic 'derotated' needs the camera intrinsics: a bag's CameraInfo topic, or for a video "
                "the assumed horizontal field of view (--hfov) and the frame size"
            )
        self.statistic = stat
        self._basis: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None
        self.last_mid_t = float("nan")
        self._hist: deque[tuple[float, np.ndarray]] = deque(maxlen=self.cfg.frame_step)
        if self.cfg.method == "dis":
            self._dis = cv2.DISOpticalFlow_create(_PRESETS[self.cfg.dis_preset])  # type: ignore[attr-defined]

    def reset(self) -> None:
        self._hist.clear()

    def _flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.cfg.method == "dis":
            return self._dis.calc(a, b, None)
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)  # type: ignore[call-overload]

    def add_gray(self, t_s: float, gray: np.ndarray) -> float:
        """Add one gray frame (already at ``cfg.width``, see :func:`to_flow_gray`) taken at ``t_s`` seconds."""
        if self._hist and (self._hist[-1][1].shape != gray.shape or t_s <= self._hist[-1][0]):
            self._hist.clear()
        full = len(self._hist) == self._hist.maxlen
        prev_t, prev = self._hist[0] if self._hist else (None, None)
        self._hist.append((t_s, gray))
        self.last_mid_t = t_s if prev_t is None else 0.5 * (t_s + prev_t)
        if not full or prev is None or prev_t is None:
            return float("nan")
        fl = self._flow(prev, gray)
        mag = np.sqrt(fl[..., 0] ** 2 + fl[..., 1] ** 2)
        keep = np.ones(mag.shape, bool)
        band = int(self.cfg.sky_band * mag.shape[0])
        keep[:band] = False
        if self.cfg.texture_quantile > 0:
            gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
            gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
            tex = np.abs(gx) + np.abs(gy)
            thr = np.quantile(tex[keep], self.cfg.texture_quantile)
            keep &= tex > thr
        if not keep.any():
            keep[:] = True
        if self.statistic == "derotated":
            v = self._derotated(fl, keep)
        else:
            vals = mag[keep]
            if self.statistic == "mean":
                v = float(np.mean(vals))
            elif self.statistic == "median":
                v = float(np.median(vals))
            else:
                v = float(np.quantile(vals, self.cfg.quantile))
        return v / (t_s - prev_t)

    def _derotated(self, fl: np.ndarray, keep: np.ndarray) -> float:
        """Mean |flow - rotational flow|: a small-angle rotation field (3 unknowns) fitted by least squares
        with two reweighting rounds; what is left is the translational (parallax) flow, ~ speed / depth."""
        h, w = fl.shape[:2]
        if self._basis is None or self._basis[0] != (h, w):
            assert self.camera is not None
            cam = self.camera.scaled(w, h)
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
            x, y = (xx - cam.cx) / cam.fx, (yy - cam.cy) / cam.fy
            bu = np.stack([x * y, -(1 + x * x), y], -1) * cam.fx
            bv = np.stack([1 + y * y, -x * y, -x], -1) * cam.fy
            self._basis = ((h, w), bu, bv)
        _, bu, bv = self._basis
        sub = np.zeros_like(keep)
        sub[::2, ::2] = True  # every 4th pixel is plenty for 3 unknowns
        m = keep & sub
        A = np.concatenate([bu[m], bv[m]])
        b = np.concatenate([fl[..., 0][m], fl[..., 1][m]]).astype(np.float64)
        wgt = np.ones(b.size)
        om: np.ndarray = np.zeros(3)
        for _ in range(3):
            om = np.linalg.lstsq(A * wgt[:, None], b * wgt, rcond=None)[0]
            r = np.abs(A @ om - b)
            wgt = 1.0 / np.maximum(r, np.median(r) + 1e-6)  # L1-like reweighting: parallax is the "outlier"
        ru = fl[..., 0] - bu @ om
        rv = fl[..., 1] - bv @ om
        return float(np.mean(np.sqrt(ru[keep] ** 2 + rv[keep] ** 2)))

    def add_image(self, t_s: float, image: np.ndarray, *, is_bgr: bool = False) -> float:
        return self.add_gray(t_s, to_flow_gray(image, self.cfg.width, is_bgr=is_bgr))
