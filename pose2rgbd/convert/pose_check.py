"""Pose sanity check of an import: do the cameras look at the scene, are they upright, and a plot.

Tests (each gives a :class:`Finding`; ``fail`` = a likely convention mistake, ``warn`` = unusual, check it):

* ``points_in_front`` (when the source has 3D points, e.g. COLMAP): each point a camera observes must lie in
  front of it (positive depth along optical z). A correct import has ~100 %; a pose that is still world-to-camera,
  or whose camera axes are turned, puts about half or most of them behind.
* ``common_target`` (object captures, no points needed): the point nearest to every optical axis in the
  least-squares sense. Lines have no direction, so this point is the same whether the cameras face it or face
  away; when the axes really meet (they pass within 20 deg of it, it lies within a few camera spreads and the viewing
  directions fan out by more than 30 deg: the meeting point of the nearly parallel axes of a sweep or a pan
  lies behind or ahead alike and proves nothing), it must lie in *front* of the cameras. All behind: the
  cameras look away from the scene, the classic OpenGL / optical mix-up.
* ``motion`` (trajectories): the viewing direction against the direction of travel. A forward camera has a
  positive median cosine; a strongly negative one means the camera looks backwards (a rear camera, or z flipped).
  Sideways / downward cameras make it inconclusive (info only).
* ``depth`` (when the source has depth): what depth proves. Pixels of a sampled keyframe are back-projected
  with its depth and pose and projected into the next sampled keyframe; a correct import puts them on that
  keyframe's depth (within 10 %). The same is measured with the poses inverted (world-to-camera read as
  camera-to-world), with OpenGL camera axes and with the depth scaled: a hypothesis that fits far better than
  the poses as given names the mistake. When the depth agrees as given, it outweighs the geometric guesses
  below (a ``fail`` of theirs becomes ``info``): the camera-to-world direction, the camera axes and the depth
  scale are proven, whatever the axes' layout suggests.
* ``upright``: where the format defines the world's up axis (transforms.json: +z; KITTI: -y), the image's up
  (optical -y) should point up for most cameras -- unless the cameras' common horizon says that the world's up
  is another axis altogether (a SLAM / handheld world frame that is not gravity aligned: not judged);
  otherwise the cameras should at least agree with each other.
* ``axes_convention``: a trajectory that looks backwards *and* is upside down is the camera turned 180 deg about
  its x axis: OpenGL axes taken for optical ones (or converted twice).
* ``quaternion_order`` (formats that store quaternions: TUM ``qx qy qz qw``, COLMAP ``qw qx qy qz``): when the
  cameras look backwards or upside down as given, the rotations are read again with the quaternion's four numbers
  in the other order (w first instead of last, or last instead of first); where that makes the cameras look along
  their travel and stand upright, the order is named as a likely cause, beside the OpenGL axes (the depth test
  tries the order too, and tells the two apart).
* ``direction``: nothing above proved which way the poses map (camera-to-world, or world-to-camera read as it) --
  no depth agreed, no 3D points, the cameras neither face a common target nor look along their travel: a warning
  that the poses' direction could not be verified, since an inverted trajectory (or one whose quaternions are in
  the other order) can look upright and plausible.
* ``common_target`` and ``motion`` disagree on a curved path (the axes of a car in a turn meet behind it); a
  camera that looks along its direction of travel wins and the target test says "not conclusive".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.geometry.camera_axes import GL_FROM_OPTICAL

FRONT_OK = 0.9  # fraction of observed points in front of a correct camera (noise, outliers)
AXES_MEET_DEG = 20.0
TARGET_MAX_SPREADS = 3.0  # a common target farther than this many camera spreads away: the axes are ~parallel
PARALLEL_FAN_DEG = 30.0  # 90 % of the viewing directions within this of their mean: a sweep, not an object capture
# the second-smallest eigenvalue of the x axes' second moment below this: they spread over less than about 14 deg of one
# line (a straight capture), and no up is estimated from them
PARALLEL_X = 0.02
NOT_GRAVITY_DEG = 30.0  # the cameras' common up this far from the format's up axis: the world is not that-up
DEPTH_TOL = 0.10  # relative depth difference of a back-projected point that still agrees
DEPTH_SAMPLES = 24  # keyframes whose depth the check reads
DEPTH_POINTS = 3000  # points back-projected per keyframe (a pixel grid)
DEPTH_AGREE_OK = 0.5  # share of landed points that agree for a correct import


@dataclass
class Finding:
    name: str
    status: str  # ok, warn, fail, info
    message: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class DepthEvidence:
    """Depth of a few frames for the pose check: ``frames`` indices into the poses (time order), per frame the
    ``(3, 3)`` intrinsics ``K`` of its depth map and the map itself (``(H, W)`` float metres, NaN invalid)."""

    frames: list[int]
    K: list[np.ndarray]
    depth: list[np.ndarray]


def depth_sample(n: int, count: int = DEPTH_SAMPLES) -> list[int]:
    """The frames whose depth the check reads: ``count`` evenly spaced over ``n`` frames, in order."""
    return sorted({round(float(x)) for x in np.linspace(0, n - 1, min(n, count))})


@dataclass
class PoseCheck:
    """``verdict``: ``ok``, ``check`` (warnings) or ``suspect`` (a likely mistake, named in ``mistakes``)."""

    verdict: str
    findings: list[Finding]
    mistakes: list[str]
    target: np.ndarray | None = None  # the common target point, when the axes meet
    bad_cameras: np.ndarray | None = None  # (N,) bool: cameras a failed test blames

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "mistakes": self.mistakes,
            "findings": [asdict(f) for f in self.findings],
            "target": None if self.target is None else [float(x) for x in self.target],
        }


def _points_in_front(
    T: np.ndarray, points: np.ndarray, obs: list[np.ndarray] | None, convention: str
) -> tuple[Finding, np.ndarray]:
    T_cw = np.linalg.inv(T)
    frac = np.full(len(T), np.nan)
    for i in range(len(T)):
        idx = obs[i] if obs is not None else np.arange(len(points))
        if len(idx) == 0:
            continue
        z = points[idx] @ T_cw[i, 2, :3] + T_cw[i, 2, 3]
        frac[i] = float(np.mean(z > 0))
    valid = np.isfinite(frac)
    if not valid.any():
        return Finding("points_in_front", "info", "no camera observes a 3D point: not tested"), np.zeros(len(T), bool)
    med = float(np.median(frac[valid]))
    bad = valid & (frac < 0.5)
    vals = {"median_fraction_in_front": med, "cameras_with_most_points_behind": int(bad.sum()),
            "cameras_tested": int(valid.sum())}  # fmt: skip
    if med >= FRONT_OK and not bad.any():
        return Finding("points_in_front", "ok", f"{100 * med:.0f} % of the observed 3D points lie in front of the "
                       "cameras (median over cameras)", vals), bad  # fmt: skip
    if med < 0.5:
        msg = (f"cameras look away from the scene: only {100 * med:.0f} % of the 3D points they observe are in front "
               f"of them. Was world-to-camera used as camera-to-world (not inverted, or inverted twice), or were "
               f"the camera axes changed? ({convention})")  # fmt: skip
        return Finding("points_in_front", "fail", msg, vals), bad
    msg = (f"{int(bad.sum())} of {int(valid.sum())} cameras have most of their 3D points behind them (median "
           f"{100 * med:.0f} % in front): those poses are wrong")  # fmt: skip
    return Finding("points_in_front", "fail" if bad.mean() > 0.1 else "warn", msg, vals), bad


def common_target(T: np.ndarray) -> tuple[np.ndarray | None, float, float]:
    """Least-squares point nearest to all optical axes (as lines), the smallest eigenvalue of the normal matrix
    divided by N (0: all axes parallel, no target) and the median angle between an axis line and the ray to the
    point (deg). Hand-written: a 3x3 solve, no library does this directly."""
    c = T[:, :3, 3]
    z = T[:, :3, 2]
    P = np.eye(3)[None] - z[:, :, None] * z[:, None, :]  # projectors orthogonal to each axis
    A = P.sum(0)
    b = np.einsum("nij,nj->i", P, c)
    ev = float(np.linalg.eigvalsh(A / len(T))[0])
    if ev < 1e-3:
        return None, ev, 90.0
    p = np.linalg.solve(A, b)
    d = p[None] - c
    nd = np.linalg.norm(d, axis=1)
    cosang = np.abs(np.einsum("ni,ni->n", d, z)) / np.maximum(nd, 1e-12)
    return p, ev, float(np.degrees(np.arccos(np.clip(np.median(cosang), -1, 1))))


def _target_test(T: np.ndarray, convention: str, up: np.ndarray | None = None) -> tuple[
        Finding, np.ndarray | None, np.ndarray]:  # fmt: skip
    none = np.zeros(len(T), bool)
    if len(T) < 3:
        return Finding("common_target", "info", "fewer than 3 cameras: not tested"), None, none
    p, ev, ang = common_target(T)
    vals: dict[str, Any] = {"axes_spread": ev, "median_axis_angle_deg": ang}
    if p is None or ev < 0.02 or ang > AXES_MEET_DEG:
        why = (
            "the optical axes are (nearly) parallel"
            if p is None or ev < 0.02
            else (f"the optical axes do not meet (median {ang:.0f} deg off the best common point)")
        )
        return Finding("common_target", "info", f"no common target ({why}): not an object capture"), None, none
    c, z = T[:, :3, 3], T[:, :3, 2]
    spread = float(np.max(np.linalg.norm(c - c.mean(0), axis=1)))
    far = float(np.linalg.norm(p - c.mean(0)))
    mean_z = z.mean(0) / max(float(np.linalg.norm(z.mean(0))), 1e-12)
    fan = float(np.degrees(np.arccos(np.clip(np.percentile(z @ mean_z, 10), -1.0, 1.0))))
    vals.update(target_distance_in_spreads=far / max(spread, 1e-9), view_fan_deg=fan)
    if far > TARGET_MAX_SPREADS * max(spread, 1e-9) or fan < PARALLEL_FAN_DEG:
        msg = (f"no common target: the optical axes are nearly parallel (90 % within {fan:.0f} deg of their mean "
               f"direction; their least-squares meeting point lies {far:.3g} away, "
               f"{far / max(spread, 1e-9):.1f} times the cameras' spread, where a sweep's or a pan's axes meet "
               "behind or ahead alike): not an object capture")  # fmt: skip
        return Finding("common_target", "info", msg, vals), None, none
    front = np.einsum("ni,ni->n", p[None] - c, z) > 0
    f = float(front.mean())
    vals.update(fraction_facing_target=f, target=[float(x) for x in p])
    if f >= 0.8:
        what = "object capture"
        if up is not None:  # a point below every camera: cameras looking down at one area (a survey), no object
            below = float(np.min(c @ up) - p @ up)
            if below > 0:
                what = f"cameras looking down at one area: the point lies {below:.3g} below the lowest camera"
        return Finding("common_target", "ok", f"the optical axes meet at a common point and {100 * f:.0f} % of the "
                       f"cameras face it ({what})", vals), p, none  # fmt: skip
    if f <= 0.2:
        msg = (f"cameras look away from the scene: the optical axes meet at a common point but {100 * (1 - f):.0f} % "
               f"of the cameras face away from it. The z axis points backwards: {convention}; were the axes "
               "flipped twice, or not at all? (Unless this is an inside-out capture: cameras on a ring looking "
               "outwards.)")  # fmt: skip
        return Finding("common_target", "fail", msg, vals), p, ~front
    msg = (f"the optical axes pass near a common point but only {100 * f:.0f} % of the cameras face it: not an object "
           "capture (a curved path?); not conclusive")  # fmt: skip
    return Finding("common_target", "info", msg, vals), None, none


def _motion_test(T: np.ndarray) -> Finding:
    c, z = T[:, :3, 3], T[:, :3, 2]
    if len(T) < 3:
        return Finding("motion", "info", "fewer than 3 cameras: not tested")
    v = np.diff(c, axis=0)
    nv = np.linalg.norm(v, axis=1)
    extent = float(np.linalg.norm(c.max(0) - c.min(0)))
    moving = nv > max(1e-9, 1e-3 * extent)
    if moving.sum() < 2:
        return Finding("motion", "info", "the cameras barely move: not tested")
    cos = np.einsum("ni,ni->n", v[moving] / nv[moving, None], z[:-1][moving])
    med = float(np.median(cos))
    vals = {"median_cos_view_travel": med, "steps": int(moving.sum())}
    if med > 0.5:
        return Finding("motion", "ok", f"the cameras look along the direction of travel (median cos {med:.2f})", vals)
    if med < -0.5:
        return Finding("motion", "warn", f"the cameras look backwards, against the direction of travel (median cos "
                       f"{med:.2f}): a rear camera, or the camera z axis flipped (OpenGL axes read as optical? "
                       "see --camera-axes)", vals)  # fmt: skip
    return Finding("motion", "info", f"the cameras look sideways or down relative to the travel (median cos "
                   f"{med:.2f}): not conclusive", vals)  # fmt: skip


QUATERNION_ORDERS = ("xyzw", "wxyz")


def other_quaternion_order(T: np.ndarray, order: str, axes: np.ndarray | None = None) -> np.ndarray:
    """The poses ``T`` with their rotations read again from the same four numbers in the other order: the file's
    quaternions were read as ``order`` (``"xyzw"``: TUM; ``"wxyz"``: COLMAP); this is what they give when written in
    the other one (w first instead of last, or last instead of first). Positions unchanged. (Which sign the numbers
    had does not matter: a quaternion and its negative are one rotation in either reading.) ``axes``: the 4x4 the
    importer multiplied the file's poses by on the right (``--camera-axes``: ``T = T_file @ axes``), taken off
    before the reading and put back after."""
    from scipy.spatial.transform import Rotation

    if order not in QUATERNION_ORDERS:
        raise ValueError(f"quaternion order {order!r}: expected one of {QUATERNION_ORDERS}")
    T = np.asarray(T, dtype=np.float64)
    if axes is not None:
        A = np.asarray(axes, dtype=np.float64)
        return np.asarray(other_quaternion_order(T @ np.linalg.inv(A), order) @ A)
    read = Rotation.from_matrix(T[:, :3, :3]).as_quat()  # x y z w: the numbers as the importer put them
    file = read if order == "xyzw" else np.roll(read, 1, axis=1)  # the four numbers in the file's order
    other = np.roll(file, -1, axis=1) if order == "xyzw" else file  # read as w x y z, or as x y z w
    out: np.ndarray = T.copy()
    out[:, :3, :3] = Rotation.from_quat(other).as_matrix()
    return out


def _common_up(T: np.ndarray) -> np.ndarray | None:
    """The axis the cameras' x axes are all (nearly) perpendicular to -- the up of a shared horizon, sign
    unknown -- or None when the cameras roll freely, when their x axes are all nearly parallel (a straight capture:
    no one axis is singled out) or there are fewer than 3."""
    if len(T) < 3:
        return None
    x = T[:, :3, 0]
    w, V = np.linalg.eigh(x.T @ x / len(T))
    # the x axes all (nearly) parallel (a straight capture that never turns): every axis across them is
    # perpendicular to all, so the horizon fixes no up (the smallest eigenvalue's vector is any of them)
    return None if w[0] > 0.05 or w[1] < PARALLEL_X else V[:, 0]


def _upright_test(T: np.ndarray, up_hint: np.ndarray | None, convention: str) -> tuple[Finding, np.ndarray]:
    up_img = -T[:, :3, 1]  # image up (optical -y) in the world
    none = np.zeros(len(T), bool)
    common = _common_up(T)
    if up_hint is not None:
        u = np.asarray(up_hint, dtype=np.float64) / np.linalg.norm(up_hint)
        if common is not None and np.degrees(np.arccos(min(1.0, abs(float(common @ u))))) > NOT_GRAVITY_DEG:
            ang = float(np.degrees(np.arccos(min(1.0, abs(float(common @ u))))))
            vals = {"world_up": u.tolist(), "estimated_up": common.tolist(), "angle_to_format_up_deg": ang}
            up_est = (np.round(common, 2) + 0.0).tolist()
            return Finding("upright", "info", f"the cameras share a horizon whose up axis is {ang:.0f} deg from the "
                           f"format's up axis {(np.round(u, 3) + 0.0).tolist()}: the world frame is not gravity "
                           f"aligned that way (a SLAM or handheld world frame; its up is about {up_est}), so "
                           "'upright' is not judged", vals), none  # fmt: skip
        d = up_img @ u
        med = float(np.median(d))
        vals = {"world_up": u.tolist(), "median_cos_image_up": med, "fraction_upright": float(np.mean(d > 0))}
        if med > 0.2:
            return Finding("upright", "ok", f"images are upright in the world (median cos {med:.2f} between image "
                           "up and the format's up axis)", vals), none  # fmt: skip
        if med < -0.2:
            down = (np.round(-u, 3) + 0.0).tolist()
            return Finding("upright", "warn", f"upside down: the images' up points along the world's down "
                           f"({down}; median cos {med:.2f}). The y axis is flipped (optical y points "
                           f"down, OpenGL y up): {convention}; or the world itself is upside down (a flip applied "
                           "to the world, on the left of the pose, instead of the camera)", vals), d < 0  # fmt: skip
        return Finding("upright", "info", f"the images' up is roughly horizontal in the world (median cos {med:.2f}): "
                       "cameras look straight up/down or the world's up is another axis", vals), none  # fmt: skip
    if len(T) < 3:
        return Finding("upright", "info", "fewer than 3 cameras: not tested"), none
    if common is None:
        x = T[:, :3, 0]
        why = ("the cameras' x axes are all nearly parallel (a straight capture that never turns): their horizon "
               "does not say which way is up" if np.linalg.eigvalsh(x.T @ x / len(T))[1] < PARALLEL_X
               else "the cameras roll freely (no common horizon)")  # fmt: skip
        return Finding("upright", "info", f"{why}: not tested"), none
    u = common * np.sign(np.sum(np.sign(up_img @ common)) or 1.0)
    d = up_img @ u
    f = float(np.mean(d > 0))
    vals = {"estimated_up": u.tolist(), "fraction_agreeing": f}
    if f >= 0.8:
        return Finding("upright", "ok", f"the cameras share a horizon and {100 * f:.0f} % agree on which way is up",
                       vals), none  # fmt: skip
    return Finding("upright", "warn", f"only {100 * f:.0f} % of the cameras agree on which way is up: some images are "
                   "upside down relative to the others (their y axis flipped)", vals), d < 0  # fmt: skip


def _pixel_grid(K: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points of a grid of about DEPTH_POINTS valid pixels in the camera frame ``(M, 3)`` and their depths."""
    h, w = depth.shape
    step = max(1, int(np.sqrt(h * w / DEPTH_POINTS)))
    v, u = np.mgrid[step // 2 : h : step, step // 2 : w : step]
    d = depth[v, u]
    ok = np.isfinite(d) & (d > 0)
    u, v, d = u[ok].astype(np.float64), v[ok].astype(np.float64), d[ok].astype(np.float64)
    x = (u - K[0, 2]) / K[0, 0] * d
    y = (v - K[1, 2]) / K[1, 1] * d
    return np.stack([x, y, d], 1), d


def _relative_errors(Ti: np.ndarray, Tj: np.ndarray, pts_i: np.ndarray, Kj: np.ndarray, dj: np.ndarray) -> np.ndarray:
    """Of points ``pts_i`` (camera i) that land in image j, in front of it, on a valid depth pixel: their
    relative depth difference ``|z_j - depth_j| / depth_j``."""
    T_ji = np.linalg.inv(Tj) @ Ti
    p = pts_i @ T_ji[:3, :3].T + T_ji[:3, 3]
    p = p[p[:, 2] > 1e-6]
    z = p[:, 2]
    u = np.rint(Kj[0, 0] * p[:, 0] / z + Kj[0, 2]).astype(np.int64)
    v = np.rint(Kj[1, 1] * p[:, 1] / z + Kj[1, 2]).astype(np.int64)
    h, w = dj.shape
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    d = dj[v[inside], u[inside]].astype(np.float64)
    ok = np.isfinite(d) & (d > 0)
    rel: np.ndarray = np.abs(z[inside][ok] - d[ok]) / d[ok]
    return rel


# the depth-scale hypotheses (millimetres or centimetres read as metres, and the reverse, among them); the best is then
# refined (DEPTH_SCALE_REFINE) so that the message gives the factor itself, not the nearest of these
DEPTH_SCALES = (0.001, 0.01, 0.1, 0.2, 0.5, 2.0, 5.0, 10.0, 100.0, 1000.0)
DEPTH_SCALE_REFINE = 25  # log-spaced factors within sqrt(10) either side of the best hypothesis
# the depth's scale is decided by the poses only where every other scale's median error exceeds the poses' as given
# by this much (an absolute margin: the sensor's own noise raises every hypothesis' median alike); else (a far scene
# seen from a short path, motion along a corridor) the scale is said not decided
DEPTH_SCALE_MARGIN = 0.002


def _depth_test(T: np.ndarray, ev: DepthEvidence, quaternion_order: str = "",
                quaternion_axes: np.ndarray | None = None) -> Finding:  # fmt: skip
    """The ``depth`` test of the module docstring. Each sampled keyframe is compared with the next two (the
    second gives the parallax that shows a wrong depth scale). Hypotheses are ranked by the median relative
    depth difference of the points that land; one that fits clearly better than the poses as given (half the
    error, and half a per cent less) names the mistake."""
    if len(ev.frames) < 2:
        return Finding("depth", "info", "fewer than 2 frames with depth: not tested")
    hyps: dict[str, tuple[np.ndarray, float]] = {"as given": (T, 1.0), "inverted": (np.linalg.inv(T), 1.0),
                                                 "opengl": (T @ GL_FROM_OPTICAL, 1.0)}  # fmt: skip
    if quaternion_order:
        hyps["quaternion order"] = (other_quaternion_order(T, quaternion_order, quaternion_axes), 1.0)
    for s in DEPTH_SCALES:
        hyps[f"scale {s:g}"] = (T, s)
    grids = [_pixel_grid(K, d) for K, d in zip(ev.K, ev.depth, strict=True)]
    pairs = [(a, b) for a in range(len(ev.frames)) for b in (a + 1, a + 2) if b < len(ev.frames)]

    def errors(TT: np.ndarray, s: float) -> np.ndarray:
        e = [_relative_errors(TT[ev.frames[a]], TT[ev.frames[b]], grids[a][0] * s, ev.K[b], ev.depth[b] * s)
             for a, b in pairs]  # fmt: skip
        return np.concatenate(e) if e else np.zeros(0)

    errs = {name: errors(TT, s) for name, (TT, s) in hyps.items()}
    most = max(len(e) for e in errs.values())
    vals: dict[str, Any] = {"frames": len(ev.frames), "pairs": len(pairs), "tolerance": DEPTH_TOL,
                            "points": int(sum(len(g[1]) for g in grids))}  # fmt: skip
    if most < 50:
        return Finding("depth", "info", f"the {len(ev.frames)} sampled keyframes barely see each other's depth "
                       "(too far apart or no overlap): not tested", vals)  # fmt: skip
    med = {k: float(np.median(e)) for k, e in errs.items() if len(e) >= 0.3 * most}
    given = errs["as given"]
    share = float(np.mean(given <= DEPTH_TOL)) if len(given) else 0.0
    vals.update(agreeing_share_as_given=share, landed_as_given=len(given),
                median_relative_error={k: round(v, 4) for k, v in med.items()})  # fmt: skip
    best = min(med, key=lambda k: med[k])
    g = med.get("as given", np.inf)
    # a far larger depth (x10 and more) that wins while the depth as given already agrees is no mistake found: it
    # takes the parallax away, which fits as well where the scene does not change along the motion (a corridor
    # walked along) -- the undecided case below; a win of a smaller depth is a finding whatever the agreement
    scale_won_anyway = best.startswith("scale ") and float(best.split()[1]) >= 10.0 and share >= DEPTH_AGREE_OK
    if best != "as given" and g >= 2.0 * med[best] + 0.005 and not scale_won_anyway:
        if best.startswith("scale "):  # the factor itself, for the message: refined around the best hypothesis
            grid = float(best.split()[1]) * np.logspace(-0.5, 0.5, DEPTH_SCALE_REFINE)
            fits = [(float(np.median(e)), float(f)) for f in grid if len(e := errors(T, float(f))) >= 0.3 * most]
            vals["fitted_depth_factor"] = min(fits)[1] if fits else float(best.split()[1])
        why = {
            "inverted": "with the poses inverted: the poses are world-to-camera, read as camera-to-world (or "
                        "inverted twice)",
            "opengl": "with OpenGL camera axes (x right, y up, z back) read as optical ones: --camera-axes opengl",
            "quaternion order": "with the quaternions read in the other order: the file has them "
            + ("w first (qw qx qy qz), this format qx qy qz qw" if quaternion_order == "xyzw" else
               "w last (qx qy qz qw), this format qw qx qy qz") + " (reorder the columns)",
        }.get(best) or (
            f"with the depth multiplied by about {vals['fitted_depth_factor']:.3g}: the depth units are off (divide "
            "the units per metre it was read with, --depth-scale, by that; nerfstudio's depth_unit_scale_factor: "
            "multiply it)"
        )  # fmt: skip
        shown = "no point lands" if not np.isfinite(g) else f"the median difference is {100 * g:.1f} %"
        msg = (
            f"the depth contradicts the poses: points back-projected from one keyframe onto the next ones' depth "
            f"miss it as given ({shown}) but fit {why} (median difference {100 * med[best]:.1f} %)"
        )
        return Finding("depth", "fail", msg, {**vals, "best_hypothesis": best})
    if share >= DEPTH_AGREE_OK:
        scales = {k: v for k, v in med.items() if k.startswith("scale ")}
        rival = min(scales, key=lambda k: scales[k]) if scales else ""
        agrees = (f"the depth agrees across keyframes: {100 * share:.0f} % of the points back-projected from one "
                  f"keyframe land on the next ones' depth within {100 * DEPTH_TOL:.0f} % ({len(ev.frames)} "
                  "keyframes): the poses' direction")  # fmt: skip
        if rival and scales[rival] - g < DEPTH_SCALE_MARGIN:  # no other scale fits clearly worse: scale unseen
            d = np.concatenate([x[np.isfinite(x) & (x > 0)].ravel() for x in ev.depth])
            median_m = float(np.median(d)) if d.size else float("nan")
            vals.update(depth_scale_decided=False, median_depth_m=median_m)
            return Finding("depth", "ok", f"{agrees} and the camera axes are right; the depth's scale is not "
                           f"decided by the poses (the depth multiplied by {rival.split()[1]} fits as well: the scene "
                           "is far compared with the cameras' motion, or does not change along it). Its median is "
                           f"{median_m:.3g} m: if that is not the scene's, the units per metre (--depth-scale) are off",
                           vals)  # fmt: skip
        vals["depth_scale_decided"] = True
        return Finding("depth", "ok", f"{agrees}, the camera axes and the depth scale are right", vals)
    msg = (f"the depth and the poses disagree: only {100 * share:.0f} % of the points back-projected from one "
           f"keyframe land on the next ones' depth within {100 * DEPTH_TOL:.0f} %, and no simple convention "
           "mistake explains it (intrinsics wrong, depth not registered to the colour camera, depth and poses "
           "not synchronised?)")  # fmt: skip
    return Finding("depth", "warn", msg, vals)


def _turn_deg(Ta: np.ndarray, Tb: np.ndarray) -> float:
    """The median angle (deg) between the rotations of two pose sets."""
    from pose2rgbd.geometry.rotations import rotation_angle_between

    return float(np.degrees(np.median(rotation_angle_between(Ta[:, :3, :3], Tb[:, :3, :3]))))


def _quaternion_test(T: np.ndarray, findings: list[Finding], up_hint: np.ndarray | None, order: str,
                     axes: np.ndarray | None = None, has_depth: bool = False) -> Finding | None:  # fmt: skip
    """The ``quaternion_order`` test of the module docstring. Cameras that look backwards, upside down or away as
    given: the other order is named where it removes those warnings. Cameras that look plausible as given: the order
    is said to be unverified where the other reading makes them look along their travel as well (or, with camera
    axes given, looks as plausible with the camera's own optical axes: axes turned to make up for the order) -- a
    warning still: a file written in the other order gives the same findings, and only depth (or a look at a frame)
    tells the two apart; the message says that nothing points to a mistake and what could not be tested, and why
    (``has_depth``: the import has depth, to be tested by the depth test, which outweighs this warning where it
    agrees)."""
    if len(T) < 3:
        return None
    untested = (
        "The depth test decides between the two readings where the depth agrees with one (see its finding); "
        "otherwise check one frame by hand"
        if has_depth
        else "The import has no depth to test the order against: check one frame by hand, or give the depth "
        "(--depth DIR, or --depth-list FILE: a TUM RGB-D sequence's depth.txt), which tells the two apart"
    )
    doubt = [f for f in findings if f.name in ("motion", "upright", "common_target", "axes_convention")
             and f.status in ("warn", "fail")]  # fmt: skip
    other = "w first (qw qx qy qz)" if order == "xyzw" else "w last (qx qy qz qw)"
    given = "qx qy qz qw" if order == "xyzw" else "qw qx qy qz"
    alt = other_quaternion_order(T, order, axes)
    motion, (upright, _) = _motion_test(alt), _upright_test(alt, up_hint, "")
    turned = axes is not None and not np.allclose(axes, np.eye(4))
    if doubt:
        # the other order with the axes given, and (axes given) with the camera's own optical axes
        tries = [(alt, "")]
        if turned:
            bare = other_quaternion_order(T @ np.linalg.inv(np.asarray(axes, np.float64)), order)
            tries.append((bare, " with the camera's own optical axes (no --camera-axes)"))
        for cand, how in tries:
            m, (u, _) = _motion_test(cand), _upright_test(cand, up_hint, "")
            if m.status == "warn" or u.status == "warn":
                continue
            looks = (f"look along their travel (median cos {m.values['median_cos_view_travel']:.2f})"
                     if m.status == "ok" else "no longer look backwards")  # fmt: skip
            stand = " and stand upright" if u.status == "ok" else ""
            return Finding(
                "quaternion_order", "warn",
                f"read in the other order, {other}{how}, the same quaternions make the cameras {looks}{stand}: the "
                f"file's quaternions may be written {other}, where this format has {given} (reorder the columns); the "
                "OpenGL camera axes are the other explanation of cameras that look backwards, and depth (--depth, "
                "--depth-list) tells the two apart",
                {"median_cos_view_travel": m.values.get("median_cos_view_travel"), "read_as": order,
                 "without_camera_axes": bool(how)},
            )  # fmt: skip
        return None
    if motion.status == "ok" and upright.status != "warn" and (apart := _turn_deg(T, alt)) >= 10.0:
        return Finding(
            "quaternion_order", "warn",
            f"the quaternions' order could not be verified (nothing points to a mistake; nothing proves the order "
            f"either): read {given}, as this format has them, or {other}, the cameras look along their travel "
            f"alike (the two readings {apart:.0f} deg apart), so a file written in the other order would look as "
            f"right as this one. {untested}", {"read_as": order, "median_turn_deg": apart},
        )  # fmt: skip
    if turned:
        bare = other_quaternion_order(T @ np.linalg.inv(np.asarray(axes, np.float64)), order)
        if _motion_test(bare).status != "warn" and _upright_test(bare, up_hint, "")[0].status != "warn" and (
                apart := _turn_deg(T, bare)) >= 10.0:  # fmt: skip
            return Finding(
                "quaternion_order", "warn",
                f"the quaternions' order could not be verified: read {other} instead of {given}, with the camera's "
                f"own optical axes (no --camera-axes), the cameras (turned {apart:.0f} deg from these) look as "
                f"plausible; were the camera axes changed to make up for quaternions in the other order? {untested}",
                {"read_as": order, "median_turn_deg": apart, "without_camera_axes": True},
            )  # fmt: skip
    return None


def check_poses(
    T_world_cam: np.ndarray,
    *,
    points: np.ndarray | None = None,
    observations: list[np.ndarray] | None = None,
    up_hint: np.ndarray | None = None,
    convention: str = "",
    depth: DepthEvidence | None = None,
    quaternion_order: str = "",
    quaternion_axes: np.ndarray | None = None,
) -> PoseCheck:
    """Run the tests of the module docstring on ``(N, 4, 4)`` optical-frame camera poses. ``quaternion_order``: the
    order the importer read the source's quaternions in (``"xyzw"``, ``"wxyz"``; ``""``: a format of matrices);
    ``quaternion_axes``: the camera axes it applied after (:func:`other_quaternion_order`)."""
    T = np.asarray(T_world_cam, dtype=np.float64)
    conv = convention or "check the source's camera convention"
    findings: list[Finding] = []
    bad = np.zeros(len(T), bool)
    target = None
    if points is not None and len(points):
        f, b = _points_in_front(T, np.asarray(points, dtype=np.float64), observations, conv)
        findings.append(f)
        bad |= b
    up = None if up_hint is None else np.asarray(up_hint, np.float64) / np.linalg.norm(up_hint)
    f, target, b = _target_test(T, conv, up)
    motion = _motion_test(T)
    if f.status == "fail" and motion.status == "ok":
        # cameras looking along their direction of travel are not all turned round: the axes of a camera on a
        # curved path meet behind it too (a car in a turn)
        f = Finding("common_target", "info", "the optical axes meet behind the cameras, but the cameras look along "
                    "the direction of travel (a curved path): not conclusive", f.values)  # fmt: skip
        target, b = None, np.zeros(len(T), bool)
    findings.append(f)
    bad |= b
    findings.append(motion)
    f, b = _upright_test(T, up_hint, conv)
    findings.append(f)
    bad |= b
    if motion.status == "warn" and f.status == "warn" and "world_up" in f.values:
        # backwards and upside down together: the camera turned by 180 deg about its x axis
        findings.append(Finding(
            "axes_convention", "fail", "cameras look backwards along their path and are upside down: the camera is "
            "turned 180 deg about its x axis, the OpenGL (x right, y up, z back) vs optical (x right, y down, "
            f"z forward) mix-up: {conv}. Were the poses written with OpenGL axes (then --camera-axes opengl)?",
            {"median_cos_view_travel": motion.values.get("median_cos_view_travel"),
             "median_cos_image_up": f.values.get("median_cos_image_up")},
        ))  # fmt: skip
    if quaternion_order:
        q = _quaternion_test(T, findings, up_hint, quaternion_order, quaternion_axes, has_depth=depth is not None)
        if q is not None:
            findings.append(q)
    if depth is not None:
        df = _depth_test(T, depth, quaternion_order, quaternion_axes)
        if df.status == "ok":  # proven by the depth: the geometric guesses about orientation are outweighed
            for k, f in enumerate(findings):
                if f.status in ("fail", "warn") and f.name in ("points_in_front", "common_target", "motion",
                                                               "axes_convention", "quaternion_order"):  # fmt: skip
                    findings[k] = Finding(f.name, "info", f"{f.message} -- outweighed: the depth agrees across "
                                          "keyframes as given", f.values)  # fmt: skip
                    bad[:] = False
                    target = None if f.name == "common_target" else target
                elif f.status == "warn" and f.name == "upright":
                    findings[k] = Finding(f.name, "info", f"{f.message} -- the depth agrees across keyframes, so "
                                          "the camera axes are right: it is the world frame that is turned, which "
                                          "rendering does not mind", f.values)  # fmt: skip
                    bad[:] = False
        findings.insert(0, df)
    proven = any(
        f.status == "ok" for f in findings if f.name in ("depth", "points_in_front", "common_target", "motion")
    )
    if not proven and not any(f.status in ("fail", "warn") for f in findings):
        findings.append(Finding(
            "direction", "warn", "the poses' direction could not be verified: no depth agreed, no 3D points, and the "
            "cameras neither face a common target nor look along their travel, so poses inverted (world-to-camera "
            f"read as camera-to-world){' or quaternions in the other order' if quaternion_order else ''} would look "
            f"as plausible: {conv}. Check one frame by hand, or give depth the check can test (--depth DIR, or "
            "--depth-list FILE)",
        ))  # fmt: skip
    fails = [f.message for f in findings if f.status == "fail"]
    warns = [f.message for f in findings if f.status == "warn"]
    verdict = "suspect" if fails else ("check" if warns else "ok")
    return PoseCheck(verdict, findings, fails + warns, target, bad)


def plot_poses(path: Path, T_world_cam: np.ndarray, check: PoseCheck, *, points: np.ndarray | None = None,
               up: np.ndarray | None = None, title: str = "") -> None:  # fmt: skip
    """Top view and side view of the camera centres with their viewing directions (arrows), the common target,
    the scene points (grey) and the cameras a failed test blames (red). ``up``: the world's up (the side view's
    vertical); None where it is not known: the world's z is drawn and labelled as not known to be up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = np.asarray(T_world_cam, dtype=np.float64)
    u = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    # a right-handed basis (e1, e2, u): top view = (e1, e2), side view = (e1, u)
    a = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = a - (a @ u) * u
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    B = np.stack([e1, e2, u])
    names = ("x", "y", "z")
    lab = [names[int(np.argmax(np.abs(e)))] if np.max(np.abs(e)) > 0.999 else "" for e in B]
    lab = [("-" if B[k][int(np.argmax(np.abs(B[k])))] < 0 else "") + lab[k] if lab[k] else f"axis {k + 1}"
           for k in range(3)]  # fmt: skip
    c = T[:, :3, 3] @ B.T
    z = T[:, :3, 2] @ B.T
    extent = float(np.max(np.ptp(c, axis=0))) if len(c) > 1 else 1.0
    L = 0.18 * (extent if extent > 0 else 1.0)
    bad = check.bad_cameras if check.bad_cameras is not None else np.zeros(len(T), bool)
    pts = None
    if points is not None and len(points):
        pts = np.asarray(points, dtype=np.float64)[:: max(1, len(points) // 3000)] @ B.T
    # what the view shows: the cameras with their arrows, the target and the bulk (2-98 %) of the points
    keep = [c, c + L * z]
    if check.target is not None:
        keep.append((check.target @ B.T)[None])
    if pts is not None:
        keep.append(np.percentile(pts, [2, 98], axis=0))
    allp = np.concatenate(keep)
    lo, hi = allp.min(0), allp.max(0)
    pad = 0.08 * max(float(np.max(hi - lo)), 1e-6)
    import textwrap

    notes = [textwrap.fill(m, 160) for m in check.mistakes]
    n_lines = sum(t.count("\n") + 1 for t in notes)
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.0 + 0.16 * n_lines))
    fig.subplots_adjust(left=0.06, right=0.88, top=0.9, bottom=0.1 + 0.16 * n_lines / (6.0 + 0.16 * n_lines))
    for ax, (i, j), view in ((axes[0], (0, 1), "top view"), (axes[1], (0, 2), "side view")):
        if pts is not None:
            ax.scatter(pts[:, i], pts[:, j], s=1, color="0.75", label="scene points", zorder=0)
        ax.plot(c[:, i], c[:, j], color="0.5", lw=0.6, zorder=1)
        sc = ax.scatter(c[:, i], c[:, j], c=np.arange(len(c)), cmap="viridis", s=16, zorder=4, label="cameras")
        for m, col, lab_ in ((~bad, "tab:blue", "viewing direction (optical z)"), (bad, "tab:red", "flagged cameras")):
            if m.any():
                ax.quiver(c[m, i], c[m, j], z[m, i], z[m, j], angles="xy", scale_units="xy", scale=1 / L, color=col,
                          width=0.005, zorder=3, label=lab_)  # fmt: skip
        if check.target is not None:
            tg = check.target @ B.T
            ax.plot(tg[i], tg[j], "k*", ms=14, label="common target of the axes", zorder=5)
        ax.plot(c[0, i], c[0, j], "k^", ms=8, label="first camera", zorder=5)
        half = 0.5 * max(hi[i] - lo[i], hi[j] - lo[j]) + pad  # one scale on both axes
        ax.set_xlim(0.5 * (lo[i] + hi[i]) - half, 0.5 * (lo[i] + hi[i]) + half)
        ax.set_ylim(0.5 * (lo[j] + hi[j]) - half, 0.5 * (lo[j] + hi[j]) + half)
        ax.set_xlabel(f"{lab[i]} (world)")
        if j != 2:
            ax.set_ylabel(f"{lab[j]} (world)")
        else:  # no up given (a COLMAP model; no common horizon): the world's z is drawn, which need not be up
            ax.set_ylabel(f"{lab[j]} (world) = up" if up is not None else f"{lab[j]} (world; up not known)")
        ax.set_aspect("equal", adjustable="box")
        ax.grid(alpha=0.3)
        ax.set_title(view, fontsize=11)
    axes[0].legend(fontsize=7, loc="upper left", framealpha=0.8)
    cax = fig.add_axes((0.9, 0.25, 0.015, 0.55))
    fig.colorbar(sc, cax=cax, label="frame index")
    color = {"ok": "tab:green", "check": "tab:orange", "suspect": "tab:red"}[check.verdict]
    head = f"pose check: {check.verdict.upper()}" + (f" - {title}" if title else "")
    fig.suptitle(head, color=color, fontsize=12)
    if notes:
        fig.text(0.01, 0.01, "\n".join(notes), fontsize=7.5, color=color, va="bottom")
    fig.savefig(path, dpi=80)
    plt.close(fig)
