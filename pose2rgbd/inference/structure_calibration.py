"""The structure localizer's uncertainty: each fix's information covariance, its calibration, the
out-of-distribution gate and the confidence -- and ``map build``'s self-calibration that fits them.

* :func:`information_covariance`: ``sigma^2 (J^T J)^-1`` of a fix's inliers' reprojection residuals (raw: about
  11x too small in standard deviation on a real sequence, since it ignores the map points' own errors).
* :func:`finish_fix`: a fix as published (computed for the one fix answered, not for every place tried) -- that
  covariance, its orientation's quaternion, the covariance scaled by the calibration (position and orientation
  blocks), the gate (the fix's distance to the nearest map keyframe relative to the map's spacing, its inlier
  count and spread), a flagged fix's covariance inflated by ``ood_covariance_scale`` (or the fix refused, by
  ``ood_policy``), and the confidence ``P(position error < bound_m)`` of the covariance it carries.
* :func:`fit_structure_calibration`: the fit from fixes of known poses, used by ``map build``
  (:mod:`pose2rgbd.inference.self_calibration`: a held-out share of the map's own keyframes against a map of the
  rest) and by ``localize calibrate --map`` (a dataset's frames outside the map), through
  :mod:`pose2rgbd.inference.calibration` (the one fitter).
* :func:`extend_to_gaps`: the calibration's second range, fitted on held-out *windows* of keyframes (queries in a
  gap of the map, farther from its keyframes than any single held-out keyframe): fixes beyond the first range but
  within the second are published with the covariance scaled as those windows' errors need, not flagged. The first
  range stays the gate's ``max_*`` (a pose2rgbd that knows no second range flags those fixes), the second is
  ``gap_max_*``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pose2rgbd.geometry.coverage import PoseSet
from pose2rgbd.geometry.rotations import matrix_to_quat_xyzw
from pose2rgbd.inference.calibration import (
    CHI2_6_GROSS,
    GATE_MARGIN,
    MIN_FRAMES,
    SCALE_LEVEL,
    Calibration,
    compute_calibration,
    fit_confidence,
    fit_gate,
    gate_ranges,
    information_factors,
    pose_error_vectors,
    with_pose_error,
)
from pose2rgbd.inference.structure_fix import Fix

if TYPE_CHECKING:
    from pose2rgbd.inference.structure_match import StructureMap


def _rotvec_matrix(w: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return np.asarray(Rotation.from_rotvec(w).as_matrix())


def information_covariance(
    T_world_cam: np.ndarray, X: np.ndarray, x: np.ndarray, K: np.ndarray, min_sigma_px: float
) -> np.ndarray:
    """``sigma^2 (J^T J)^-1`` of reprojection residuals of world points ``X`` (n, 3) observed at ``x`` (n, 2),
    w.r.t. the camera position (world) and a rotation about the world axes (``R' = exp(w) R``); central
    differences (6 parameters, 12 projections of the inliers -- cheaper than deriving the Jacobian by hand)."""

    def residuals(delta: np.ndarray) -> np.ndarray:
        R = _rotvec_matrix(delta[3:]) @ T_world_cam[:3, :3]
        c = T_world_cam[:3, 3] + delta[:3]
        p = (X - c) @ R  # world -> camera: R^T (X - c)
        uv = p[:, :2] / p[:, 2:3] * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
        r: np.ndarray = (uv - x).reshape(-1)
        return r

    r0 = residuals(np.zeros(6))
    J = np.empty((len(r0), 6))
    for k, h in enumerate([1e-4] * 3 + [1e-6] * 3):
        e = np.zeros(6)
        e[k] = h
        J[:, k] = (residuals(e) - residuals(-e)) / (2 * h)
    dof = max(len(r0) - 6, 1)
    s2 = max(float(r0 @ r0) / dof, min_sigma_px**2)
    info = J.T @ J
    try:
        cov = s2 * np.linalg.inv(info)
    except np.linalg.LinAlgError:
        cov = s2 * np.linalg.pinv(info)
    return 0.5 * (cov + cov.T)  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------ coverage of a map
def keyframe_spacing(T_world_cam: np.ndarray, rot_weight_m: float) -> dict[str, float]:
    """The map's spacing: the median distance of a keyframe to its nearest other keyframe, in position (map units)
    and in the pose distance ``||dt|| + rot_weight_m * angle`` (:mod:`pose2rgbd.geometry.coverage`)."""
    T = np.asarray(T_world_cam, np.float64).reshape(-1, 4, 4)
    if len(T) < 2:
        return {"spacing_position_m": 1.0, "spacing_pose_m": 1.0}
    nn = PoseSet(T, rot_weight_m=rot_weight_m).nearest(T, 2)
    j = np.where(nn[:, 0] == np.arange(len(T)), nn[:, 1], nn[:, 0])
    dt = np.linalg.norm(T[:, :3, 3] - T[j, :3, 3], axis=1)
    cos = (np.einsum("nij,nij->n", T[:, :3, :3], T[j, :3, :3]) - 1.0) / 2.0
    ang = np.arccos(np.clip(cos, -1.0, 1.0))
    return {
        "spacing_position_m": max(float(np.median(dt)), 1e-6),
        "spacing_pose_m": max(float(np.median(dt + rot_weight_m * ang)), 1e-6),
    }


def coverage_ratios(poses: PoseSet, T_world_cam: np.ndarray, gate: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per pose ``(M, 4, 4)``: the distance to the nearest keyframe of ``poses`` (a PoseSet) over the map's spacing
    (stored in the gate), in position and in the pose distance."""
    cov = poses.coverage(np.asarray(T_world_cam, np.float64).reshape(-1, 4, 4))
    return (cov.position_m / gate.get("spacing_position_m", 1.0), cov.distance / gate.get("spacing_pose_m", 1.0))


def map_calibration(place_map: StructureMap) -> Calibration | None:
    """The calibration ``map build`` stored in the map's manifest, or None (a map built without one, a map in
    memory)."""
    entry = place_map.manifest.get("calibration") or {}
    if entry.get("status") != "calibrated":
        return None
    return Calibration.from_dict(entry["calibration"], f"{place_map.path or 'map'}: calibration")


# ------------------------------------------------------------------------------------------ a fix as published
def finish_fix(
    fix: Fix,
    cal: Calibration | None,
    poses: PoseSet,
    ood_covariance_scale: float,
    K: np.ndarray | None = None,
    min_sigma_px: float = 0.5,
    map_pose_error: tuple[float, float] | None = None,
) -> None:
    """Turn a fix into what is published (see the module docstring); in place: its information covariance from
    its inliers (``fix.support``, with the query camera's ``K``; a fix without them keeps the covariance it has),
    its orientation as a quaternion (what the output rows and the next image's candidates use), the calibration,
    then the map's own pose error (``map_pose_error``: horizontal, vertical standard deviations in metres) added to
    the position block before the confidence is computed: the calibration measures how far a fix lies from where
    the map puts the view, and a map of GPS poses is itself that far off the truth. ``ood_covariance_scale``,
    ``min_sigma_px``: the localizer's (:class:`~pose2rgbd.inference.structure.StructureConfig`)."""
    if fix.support is not None and K is not None:
        fix.covariance = information_covariance(fix.T_world_cam, *fix.support, K, min_sigma_px)
    fix.quat_xyzw = matrix_to_quat_xyzw(fix.T_world_cam[:3, :3])
    fix.information = fix.covariance
    if cal is None:
        fix.covariance = with_pose_error(fix.covariance, map_pose_error)
        return
    cov = cal.covariance_of_fix(fix.covariance)
    if cal.gate:
        pr, qr = coverage_ratios(poses, fix.T_world_cam, cal.gate)
        fix.position_ratio, fix.pose_ratio = float(pr[0]), float(qr[0])
        fix.flag = cal.gate_reason(fix.position_ratio, fix.pose_ratio, fix.inliers, fix.spread)
        if not fix.flag and in_gap(cal.gate, fix.position_ratio, fix.pose_ratio):
            cov = gap_scaled(cov, cal.gate)
    if fix.flag:
        cov = cov * ood_covariance_scale
    fix.covariance = cov = with_pose_error(cov, map_pose_error)
    p = cal.confidence_of(cov)
    if p is not None:
        fix.confidence, fix.confidence_bound_m = p, cal.confidence_model["bound_m"]


def flag_fix(fix: Fix, reason: str, cal: Calibration | None, ood_covariance_scale: float) -> None:
    """Flag a finished fix for ``reason``, a check other than the calibration's gate (the queries' camera:
    :mod:`pose2rgbd.inference.focal_check`); in place: the reason joins any the gate gave, and a fix not flagged
    yet has its covariance inflated by ``ood_covariance_scale`` and its confidence computed again, as the gate's
    flag does in :func:`finish_fix`."""
    if not fix.flag:
        fix.covariance = fix.covariance * ood_covariance_scale
        p = cal.confidence_of(fix.covariance) if cal is not None else None
        if p is not None:
            fix.confidence = p
    fix.flag = f"{fix.flag}; {reason}" if fix.flag else reason


def fit_structure_calibration(
    fixes: list[Fix],
    T_true: np.ndarray,
    position_ratio: np.ndarray,
    pose_ratio: np.ndarray,
    spacing: dict[str, float],
    *,
    bound_m: float = 0.0,
    gate_quantile: float = 0.02,
    scale_level: float = SCALE_LEVEL,
    source: dict[str, Any] | None = None,
) -> Calibration:
    """The calibration of the structure localizer from fixes (with their raw ``information`` covariance) of
    images whose true poses are ``T_true``: the block scales (:func:`compute_calibration`: the upper confidence
    bound at ``scale_level`` of the held-out median), the gate (:func:`fit_gate`, with the map's ``spacing``) and
    the confidence model (:func:`fit_confidence`; ``bound_m`` 0: twice the median position error, to two
    significant digits)."""
    from pose2rgbd.geometry.transforms import pose_errors

    T_est = np.stack([f.T_world_cam for f in fixes])
    info = np.stack([f.covariance if f.information is None else f.information for f in fixes])
    cal = compute_calibration(T_est, T_true, np.array([f.confidence for f in fixes]), ood_quantile=0.0,
                              confidence_bins=1, source=source, information=info, scale_level=scale_level)  # fmt: skip
    pos_err, _ = pose_errors(T_est, T_true)
    if bound_m <= 0:
        b = 2.0 * float(np.median(pos_err))
        bound_m = float(f"{b:.2g}") if b > 0 else 1e-3
    cal.confidence_model = fit_confidence(pos_err, np.stack([cal.covariance_of_fix(c)[:3, :3] for c in info]), bound_m)
    cal.gate = {**fit_gate(position_ratio, pose_ratio, np.array([f.inliers for f in fixes]),
                           np.array([f.spread for f in fixes]), gate_quantile), **spacing}  # fmt: skip
    return cal


# ------------------------------------------------------------------------------------------ gaps of the map
# a gap factor (variance) above this -- StructureConfig's default ood_covariance_scale, what a flagged fix's
# covariance is multiplied by -- says the gaps' fixes are worse than flagged ones: the gate is not extended
MAX_GAP_SCALE = 100.0


def in_gap(gate: dict[str, float], position_ratio: float, pose_ratio: float) -> bool:
    """Whether a fix at these coverage ratios lies beyond the near range of a gate extended by
    :func:`extend_to_gaps` (the single held-out keyframes' range; :func:`gate_ranges`); a gate without a gap
    range: never."""
    near_p, near_q, outer_p, outer_q = gate_ranges(gate)
    if (outer_p, outer_q) == (near_p, near_q):
        return False
    return bool(position_ratio > near_p or pose_ratio > near_q)


def gap_scaled(cov: np.ndarray, gate: dict[str, float]) -> np.ndarray:
    """A calibrated covariance ``(6, 6)`` times the gap's factors (variance): the position block by
    ``gap_position_scale``, the orientation block by ``gap_orientation_scale``, the cross terms by the square root
    of their product."""
    d = np.sqrt(np.array([gate.get("gap_position_scale", 1.0)] * 3 + [gate.get("gap_orientation_scale", 1.0)] * 3))
    return np.asarray(cov, np.float64) * d[:, None] * d[None, :]  # type: ignore[no-any-return]


def extend_to_gaps(
    cal: Calibration,
    fixes: list[Fix],
    T_true: np.ndarray,
    position_ratio: np.ndarray,
    pose_ratio: np.ndarray,
    *,
    scale_level: float = SCALE_LEVEL,
) -> dict[str, float]:
    """Extend ``cal``'s gate (in place) with fixes of keyframes held out in contiguous windows (queries in a gap of
    the map, with their true poses ``T_true`` and their coverage ratios against the map they were localized
    against). The gate's range so far (``max_position_ratio`` / ``max_pose_ratio``, fitted on single held-out
    keyframes: on a dense video, about one spacing from the map) stays the near range -- a reader that knows no gap
    range gates by it, flagging the gap fixes rather than publishing them with the near covariance; the window fixes
    beyond it that are not of weak geometry (the gap fixes) give, when there are at least :data:`MIN_FRAMES` of
    them:

    * ``gap_position_scale`` / ``gap_orientation_scale``: the factors (variance, at least 1) by which a gap fix's
      calibrated covariance is multiplied (:func:`information_factors` of their errors under the calibrated
      covariance, the median's upper bound at ``scale_level``: the same fit as the calibration's own scale);
    * ``gap_max_position_ratio`` / ``gap_max_pose_ratio``, the outer range: :data:`GATE_MARGIN` x the farthest gap
      fix whose error the gap-scaled covariance explains (squared Mahalanobis error within chi-square's 0.999
      quantile: a fix of a wrong place widens nothing), never less than the near range: only fixes beyond that are
      *beyond the map's coverage* (:meth:`~pose2rgbd.inference.calibration.Calibration.gate_reason`).

    Returns what was fitted (``gap_fixes`` and, when extended, the gate entries); fewer gap fixes, or gap factors
    above :data:`MAX_GAP_SCALE`, leave the gate as it was (a fix beyond the single keyframes' range stays flagged:
    nothing vouches for it)."""
    g = cal.gate
    if not g or not fixes:
        return {"gap_fixes": 0.0}
    pr, qr = np.asarray(position_ratio, np.float64), np.asarray(pose_ratio, np.float64)
    near_p, near_q, _, _ = gate_ranges(g)
    strong = np.array([f.inliers >= g.get("min_inliers", 0.0) and f.spread >= g.get("min_spread", 0.0)
                       for f in fixes])  # fmt: skip
    gap = strong & ((pr > near_p) | (qr > near_q))
    out: dict[str, float] = {"gap_fixes": float(gap.sum())}
    if gap.sum() < MIN_FRAMES:
        return out
    idx = np.flatnonzero(gap)
    T_est = np.stack([fixes[i].T_world_cam for i in idx])
    info = [fixes[i].information for i in idx]
    cov = np.stack([cal.covariance_of_fix(fixes[i].covariance if c is None else c) for i, c in zip(idx, info)])
    e = pose_error_vectors(T_est, np.asarray(T_true)[idx])
    _, fp, fr = information_factors(e, cov, level=scale_level)
    scaled = {"gap_position_scale": max(1.0, float(fp)), "gap_orientation_scale": max(1.0, float(fr))}
    if max(scaled.values()) > MAX_GAP_SCALE:  # the gaps' fixes are worse than a flagged fix is said to be
        return {**out, **scaled}
    cov = np.stack([gap_scaled(c, scaled) for c in cov])
    # the range: the farthest gap fix whose error its covariance explains (a wrong place's fix lies anywhere)
    fits = np.array([float(x @ np.linalg.solve(c, x)) for x, c in zip(e, cov)]) <= CHI2_6_GROSS
    out.update({
        **scaled,
        "gap_max_position_ratio": max(float(near_p), float(np.max(pr[idx][fits], initial=0.0)) * GATE_MARGIN),
        "gap_max_pose_ratio": max(float(near_q), float(np.max(qr[idx][fits], initial=0.0)) * GATE_MARGIN),
    })  # fmt: skip
    cal.gate = {**g, **out}
    return out


def published_factors(fixes: list[Fix], T_true: np.ndarray) -> dict[str, float]:
    """How the covariances the fixes carry compare with their errors (:func:`information_factors`: 1 is calibrated;
    variance scale), and the confidence's reliability: mean confidence against the share within its bound."""
    from pose2rgbd.geometry.transforms import pose_errors
    from pose2rgbd.inference.calibration import information_factors

    T_est = np.stack([f.T_world_cam for f in fixes])
    f6, fp, fr = information_factors(pose_error_vectors(T_est, T_true), np.stack([f.covariance for f in fixes]))
    out = {"factor": f6, "factor_position": fp, "factor_orientation": fr}
    bound = [f.confidence_bound_m for f in fixes]
    if all(b > 0 for b in bound):
        pos_err, _ = pose_errors(T_est, T_true)
        out["mean_confidence"] = float(np.mean([f.confidence for f in fixes]))
        out["share_within_bound"] = float(np.mean(pos_err < np.asarray(bound)))
    return out
