"""What the localize node loads at configure (heavy, once): the map and / or the model, the calibration of its
covariance and out-of-distribution threshold, and the render-and-compare refiner."""

from __future__ import annotations

from typing import Any

from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.inference import LocalizeEngine, load_engine, serving_process
from pose2rgbd.inference.calibration import Calibration, load_calibration
from pose2rgbd.inference.refine import Refiner
from pose2rgbd.nodes.localizer.config import LocalizerConfig
from pose2rgbd.nodes.logic import get_logger
from pose2rgbd.placemap.place_map import PlaceMap


def load_node_calibration(cfg: LocalizerConfig, log: Any = None) -> Calibration | None:
    """The calibration the node uses (``None``: the conservative default, with a warning)."""
    log = get_logger(log, "pose2rgbd.localizer")
    if cfg.covariance_source == "default" or (cfg.covariance_source == "auto" and not cfg.covariance_file):
        if cfg.covariance_source == "auto" and cfg.map and cfg.method != "posegan":
            pass  # the structure localizer calibrates its fixes with the map's own calibration (see configure)
        elif cfg.covariance_source == "auto":
            log.warning(
                "no covariance_file: publishing a conservative default covariance (10 m, 30 deg standard deviation) "
                "and flagging nothing as out of distribution; calibrate with `pose2rgbd localize calibrate`"
            )
        return None
    return load_calibration(cfg.covariance_file)


def configure_localizer(cfg: LocalizerConfig) -> dict[str, Any]:
    """Load the map and / or the model, and the calibration (heavy: once, at configure)."""
    from pose2rgbd.inference.structure_load import load_structure_localizer, resolve_method

    method = resolve_method(cfg.method, cfg.map, cfg.engine.checkpoint)
    engine: Any = None
    if "posegan" in method:
        engine = load_engine(cfg.engine)
        if not isinstance(engine, LocalizeEngine):
            raise CheckpointError(
                f"{cfg.engine.checkpoint}: a {engine.loaded.kind!r} model renders images from poses; the localize "
                "node needs an image -> pose checkpoint (a model kind served by the localize engine)"
            )
    calibration = load_node_calibration(cfg)
    if "structure" in method:
        engine = load_structure_localizer(
            cfg.map, cfg.structure, prior_engine=engine, prior_radius_m=cfg.posegan_prior_radius_m
        )
        serving_process.note_free_page_reporting()  # no engine of its own says it (PoseGAN's does: make_backend)
        if calibration is not None:  # a covariance_file overrides the map's own calibration
            engine.use_calibration(calibration)
        elif engine.calibration is None:
            why = engine.map.calibration_status().get("reason") if isinstance(engine.map, PlaceMap) else ""
            get_logger(None, "pose2rgbd.localizer").warning(
                f"the map {cfg.map} holds no calibration ({why or 'built without one'}): each fix's covariance is "
                "its inliers' raw information (about 10x too small in standard deviation on real data) and nothing "
                "is flagged; set covariance_file to a calibration of this map (`pose2rgbd localize calibrate --map "
                f"{cfg.map} --dataset D`, frames outside the map)"
            )
    return {"engine": engine, "calibration": calibration, "refiner": load_refiner(cfg, engine),
            "method": method}  # fmt: skip


def load_refiner(cfg: LocalizerConfig, engine: Any = None) -> Refiner | None:
    """The render-and-compare refiner for ``refine`` (``None`` without): a fresh, unprepared copy of the model that
    renders (``refine_checkpoint``, else the localizer's own checkpoint when it also renders images), on the
    engine's device unless ``refinement.device`` names one."""
    if not cfg.refine:
        return None
    import dataclasses

    from pose2rgbd.models import PoseToImage, load_checkpoint

    path = cfg.refine_checkpoint or cfg.engine.checkpoint
    if not path:
        raise ConfigError(
            "refine renders with a pose -> image model: set refine_checkpoint (the structure localizer has none)"
        )
    if str(path).endswith(".onnx"):
        raise ConfigError(
            f"refine differentiates through a torch model, and {path} is an exported ONNX graph: set "
            "refine_checkpoint to the .pt checkpoint (of this localizer or of a Pose2RGBD model of the same place)"
        )
    loaded = load_checkpoint(path, map_location="cpu")
    if engine is not None and cfg.refine_checkpoint:
        mine = getattr(engine, "loaded", None)
        if mine is not None and mine.world_frame != loaded.world_frame:
            raise ConfigError(
                f"refine_checkpoint {path} renders in world frame {loaded.world_frame!r}, the localizer answers in "
                f"{mine.world_frame!r}: refinement needs a renderer of the same place and frame"
            )
    rcfg = cfg.refinement
    if rcfg.device == "auto" and engine is not None and getattr(engine, "device", None) is not None:
        rcfg = dataclasses.replace(rcfg, device=str(engine.device))
    if not isinstance(loaded.model, PoseToImage) or not loaded.model.has_rgb:
        raise ConfigError(
            f"refine: {path} ({loaded.kind!r}) does not render RGB images from poses; set refine_checkpoint to a "
            "pose -> image checkpoint of the same place (e.g. a Pose2RGBD model), or refine to false"
        )
    return Refiner(loaded.model, rcfg)
