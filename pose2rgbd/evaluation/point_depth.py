"""Depth scored against points triangulated among the test frames themselves: a yardstick that does not come from
the dataset's depth.

A video converted with estimated depth (``convert video --depth selfsup | mvs | selfsup+mvs``) has no measured
depth. Its depth columns score a render against a network's (or a stereo matcher's) per-frame output, which
copying a training frame's depth from the same source matches best whether or not either is right. The test
frames' own images and poses give an answer of their own where they see the same texture: SIFT keypoints of each
test frame, matched with every other test frame, kept where they agree with the known poses and
triangulated (:func:`pose2rgbd.placemap.triangulate.triangulate`: the known-poses case of structure from motion,
no pose estimated). A test frame's keypoints that got a point give pixels with a depth along its optical z; a
render is scored at those pixels (the nearest pixel at the evaluation size).

What it is and is not: sparse (textured surfaces only, none on sky or blank walls), as good as the poses (the
same poses the renders are made at) and the matches (a keypoint's point is the median of its pairs'
triangulations, each within 3 px of both keypoints and seen under at least :data:`MIN_PARALLAX_DEG`, kept only
when at least :data:`MIN_SUPPORT` of them agree within :data:`MAX_SPREAD` of its range). It is not used for
training or for choosing a checkpoint: only the test frames' images make it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from pose2rgbd.dataset import Dataset
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.coverage import median_depth_weight
from pose2rgbd.geometry.transforms import inverse, transform_points
from pose2rgbd.placemap.features import FeatureConfig, extract
from pose2rgbd.placemap.triangulate import triangulate
from pose2rgbd.progress import bar

ESTIMATED_DEPTH_SOURCES = ("selfsup-depth", "mvs", "selfsup+mvs")  # manifest extra.depth.source
MIN_PARALLAX_DEG = 3.0  # each pair's triangulation; 1 px of matching error is then at most ~25 % of the depth
MIN_SUPPORT = 3  # accepted pair triangulations a keypoint's point needs
MAX_SPREAD = 0.05  # their median distance from the point, as a fraction of its distance from the camera
CHECK_BLOCK = 32  # frames triangulated together by dataset_depth_at_points: a route split's held-out block of a clip
# dataset_depth_at_points: a median relative error above this is called far. A guide from one clip: hero7's depth
# after about 100 steps of Algorithm 2's network was at 0.11-0.13, and the renderer missed targets on it; after 225 to
# 739 steps at 0.065-0.086 (docs/results.md, "hero7 on a CPU with AVX2 alone"); the simulator's true depth at 0.034
CHECK_WARN_RELATIVE = 0.1


def estimated_depth_source(ds: Dataset) -> str | None:
    """The method that estimated the dataset's depth (``convert video --depth``), or None for measured depth or a
    dataset that does not say."""
    depth = ds.manifest.extra.get("depth") if isinstance(ds.manifest.extra, dict) else None
    src = depth.get("source") if isinstance(depth, dict) else None
    return src if isinstance(src, str) and src in ESTIMATED_DEPTH_SOURCES else None


@dataclass
class FramePoints:
    """The triangulated points of the test frames, per frame: pixels at the evaluation size and depth in metres."""

    uv: dict[int, np.ndarray]  # dataset row -> (P, 2) int64 (column, row)
    z: dict[int, np.ndarray]  # dataset row -> (P,) float64 metres along the optical z
    frames: int  # test frames triangulated (also those that got no point)

    @property
    def count(self) -> int:
        return sum(len(z) for z in self.z.values())

    def count_within(self, max_depth: float) -> int:
        """The points at most ``max_depth`` deep: those a render is scored at (:func:`depth_at_frame_points`)."""
        return sum(int((z <= max_depth).sum()) for z in self.z.values())

    def describe(self, max_depth: float = np.inf, unit: str = "m") -> str:
        """For metrics.md: how many points, of how many frames; where some lie beyond ``max_depth`` (the model's
        depth range), how many are scored: the rest is left out, so a deeper scene is scored at its near part."""
        with_points = sum(1 for z in self.z.values() if len(z))
        text = (
            f"{self.count} keypoints of {with_points} of the {self.frames} test frames triangulated among the test "
            "frames themselves (SIFT matches checked against the known poses; not the dataset's depth)"
        )
        within = self.count_within(max_depth)
        if self.count and within < self.count:
            text += (
                f"; {within} of them ({100 * within / self.count:.0f} %) within the model's depth range (up to "
                f"{max_depth:.1f} {unit}) are scored, the farther ones left out: the columns at points score the near "
                "part of the scene"
            )
        return text


def triangulate_test_frames(
    ds: Dataset,
    frames: np.ndarray,
    T_world_cam: np.ndarray,
    camera: PinholeCamera,
    *,
    rot_weight_m: float,
    neighbours: int = 0,
    min_parallax_deg: float = MIN_PARALLAX_DEG,
    min_support: int = MIN_SUPPORT,
    max_spread: float = MAX_SPREAD,
    features: FeatureConfig | None = None,
    progress: bool = False,
) -> FramePoints:
    """Triangulate the keypoints of the test ``frames`` (dataset rows) among themselves, from the dataset's images
    at their own size with their poses ``T_world_cam`` (``(N, 4, 4)``, row i for ``frames[i]``). Each accepted
    keypoint's point is projected into its frame with ``camera`` (the evaluation size's intrinsics): the pixel a
    render is scored at and the point's depth along the optical z. ``neighbours``: test frames each is matched
    with, nearest in pose first (0: all of them: a held-out block's wide baselines are what make far points
    precise); the other settings as :func:`~pose2rgbd.placemap.triangulate.triangulate`'s."""
    frames = np.asarray(frames, np.int64)
    T_world_cam = np.asarray(T_world_cam, np.float64)
    if T_world_cam.shape != (len(frames), 4, 4):
        raise ValueError(f"T_world_cam must be ({len(frames)}, 4, 4), one pose per frame, got {T_world_cam.shape}")
    cfg = features or FeatureConfig()
    xy: list[np.ndarray] = []
    desc: list[np.ndarray] = []
    with bar(total=len(frames), progress=progress, desc="test-frame keypoints", unit="frame", leave=False) as pbar:
        for i in frames:
            f = extract(ds.read_rgb(int(i)), cfg)
            xy.append(f.xy)
            desc.append(f.desc)
            pbar.update(1)
    offsets = np.r_[0, np.cumsum([len(a) for a in xy])].astype(np.int64)
    uv_out: dict[int, np.ndarray] = {}
    z_out: dict[int, np.ndarray] = {}
    if len(frames) < 2 or offsets[-1] == 0:
        return FramePoints({int(i): np.zeros((0, 2), np.int64) for i in frames},
                          {int(i): np.zeros(0) for i in frames}, len(frames))  # fmt: skip
    X = triangulate(
        offsets, np.concatenate(xy), np.concatenate(desc), T_world_cam, ds.camera.K,
        neighbours=len(frames) - 1 if neighbours <= 0 else min(neighbours, len(frames) - 1), rot_weight_m=rot_weight_m,
        min_parallax_deg=min_parallax_deg, min_support=min_support, max_spread=max_spread,
    )  # fmt: skip
    for n, i in enumerate(frames):
        pts = X[offsets[n] : offsets[n + 1]].astype(np.float64)
        pts = pts[np.isfinite(pts).all(axis=1)]
        pc = transform_points(inverse(T_world_cam[n]), pts)
        uv_f, z = camera.project(pc[pc[:, 2] > 0])
        uv = np.rint(uv_f).astype(np.int64)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < camera.width) & (uv[:, 1] >= 0) & (uv[:, 1] < camera.height)
        uv_out[int(i)], z_out[int(i)] = uv[inside], z[inside]
    return FramePoints(uv_out, z_out, len(frames))


