"""Nearest-neighbour pose retrieval baseline: answer a pose with the training frame whose pose is closest.

The distance between camera poses is :class:`pose2rgbd.geometry.coverage.PoseSet`'s: position gap plus
``w`` (metres per radian) times the rotation angle; by default ``w`` = the median finite depth of the training
frames, 10 m when there is no depth (:func:`default_rot_weight`). A test frame whose pixels repeat a training
frame's is one the baseline answers exactly: :func:`without_training_repeats` leaves those out of an evaluation.

The baselines read the training frames as :class:`~pose2rgbd.placemap.keyframes.Keyframes` (a training cache's through
:func:`training_keyframes`): :meth:`NearestPoseBaseline.of_keyframes` searches the keyframes' own pose index and
:func:`nearest_answers` reads its answers from them, as the reprojection and fused-geometry baselines do.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from pose2rgbd.dataset.repeats import repeats_of
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.coverage import DEFAULT_ROT_WEIGHT_M, PoseSet, median_depth_weight
from pose2rgbd.placemap.keyframes import ArrayKeyframes, Keyframes

if TYPE_CHECKING:
    from pose2rgbd.dataset.cache import TrainingCache

log = logging.getLogger(__name__)


class NearestPoseBaseline:
    """Answer a query pose with the training frame nearest in the distance above (:class:`PoseSet`)."""

    def __init__(self, T_world_cam_train: np.ndarray, train_indices: np.ndarray, *, rot_weight_m: float) -> None:
        self._use(PoseSet(T_world_cam_train, rot_weight_m=rot_weight_m), train_indices)

    @classmethod
    def of_keyframes(cls, keyframes: Keyframes) -> NearestPoseBaseline:
        """The baseline over ``keyframes``' own pose index and rotation weight (no second index); it answers
        keyframe rows (their images: :func:`nearest_answers`)."""
        baseline = cls.__new__(cls)
        baseline._use(keyframes.poses, np.arange(len(keyframes)))
        return baseline

    def _use(self, poses: PoseSet, indices: np.ndarray) -> None:
        self.poses = poses
        self.indices = np.asarray(indices, dtype=np.int64)
        self.rot_weight_m = float(poses.rot_weight_m)

    def distances(self, T_world_cam: np.ndarray) -> np.ndarray:
        """``(M, N_train)`` distances (use :meth:`query` for large M; this holds the full matrix)."""
        return self.poses.distances(T_world_cam)

    def query(self, T_world_cam: np.ndarray, *, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Frame indices (into the full dataset / cache) of the nearest training poses, and the distances."""
        c = self.poses.coverage(T_world_cam, chunk=chunk)
        return self.indices[c.index], c.distance

    def query_k(self, T_world_cam: np.ndarray, k: int) -> np.ndarray:
        """``(M, k)`` frame indices (into the full dataset / cache) of the ``k`` nearest training poses, nearest
        first (fewer columns when there are fewer training frames)."""
        return self.indices[self.poses.nearest(T_world_cam, k)]


def nearest_answers(keyframes: Keyframes, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The baseline's answers, RGB ``(B, H, W, 3)`` uint8 and depth ``(B, H, W)`` float32, for keyframe ``rows``
    ``(B,)`` (each keyframe read once)."""
    uniq, inv = np.unique(np.asarray(rows, np.int64), return_inverse=True)
    rgb = np.stack([keyframes.rgb(int(i)) for i in uniq])[inv]
    depth = np.stack([keyframes.depth(int(i)) for i in uniq])[inv]
    return rgb, depth


def training_keyframes(cache: TrainingCache, train: np.ndarray, *, rot_weight_m: float) -> ArrayKeyframes:
    """The training frames ``train`` of ``cache`` as :class:`Keyframes` at the cache's size, the store every
    baseline reads; a cache without depth gives keyframes whose depth is all NaN (invalid), the nearest-pose
    baseline's RGB answers only."""
    depth = cache.depth
    if depth is None:  # one NaN pixel broadcast to the cache's shape: no memory per frame
        depth = np.broadcast_to(np.float32(np.nan), (len(cache), cache.size, cache.size))
    return ArrayKeyframes(cache.rgb, depth, cache.T_world_cam, cache.camera, rows=train, rot_weight_m=rot_weight_m)


def default_rot_weight(depth: np.ndarray | None, indices: np.ndarray, *, max_frames: int = 200) -> float:
    """Median finite depth of (up to ``max_frames`` of) the training frames; 10 m without depth."""
    if depth is None or len(indices) == 0:
        return DEFAULT_ROT_WEIGHT_M
    sel = np.sort(np.asarray(indices)[np.linspace(0, len(indices) - 1, min(max_frames, len(indices))).astype(int)])
    return median_depth_weight(np.asarray(depth[np.unique(sel)], dtype=np.float32))


def without_training_repeats(
    images: np.ndarray, train: np.ndarray, test: np.ndarray, notes: list[str]
) -> tuple[np.ndarray, list[int]]:
    """``test`` (frame indices into ``images``, e.g. a training cache's RGB) without the frames whose pixels
    repeat a training frame's (a camera that re-sent an image, a dataset converted with --keep-repeats): a frame
    seen in training, which the nearest-pose baseline (and a model that memorized it) answers exactly. They are left
    out of every metric, with a warning and a note (``notes``: metrics.md); returns the rest and the left-out ones.
    """
    dup = repeats_of(images, train, test)
    if len(dup) == 0:
        return test, []
    shown = ", ".join(str(i) for i in dup[:5]) + (" ..." if len(dup) > 5 else "")
    what = (f"{len(dup)} of {len(test)} test frames have the pixels of a training frame (repeated frames: a camera "
            f"that re-sent an image, or a dataset converted with --keep-repeats; frames {shown})")  # fmt: skip
    if len(dup) == len(test):
        raise ConfigError(f"{what}: no test frame is left that training did not see; convert the recording again "
                          "without --keep-repeats, or choose another split")  # fmt: skip
    note = f"{what} are left out of every metric: the nearest-pose baseline would answer them exactly"
    log.warning(note)
    notes.append(note)
    return test[~np.isin(test, dup)], [int(i) for i in dup]
