"""Pose sanity check of an import: do the cameras look at the scene, are they upright, and a plot.

Tests (each gives a :class:`Finding`; ``fail`` = a likely convention mistake, ``warn`` = unusual, check it):

* ``points_in_front`` (when the source has 3D points, e.g. COLMAP): each point a camera observes must lie in
  front of it (positive depth along optical z). A correct import has ~100 %; a pose that is still world-to-camera,
  or whose camera axes are turned, puts about half or most of them behind.
* ``common_target`` (object captures, no points needed): the point nearest to every optical axis in the
  least-squares sense. Lines have no direction, so this point is the same whether the cameras face it or face
  away; when the axes really meet (they pass within 20 deg of it), it must lie in *front* of the cameras. All
  behind: the cameras look away from the scene, the classic OpenGL / optical mix-up.
* ``motion`` (trajectories): the viewing direction against the direction of travel. A forward camera has a
  positive median cosine; a strongly negative one means the camera looks backwards (a rear camera, or z flipped).
  Sideways / downward cameras make it inconclusive (info only).
* ``upright``: where the format defines the world's up axis (transforms.json: +z; KITTI: -y), the image's up
  (optical -y) should point up for most cameras; otherwise the cameras should at least agree with each other.
* ``axes_convention``: a trajectory that looks backwards *and* is upside down is the camera turned 180 deg about
  its x axis: OpenGL axes taken for optical ones (or converted twice).
* ``common_target`` and ``motion`` disagree on a curved path (the axes of a car in a turn meet behind it); a
  camera that looks along its direction of travel wins and the target test says "not conclusive".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FRONT_OK = 0.9  # fraction of observed points in front of a correct camera (noise, outliers)
AXES_MEET_DEG = 20.0


@dataclass
class Finding:
    name: str
    status: str  # ok, warn, fail, info
    message: str
    values: dict[str, Any] = field(default_factory=dict)


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


def _target_test(T: np.ndarray, convention: str) -> tuple[Finding, np.ndarray | None, np.ndarray]:
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
    front = np.einsum("ni,ni->n", p[None] - c, z) > 0
    f = float(front.mean())
    vals.update(fraction_facing_target=f, target=[float(x) for x in p])
    if f >= 0.8:
        return Finding("common_target", "ok", f"the optical axes meet at a common point and {100 * f:.0f} % of the "
                       "cameras face it (object capture)", vals), p, none  # fmt: skip
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


def _upright_test(T: np.ndarray, up_hint: np.ndarray | None, convention: str) -> tuple[Finding, np.ndarray]:
    up_img = -T[:, :3, 1]  # image up (optical -y) in the world
    none = np.zeros(len(T), bool)
    if up_hint is not None:
        u = np.asarray(up_hint, dtype=np.float64) / np.linalg.norm(up_hint)
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
    x = T[:, :3, 0]
    w, V = np.linalg.eigh(x.T @ x / len(T))
    if w[0] > 0.05:
        return Finding("upright", "info", "the cameras roll freely (no common horizon): not tested"), none
    u = V[:, 0] * np.sign(np.sum(np.sign(up_img @ V[:, 0])) or 1.0)
    d = up_img @ u
    f = float(np.mean(d > 0))
    vals = {"estimated_up": u.tolist(), "fraction_agreeing": f}
    if f >= 0.8:
        return Finding("upright", "ok", f"the cameras share a horizon and {100 * f:.0f} % agree on which way is up",
                       vals), none  # fmt: skip
    return Finding("upright", "warn", f"only {100 * f:.0f} % of the cameras agree on which way is up: some images are "
                   "upside down relative to the others (their y axis flipped)", vals), d < 0  # fmt: skip


def check_poses(
    T_world_cam: np.ndarray,
    *,
    points: np.ndarray | None = None,
    observations: list[np.ndarray] | None = None,
    up_hint: np.ndarray | None = None,
    convention: str = "",
) -> PoseCheck:
    """Run the tests of the module docstring on ``(N, 4, 4)`` optical-frame camera poses."""
    T = np.asarray(T_world_cam, dtype=np.float64)
    conv = convention or "check the source's camera convention"
    findings: list[Finding] = []
    bad = np.zeros(len(T), bool)
    target = None
    if points is not None and len(points):
        f, b = _points_in_front(T, np.asarray(points, dtype=np.float64), observations, conv)
        findings.append(f)
        bad |= b
    f, target, b = _target_test(T, conv)
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
    fails = [f.message for f in findings if f.status == "fail"]
    warns = [f.message for f in findings if f.status == "warn"]
    verdict = "suspect" if fails else ("check" if warns else "ok")
    return PoseCheck(verdict, findings, fails + warns, target, bad)


def plot_poses(path: Path, T_world_cam: np.ndarray, check: PoseCheck, *, points: np.ndarray | None = None,
               up: np.ndarray | None = None, title: str = "") -> None:  # fmt: skip
    """Top view and side view of the camera centres with their viewing directions (arrows), the common target,
    the scene points (grey) and the cameras a failed test blames (red)."""
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
        ax.set_ylabel(f"{lab[j]} (world)" + (" = up" if j == 2 else ""))
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
