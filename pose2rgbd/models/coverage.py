"""What a model's coverage is measured against: how far a request (serving) or a held-out frame (the depth
uncertainty's fit) is from what the model saw. The keyframes a model warps (:class:`WarpsKeyframes`, the hybrid: the
place's keyframes, their own index), else the training cameras its checkpoint carries (:func:`training_pose_set`).
Here, below both training and serving, so that the fit and the render engine measure one distance.

Where on the Earth that coverage lies is :func:`model_datum`: the GPS datum of the model's world frame (the place
map's it warps, else the training dataset's that ``train`` stores in the checkpoint, :data:`DATUM_KEY`), which the
render node places GPS fixes with (:mod:`pose2rgbd.nodes.place_check`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from pose2rgbd.geometry.coverage import PoseSet
from pose2rgbd.geometry.transforms import T_from_tq

if TYPE_CHECKING:
    from pose2rgbd.geometry.geodesy import Datum
    from pose2rgbd.models.checkpoint import LoadedCheckpoint

log = logging.getLogger(__name__)


class PoseIndexed(Protocol):
    """Anything with a nearest-keyframe index: :class:`pose2rgbd.placemap.keyframes.Keyframes`, or a reader's view of
    them."""

    @property
    def poses(self) -> PoseSet: ...


@runtime_checkable
class WarpsKeyframes(Protocol):
    """A model that renders by warping a place's keyframes (the hybrid): ``keyframes``, what it reads (None while
    it has none). What serving says of a pose's coverage is its distance to them (:func:`coverage_poses`)."""

    @property
    def keyframes(self) -> PoseIndexed | None: ...


def training_pose_set(loaded: LoadedCheckpoint) -> PoseSet | None:
    """The training cameras saved with a checkpoint (``extra["training_poses"]``: ``(N, 7)`` x y z qx qy qz qw,
    ``extra["coverage_rot_weight_m"]``), or ``None`` for a checkpoint without them."""
    tq = loaded.extra.get("training_poses")
    if tq is None:
        return None
    a = np.asarray(tq, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 7 or len(a) == 0:
        log.warning("%s: training_poses of shape %s ignored (expected (N, 7))", loaded.where, a.shape)
        return None
    return PoseSet(T_from_tq(a[:, :3], a[:, 3:]), rot_weight_m=float(loaded.extra.get("coverage_rot_weight_m", 10.0)))


def coverage_poses(loaded: LoadedCheckpoint) -> PoseSet | None:
    """What the distance of a request to what the model saw is measured against: the keyframes the model warps
    (a :class:`WarpsKeyframes` model, the hybrid: the place's keyframes, their own index), else the training cameras
    the checkpoint carries (:func:`training_pose_set`; None without them)."""
    model = loaded.model
    if isinstance(model, WarpsKeyframes) and model.keyframes is not None:
        return model.keyframes.poses
    return training_pose_set(loaded)


# the key of a checkpoint's extra that holds its training dataset's datum (Datum.to_dict: lat_deg, lon_deg, alt_m and,
# for a world frame that is not ENU, world_from_enu_xyz_qxyzw); absent in checkpoints of older versions and of
# datasets without GPS
DATUM_KEY = "datum"


def model_datum(loaded: LoadedCheckpoint) -> Datum | None:
    """The GPS datum of the model's world frame, or None where it has none: the place map's whose keyframes the model
    warps (the hybrid naming a map, or one given with ``engine.map``), else the training dataset's that the checkpoint
    carries (``extra["datum"]``, :data:`DATUM_KEY`; a one-file bundle keeps it). A damaged entry is warned of and
    taken as none."""
    from pose2rgbd.errors import GeometryError
    from pose2rgbd.geometry.geodesy import Datum

    model = loaded.model
    if isinstance(model, WarpsKeyframes) and model.keyframes is not None:
        source = getattr(model.keyframes, "keyframes", model.keyframes)  # the sized view's source: a place map
        try:
            datum = getattr(source, "datum", None)
        except GeometryError as e:  # a damaged datum in the map's manifest
            log.warning("%s: the datum of its place map ignored (%s)", loaded.where, e)
            datum = None
        if isinstance(datum, Datum):
            return datum
    d = loaded.extra.get(DATUM_KEY)
    if not d:
        return None
    try:
        return Datum.from_dict(d)
    except (GeometryError, AttributeError, TypeError) as e:
        log.warning("%s: its datum %r ignored (%s)", loaded.where, d, e)
        return None


__all__ = ["DATUM_KEY", "PoseIndexed", "WarpsKeyframes", "coverage_poses", "model_datum", "training_pose_set"]
