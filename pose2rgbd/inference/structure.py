"""The structure localizer: image -> camera pose against a place map, or an honest "no fix" with its reason.

Per query image (uint8 RGB or grey, any size; the camera is the map's scaled to the image unless given, with a
warning; a given camera with lens distortion has its keypoints undistorted, :mod:`.query_camera`):

1. **Local features**: SIFT (:mod:`pose2rgbd.placemap.features`), at most ``features.max_features`` (750: the
   map's keyframes hold about 600 each; more query features cost SIFT descriptors and matching time, not fixes).
2. **Candidate keyframes**: with a *pose prior* -- the previous fix of a sequence -- the ``prior_candidates``
   keyframes most similar by the global descriptor among the ``3 x candidates`` nearest to it in pose distance;
   with a *position prior* -- GPS / odometry, PoseGAN's estimate -- the keyframes within
   ``prior_radius_m``, the ``prior_candidates`` most similar by the global descriptor; without one (or when the
   prior's candidates give no decisive fix), the keyframes most similar by the global descriptor
   (:mod:`pose2rgbd.placemap.place`), grouped into places (keyframes within ``place_radius_m`` of the best one), each
   place widened by its spatial neighbours. A sequence's fix that the calibration's gate flags (step 6) is solved
   again without the previous fix, and the answer without a flag (else the one with more inliers) is kept: the
   previous fix's nearest keyframes need not reach an image taken seconds later on a map of a video.
3. **2-D/3-D correspondences**: the query's RootSIFT matched to each candidate keyframe with the ratio test, all
   candidates in one matrix product (:mod:`.structure_match`); the keyframe's features carry world points (lifted
   from its depth or triangulated at build time); with ``ratio_all_features`` the ratio test sees all of a
   keyframe's features, and a match to one without a point gives no correspondence.
4. **Absolute pose**: pycolmap's ``estimate_and_refine_absolute_pose`` -- P3P in LO-RANSAC, then a Levenberg-
   Marquardt refinement of the inliers' reprojection error with a robust loss. Chosen over OpenCV's
   ``solvePnPRansac`` (USAC) because it does the local optimization and the non-linear refinement in one call and
   its RANSAC is seeded (reproducible).
5. **Verification**: a fix needs ``min_inliers`` distinct query keypoints as inliers, an inlier share of
   ``min_inlier_ratio``, inliers spread over ``min_spread`` of the image (bounding box), a pose near the map's
   keyframes that gave the inliers and looking at the inlier points from about where those keyframes did (the
   median angle between the two rays at most ``max_view_angle_deg``: SIFT does not match across larger viewpoint
   changes, so a wrong pose that reprojects a few points fails it), and no second place of comparable support
   (``ambiguity_ratio``; a loose prior's fix -- a learned model's guess -- or a marginal one is compared with what
   place recognition finds; a group whose pose was rejected but lies within ``place_radius_m`` of the fix is the
   same place, not a rival); otherwise
   the answer is "no fix" and why (``too few matches``, ``too few inliers``, ``inliers bunched``, ``ambiguous
   place``, ``inconsistent viewpoint``, ``far from the prior``, ...).
6. **Covariance** from the solution's information: ``sigma^2 (J^T J)^-1`` of the inliers' reprojection residuals
   with respect to the camera position (world axes, metres) and a rotation about the world axes (radians) --
   the ``geometry_msgs/PoseWithCovariance`` convention -- with ``sigma^2`` the inliers' residual variance
   (at least ``min_sigma_px^2``), **calibrated** by default with what ``map build`` fitted on the map's own
   held-out keyframes (stored in the map; a ``localize calibrate`` file overrides it): the covariance scale, the
   out-of-distribution gate (a fix beyond the map's coverage or of weak geometry is flagged -- its covariance
   inflated -- or refused, ``ood_policy``) and the **confidence** ``P(position error < bound_m)``
   (:mod:`pose2rgbd.inference.structure_calibration`). A map without a calibration gives the raw information
   covariance and the score ``1 - exp(-inliers / confident_inliers)``.
7. **Query size**: a query larger than the map's images is scaled down to their pixel count first (``fit_to_map``;
   its intrinsics with it): SIFT at the map's resolution matches the map's features best and costs far less.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.lens import QueryCamera
from pose2rgbd.inference.calibration import Calibration
from pose2rgbd.inference.focal_check import FocalCheck, focal_scale
from pose2rgbd.inference.query_camera import GIVE_CAMERA, QueryGeometry, query_geometry, unknown_camera_warning
from pose2rgbd.inference.structure_calibration import finish_fix, flag_fix, map_calibration
from pose2rgbd.inference.structure_calibration import information_covariance as information_covariance
from pose2rgbd.inference.structure_fix import Fix
from pose2rgbd.inference.structure_match import CandidateMatcher, StructureMap
from pose2rgbd.placemap.features import FeatureConfig, ImageFeatures, extract, root_sift
from pose2rgbd.placemap.format import MapError, stated_pose_error
from pose2rgbd.placemap.keyframe_map import has_local_features, keyframes_digest

if TYPE_CHECKING:
    from pose2rgbd.inference.localize import LocalizeResult

log = logging.getLogger(__name__)

NO_FIX_REASONS = (
    "too few features",
    "no candidate keyframes",
    "too few matches",
    "pose not found",
    "too few inliers",
    "inliers bunched",
    "far from the keyframes",
    "inconsistent viewpoint",
    "ambiguous place",
    "far from the prior",
    "out of distribution",
)
OOD_POLICIES = ("flag", "refuse")


@dataclass
class StructureConfig:
    """The structure localizer (matching a query image against a place map)."""

    features: FeatureConfig = field(
        default_factory=lambda: FeatureConfig(max_features=750), metadata={"help": "query SIFT features"}
    )
    candidates: int = ranged_field(10, "keyframes matched per place (the best by similarity and nearness)", 1, 200)
    prior_candidates: int = ranged_field(
        6,
        "with a prior: keyframes matched, the most similar to the query (place recognition) among those near the "
        "prior (a pose prior, the previous fix of a sequence: the 3 x candidates nearest to it in pose, at least "
        "prior_candidates; a position prior: those within its radius)",
        1,
        200,
    )
    retrieval_top: int = ranged_field(20, "without a prior: the most similar keyframes grouped into places", 1, 1000)

    max_places: int = ranged_field(3, "without a prior: at most this many places tried", 1, 50)
    place_radius_m: float = ranged_field(
        40.0, "keyframes within this of a place's best keyframe belong to it", 0.1, 1e5
    )
    prior_radius_m: float = ranged_field(
        40.0, "a position prior (GPS): its candidates are the keyframes within this distance", 0.1, 1e5
    )
    ratio: float = ranged_field(0.8, "Lowe's ratio test of the matching", 0.3, 1.0)
    ratio_all_features: bool = help_field(
        False,
        "the ratio test against every feature of a keyframe, also those without a world point (a triangulated map: "
        "cleaner correspondences, more fixes of unordered photos; fewer correspondences on a small sequence map)",
    )
    max_error_px: float = ranged_field(
        4.0, "RANSAC inlier threshold, pixels at a 256-pixel-wide image (scaled with the query width)", 0.5, 100.0
    )
    ransac_trials: int = ranged_field(2000, "RANSAC: at most this many trials", 50, 1000000)
    min_inliers: int = ranged_field(20, "verification: at least this many distinct inlier keypoints", 4, 100000)
    min_inlier_ratio: float = ranged_field(0.15, "verification: inliers / correspondences at least this", 0.0, 1.0)
    min_spread: float = ranged_field(
        0.13,
        "verification: the inliers' bounding box covers at least this share of the image (from a small patch a "
        "sideways shift and a rotation of the camera explain the points about as well: the pose is barely fixed)",
        0.0,
        1.0,
    )
    max_keyframe_distance_m: float = ranged_field(
        0.0,
        "verification: the pose lies within this of a keyframe that gave inliers (0: 3 x the map's rotation weight, "
        "about three scene depths)",
        0.0,
        1e6,
    )
    max_view_angle_deg: float = ranged_field(
        40.0,
        "verification: the median angle between the query's and the keyframes' rays to the inlier points at most "
        "this (SIFT matches do not survive larger viewpoint changes; a wrong pose fails it)",
        1.0,
        180.0,
    )
    ambiguity_ratio: float = ranged_field(
        0.7, "verification: no fix when another place has at least this share of the best place's inliers", 0.0, 1.0
    )
    confident_inliers: float = ranged_field(
        50.0, "a map without a calibration: confidence = 1 - exp(-inliers / this)", 1.0, 1e5
    )
    ood_policy: str = help_field(
        "flag", "a fix the calibration's gate puts out of distribution (beyond the map's coverage, weak geometry): "
        "flag (published with its reason and an inflated covariance) | refuse (no fix)"
    )  # fmt: skip
    ood_covariance_scale: float = ranged_field(
        100.0, "multiply the covariance of a flagged fix by this (variance; 100 = 10x in standard deviation)", 1.0, 1e12
    )
    fit_to_map: bool = help_field(
        True, "scale a query with more pixels than the map's images down to their pixel count (intrinsics with it)"
    )
    min_sigma_px: float = ranged_field(0.5, "covariance: reprojection noise floor, pixels", 0.01, 100.0)
    map_pose_error: bool = help_field(
        True, "add the map's own pose error (its dataset's pose_error: a recording's GPS receiver's reported "
        "covariance) to every fix's covariance, so it says how far the fix may lie from the true pose, not only from "
        "where the map puts the view (false: the map-relative covariance, as a check against the map's own poses uses)"
    )  # fmt: skip
    use_previous_fix: bool = help_field(
        True, "a sequence: the previous fix is the next image's prior (until max_misses images without a fix)"
    )
    max_misses: int = ranged_field(3, "forget the previous fix after this many images without one", 0, 1000)
    sequence_retry_confidence: float = ranged_field(
        0.5,
        "a fix from the previous fix's keyframes that the calibration flags, or whose confidence is below this (a "
        "calibrated map), is solved again without them, the better answer kept: they need not reach this image",
        0.0,
        1.0,
    )
    focal_tolerance: float = ranged_field(
        0.05,
        "the queries' camera: once the median of the last fixes' matches fits focal lengths further than this from "
        "the given ones (a share: 0.05 = 5 %), it is named in a warning and every fix made with it is flagged out "
        "of distribution (a wrong focal length moves fixes metres at small sigmas); 0: not checked",
        0.0,
        1.0,
    )
    seed: int = help_field(0, "RANSAC seed (reproducible fixes)")

    def __post_init__(self) -> None:
        if self.ood_policy not in OOD_POLICIES:
            raise ConfigError(f"ood_policy {self.ood_policy!r}: use {' or '.join(OOD_POLICIES)}")

    @property
    def prior_pool(self) -> int:
        """How many keyframes nearest to a pose prior its candidates are chosen from: ``3 x candidates``, at least
        ``prior_candidates``."""
        return max(3 * self.candidates, self.prior_candidates)


def calibration_map_mismatch(cal: Calibration, place_map: StructureMap) -> str:
    """Why ``cal`` (a ``localize calibrate`` file) does not fit ``place_map``: fitted against a map of other
    keyframes (its ``source.map_keyframes_digest``, :func:`~pose2rgbd.placemap.keyframe_map.keyframes_digest`;
    files without one, and maps in memory, are not checked); "" where it fits. Its gate and scales are in units of
    that map's keyframe spacing and errors: on another map fixes are flagged or passed, and their covariance
    scaled, by the other map's measure."""
    from pose2rgbd.placemap.place_map import PlaceMap  # here: the map package imports the localizer

    fitted = str(cal.source.get("map_keyframes_digest", ""))
    if not fitted or not isinstance(place_map, PlaceMap):
        return ""
    here = keyframes_digest(place_map.manifest)
    if fitted == here:
        return ""
    on = cal.source.get("map", "another map")
    return (
        f"the calibration was fitted against the map {on} (keyframes {fitted[:16]}), not this map {place_map.path} "
        f"(keyframes {here[:16]}): its covariance scales and out-of-distribution gate are that map's, "
        f"and fixes here are flagged and scaled by them. Fit one for this map: `pose2rgbd localize calibrate --map "
        f"{place_map.path} --dataset D`, or leave the calibration out to use the map's own"
    )


