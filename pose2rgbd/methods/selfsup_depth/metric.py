"""Metric poses for a video with GPS (Algorithm 2 with metric poses): structure from motion (COLMAP through
:func:`pose2rgbd.methods.selfsup_depth.sfm.colmap_poses`) aligned to the GPS positions of the same frames by a
robust Sim(3) (:func:`pose2rgbd.geometry.similarity.robust_sim3`), so every registered frame has a pose in the
dataset's world frame, in metres, and the triangulated points it sees have metric depths. Along a nearly straight
track GPS leaves the turn about the track free; the aligned poses are turned about it until the cameras stand
upright (``level_straight_track``, :func:`pose2rgbd.geometry.similarity.level_about_track`), where GPS does not
object.

The GPS positions are the dataset's camera positions, i.e. after Algorithm 1's time offset. Each SfM model (a
flight can break into several) gets its own Sim(3); a model with too few of its frames within ``threshold_m`` of
their GPS position after it (``min_inlier_share``) is not used. Frames COLMAP was not given (``colmap_every``)
or did not register, between two registered frames of one model at most ``max_gap_frames`` apart, are
interpolated (position linear, rotation slerp). The rest fall back to
the pose network: each flight (source) is cut into segments labelled ``sfm`` or ``posenet``, reported; a source
where too few frames register (or COLMAP fails) is ``posenet`` as a whole, with the reason logged as a warning
and written in the report: never a silently bad dataset.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.atomic import sibling_prefix
from pose2rgbd.config import help_field
from pose2rgbd.errors import ConfigError, Pose2RGBDError
from pose2rgbd.geometry.rotations import rotation_angle_between
from pose2rgbd.geometry.similarity import Sim3Fit, level_about_track, robust_sim3

log = logging.getLogger(__name__)

POSENET, SFM, INTERPOLATED = 0, 1, 2
LABELS = {POSENET: "posenet", SFM: "sfm", INTERPOLATED: "sfm"}


@dataclass
class MetricPosesConfig:
    """How SfM poses are made metric from GPS, and when the pose network takes over."""

    threshold_m: float = help_field(5.0, "Sim(3) RANSAC: a GPS fix further than this from the aligned SfM camera "
                                    "centre is an outlier (metres)")  # fmt: skip
    min_inlier_share: float = help_field(
        0.6,
        "an SfM model with fewer of its frames within threshold_m of GPS after the Sim(3) is not used (its "
        "trajectory is not a similarity of the GPS track: broken reconstruction or bad GPS)",
    )
    min_registered: int = help_field(10, "a source with fewer registered frames falls back to the pose network")
    min_registered_share: float = help_field(
        0.3, "... or with fewer than this share of the frames given to COLMAP registered"
    )
    max_gap_frames: int = help_field(
        0, "frames between two registered frames of one model at most this far apart are interpolated; 0: "
        "2 x trajectory.colmap_every"
    )  # fmt: skip
    min_segment_frames: int = help_field(5, "an SfM segment shorter than this is left to the pose network")
    bootstrap: int = help_field(300, "bootstrap resamples for the scale uncertainty")
    max_track_weight: float = help_field(8.0, "sparse depth: a point's weight grows with its track length up to "
                                         "this many views")  # fmt: skip
    max_point_error_px: float = help_field(2.0, "sparse depth: points with a larger reprojection error are dropped")
    level_straight_track: bool = help_field(
        True,
        "a nearly straight GPS track fixes the Sim(3) up to a turn about the track: turn the aligned poses about it "
        "so the cameras stand upright (image x level), where GPS does not object "
        "(pose2rgbd.geometry.similarity.level_about_track; false: the turn the GPS noise gave)",
    )

    def __post_init__(self) -> None:
        if not (self.threshold_m > 0 and 0 < self.min_inlier_share <= 1):
            raise ConfigError("metric.threshold_m must be > 0 and metric.min_inlier_share in (0, 1]")
        if self.min_registered < 3 or not 0 <= self.min_registered_share <= 1:
            raise ConfigError("metric.min_registered must be >= 3 and metric.min_registered_share in [0, 1]")
        if self.max_gap_frames < 0 or self.min_segment_frames < 1 or self.bootstrap < 10:
            raise ConfigError("metric: max_gap_frames >= 0, min_segment_frames >= 1, bootstrap >= 10")
        if self.max_track_weight < 2 or self.max_point_error_px <= 0:
            raise ConfigError("metric.max_track_weight must be >= 2 and metric.max_point_error_px > 0")


@dataclass
class MetricPoses:
    """``T_world_cam`` (N, 4, 4) metric in the dataset's world frame, NaN where ``label`` (N,) is POSENET;
    ``points`` frame -> (P, 4): camera-frame x, y, z (metres) and a weight in (0, 1]; ``info`` the report:
    per source the registered counts, the Sim(3) of each model, the segments and any fallback reason."""

    T_world_cam: np.ndarray
    label: np.ndarray
    points: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> np.ndarray:
        return self.label != POSENET

    @property
    def n_metric(self) -> int:
        return int(self.ok.sum())

    def save(self, path: str | Path) -> Path:
        import io

        path = Path(path)
        keys = np.array(sorted(self.points), dtype=np.int64)
        counts = np.array([len(self.points[int(k)]) for k in keys], dtype=np.int64)
        pts = np.concatenate([self.points[int(k)] for k in keys]) if len(keys) else np.zeros((0, 4))
        buf = io.BytesIO()
        np.savez_compressed(buf, T_world_cam=self.T_world_cam, label=self.label, point_frames=keys,
                            point_counts=counts, points=pts, info=np.array(json.dumps(self.info)))  # fmt: skip
        tmp = path.with_name(sibling_prefix(path, "tmp") + path.suffix)
        try:  # a hidden sibling renamed onto the path: a reader never sees half a file
            tmp.write_bytes(buf.getvalue())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: str | Path) -> MetricPoses:
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise Pose2RGBDError(f"{path}: cannot read metric poses ({e}); compute them again") from e
        keys, counts = z["point_frames"], z["point_counts"]
        splits = np.split(z["points"], np.cumsum(counts)[:-1]) if len(keys) else []
        return cls(z["T_world_cam"], z["label"], {int(k): p for k, p in zip(keys, splits, strict=True)},
                   json.loads(str(z["info"])))  # fmt: skip


def point_weights(track: np.ndarray, error: np.ndarray, cfg: MetricPosesConfig) -> np.ndarray:
    """Weight of a triangulated point in (0, 1]: its track length (views that see it, up to
    ``cfg.max_track_weight``) times ``1 / (1 + error^2)`` (reprojection error in pixels); 0 for a point seen in
    fewer than 2 views or with an error above ``cfg.max_point_error_px``."""
    t = np.clip((np.asarray(track, np.float64) - 1.0) / (cfg.max_track_weight - 1.0), 0.0, 1.0)
    e = np.asarray(error, np.float64)
    w = t / (1.0 + e**2)
    return np.where(np.isfinite(e) & (e <= cfg.max_point_error_px), w, 0.0)


def _interpolate(T: np.ndarray, a: int, b: int) -> np.ndarray:
    """Poses for a < k < b between ``T[a]`` and ``T[b]``: position linear, rotation slerp (SciPy)."""
    from scipy.spatial.transform import Rotation, Slerp

    ks = np.arange(a + 1, b)
    w = (ks - a) / (b - a)
    out = np.tile(np.eye(4), (len(ks), 1, 1))
    out[:, :3, :3] = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([T[a, :3, :3], T[b, :3, :3]])))(w).as_matrix()
    out[:, :3, 3] = (1 - w)[:, None] * T[a, :3, 3] + w[:, None] * T[b, :3, 3]
    return out


def _segments(label: np.ndarray, offset: int, sid: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ok = label != POSENET
    a = 0
    for k in range(1, len(label) + 1):
        if k == len(label) or ok[k] != ok[a]:
            out.append({"source": sid, "start": offset + a, "end": offset + k - 1, "frames": k - a,
                        "pose_source": "sfm" if ok[a] else "posenet"})  # fmt: skip
            a = k
    return out


# two SfM models whose cameras turn more than this between frames at most MAX_MODEL_GAP_FRAMES apart: one model's
# alignment to GPS is wrong (a straight track leaves the turn about it free, and a model of a few dozen frames can pick
# the wrong one: a GoPro drone clip's second model came out pitched down 50 deg and upside down, 175 deg from the
# first at their seam)
MAX_MODEL_TURN_DEG = 45.0
MAX_MODEL_GAP_FRAMES = 10  # a third of a second at 30 fps: 45 deg in it is 135 deg/s, beyond a camera's own turn
UPRIGHT_MARGIN = 0.5  # of the two, the model whose image y points down by this much more (mean cosine) is kept


def _drop_models_that_turn_away(
    T: np.ndarray, label: np.ndarray, points: dict[int, np.ndarray], owner: np.ndarray, registered: dict[int, int]
) -> dict[int, str]:
    """Where two aligned SfM models meet (their nearest frames at most :data:`MAX_MODEL_GAP_FRAMES` apart) and the
    camera turns more than :data:`MAX_MODEL_TURN_DEG` between them -- no camera does between neighbouring frames --,
    one of the two is dropped (its frames go to the pose network): the one whose cameras stand less upright, where
    the two differ in it by :data:`UPRIGHT_MARGIN`, else the one with fewer registered frames; until no such seam
    is left. In place; returns why each dropped model (by its index; ``registered``: each model's registered frames)
    was dropped."""
    dropped: dict[int, str] = {}
    while True:
        frames = np.flatnonzero(owner >= 0)
        seams = [(int(a), int(b)) for a, b in itertools.pairwise(frames)
                 if owner[a] != owner[b] and b - a <= MAX_MODEL_GAP_FRAMES]  # fmt: skip
        turns = [(float(np.degrees(rotation_angle_between(T[a, :3, :3], T[b, :3, :3]))), a, b) for a, b in seams]
        bad = [t for t in turns if t[0] > MAX_MODEL_TURN_DEG]
        if not bad:
            return dropped
        deg, a, b = max(bad)
        ma, mb = int(owner[a]), int(owner[b])
        # keep the model whose cameras stand upright (image y down, world z up: ENU) where the two differ in it
        # clearly, else the one with more registered frames
        upright = {m: -float(np.mean(T[owner == m, 2, 1])) for m in (ma, mb)}
        if abs(upright[ma] - upright[mb]) > UPRIGHT_MARGIN:
            keep = ma if upright[ma] > upright[mb] else mb
            reason = f"model {keep}'s cameras stand upright, image y down"
        else:
            keep = ma if registered[ma] >= registered[mb] else mb
            reason = f"model {keep} has more frames"
        drop = mb if keep == ma else ma
        gone = np.flatnonzero(owner == drop)
        T[gone] = np.nan
        label[gone] = POSENET
        owner[gone] = -1
        for k in gone:
            points.pop(int(k), None)
        dropped[drop] = (
            f"its cameras turn {deg:.0f} deg from model {keep}'s between frames {a} and {b} (more than "
            f"{MAX_MODEL_TURN_DEG:.0f}): one of the two alignments to GPS is wrong, and {reason}"
        )
        log.warning("structure from motion: model %d dropped: %s", drop, dropped[drop])


def align_source(
    sfm: Any,
    gps: np.ndarray,
    cfg: MetricPosesConfig,
    *,
    colmap_every: int = 1,
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray], dict[str, Any]]:
    """One source (flight): ``sfm`` (an :class:`~pose2rgbd.methods.selfsup_depth.sfm.SfmResult` for its frames,
    or the exception COLMAP raised) and the GPS camera positions ``gps`` (n, 3) -> ``(T_world_cam (n, 4, 4),
    label (n,), points (local frame index -> (P, 4)), info)`` (see the module docstring)."""
    n = len(gps)
    T = np.full((n, 4, 4), np.nan)
    label = np.full(n, POSENET, np.int64)
    points: dict[int, np.ndarray] = {}
    owner = np.full(n, -1, np.int64)  # the SfM model a frame's pose came from (-1: none)
    info: dict[str, Any] = {"frames": n, "registered": 0, "tried": 0, "models": []}

    def fallback(reason: str) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray], dict[str, Any]]:
        info["fallback"] = reason
        label[:] = POSENET
        return np.full((n, 4, 4), np.nan), label, {}, info

    if isinstance(sfm, BaseException):
        return fallback(f"structure from motion: {sfm}")
    reg = np.asarray(sfm.registered, bool)
    info.update(registered=int(reg.sum()), tried=int(sfm.tried), seconds=round(float(sfm.seconds), 1))
    need = max(cfg.min_registered, int(np.ceil(cfg.min_registered_share * max(sfm.tried, 1))))
    if reg.sum() < need:
        return fallback(f"structure from motion registered {int(reg.sum())} of {sfm.tried} frames given (need "
                        f"{need}: metric.min_registered / metric.min_registered_share)")  # fmt: skip
    if not np.all(np.isfinite(gps)):
        return fallback("not every frame has a GPS position")
    for m in np.unique(sfm.model[reg]):
        mine = np.flatnonzero(reg & (sfm.model == m))
        entry: dict[str, Any] = {"model": int(m), "registered": len(mine)}
        info["models"].append(entry)
        if len(mine) < max(3, cfg.min_segment_frames):
            entry["used"] = False
            entry["why"] = "too few frames for a Sim(3)"
            continue
        fit: Sim3Fit = robust_sim3(sfm.T_world_cam[mine, :3, 3], gps[mine], threshold=cfg.threshold_m,
                                   bootstrap=cfg.bootstrap, seed=int(m))  # fmt: skip
        entry.update(fit.summary())
        if fit.n_inliers < max(3, cfg.min_inlier_share * len(mine)):
            entry["used"] = False
            entry["why"] = (f"only {fit.n_inliers} of {len(mine)} frames within {cfg.threshold_m} m of GPS after the "
                            f"Sim(3) (median residual {fit.median:.1f} m; metric.min_inlier_share "
                            f"{cfg.min_inlier_share})")  # fmt: skip
            continue
        entry["used"] = True
        Ts = sfm.T_world_cam[mine]
        T[mine] = np.tile(np.eye(4), (len(mine), 1, 1))
        T[mine, :3, :3] = fit.R @ Ts[:, :3, :3]
        T[mine, :3, 3] = fit.apply(Ts[:, :3, 3])
        if cfg.level_straight_track:
            turn = level_about_track(T[mine][fit.inliers], gps[mine][fit.inliers])
            if turn is not None:
                entry["track_turn"] = turn.summary()
                if turn.applied:
                    T[mine] = turn.apply(T[mine])
        label[mine] = SFM
        owner[mine] = m
        for k in mine:
            p = sfm.points.get(int(k))
            if p is None or len(p) == 0:
                continue
            w = point_weights(p[:, 3], p[:, 4], cfg)
            keep = w > 0
            if keep.any():
                points[int(k)] = np.concatenate([p[keep, :3] * fit.s, w[keep, None]], 1)
        # interpolate the frames between registered frames of this model
        gap = cfg.max_gap_frames or 2 * max(1, colmap_every)
        for a, b in itertools.pairwise(mine):
            if 1 < b - a <= gap and np.all(label[a + 1 : b] == POSENET):
                T[a + 1 : b] = _interpolate(T, int(a), int(b))
                label[a + 1 : b] = INTERPOLATED
                owner[a + 1 : b] = m
    registered = {int(e["model"]): int(e["registered"]) for e in info["models"]}
    for m, why in _drop_models_that_turn_away(T, label, points, owner, registered).items():
        info["models"][[e["model"] for e in info["models"]].index(m)].update(used=False, why=why)
    if not any(e.get("used") for e in info["models"]):
        why = "; ".join(f"model {e['model']}: {e.get('why', '')}" for e in info["models"])
        return fallback(f"no structure-from-motion model could be aligned to GPS ({why})")
    # an SfM run too short to train on is left to the pose network
    for seg in _segments(label, 0, 0):
        if seg["pose_source"] == "sfm" and seg["frames"] < cfg.min_segment_frames:
            s, e = seg["start"], seg["end"] + 1
            label[s:e] = POSENET
            T[s:e] = np.nan
            for j in range(s, e):
                points.pop(j, None)
    if not np.any(label != POSENET):
        return fallback(f"no structure-from-motion segment of {cfg.min_segment_frames} frames or more "
                        "(metric.min_segment_frames)")  # fmt: skip
    return T, label, points, info


def track_turn_words(model: dict[str, object]) -> str:
    """In words, a model's turn about its straight track (its report entry's ``track_turn``; empty without one):
    the log line and ``convert`` / ``depth export`` print it."""
    tt = model.get("track_turn")
    if not isinstance(tt, dict):
        return ""
    if not tt["applied"]:
        return f"not turned about its straight track ({tt['why']})"
    (r0, r1), (g0, g1) = tt["roll_rms_deg"], tt["gps_rms_m"]
    return (f"turned {tt['turn_deg']:+.1f} deg about its straight track to stand the cameras upright (roll RMS "
            f"{r0:.1f} -> {r1:.1f} deg, GPS residual RMS {g0:.2f} -> {g1:.2f} m)")  # fmt: skip


def metric_poses_from_sfm(
    sfm_by_source: dict[int, Any],
    gps: np.ndarray,
    source_id: np.ndarray,
    cfg: MetricPosesConfig | None = None,
    *,
    colmap_every: int = 1,
) -> MetricPoses:
    """Every source's :func:`align_source` (``sfm_by_source``: source id -> SfmResult or the exception COLMAP
    raised; ``gps`` (N, 3) the dataset's camera positions; ``source_id`` (N,)), joined; frames of a source
    missing from ``sfm_by_source`` are ``posenet``. Warns (log) for each source that falls back."""
    cfg = cfg or MetricPosesConfig()
    gps = np.asarray(gps, np.float64)
    source_id = np.asarray(source_id)
    N = len(gps)
    T = np.full((N, 4, 4), np.nan)
    label = np.full(N, POSENET, np.int64)
    points: dict[int, np.ndarray] = {}
    info: dict[str, Any] = {"sources": {}, "segments": []}
    for sid in np.unique(source_id):
        idx = np.flatnonzero(source_id == sid)
        sfm = sfm_by_source.get(int(sid), ConfigError("no structure from motion was run for this source"))
        Ts, ls, ps, inf = align_source(sfm, gps[idx], cfg, colmap_every=colmap_every)
        T[idx], label[idx] = Ts, ls
        points.update({int(idx[k]): p for k, p in ps.items()})
        inf["metric_frames"] = int((ls != POSENET).sum())
        info["sources"][str(int(sid))] = inf
        info["segments"] += [{**s, "start": int(idx[s["start"]]), "end": int(idx[s["end"]])}
                             for s in _segments(ls, 0, int(sid))]  # fmt: skip
        if "fallback" in inf:
            log.warning("source %d: the pose network makes its poses (Algorithm 2 without metric poses): %s", sid,
                        inf["fallback"])  # fmt: skip
        else:
            used = [m for m in inf["models"] if m.get("used")]
            log.info("source %d: %d of %d frames with metric SfM poses (%d registered of %d given); Sim(3) to GPS: "
                     "%s", sid, inf["metric_frames"], len(idx), inf["registered"], inf["tried"],
                     ", ".join(f"scale {m['scale']:.4g} +- {m['scale_rel_sigma']:.1%}, residual RMS "
                               f"{m['residual_rms_m']:.2f} m" + (f"; {w}" if (w := track_turn_words(m)) else "")
                               for m in used))  # fmt: skip
    info["metric_frames"] = int((label != POSENET).sum())
    info["frames"] = N
    return MetricPoses(T, label, points, info)


def compute_metric_poses(
    ds: Any,
    trajectory_cfg: Any = None,
    cfg: MetricPosesConfig | None = None,
    *,
    progress: bool = False,
) -> MetricPoses:
    """:func:`metric_poses_from_sfm` for a :class:`~pose2rgbd.dataset.format.Dataset` with GPS poses: COLMAP on
    each source's frames at the dataset's resolution and intrinsics, aligned to the dataset's camera positions."""
    from pose2rgbd.methods.selfsup_depth.sfm import colmap_poses
    from pose2rgbd.methods.selfsup_depth.trajectory import TrajectoryConfig

    tcfg = trajectory_cfg or TrajectoryConfig(backend="colmap")
    f = ds.frames
    runs: dict[int, Any] = {}
    for sid in np.unique(f.source_id):
        idx = np.flatnonzero(f.source_id == sid)
        try:
            runs[int(sid)] = colmap_poses(ds.read_rgb, idx, ds.camera.K, tcfg, progress=progress)
        except ConfigError as e:  # too few frames registered: the pose network takes over (reported)
            runs[int(sid)] = e
    return metric_poses_from_sfm(runs, f.translation, f.source_id, cfg, colmap_every=tcfg.colmap_every)