def depth_at_frame_points(
    points: FramePoints, row: int, depth: np.ndarray, max_depth: float = np.inf
) -> tuple[np.ndarray, np.ndarray, int]:
    """A depth map ``depth`` (H, W) of dataset row ``row`` read at that frame's points: ``(depth, the points'
    depth)`` where it is finite and positive, among the points within ``max_depth``, and how many of those it has no
    depth at (sky, a hole)."""
    uv, z = points.uv.get(int(row)), points.z.get(int(row))
    if uv is None or z is None or not len(z):
        return np.zeros(0), np.zeros(0), 0
    d = np.asarray(depth[uv[:, 1], uv[:, 0]], np.float64)
    scored = z <= max_depth
    have = scored & np.isfinite(d) & (d > 0)
    return d[have], z[have], int((scored & ~have).sum())


class PointDepthAccumulator:
    """Depth errors of renders at the test frames' triangulated points (:class:`FramePoints`), batch by batch.

    Keys of :meth:`result`: ``point_depth_mae`` and ``point_depth_absrel`` (over the points within ``max_depth``
    where the render has a finite depth), ``point_depth_points`` (how many), ``point_depth_missing_fraction``
    (points within range the render gave no finite depth: sky, a hole)."""

    def __init__(self, points: FramePoints, max_depth: float = np.inf) -> None:
        self.points, self.max_depth = points, float(max_depth)
        self.abs = self.rel = 0.0
        self.n = self.missing = 0

    def add(self, frames: np.ndarray, pred_depth: np.ndarray | None) -> None:
        """``frames`` (B,) dataset rows; ``pred_depth`` (B, H, W) metres at the evaluation size (None: no depth)."""
        if pred_depth is None:
            return
        for b, i in enumerate(np.asarray(frames, np.int64)):
            d, z, missing = depth_at_frame_points(self.points, int(i), pred_depth[b], self.max_depth)
            err = np.abs(d - z)
            self.abs += float(err.sum())
            self.rel += float((err / z).sum())
            self.n += len(z)
            self.missing += missing

    def result(self) -> dict[str, float]:
        total = self.n + self.missing
        return {
            "point_depth_mae": self.abs / self.n if self.n else math.nan,
            "point_depth_absrel": self.rel / self.n if self.n else math.nan,
            "point_depth_points": float(self.n),
            "point_depth_missing_fraction": self.missing / total if total else math.nan,
        }