def _better_fix(a: Fix, b: Fix) -> bool:
    """Whether fix ``a`` is the better answer than ``b`` for one image: a fix without a flag before a flagged one;
    of two without, the higher confidence (both calibrated); of two flagged, more inliers."""
    if bool(a.flag) != bool(b.flag):
        return not a.flag
    if a.flag:
        return a.inliers > b.inliers
    return a.confidence > b.confidence


@dataclass
class Prior:
    """What is known of a query's pose before matching: a full pose, or only a position (``T`` with ``R`` = NaN)."""

    position: np.ndarray  # (3,) world metres
    T_world_cam: np.ndarray | None = None  # (4, 4) when the orientation is known too
    radius_m: float = 0.0  # search radius (0: the localizer's prior_radius_m)
    source: str = ""  # sequence | gps | odometry | posegan | ...
    keyframes: np.ndarray | None = None  # a pose prior's nearby keyframes where already known (a sequence's), ranked
    # by similarity to each query into its candidates

    @classmethod
    def from_pose(cls, T_world_cam: np.ndarray, source: str, radius_m: float = 0.0) -> Prior:
        T = np.asarray(T_world_cam, np.float64)
        return cls(T[:3, 3].copy(), T.copy(), radius_m, source)


class _LazySims:
    """The query's place-recognition similarity to every keyframe, computed on first use (an image whose features
    are too few needs none)."""

    def __init__(self, place_map: StructureMap, img: np.ndarray, desc: np.ndarray) -> None:
        self.map, self.img, self.desc = place_map, img, desc
        self._v: np.ndarray | None = None

    def __call__(self) -> np.ndarray:
        if self._v is None:
            self._v = self.map.global_desc @ self.map.describer.describe(self.img, self.desc)
        return self._v


