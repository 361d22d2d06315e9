"""Self-supervised depth and ego-motion from a flight video (Algorithm 2, line 1: ``DEPTHFROMRGB``).

``FAMILY`` is its registry entry (kind ``selfsup-depth``, data ``sequences``): a depth network and a relative-pose
source (:class:`~pose2rgbd.methods.selfsup_depth.config.SelfSupDepthConfig` ``pose_source``) trained by view
synthesis between neighbouring frames of the user's own flight (:mod:`.net`, recipe :func:`.recipe.prepare`).
The conversion stage :func:`pose2rgbd.convert.stages.depth_export.export_depth` (Algorithm 2) writes a dataset with
its depth, scaled to metres from the GPS poses (:mod:`pose2rgbd.convert.stages.scale`) or marked unscaled.
Importing this package imports torch.
"""

from __future__ import annotations

from pose2rgbd.methods.selfsup_depth.config import POSE_SOURCES, PRESETS, SelfSupDepthConfig
from pose2rgbd.methods.selfsup_depth.net import SelfSupDepthNet, build_model
from pose2rgbd.models.registry import ModelFamily, Recipe


def _recipe() -> Recipe:
    """The training recipe, imported when training starts (this module does not import the trainer)."""
    from pose2rgbd.methods.selfsup_depth.recipe import prepare

    return prepare


FAMILY = ModelFamily(
    kind="selfsup-depth",
    config_cls=SelfSupDepthConfig,
    build=build_model,
    presets=PRESETS,
    default_preset="small",
    data="sequences",
    engine=None,
    train=_recipe,
    description="self-supervised depth + ego-motion from a video (view synthesis; Algorithm 2)",
)

__all__ = ["FAMILY", "POSE_SOURCES", "PRESETS", "SelfSupDepthConfig", "SelfSupDepthNet", "build_model"]
