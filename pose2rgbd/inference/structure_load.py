"""Choosing and loading a localization method: the structure localizer against a place map, PoseGAN (an image ->
pose checkpoint), or both (the model's estimate as the structure localizer's prior)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.inference.structure import Prior, StructureConfig, StructureLocalizer

if TYPE_CHECKING:
    from pose2rgbd.inference import Engine
    from pose2rgbd.inference.localize import Localizer

# ---------------------------------------------------------------------------------------------- choosing a method
LOCALIZE_METHODS = ("auto", "structure", "posegan", "structure+posegan")


def resolve_method(method: str, map_path: str, checkpoint: str) -> str:
    """The localization method to run: ``auto`` is ``structure`` with a map, ``posegan`` (the checkpoint's
    image -> pose model) without; each method is checked against what it needs."""
    if method not in LOCALIZE_METHODS:
        raise ConfigError(f"method {method!r} is not one of {', '.join(LOCALIZE_METHODS)}")
    if method == "auto" and not map_path and not checkpoint:
        raise ConfigError(
            "nothing to localize with: give a place map (--map M, set map; build one from a dataset with `pose2rgbd "
            "map build`: the structure localizer, the default) or an image -> pose checkpoint (--checkpoint, set "
            "engine.checkpoint; e.g. PoseGAN's from `pose2rgbd train --method posegan`)"
        )
    if method == "auto":
        method = "structure" if map_path else "posegan"
    if "structure" in method and not map_path:
        raise ConfigError(
            f"method {method!r} needs a place map: set map (--map M; build one with `pose2rgbd map build`)"
        )
    if "posegan" in method and not checkpoint:
        raise ConfigError(
            f"method {method!r} needs an image -> pose checkpoint (engine.checkpoint / --checkpoint), e.g. PoseGAN's"
            + (" -- or give only a place map for the structure localizer" if method == "posegan" else "")
        )
    return method


class PriorFromModel:
    """A learned image -> pose model (PoseGAN) as the structure localizer's prior: its position, searched within
    ``radius_m`` (its orientation is not trusted: candidates come from the position only)."""

    def __init__(self, engine: Localizer, radius_m: float, crop_scale: float = 0.0) -> None:
        self.engine = engine
        self.radius_m = float(radius_m)
        self.crop_scale = crop_scale

    def __call__(self, rgb: np.ndarray) -> Prior | None:
        from pose2rgbd.inference.images import prepare_for_model

        if rgb.ndim != 3:
            rgb = np.repeat(rgb[..., None], 3, axis=-1)
        model = getattr(self.engine, "model", None)
        x = prepare_for_model(model, rgb, self.engine.input_hw, crop_scale=self.crop_scale)
        T = self.engine.localize(x).T_world_cam[0]
        if not np.all(np.isfinite(T)):
            return None
        return Prior(T[:3, 3].copy(), None, self.radius_m, "posegan")


def load_structure_localizer(
    map_path: str,
    cfg: StructureConfig,
    *,
    camera: PinholeCamera | None = None,
    prior_engine: Engine | None = None,
    prior_radius_m: float = 150.0,
) -> StructureLocalizer:
    """Open the map and build the localizer; with ``prior_engine`` (structure+posegan) the model's estimate is the
    prior of images that have no better one. Refuses a model of another world frame than the map's."""
    from pose2rgbd.errors import CheckpointError
    from pose2rgbd.inference.localize import LocalizeEngine
    from pose2rgbd.placemap import PlaceMap

    if prior_engine is not None and not isinstance(prior_engine, LocalizeEngine):
        raise CheckpointError(
            f"{prior_engine.loaded.where}: a {prior_engine.loaded.kind!r} model renders images from poses; the "
            "structure localizer's prior needs an image -> pose checkpoint (a model kind served by the localize engine)"
        )
    pm = PlaceMap(map_path)
    loc = StructureLocalizer(pm, cfg, camera)
    if prior_engine is not None:
        theirs = prior_engine.world_frame
        if theirs != pm.world_frame:
            raise ConfigError(
                f"the checkpoint answers in world frame {theirs!r}, the map {map_path} in {pm.world_frame!r}: "
                "use a model and a map of the same place"
            )
        loc.prior_model = PriorFromModel(prior_engine, prior_radius_m)
    return loc