@dataclass
class DepthAtPoints:
    """:func:`dataset_depth_at_points`: a dataset's own depth at points triangulated among runs of its frames."""

    points: int  # points whose pixel has a finite depth (the ones scored)
    missing_fraction: float  # points whose pixel has no finite depth (sky, a hole), of all points
    absrel: float  # mean |depth - point| / point (NaN without points): a few wrong near points can dominate it
    median_relative: float  # median |depth - point| / point: what the check judges by (NaN without points)
    median_ratio: float  # median depth / point: the depth's scale against the poses' (NaN without points)
    relative_per_run: list[float | None]  # median relative error per run of frames, in order (None: no point)
    runs: int
    frames_with_points: int
    block: int  # frames per run asked for

    @property
    def far(self) -> bool:
        """The depth is further from the points than :data:`CHECK_WARN_RELATIVE` (median relative error)."""
        return self.points > 0 and self.median_relative > CHECK_WARN_RELATIVE

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        if not self.points:
            return (f"no point triangulated among runs of {self.block} frames (too little texture or parallax): "
                    "the depth could not be checked against the images")  # fmt: skip
        return (
            f"the depth at {self.points} points triangulated among runs of {self.block} consecutive frames "
            f"({self.frames_with_points} frames, {self.runs} runs; SIFT matches checked against the poses): median "
            f"relative error {self.median_relative:.3f}, depth / point "
            f"{self.median_ratio:.3f} (median), no depth at "
            f"{self.missing_fraction:.1%} of them"
        )


def dataset_depth_at_points(ds: Dataset, *, block: int = CHECK_BLOCK, progress: bool = False) -> DepthAtPoints:
    """The dataset's own depth against points triangulated among its frames: each source's frames in time order are
    cut into runs of about ``block`` consecutive frames, each run triangulated among itself as a held-out block is
    (:func:`triangulate_test_frames` at the dataset's own size), and the depth read at each point's pixel.

    For depth estimated from the video (``convert video --depth``), a check that does not come from the estimate:
    the same images and poses, but keypoints matched across views instead of a network's or a stereo matcher's
    output. Sparse like the evaluation's points: textured surfaces only, as good as the poses."""
    f = ds.frames
    runs: list[np.ndarray] = []
    for sid in np.unique(f.source_id):
        rows = np.flatnonzero(f.source_id == sid)
        rows = rows[np.argsort(f.stamp_ns[rows], kind="stable")]
        runs.extend(r for r in np.array_split(rows, max(1, round(len(rows) / max(1, block)))) if len(r) >= 2)
    sample = np.linspace(0, len(ds) - 1, min(len(ds), 50)).round().astype(int)
    weight = median_depth_weight(ds.read_depth(int(i)) for i in np.unique(sample))
    T = np.asarray(f.T_world_cam, np.float64)
    rel: list[np.ndarray] = []
    ratio: list[np.ndarray] = []
    per_run: list[float | None] = []
    missing = 0
    with_points = 0
    with bar(total=len(runs), progress=progress, desc="depth at triangulated points", unit="run", leave=False) as pb:
        for rows in runs:
            pts = triangulate_test_frames(ds, rows, T[rows], ds.camera, rot_weight_m=weight)
            run_rel = []
            for i in rows:
                if not len(pts.z[int(i)]):
                    continue
                with_points += 1
                d, z, lost = depth_at_frame_points(pts, int(i), ds.read_depth(int(i)))
                missing += lost
                run_rel.append(np.abs(d - z) / z)
                ratio.append(d / z)
            r = np.concatenate(run_rel) if run_rel else np.zeros(0)
            per_run.append(float(np.median(r)) if r.size else None)
            rel.append(r)
            pb.update(1)
    all_rel = np.concatenate(rel) if rel else np.zeros(0)
    all_ratio = np.concatenate(ratio) if ratio else np.zeros(0)
    n = int(all_rel.size)
    return DepthAtPoints(
        points=n,
        missing_fraction=missing / (n + missing) if n + missing else float("nan"),
        absrel=float(all_rel.mean()) if n else float("nan"),
        median_relative=float(np.median(all_rel)) if n else float("nan"),
        median_ratio=float(np.median(all_ratio)) if n else float("nan"),
        relative_per_run=per_run,
        runs=len(runs),
        frames_with_points=with_points,
        block=int(block),
    )