def auto_unit(mp: MetricPoses, target_units: float = 10.0) -> float:
    """Metres per network depth unit such that the median depth of the triangulated points is ``target_units``
    (inside the network's min_depth .. max_depth); from the metric camera heights above the lowest camera when
    there are no points; 1.0 when neither is known."""
    if mp.points:
        z = np.concatenate([p[:, 2] for p in mp.points.values()])
        z = z[np.isfinite(z) & (z > 0)]
        if len(z):
            return float(np.median(z)) / target_units
    return 1.0


def training_pairs(
    mp: MetricPoses,
    centres: np.ndarray,
    stride: int,
    K: np.ndarray,
    size_wh: tuple[int, int],
    unit_m: float,
) -> tuple[dict[tuple[int, int], np.ndarray], dict[int, np.ndarray]]:
    """The inputs of fixed-pose training: ``T_source_target`` (network units: metres / ``unit_m``) of every
    ``(target, target +- stride)`` pair whose frames both have metric poses, and per target frame its triangulated
    points as (P, 4) pixel x, y at the training size (intrinsics ``K``), depth in network units and weight."""
    fixed: dict[tuple[int, int], np.ndarray] = {}
    sparse: dict[int, np.ndarray] = {}
    ok = mp.ok
    W, H = size_wh
    for c in (int(x) for x in centres):
        for s in (c - stride, c + stride):
            if ok[c] and ok[s]:
                T = np.linalg.inv(mp.T_world_cam[s]) @ mp.T_world_cam[c]
                T[:3, 3] /= unit_m
                fixed[(c, s)] = T
        p = mp.points.get(c)
        if p is not None and len(p):
            uv = p[:, :3] @ np.asarray(K, np.float64).T
            uv = uv[:, :2] / uv[:, 2:]
            inside = (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
            if inside.any():
                sparse[c] = np.concatenate([uv[inside], p[inside, 2:3] / unit_m, p[inside, 3:4]], 1)
    return fixed, sparse
