"""Nearest-neighbour pose retrieval baseline: answer a pose with the training frame whose pose is closest.

The distance between camera poses is :class:`pose2rgbd.geometry.coverage.PoseSet`'s: position gap plus
``w`` (metres per radian) times the rotation angle; by default ``w`` = the median finite depth of the training
frames, 10 m when there is no depth (:func:`default_rot_weight`). A test frame whose pixels repeat a training
frame's is one the baseline answers exactly: :func:`without_training_repeats` leaves those out of an evaluation.
"""

from __future__ import annotations

import logging

import numpy as np

from pose2rgbd.dataset.repeats import repeats_of
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.coverage import DEFAULT_ROT_WEIGHT_M, PoseSet, median_depth_weight

log = logging.getLogger(__name__)


class NearestPoseBaseline:
    """Answer a query pose with the training frame nearest in the distance above (:class:`PoseSet`)."""

    def __init__(self, T_world_cam_train: np.ndarray, train_indices: np.ndarray, *, rot_weight_m: float) -> None:
        self.poses = PoseSet(T_world_cam_train, rot_weight_m=rot_weight_m)
        self.indices = np.asarray(train_indices, dtype=np.int64)
        self.rot_weight_m = float(rot_weight_m)

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
