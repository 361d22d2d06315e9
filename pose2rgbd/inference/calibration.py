"""Pose covariance and out-of-distribution threshold of a localizer, calibrated on validation frames.

What is measured: for every validation frame, the localizer's error against the ground-truth pose,

* position: ``t_est - t_true`` in the world frame (metres);
* orientation: the rotation vector of ``R_est @ R_true.T`` (radians), i.e. the small rotation about the
  **world frame's fixed axes** that takes the true orientation to the estimate. That is the convention of
  ``geometry_msgs/PoseWithCovariance`` (REP-103; order x, y, z, rotation about X, about Y, about Z of the
  parent frame, which is the world frame the pose is published in).

The 6x6 covariance is the second moment ``E[e e^T]`` of these errors (about zero, not about their mean, so a
bias counts as uncertainty too), symmetrized and floored to be positive definite. With
``confidence_bins`` > 1 the frames are also split into bins of equal count by the model's confidence, and
each bin's mean squared position / orientation error relative to all frames gives a scale factor: at run time
the covariance is scaled by the factors interpolated at the image's confidence (the position block by
``s_p``, the orientation block by ``s_r``, the cross terms by ``sqrt(s_p s_r)``, which keeps it positive
definite). The out-of-distribution threshold is the ``ood_quantile`` quantile of the validation confidences:
an image whose confidence is lower than that of 95 % (default) of the validation images is flagged.

The result is a small YAML sidecar (:func:`save_calibration`, written atomically; the checkpoint is never
touched), read by the localize node (``covariance_file``) with :func:`load_calibration`.

A localizer that gives each fix its own covariance from its inliers' information (the structure localizer) is
calibrated by scale factors of that covariance, one for the position block and one for the orientation block
(:meth:`Calibration.covariance_of_fix`). Each factor is the median squared Mahalanobis error over chi-square's
median, taken not at the sample median but at its upper one-sided confidence bound (:func:`median_upper_bound`,
level :data:`SCALE_LEVEL`): a few dozen held-out fixes estimate the scale with an error of their own, and a filter
fed a covariance too small trusts every fix too much, while one too large only weighs it less. Fitted on the same
held-out fixes (:func:`fit_gate`, :func:`fit_confidence`):

* an **out-of-distribution gate**: a fix farther from the map's keyframes, relative to the map's spacing, than
  any held-out fix was (with :data:`GATE_MARGIN`), or with fewer inliers / a smaller inlier spread than the
  ``gate_quantile`` of the held-out fixes, is flagged (:meth:`Calibration.gate_reason`);
* a **confidence** that is a probability: ``P(position error < bound_m)`` of a normal error with the published
  position covariance, that covariance times one factor ``kappa`` fitted so that the held-out fixes' mean
  probability is their share within the bound (:func:`fit_confidence`, :meth:`Calibration.confidence_of`).

This module is the one fitter; ``pose2rgbd.evaluation.calibration`` runs it on a dataset's validation frames
(``localize calibrate``), ``pose2rgbd.inference.structure_calibration`` on a map's own held-out keyframes
(``map build``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pose2rgbd.atomic import write_text_atomic
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.transforms import pose_errors
from pose2rgbd.order_statistics import quantile_bound_rank, quantile_upper_bound

FORMAT = "pose2rgbd-localize-calibration"
VERSION = 1
CHI2_6_MEDIAN = 5.348120627447122  # median of the chi-square distribution with 6 degrees of freedom
CHI2_3_MEDIAN = 2.3659738843753377  # ... with 3 (one block of the covariance)
CHI2_6_GROSS = 22.457744484825326  # chi-square's 0.999 quantile, 6 degrees of freedom: an error no covariance explains
GATE_MARGIN = 1.5  # the gate: 1.5x farther than the farthest held-out fix (or 1.5x weaker) is out of distribution
# the covariance scale is the upper one-sided confidence bound of the held-out median at this level
# (median_upper_bound): the scale it publishes is at least the true one in at least 80 % of calibrations
SCALE_LEVEL = 0.8
MIN_FRAMES = 12  # fewer errors than this cannot estimate a 6x6 second moment with any confidence
POSITION_FLOOR_M2 = 1e-6  # eigenvalue floors: (1 mm)^2 and (0.06 deg)^2
ORIENTATION_FLOOR_RAD2 = 1e-6

# Without a calibration file the node publishes this (documented in docs/ros.md): a standard deviation of
# 10 m in position and 30 degrees about each axis -- larger than the errors of any localizer worth running, so
# a filter that fuses the pose trusts it little until it is calibrated.
DEFAULT_POSITION_SIGMA_M = 10.0
DEFAULT_ORIENTATION_SIGMA_DEG = 30.0


def default_covariance() -> np.ndarray:
    """The conservative 6x6 covariance used without a calibration file (see the constants above)."""
    return np.diag([DEFAULT_POSITION_SIGMA_M**2] * 3 + [math.radians(DEFAULT_ORIENTATION_SIGMA_DEG) ** 2] * 3)


@dataclass
class Calibration:
    """A localizer's calibrated covariance (world frame, PoseWithCovariance order) and OOD threshold."""

    covariance: np.ndarray  # (6, 6) SPD: x, y, z [m^2], rot about world X, Y, Z [rad^2]
    n_frames: int
    ood_quantile: float = 0.05
    ood_threshold: float = 0.0  # confidence below this: out of distribution
    bin_confidence: list[float] = field(default_factory=list)  # centres (median confidence) of the bins
    bin_position_scale: list[float] = field(default_factory=list)
    bin_orientation_scale: list[float] = field(default_factory=list)
    errors: dict[str, float] = field(default_factory=dict)  # medians / 90th percentiles, for the record
    source: dict[str, Any] = field(default_factory=dict)  # checkpoint, model kind, dataset, split
    # a localizer that gives each fix its own covariance (the structure localizer): the factor that makes it match
    # the validation errors (0: none; the fixed covariance above is used)
    information_scale: float = 0.0
    # ... per block (position, orientation); 0: information_scale for both
    information_scale_position: float = 0.0
    information_scale_orientation: float = 0.0
    # how those scales were fitted (median_upper_bound): level, n (fixes), rank (the order statistic taken), coverage
    # (the bound's exact probability of being at least the true scale, >= level), and the point estimates (the
    # sample medians: median, median_position, median_orientation); empty: the sample median (an older file)
    information_scale_bound: dict[str, float] = field(default_factory=dict)
    # the out-of-distribution gate of such a localizer (fit_gate; empty: none)
    gate: dict[str, float] = field(default_factory=dict)
    # confidence = P(position error < bound_m) (fit_confidence: bound_m, kappa; empty: the localizer's own score)
    confidence_model: dict[str, float] = field(default_factory=dict)
    # the calibration dataset's own poses against the truth (its manifest's pose_error: horizontal_m, vertical_m,
    # standard deviations; a recording's GPS receiver's statement): the errors above were measured against those
    # poses, so a model trained and calibrated on them is off the truth by this much more (:meth:`pose_error_sigmas`,
    # added by the localize node to what it publishes); empty: the dataset states none
    pose_error: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.covariance = check_covariance(self.covariance, "calibration covariance")
        n = len(self.bin_confidence)
        if len(self.bin_position_scale) != n or len(self.bin_orientation_scale) != n:
            raise ConfigError("calibration: the confidence bins have lists of different lengths")
        if any(not (math.isfinite(s) and s > 0) for s in self.bin_position_scale + self.bin_orientation_scale):
            raise ConfigError("calibration: confidence bin scales must be finite and > 0")
        if not 0.0 <= self.ood_quantile < 1.0 or not math.isfinite(self.ood_threshold):
            raise ConfigError("calibration: ood_quantile must be in [0, 1) and ood_threshold finite")
        scales = (self.information_scale, self.information_scale_position, self.information_scale_orientation)
        if not all(math.isfinite(v) and v >= 0 for v in scales):
            raise ConfigError("calibration: information_scale(s) must be finite and >= 0")
        numbers = (*self.gate.values(), *self.confidence_model.values(), *self.information_scale_bound.values())
        if not all(math.isfinite(float(v)) for v in numbers):
            raise ConfigError("calibration: the gate, the confidence model and the scale bound must be finite numbers")
        if self.confidence_model and not {"bound_m", "kappa"} <= set(self.confidence_model):
            raise ConfigError("calibration: confidence_model needs bound_m and kappa")
        if self.pose_error and not (
            {"horizontal_m", "vertical_m"} <= set(self.pose_error)
            and all(math.isfinite(float(v)) and float(v) >= 0 for v in self.pose_error.values())
        ):
            raise ConfigError(
                f"calibration: pose_error {self.pose_error!r} needs horizontal_m and vertical_m, finite numbers >= 0 "
                "(standard deviations in metres); delete the key to add no dataset pose error"
            )

    def pose_error_sigmas(self) -> tuple[float, float] | None:
        """The calibration dataset's own pose error (:attr:`pose_error`) as ``(horizontal, vertical)`` standard
        deviations in metres, for :func:`with_pose_error`; None where it states none."""
        e = self.pose_error
        return (float(e["horizontal_m"]), float(e["vertical_m"])) if e else None

    def covariance_of_fix(self, information_covariance: np.ndarray) -> np.ndarray:
        """A fix's own covariance (from its inliers' information) scaled: the position block by
        :attr:`information_scale_position`, the orientation block by :attr:`information_scale_orientation`, the
        cross terms by the square root of their product (stays positive definite); a file with only
        :attr:`information_scale` scales the whole matrix by it; without any factor (a file calibrated for another
        localizer) the fixed covariance."""
        cov = np.asarray(information_covariance, dtype=np.float64)
        sp, sr = self.information_scale_position, self.information_scale_orientation
        if sp > 0 and sr > 0:
            d = np.sqrt(np.array([sp] * 3 + [sr] * 3))
            scaled: np.ndarray = cov * d[:, None] * d[None, :]
            return scaled
        if self.information_scale > 0:
            return np.asarray(cov * self.information_scale)
        return np.array(self.covariance)

    def gate_reason(self, position_ratio: float, pose_ratio: float, inliers: int, spread: float) -> str:
        """Why a fix is out of distribution ("" when it is not) by :attr:`gate`: its distance to the nearest map
        keyframe in position and in the pose distance (position + rotation), each over the map's spacing -- beyond
        the gate's outer range (:func:`gate_ranges`: the gap range when the map has one) -- and its inlier count and
        spread (share of the image the inliers' bounding box covers)."""
        g = self.gate
        if not g:
            return ""
        _, _, max_p, max_q = gate_ranges(g)
        if position_ratio > max_p or pose_ratio > max_q:
            return (
                f"beyond the map's coverage ({position_ratio:.1f}x the keyframe spacing in position, {pose_ratio:.1f}x "
                f"in pose; calibrated up to {max_p:.1f}x / {max_q:.1f}x)"
            )
        if inliers < g.get("min_inliers", 0) or spread < g.get("min_spread", 0.0):
            return (
                f"weak geometry ({inliers} inliers, spread {spread:.2f}; calibrated from "
                f"{g.get('min_inliers', 0):.0f} inliers, spread {g.get('min_spread', 0.0):.2f})"
            )
        return ""

    def confidence_of(self, covariance: np.ndarray) -> float | None:
        """``P(position error < bound_m)`` of a fix with this (published) covariance (:func:`fit_confidence`), or
        ``None`` without a :attr:`confidence_model`."""
        m = self.confidence_model
        if not m:
            return None
        return gaussian_within(np.asarray(covariance, np.float64)[:3, :3] * m["kappa"], m["bound_m"])

    def covariance_at(self, confidence: float | None = None) -> np.ndarray:
        """The covariance for an image of this confidence (the bins' scales interpolated; ``None`` or no bins:
        the covariance of all validation frames)."""
        if confidence is None or not self.bin_confidence or not math.isfinite(confidence):
            return np.array(self.covariance)
        sp = float(np.interp(confidence, self.bin_confidence, self.bin_position_scale))
        sr = float(np.interp(confidence, self.bin_confidence, self.bin_orientation_scale))
        d = np.sqrt(np.array([sp] * 3 + [sr] * 3))
        return np.asarray(self.covariance * d[:, None] * d[None, :])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "frame": "world: position error t_est - t_true; orientation error rotvec(R_est R_true^T) about the "
            "world's fixed axes (PoseWithCovariance order x y z rotX rotY rotZ)",
            "covariance": [[float(v) for v in row] for row in self.covariance],
            "n_frames": int(self.n_frames),
            "ood_quantile": float(self.ood_quantile),
            "ood_threshold": float(self.ood_threshold),
            "confidence_bins": {
                "confidence": [float(v) for v in self.bin_confidence],
                "position_scale": [float(v) for v in self.bin_position_scale],
                "orientation_scale": [float(v) for v in self.bin_orientation_scale],
            },
            "errors": {k: float(v) for k, v in self.errors.items()},
            "information_scale": float(self.information_scale),
            "information_scale_position": float(self.information_scale_position),
            "information_scale_orientation": float(self.information_scale_orientation),
            "information_scale_bound": {k: float(v) for k, v in self.information_scale_bound.items()},
            "gate": {k: float(v) for k, v in self.gate.items()},
            "confidence_model": {k: float(v) for k, v in self.confidence_model.items()},
            "pose_error": {k: float(v) for k, v in self.pose_error.items()},
            "source": {k: (v if isinstance(v, (int, float, bool)) else str(v)) for k, v in self.source.items()},
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "calibration") -> Calibration:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ConfigError(f"{where}: not a localize calibration file (no 'format: {FORMAT}')")
        if int(d.get("version", 0)) != VERSION:
            raise ConfigError(f"{where}: calibration version {d.get('version')!r}, this build reads {VERSION}")
        bins = d.get("confidence_bins") or {}
        try:
            return cls(
                covariance=np.asarray(d["covariance"], dtype=np.float64),
                n_frames=int(d["n_frames"]),
                ood_quantile=float(d.get("ood_quantile", 0.05)),
                ood_threshold=float(d.get("ood_threshold", 0.0)),
                bin_confidence=[float(v) for v in bins.get("confidence", [])],
                bin_position_scale=[float(v) for v in bins.get("position_scale", [])],
                bin_orientation_scale=[float(v) for v in bins.get("orientation_scale", [])],
                errors={str(k): float(v) for k, v in (d.get("errors") or {}).items()},
                source=dict(d.get("source") or {}),
                information_scale=float(d.get("information_scale", 0.0)),
                information_scale_position=float(d.get("information_scale_position", 0.0)),
                information_scale_orientation=float(d.get("information_scale_orientation", 0.0)),
                information_scale_bound={str(k): float(v) for k, v in (d.get("information_scale_bound") or {}).items()},
                gate={str(k): float(v) for k, v in (d.get("gate") or {}).items()},
                confidence_model={str(k): float(v) for k, v in (d.get("confidence_model") or {}).items()},
                pose_error={str(k): float(v) for k, v in (d.get("pose_error") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise ConfigError(f"{where}: {e}") from e
            raise ConfigError(f"{where}: malformed calibration file ({type(e).__name__}: {e})") from e


def with_pose_error(covariance: np.ndarray, pose_error: tuple[float, float] | None) -> np.ndarray:
    """``covariance`` (6x6, world x y z then rotations) with the error of the poses a localizer was calibrated
    against added (a place map's, or a calibration dataset's: :meth:`Calibration.pose_error_sigmas`): ``(horizontal,
    vertical)`` standard deviations in metres on the world's x, y and z (REP-103: z up), independent of the
    localizer's own error; unchanged without one."""
    if pose_error is None:
        return covariance
    h, v = pose_error
    out = np.array(covariance, dtype=np.float64, copy=True)
    out[0, 0] += h * h
    out[1, 1] += h * h
    out[2, 2] += v * v
    return out


def check_covariance(c: Any, what: str = "covariance") -> np.ndarray:
    """A 6x6 finite, symmetric, positive definite matrix (float64 copy) or :class:`ConfigError`."""
    a = np.asarray(c, dtype=np.float64)
    if a.shape != (6, 6):
        raise ConfigError(f"{what}: expected 6x6, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{what}: has non-finite values")
    if not np.allclose(a, a.T, rtol=1e-9, atol=1e-12):
        raise ConfigError(f"{what}: not symmetric")
    if np.linalg.eigvalsh(a).min() <= 0:
        raise ConfigError(f"{what}: not positive definite")
    return np.array(a)


def rotation_errors_world(T_est: np.ndarray, T_true: np.ndarray) -> np.ndarray:
    """``(N, 3)`` rotation vectors of ``R_est @ R_true.T`` (radians, about the world's fixed axes)."""
    from scipy.spatial.transform import Rotation

    R_est = np.asarray(T_est, dtype=np.float64).reshape(-1, 4, 4)[:, :3, :3]
    R_true = np.asarray(T_true, dtype=np.float64).reshape(-1, 4, 4)[:, :3, :3]
    return np.asarray(Rotation.from_matrix(R_est @ np.transpose(R_true, (0, 2, 1))).as_rotvec())


def _second_moment_spd(e: np.ndarray) -> np.ndarray:
    c = e.T @ e / len(e)
    c = 0.5 * (c + c.T)
    w, v = np.linalg.eigh(c)
    floor = np.array([POSITION_FLOOR_M2] * 3 + [ORIENTATION_FLOOR_RAD2] * 3)
    # floor the eigenvalues (a localizer that is exact on validation frames is not exact everywhere)
    w = np.maximum(w, floor.min())
    c = (v * w) @ v.T
    out: np.ndarray = 0.5 * (c + c.T) + np.diag(floor)
    return out


def compute_calibration(
    T_est: np.ndarray,
    T_true: np.ndarray,
    confidence: np.ndarray,
    *,
    ood_quantile: float = 0.05,
    confidence_bins: int = 4,
    source: dict[str, Any] | None = None,
    information: np.ndarray | None = None,
    scale_level: float = SCALE_LEVEL,
) -> Calibration:
    """The :class:`Calibration` of estimates ``T_est`` against ``T_true`` (both ``(N, 4, 4)``) with the
    model's ``confidence`` ``(N,)`` (see the module docstring). With ``information`` ``(N, 6, 6)`` (each fix's
    own covariance from its inliers) also the :attr:`Calibration.information_scale` that makes those match the
    errors: the median squared Mahalanobis error over the median of chi-square with 6 degrees of freedom (a
    median, so that a few gross errors do not inflate every covariance), at its upper confidence bound of level
    ``scale_level`` (:func:`information_factors`; 0.5: the sample median). Raises :class:`ConfigError` for fewer than
    :data:`MIN_FRAMES` frames or non-finite estimates."""
    T_est = np.asarray(T_est, dtype=np.float64).reshape(-1, 4, 4)
    T_true = np.asarray(T_true, dtype=np.float64).reshape(-1, 4, 4)
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    n = len(T_est)
    if len(T_true) != n or len(conf) != n:
        raise ConfigError(f"calibration: {n} estimates, {len(T_true)} true poses, {len(conf)} confidences")
    if n < MIN_FRAMES:
        raise ConfigError(
            f"calibration needs at least {MIN_FRAMES} validation frames, got {n}; use a larger split "
            "(--split all) or a larger dataset"
        )
    ok = np.all(np.isfinite(T_est.reshape(n, -1)), axis=1) & np.isfinite(conf)
    if not ok.all():
        raise ConfigError(
            f"calibration: the localizer returned non-finite poses or confidences for {int((~ok).sum())} frames"
        )
    if not 1 <= confidence_bins <= 100:
        raise ConfigError("calibration: confidence_bins must be in [1, 100]")
    if not 0.0 <= ood_quantile < 1.0:
        raise ConfigError("calibration: ood_quantile must be in [0, 1)")
    dp = T_est[:, :3, 3] - T_true[:, :3, 3]
    dr = rotation_errors_world(T_est, T_true)
    e = np.concatenate([dp, dr], axis=1)
    cov = _second_moment_spd(e)
    pos_err, rot_err = pose_errors(T_est, T_true)
    rot_err_deg = np.degrees(rot_err)
    errors = {
        "position_median_m": float(np.median(pos_err)),
        "position_p90_m": float(np.percentile(pos_err, 90)),
        "orientation_median_deg": float(np.median(rot_err_deg)),
        "orientation_p90_deg": float(np.percentile(rot_err_deg, 90)),
        "confidence_median": float(np.median(conf)),
    }
    nb = int(min(confidence_bins, n // MIN_FRAMES)) if confidence_bins > 1 else 1
    centres: list[float] = []
    sp: list[float] = []
    sr: list[float] = []
    if nb > 1:
        p2_all = max(float(np.mean(np.sum(dp**2, axis=1))), 3 * POSITION_FLOOR_M2)
        r2_all = max(float(np.mean(np.sum(dr**2, axis=1))), 3 * ORIENTATION_FLOOR_RAD2)
        for idx in np.array_split(np.argsort(conf, kind="stable"), nb):
            centres.append(float(np.median(conf[idx])))
            sp.append(max(float(np.mean(np.sum(dp[idx] ** 2, axis=1))), 3 * POSITION_FLOOR_M2) / p2_all)
            sr.append(max(float(np.mean(np.sum(dr[idx] ** 2, axis=1))), 3 * ORIENTATION_FLOOR_RAD2) / r2_all)
        if len(set(centres)) < len(centres):  # equal confidences (a model without one): no scaling
            centres, sp, sr = [], [], []
    info_scale = sp_info = sr_info = 0.0
    bound: dict[str, float] = {}
    if information is not None:
        info = np.asarray(information, dtype=np.float64).reshape(n, 6, 6)
        info_scale, sp_info, sr_info = information_factors(e, info, level=scale_level)
        m6, mp, mr = information_factors(e, info)
        rank, coverage = median_bound_rank(n, scale_level)
        bound = {"level": float(scale_level), "n": float(n), "rank": float(rank), "coverage": coverage,
                 "median": m6, "median_position": mp, "median_orientation": mr}  # fmt: skip
        errors.update(information_scale=info_scale, information_scale_position=sp_info,
                      information_scale_orientation=sr_info)  # fmt: skip
    return Calibration(
        information_scale=info_scale,
        information_scale_position=sp_info,
        information_scale_orientation=sr_info,
        information_scale_bound=bound,
        covariance=cov,
        n_frames=n,
        ood_quantile=float(ood_quantile),
        ood_threshold=float(np.quantile(conf, ood_quantile)) if ood_quantile > 0 else 0.0,
        bin_confidence=centres,
        bin_position_scale=sp,
        bin_orientation_scale=sr,
        errors=errors,
        source=dict(source or {}),
    )


def median_bound_rank(n: int, level: float) -> tuple[int, float]:
    """The order statistic that bounds the median of ``n`` independent draws from above at confidence ``level``,
    and its exact coverage (:func:`pose2rgbd.order_statistics.quantile_bound_rank` of the median). Level 0.5 with an
    odd ``n``: the sample median. A ``n`` too small for the level gives the largest draw and its coverage
    ``1 - 2^-n`` (< level)."""
    if not 0.0 < level < 1.0:
        raise ConfigError(f"calibration: the scale's confidence level must be in (0, 1), got {level}")
    return quantile_bound_rank(n, 0.5, level)


def median_upper_bound(values: np.ndarray, level: float) -> float:
    """The upper one-sided confidence bound at ``level`` of the median of the distribution ``values`` are
    independent draws from: their :func:`median_bound_rank`-th smallest."""
    if not 0.0 < level < 1.0:
        raise ConfigError(f"calibration: the scale's confidence level must be in (0, 1), got {level}")
    return quantile_upper_bound(values, 0.5, level)


def information_factors(e: np.ndarray, cov: np.ndarray, level: float | None = None) -> tuple[float, float, float]:
    """How much larger the errors ``e`` ``(N, 6)`` are than the covariances ``cov`` ``(N, 6, 6)`` say: the median
    squared Mahalanobis error over the median of chi-square (6 degrees of freedom for the whole, 3 for the position
    and the orientation blocks). A median, so that a few gross errors do not inflate every covariance; 1 means
    calibrated (the variance scale: its square root is the factor in standard deviation). ``level`` ``None``: the
    sample median (a measurement of how calibrated ``cov`` is); a level: the median's upper confidence bound
    (:func:`median_upper_bound`; a fit of the scale that errs on the side of too large)."""
    e = np.asarray(e, dtype=np.float64).reshape(-1, 6)
    c = np.asarray(cov, dtype=np.float64).reshape(-1, 6, 6)
    m6 = [float(x @ np.linalg.solve(k, x)) for x, k in zip(e, c)]
    mp = [float(x[:3] @ np.linalg.solve(k[:3, :3], x[:3])) for x, k in zip(e, c)]
    mr = [float(x[3:] @ np.linalg.solve(k[3:, 3:], x[3:])) for x, k in zip(e, c)]

    def centre(m: list[float]) -> float:
        return float(np.median(m)) if level is None else median_upper_bound(np.asarray(m), level)

    return centre(m6) / CHI2_6_MEDIAN, centre(mp) / CHI2_3_MEDIAN, centre(mr) / CHI2_3_MEDIAN


def pose_error_vectors(T_est: np.ndarray, T_true: np.ndarray) -> np.ndarray:
    """``(N, 6)`` errors in the covariance's order: ``t_est - t_true`` and the world-axes rotation vector."""
    T_est = np.asarray(T_est, dtype=np.float64).reshape(-1, 4, 4)
    T_true = np.asarray(T_true, dtype=np.float64).reshape(-1, 4, 4)
    return np.concatenate([T_est[:, :3, 3] - T_true[:, :3, 3], rotation_errors_world(T_est, T_true)], axis=1)


def gate_ranges(gate: Mapping[str, float]) -> tuple[float, float, float, float]:
    """A gate's coverage ranges (in keyframe spacings): ``(near position, near pose, outer position, outer pose)``.
    ``max_position_ratio`` / ``max_pose_ratio`` are the near range (the single held-out keyframes'; what a reader
    without gap ranges gates by, so it flags a gap fix rather than publish it with the near covariance);
    ``gap_max_position_ratio`` / ``gap_max_pose_ratio``, when the self-calibration's windows extended the gate
    (:func:`pose2rgbd.inference.structure_calibration.extend_to_gaps`), the outer range; without them the outer
    range is the near one. (A gate with ``near_position_ratio`` / ``near_pose_ratio`` holds the near range there and
    the outer one in ``max_*``.)"""
    if "near_position_ratio" in gate:
        return (gate["near_position_ratio"], gate["near_pose_ratio"], gate["max_position_ratio"],
                gate["max_pose_ratio"])  # fmt: skip
    p, q = gate.get("max_position_ratio", math.inf), gate.get("max_pose_ratio", math.inf)
    return p, q, gate.get("gap_max_position_ratio", p), gate.get("gap_max_pose_ratio", q)


def fit_gate(
    position_ratio: np.ndarray, pose_ratio: np.ndarray, inliers: np.ndarray, spread: np.ndarray, quantile: float
) -> dict[str, float]:
    """The out-of-distribution gate (:meth:`Calibration.gate_reason`) from held-out fixes that were in
    distribution by construction: their largest distances to the map (x :data:`GATE_MARGIN`, since a calibration
    says nothing about fixes farther out than any it saw) and the ``quantile`` of their inlier counts and spreads
    (/ :data:`GATE_MARGIN`: a fix clearly weaker than all but that share of them is flagged)."""
    pr, qr = np.asarray(position_ratio, np.float64), np.asarray(pose_ratio, np.float64)
    if len(pr) == 0:
        return {}
    return {
        "max_position_ratio": float(np.max(pr)) * GATE_MARGIN,
        "max_pose_ratio": float(np.max(qr)) * GATE_MARGIN,
        "min_inliers": float(np.quantile(np.asarray(inliers, np.float64), quantile)) / GATE_MARGIN if quantile else 0.0,
        "min_spread": float(np.quantile(np.asarray(spread, np.float64), quantile)) / GATE_MARGIN if quantile else 0.0,
    }


_Z2 = np.random.default_rng(20240613).standard_normal((4096, 3)) ** 2  # fixed samples: a deterministic probability


def gaussian_within(cov_position: np.ndarray, bound_m: float) -> float:
    """``P(||e|| < bound_m)`` for ``e ~ N(0, cov_position)`` (3x3): ``||e||^2`` is a sum of the eigenvalues times
    squared standard normals, evaluated on fixed samples (no closed form for unequal eigenvalues; 4096 samples
    give it to about +-0.008)."""
    lam = np.clip(np.linalg.eigvalsh(0.5 * (cov_position + cov_position.T)), 0.0, None)
    return float(np.mean(_Z2 @ lam < bound_m**2))


def fit_confidence(position_error: np.ndarray, cov_position: np.ndarray, bound_m: float) -> dict[str, float]:
    """The confidence model: ``P(position error < bound_m)`` under a normal error with the fix's published
    position covariance times ``kappa``, ``kappa`` fitted so that on the held-out fixes the mean probability equals
    the share within the bound (one number, so that a few dozen fixes determine it; it absorbs tails heavier than
    the normal's at the bound, which the covariance's median-based scale does not see). ``cov_position``
    ``(N, 3, 3)``; ``kappa`` within [0.1, 10]."""
    from scipy.optimize import brentq

    err = np.asarray(position_error, np.float64)
    covs = np.asarray(cov_position, np.float64).reshape(-1, 3, 3)
    share = float(np.mean(err < bound_m))

    def gap(log_k: float) -> float:
        return float(np.mean([gaussian_within(c * math.exp(log_k), bound_m) for c in covs])) - share

    lo, hi = math.log(0.1), math.log(10.0)
    if gap(lo) <= 0:  # even the narrowest errors predict too few within: the least inflation
        log_k = lo
    elif gap(hi) >= 0:
        log_k = hi
    else:
        log_k = brentq(gap, lo, hi, xtol=1e-3)
    return {"bound_m": float(bound_m), "kappa": float(math.exp(log_k)), "held_out_share_within": share}


FILE_FIRST_LINE = "# Localizer covariance calibration"  # how a calibration file starts (an earlier one: --overwrite)


def save_calibration(cal: Calibration, path: str | Path) -> Path:
    """Write ``cal`` as YAML to ``path`` atomically."""
    header = (
        f"{FILE_FIRST_LINE} (pose2rgbd localize calibrate); read by the localize node's\n"
        "# covariance_file parameter. Units: m^2 (x y z), rad^2 (rotations about the world axes).\n"
    )
    return write_text_atomic(path, header + yaml.safe_dump(cal.to_dict(), sort_keys=False, default_flow_style=None))


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; problems raise :class:`ConfigError` naming the file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"covariance file not found: {p} (write one with `pose2rgbd localize calibrate`)")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    return Calibration.from_dict(data, str(p))