def _nan_fix(
    reason: str,
    *,
    inliers: int = 0,
    correspondences: int = 0,
    keyframes: list[int] | None = None,
    prior: str = "",
    flag: str = "",
    hypothesis: np.ndarray | None = None,
) -> Fix:
    """No fix, for ``reason``, with what was found on the way (``hypothesis``: the rejected pose, where RANSAC
    found one)."""
    return Fix(False, reason, np.full((4, 4), np.nan), np.full((6, 6), np.nan), 0.0, inliers=inliers,
               correspondences=correspondences, keyframes=keyframes or [], prior=prior, flag=flag,
               hypothesis=hypothesis)  # fmt: skip


class StructureLocalizer:
    """Localize images against a :class:`~pose2rgbd.placemap.PlaceMap` (see the module docstring). Thread-safe;
    stateful only through the previous fix of a sequence (:meth:`reset` forgets it)."""

    kind = "structure"

    def __init__(
        self, place_map: StructureMap, cfg: StructureConfig | None = None, camera: PinholeCamera | None = None
    ) -> None:
        if not has_local_features(dict(place_map.manifest)):
            raise MapError(
                f"{place_map.path}: a keyframe map (posed RGB-D keyframes, as a hybrid model reads them) holds no "
                "local features: nothing the structure localizer can match. Give a map built for localization, "
                "`pose2rgbd map build` of its dataset"
            )
        self.map = place_map
        self.cfg = cfg or StructureConfig()
        self.query_camera = camera  # None: the map's camera scaled to each image
        self.query_intrinsics: tuple[float, float, float, float] | None = None  # fx, fy, cx, cy at the image's size
        self.camera_expected = ""  # where query_intrinsics will come from (a CameraInfo topic): no warning until then
        self.query_lens: QueryCamera | None = None  # the images' camera with its distortion (wins over the above)
        self._geometry: dict[tuple[int, int], QueryGeometry] = {}  # per query size, for the three above (as set)
        self._geometry_of_camera: tuple[object, ...] = (None, None, None)
        self.use_exif = False  # localize images --camera exif: each photo's focal length from its EXIF
        self._warned_camera = False
        self.camera = camera or place_map.camera(0)
        self.world_frame = place_map.world_frame
        self.positions = place_map.positions  # (N, 3) the keyframes' (verification)
        self._lock = threading.RLock()
        # a sequence: the last fix and its candidate keyframes for the next image (the nearest to it in pose)
        self._last: np.ndarray | None = None
        self._last_keyframes: np.ndarray | None = None
        self._misses = 0
        self.last_view_angle_deg = math.nan  # of the last pose that reached the viewpoint check (diagnostics)
        # a learned localizer's estimate as the last prior (structure_load.PriorFromModel)
        self.prior_model: Callable[[np.ndarray], Prior | None] | None = None
        self.stats = {"calls": 0, "frames": 0, "fixes": 0, "sequence_retries": 0}
        # the map's own calibration (map build) unless a file replaces it (use_calibration)
        self.calibration: Calibration | None = map_calibration(place_map)
        self.calibration_source = "map" if self.calibration is not None else "none"
        # the map's own poses' error (horizontal, vertical m), added to every fix's covariance (map_pose_error)
        self.map_pose_error = stated_pose_error(place_map.manifest) if self.cfg.map_pose_error else None
        mk = self.cfg.max_keyframe_distance_m
        self.max_kf_distance = mk if mk > 0 else 3.0 * float(place_map.poses.rot_weight_m)
        self.matcher = CandidateMatcher(place_map, all_features=self.cfg.ratio_all_features)
        self.focal = FocalCheck(self.cfg.focal_tolerance)  # whether the queries' camera fits their matches

    @property
    def input_hw(self) -> tuple[int, int]:
        """The map's image size (queries of any size are accepted; this is what a node fits images to)."""
        return self.map.image_hw

    def use_calibration(self, cal: Calibration, source: str = "file") -> None:
        """Calibrate the fixes with ``cal`` (a ``localize calibrate`` file) instead of the map's own; a warning
        where the file was fitted against another map (:func:`calibration_map_mismatch`)."""
        self.calibration, self.calibration_source = cal, source
        mismatch = calibration_map_mismatch(cal, self.map)
        if mismatch:
            log.warning(mismatch)

    def reset(self) -> None:
        """Forget the previous fix (a new sequence starts)."""
        with self._lock:
            self._last, self._last_keyframes, self._misses = None, None, 0

    # ------------------------------------------------------------------ API
    def localize(self, images: np.ndarray, priors: list[Prior | None] | None = None) -> LocalizeResult:
        """A batch ``(N, H, W, 3)`` (or one image) -> a :class:`~pose2rgbd.inference.localize.LocalizeResult`
        with ``fixes`` (NaN poses where there is none)."""
        from pose2rgbd.inference.localize import LocalizeResult

        t0 = time.perf_counter()
        a = np.asarray(images)
        if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3):  # one RGB or grey image
            a = a[None]
        fixes = [self.localize_one(a[k], None if priors is None else priors[k]) for k in range(len(a))]
        return LocalizeResult(
            np.stack([f.T_world_cam for f in fixes]),
            np.array([f.confidence for f in fixes], np.float32),
            time.perf_counter() - t0,
            fixes=fixes,
        )

    def localize_one(
        self, image: np.ndarray, prior: Prior | None = None, image_camera: PinholeCamera | None = None
    ) -> Fix:
        """One uint8 image (RGB or grey) -> :class:`Fix`. Candidates come first from the previous fix (a
        sequence), then from ``prior`` (GPS, odometry, PoseGAN), then from place recognition alone.
        ``image_camera``: this image's own intrinsics (its EXIF, :mod:`pose2rgbd.geometry.exif`), used when the
        queries' camera is not given -- before the map's camera and its warning."""
        t0 = time.perf_counter()
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim not in (2, 3):
            raise ConfigError(f"structure localizer: expected a uint8 (H, W[, 3]) image, got {img.dtype} {img.shape}")
        h, w = img.shape[:2]
        geo = self._geometry_of(w, h, image_camera)
        if geo.scale != 1.0:  # fit_to_map: SIFT at the map's resolution (the pose is the same: intrinsics scaled too)
            import cv2

            img = cv2.resize(img, geo.wh, interpolation=cv2.INTER_AREA)
        feats = extract(img, self.cfg.features)
        if geo.lens is not None:  # the pinhole coordinates of the keypoints (the map's keyframes are pinhole)
            feats = ImageFeatures(geo.lens.undistort_points(feats.xy, geo.K).astype(np.float32), feats.desc)
        with self._lock:
            last, near = (self._last, self._last_keyframes) if self.cfg.use_previous_fix else (None, None)
        priors = ([Prior.from_pose(last, "sequence")] if last is not None else []) + ([prior] if prior else [])
        if last is not None:
            priors[0].keyframes = near
        if self.prior_model is not None and not priors:
            learned = self.prior_model(img)
            priors += [learned] if learned is not None else []
        c = self.cfg
        fix = self._solve(img, feats, geo.camera, geo.wh, priors)
        if fix.ok:
            finish_fix(fix, self.calibration, self.map.poses, c.ood_covariance_scale, geo.K, c.min_sigma_px,
                       self.map_pose_error)  # fmt: skip
        doubtful = fix.confidence_bound_m > 0 and fix.confidence < c.sequence_retry_confidence  # calibrated only
        if fix.ok and fix.prior == "sequence" and (fix.flag or doubtful):
            # the previous fix's nearest keyframes need not reach this image (photos seconds apart on a map of a
            # video, whose keyframes lie centimetres apart), and a fix from them can be wrong by far more than its
            # covariance says (a GoPro clip's frames 1.4 m apart: 0.75 m off at a 5 cm sigma, 87 inliers, confidence
            # 0.15; solved without them 0.02 m off, 274 inliers, confidence 0.998): a sequence fix that the
            # calibration flags, or whose confidence is low, is solved again without it, and the better kept
            again = self._solve(img, feats, geo.camera, geo.wh, priors[1:])
            if again.ok:
                finish_fix(again, self.calibration, self.map.poses, c.ood_covariance_scale, geo.K, c.min_sigma_px,
                           self.map_pose_error)  # fmt: skip
                if _better_fix(again, fix):
                    log.debug("sequence fix (%s, %d inliers, confidence %.2f): kept the fix without it (%d inliers, "
                              "confidence %.2f)", fix.flag or "no flag", fix.inliers, fix.confidence, again.inliers,
                              again.confidence)  # fmt: skip
                    fix = again
            with self._lock:
                self.stats["sequence_retries"] += 1
        if fix.ok and c.focal_tolerance > 0 and fix.support is not None:
            self._check_focal(fix, geo, w, h)
        near = None
        if fix.ok:
            if fix.flag and c.ood_policy == "refuse":
                fix = _nan_fix("out of distribution", inliers=fix.inliers, correspondences=fix.correspondences,
                               keyframes=fix.keyframes, prior=fix.prior, flag=fix.flag)  # fmt: skip
            elif c.use_previous_fix:  # the next image's candidates: among the keyframes nearest to this fix in pose
                near = self.map.poses.nearest(fix.T_world_cam, c.prior_pool, quat_xyzw=fix.quat_xyzw)[0]
        fix.scale = geo.scale
        fix.seconds = time.perf_counter() - t0
        with self._lock:
            self.stats["calls"] += 1
            self.stats["frames"] += 1
            if fix.ok:
                self.stats["fixes"] += 1
                self._last, self._last_keyframes, self._misses = fix.T_world_cam.copy(), near, 0
            else:
                self._misses += 1
                if self._misses > self.cfg.max_misses:
                    self._last = None
        return fix

    # ------------------------------------------------------------------ internals
    def _check_focal(self, fix: Fix, geo: QueryGeometry, w: int, h: int) -> None:
        """Whether the queries' camera fits the fix's inliers (:mod:`pose2rgbd.inference.focal_check`): the fix
        flagged where it does not, and the camera named once in a warning with the focal length the matches fit."""
        assert fix.support is not None
        est = focal_scale(fix.T_world_cam, *fix.support, geo.K)
        fix.focal_scale = est.scale
        camera = (*(round(float(v), 3) for v in geo.K[[0, 1, 0, 1], [0, 1, 2, 2]]), *geo.wh)
        with self._lock:
            reason = self.focal.add(est, camera)
            first = self.focal.first_verdict()
            median, n = self.focal.median, len(self.focal.estimates)
        if reason:
            flag_fix(fix, reason, self.calibration, self.cfg.ood_covariance_scale)
        if first:
            fx, fy = geo.K[0, 0] * w / geo.wh[0], geo.K[1, 1] * h / geo.wh[1]  # at the image's size
            used = "the one given"
            if self._camera_unknown():
                used = (
                    "a photo's EXIF focal length (or, for a photo without one, the map's camera scaled to it)"
                    if self.use_exif
                    else "the map's camera scaled to the image, none being given"
                )
            log.warning(
                "the queries' camera does not fit their matches: the last %d fixes fit focal lengths %.2f x those of "
                "the camera used, %s (fx %.1f, fy %.1f px at %dx%d -> about %.1f, %.1f px); a wrong focal length "
                "moves a fix along its view by up to metres at small sigmas, so every fix made with this camera is "
                "flagged out of distribution. Give the images' own camera (%s, the node's camera parameter or a "
                "CameraInfo topic)",
                n, median, used, fx, fy, w, h, fx * median, fy * median, GIVE_CAMERA,
            )  # fmt: skip

    def _camera_unknown(self) -> bool:
        """No query camera set: the map's camera scaled to each image (or a photo's EXIF)."""
        return self.query_lens is None and self.query_intrinsics is None and self.query_camera is None

    def _geometry_of(self, w: int, h: int, image_camera: PinholeCamera | None = None) -> QueryGeometry:
        """The geometry of a ``w x h`` query (:func:`query_geometry`), kept per size while the query camera is the
        one it was made with (the same lens and camera objects, intrinsics of the same values: a node sets them
        from every CameraInfo). ``image_camera`` (a photo's own, from its EXIF) is used where no query camera is
        set, for that image only."""
        camera = (self.query_lens, self.query_intrinsics, self.query_camera)
        if image_camera is not None and self._camera_unknown():
            own = image_camera if (image_camera.width, image_camera.height) == (w, h) else image_camera.scaled(w, h)
            return query_geometry(w, h, lens=None, intrinsics=None, camera=own, map_camera=self.map.camera(0),
                                  map_hw=self.map.image_hw, fit_to_map=self.cfg.fit_to_map)  # fmt: skip
        lens, intrinsics, cam = self._geometry_of_camera
        if camera[0] is not lens or camera[1] != intrinsics or camera[2] is not cam:
            self._geometry, self._geometry_of_camera = {}, camera
        geo = self._geometry.get((w, h))
        if geo is not None:
            return geo
        geo = query_geometry(w, h, lens=self.query_lens, intrinsics=self.query_intrinsics, camera=self.query_camera,
                             map_camera=self.map.camera(0), map_hw=self.map.image_hw,
                             fit_to_map=self.cfg.fit_to_map)  # fmt: skip
        # warned once the map's camera is taken for the query (after the geometry: an image of another aspect
        # ratio is refused with its own message, and is not taken as the map's camera scaled)
        unknown = self._camera_unknown() and not self.camera_expected
        if unknown and not self._warned_camera and not self.use_exif:  # exif: its own
            self._warned_camera = True
            log.warning(unknown_camera_warning(self.map, w, h))
        self._geometry[(w, h)] = geo
        return geo

    def _solve(
        self, img: np.ndarray, feats: ImageFeatures, cam: PinholeCamera, wh: tuple[int, int], priors: list[Prior]
    ) -> Fix:
        c = self.cfg
        if len(feats.xy) < c.min_inliers:
            return _nan_fix("too few features")
        q_rs = root_sift(feats.desc)
        sims = _LazySims(self.map, img, feats.desc)  # place recognition only where it is needed
        tried: list[Fix] = []  # answers that are no fix (their best reason is the answer if nothing fixes)
        results: list[Fix] = []  # fixes and strong rival hypotheses, compared for ambiguity below
        for prior in priors:
            cand = self._prior_candidates(prior, sims)
            if not len(cand):
                continue
            f = self._place(q_rs, feats, cam, wh, cand)
            f.prior = prior.source
            radius = prior.radius_m or c.prior_radius_m
            if (
                f.ok
                and prior.T_world_cam is None
                and np.linalg.norm(f.T_world_cam[:3, 3] - prior.position) > 2 * radius
            ):
                f = _nan_fix("far from the prior", prior=prior.source, inliers=f.inliers)
            if not f.ok:
                tried.append(f)
                continue
            # a tight prior (a pose, or a position known to within a place) with decisive support is the answer; a
            # loose one (a learned model's guess) or a marginal fix is compared with what place recognition finds
            tight = prior.T_world_cam is not None or radius <= c.place_radius_m
            if tight and f.inliers >= 2 * c.min_inliers:
                return f
            results.append(f)
        for cand in self._places(sims())[: c.max_places]:
            f = self._place(q_rs, feats, cam, wh, cand)
            results.append(f)
            if f.ok and f.inliers >= 3 * c.min_inliers:
                break  # decisive: no other place of comparable support is plausible
        ok = [f for f in results if f.ok]
        if not ok:
            best = max(results + tried, key=lambda f: f.inliers, default=None)
            return best if best is not None else _nan_fix("no candidate keyframes")
        best = max(ok, key=lambda f: f.inliers)
        for f in results:
            if f is best or f.inliers < c.ambiguity_ratio * best.inliers or f.inliers < c.min_inliers:
                continue
            # the same place seen from two keyframe groups: a fix, or a rejected hypothesis (too few inliers for
            # a fix of its own), whose pose lies near the best one supports it rather than rivalling it
            T_f = f.T_world_cam if f.ok else f.hypothesis
            if T_f is not None and np.linalg.norm(T_f[:3, 3] - best.T_world_cam[:3, 3]) <= c.place_radius_m:
                continue
            return _nan_fix("ambiguous place", inliers=best.inliers, correspondences=best.correspondences)
        return best

    def _prior_candidates(self, prior: Prior, sims: _LazySims) -> np.ndarray:
        """The keyframes a prior's fix is matched against: the ``prior_candidates`` most similar to the query (place
        recognition, ``sims``) among those near the prior -- a pose prior's ``prior_pool`` nearest in pose (a
        sequence's previous fix keeps them, :attr:`Prior.keyframes`), a position prior's within its radius.

        Not simply the nearest in pose: on a real drone clip (karma, 320x180, 70 frames between the map's keyframes, in
        order) the 6 nearest to the previous fix gave decisive fixes (74-126 inliers) up to 3.3 m from the frames'
        poses, growing along a run of frames, at confidence 0.94-1.0; the most similar of the nearby ones give a
        median 0.108 m, at most 0.70 m, as the unordered localizer does (docs/results.md, "In order on a real clip")."""
        c = self.cfg
        if prior.keyframes is not None:
            near = prior.keyframes
        elif prior.T_world_cam is not None:
            near = self.map.poses.nearest(prior.T_world_cam, c.prior_pool)[0]
        else:
            near = self.map.poses.within(prior.position, prior.radius_m or c.prior_radius_m)
        if len(near) == 0:
            return np.asarray(near, np.int64)
        ranked: np.ndarray = near[np.argsort(-sims()[near], kind="stable")][: c.prior_candidates]
        return ranked

    def _places(self, sims: np.ndarray) -> list[np.ndarray]:
        """Groups of candidate keyframes, most similar place first."""
        c = self.cfg
        top = np.argsort(-sims, kind="stable")[: c.retrieval_top]
        pos = self.positions
        places, used = [], np.zeros(len(top), bool)
        for k in range(len(top)):
            if used[k]:
                continue
            d = np.linalg.norm(pos[top] - pos[top[k]], axis=1)
            members = (~used) & (d <= c.place_radius_m)
            used |= members
            # widen by the spatial neighbours of the place's best keyframe, ranked by similarity
            near = self.map.poses.nearest(self.map.T_world_cam[top[k]], 2 * c.candidates)[0]
            group = np.unique(np.concatenate([top[members], near]))
            places.append(group[np.argsort(-sims[group], kind="stable")][: c.candidates])
        return places

    def _place(
        self, q_rs: np.ndarray, feats: ImageFeatures, cam: PinholeCamera, wh: tuple[int, int], cand: np.ndarray
    ) -> Fix:
        from pose2rgbd.geometry.colmap_import import pycolmap

        c = self.cfg
        m = self.matcher.match(q_rs, cand, c.ratio)
        q, X, kf = m.query, m.xyz, m.keyframe
        n_corr = len(q)
        if n_corr == 0:
            return _nan_fix("too few matches", keyframes=[int(i) for i in cand])
        if n_corr < c.min_inliers:
            return _nan_fix("too few matches", correspondences=n_corr, keyframes=[int(i) for i in cand])
        x = feats.xy[q].astype(np.float64)
        camera = pycolmap.Camera(model="PINHOLE", width=wh[0], height=wh[1], params=[cam.fx, cam.fy, cam.cx, cam.cy])
        est = pycolmap.AbsolutePoseEstimationOptions()
        est.ransac.max_error = c.max_error_px * wh[0] / 256.0
        est.ransac.max_num_trials = c.ransac_trials
        est.ransac.min_inlier_ratio = 0.05
        est.ransac.random_seed = c.seed
        try:
            res = pycolmap.estimate_and_refine_absolute_pose(x, X, camera, est)
        except (RuntimeError, ValueError) as e:
            log.debug("absolute pose failed: %s", e)
            res = None
        if res is None:
            return _nan_fix("pose not found", correspondences=n_corr, keyframes=[int(i) for i in cand])
        T_cam_world = np.eye(4)
        T_cam_world[:3] = np.asarray(res["cam_from_world"].matrix())
        T = np.linalg.inv(T_cam_world)
        inl = np.asarray(res["inlier_mask"], bool)
        n_in = int(inl.sum())
        kfl = [int(i) for i in cand]
        if n_in < c.min_inliers or n_in < c.min_inlier_ratio * n_corr:
            return _nan_fix("too few inliers", inliers=n_in, correspondences=n_corr, keyframes=kfl, hypothesis=T)
        xi = x[inl]
        box = np.ptp(xi[:, 0]) * np.ptp(xi[:, 1]) / float(wh[0] * wh[1])
        if box < c.min_spread:
            return _nan_fix("inliers bunched", inliers=n_in, correspondences=n_corr, keyframes=kfl, hypothesis=T)
        support = np.unique(kf[inl])
        if np.min(np.linalg.norm(self.positions[support] - T[:3, 3], axis=1)) > self.max_kf_distance:
            return _nan_fix("far from the keyframes", inliers=n_in, correspondences=n_corr, keyframes=kfl, hypothesis=T)
        # SIFT matches survive a limited change of viewpoint: the query's rays to its inlier points must look at
        # them from about where the keyframes that hold them did (a wrong pose that happens to reproject 20
        # points sees them from elsewhere)
        Xi = X[inl]
        a = Xi - T[:3, 3]
        b = Xi - self.positions[kf[inl]]
        cosang = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        self.last_view_angle_deg = float(np.degrees(np.arccos(np.clip(np.median(cosang), -1.0, 1.0))))
        if self.last_view_angle_deg > c.max_view_angle_deg:
            return _nan_fix("inconsistent viewpoint", inliers=n_in, correspondences=n_corr, keyframes=kfl, hypothesis=T)
        conf = 1.0 - math.exp(-n_in / c.confident_inliers)
        # the covariance is computed from the inliers when the fix is finished (finish_fix: the one answered)
        return Fix(True, "", T, np.full((6, 6), np.nan), conf, inliers=n_in, correspondences=n_corr, keyframes=kfl,
                   spread=float(box), support=(Xi, xi))  # fmt: skip
