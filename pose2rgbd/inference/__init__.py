"""Inference engines (no ROS): one per kind of model, picked by the model family's ``engine``.

* ``render``: :class:`RenderEngine` -- camera pose -> RGB + metric depth (+ confidence);
* ``localize``: :class:`LocalizeEngine` -- image -> camera pose + confidence.

:func:`load_engine` loads a checkpoint and returns the engine its kind serves through.
"""

from __future__ import annotations

from pose2rgbd.errors import CheckpointError
from pose2rgbd.inference.backends import prepare_serving
from pose2rgbd.inference.common import EngineConfig, load_for_serving
from pose2rgbd.inference.localize import LocalizeEngine, Localizer, LocalizeResult, check_image_batch
from pose2rgbd.inference.poses import check_pose_batch, extrapolate_constant_velocity
from pose2rgbd.inference.render import RenderEngine, RenderResult

Engine = RenderEngine | LocalizeEngine

ENGINES: dict[str, type[RenderEngine] | type[LocalizeEngine]] = {"render": RenderEngine, "localize": LocalizeEngine}


def load_engine(cfg: EngineConfig) -> Engine:
    """Load ``cfg.checkpoint`` and serve it with the engine of its model family (``render`` | ``localize``)."""
    loaded = load_for_serving(cfg)
    kind = loaded.family.engine
    if kind is None:
        raise CheckpointError(f"{loaded.where}: model kind {loaded.kind!r} is not served by any engine")
    if kind not in ENGINES:
        raise CheckpointError(f"{loaded.where}: model kind {loaded.kind!r} names an unknown engine {kind!r}")
    return ENGINES[kind](cfg, loaded)


__all__ = [
    "ENGINES",
    "Engine",
    "EngineConfig",
    "LocalizeEngine",
    "LocalizeResult",
    "Localizer",
    "RenderEngine",
    "RenderResult",
    "check_image_batch",
    "check_pose_batch",
    "extrapolate_constant_velocity",
    "load_engine",
    "load_for_serving",
    "prepare_serving",
]
