"""Calibrating a localizer on a dataset: ``pose2rgbd localize calibrate``.

The covariance, the out-of-distribution rule and the confidence model are fitted by
:mod:`pose2rgbd.inference.calibration` (re-exported here); this module localizes a dataset's validation frames
with a checkpoint (:func:`calibrate`) or with a place map's structure localizer (:func:`calibrate_map`) and hands
the errors to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pose2rgbd.atomic import write_text_atomic
from pose2rgbd.errors import ConfigError
from pose2rgbd.inference.calibration import (
    DEFAULT_ORIENTATION_SIGMA_DEG,
    DEFAULT_POSITION_SIGMA_M,
    MIN_FRAMES,
    SCALE_LEVEL,
    Calibration,
    check_covariance,
    compute_calibration,
    default_covariance,
    load_calibration,
    rotation_errors_world,
    save_calibration,
)
from pose2rgbd.progress import bar

if TYPE_CHECKING:
    from pose2rgbd.inference.localize import Localizer
    from pose2rgbd.inference.structure import StructureConfig


def localize_frames(
    localizer: Localizer,
    read_rgb: Callable[[int], np.ndarray],
    frames: Iterable[int],
    *,
    batch_size: int = 16,
    crop_scale: float = 0.0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(T_world_cam (N, 4, 4), confidence (N,))`` of ``localizer`` on the images ``read_rgb(i)`` of
    ``frames``, each prepared as the node does (:func:`pose2rgbd.inference.images.prepare_for_model`)."""
    from pose2rgbd.inference.images import prepare_for_model

    idx = list(frames)
    Ts: list[np.ndarray] = []
    cs: list[np.ndarray] = []
    hw = localizer.input_hw
    for k in bar(range(0, len(idx), batch_size), progress=progress, desc="localize", unit="batch"):
        model = getattr(localizer, "model", None)
        batch = np.stack(
            [prepare_for_model(model, read_rgb(i), hw, crop_scale=crop_scale) for i in idx[k : k + batch_size]]
        )
        res = localizer.localize(batch)
        Ts.append(res.T_world_cam)
        cs.append(res.confidence)
    if not Ts:
        return np.zeros((0, 4, 4)), np.zeros(0, np.float32)
    return np.concatenate(Ts), np.concatenate(cs)


def calibrate(
    checkpoint: str | Path,
    dataset: str | Path,
    *,
    split: str | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    crop_scale: float = 0.0,
    max_frames: int = 0,
    ood_quantile: float = 0.05,
    confidence_bins: int = 4,
    progress: bool = False,
) -> tuple[Calibration, list[str]]:
    """Calibrate ``checkpoint`` (an image -> pose model) on ``dataset``'s validation frames.

    ``split``: ``random`` | ``route`` | ``all`` (``None``: the split the checkpoint was trained with, same seed,
    so the frames are exactly its validation frames; a checkpoint of another dataset: ``all``). Returns the
    calibration and notes for the user (e.g. frames that may have been trained on)."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference import EngineConfig, LocalizeEngine, load_for_serving
    from pose2rgbd.training.splits import SPLIT_KINDS, split_from_config

    notes: list[str] = []
    ds = Dataset(dataset)
    loaded = load_for_serving(EngineConfig(checkpoint=str(checkpoint), device=device, precision="fp32", warmup=0))
    if loaded.family.engine != "localize":
        raise ConfigError(
            f"{checkpoint}: a {loaded.kind!r} model does not localize images (its engine is "
            f"{loaded.family.engine!r}); calibrate an image -> pose checkpoint"
        )
    engine = LocalizeEngine(EngineConfig(device=device, precision="fp32", warmup=0).as_batch_job(), loaded)
    other = loaded.dataset_fingerprint != ds.fingerprint()
    tc = loaded.train_config or {}
    kind = split or ("all" if other else str(tc.get("split", "random")))
    if kind == "all":
        frames = np.arange(len(ds))
    elif kind in SPLIT_KINDS:  # the checkpoint's own split settings (fractions, every_nth): its validation frames
        frames = split_from_config(ds.frames.source_id, ds.frames.stamp_ns, {**tc, "split": kind}).val
    else:
        raise ConfigError(f"split {kind!r} is not one of {', '.join(SPLIT_KINDS)}, all")
    if other:
        notes.append("the checkpoint was trained on another dataset (fingerprint differs)")
    elif kind == "all" or kind != tc.get("split", kind):
        notes.append(f"calibrated on the {kind} split: some frames may have been trained on (errors too small)")
    if max_frames and len(frames) > max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    T_est, conf = localize_frames(
        engine, ds.read_rgb, frames.tolist(), batch_size=batch_size, crop_scale=crop_scale, progress=progress
    )
    source = {
        "checkpoint": str(checkpoint),
        "model_kind": loaded.kind,
        "dataset": str(ds.path),
        "dataset_fingerprint": ds.fingerprint(),
        "split": kind,
        "crop_scale": crop_scale,
    }
    cal = compute_calibration(
        T_est, ds.frames.T_world_cam[frames], conf, ood_quantile=ood_quantile,
        confidence_bins=confidence_bins, source=source,
    )  # fmt: skip
    stated = ds.manifest.pose_error_sigmas()
    if stated is not None:  # errors against GPS poses: the model is off the truth by the GPS's error too
        cal.pose_error = {"horizontal_m": stated[0], "vertical_m": stated[1]}
        notes.append(
            f"the dataset's poses are off the true ones by {stated[0]:.3g} m horizontally and {stated[1]:.3g} m "
            "vertically (its pose_error, the GPS receiver's statement): added to every covariance the localize node "
            "publishes (the file's pose_error)"
        )
    return cal, notes


__all__ = [
    "DEFAULT_ORIENTATION_SIGMA_DEG",
    "DEFAULT_POSITION_SIGMA_M",
    "Calibration",
    "calibrate",
    "calibrate_map",
    "check_covariance",
    "compute_calibration",
    "default_covariance",
    "load_calibration",
    "localize_frames",
    "rotation_errors_world",
    "save_calibration",
    "write_text_atomic",
]


def calibrate_map(
    map_path: str | Path,
    dataset: str | Path,
    *,
    split: str | None = None,
    structure: StructureConfig | None = None,
    max_frames: int = 0,
    ood_quantile: float = 0.05,
    scale_level: float = SCALE_LEVEL,
    progress: bool = False,
) -> tuple[Calibration, list[str], dict[str, float]]:
    """Calibrate the structure localizer of the place map ``map_path`` on ``dataset``'s frames that are not
    keyframes: by default the validation frames of the split the map was selected with (``split``: another
    split's validation frames, or ``all`` frames outside the map). Images are localized one by one without priors,
    with the map's own calibration (``map build``) applied; the fixes give a new calibration
    (:func:`pose2rgbd.inference.structure_calibration.fit_structure_calibration`: block scales of the raw
    information covariance at the upper confidence bound of level ``scale_level``, gate at ``ood_quantile``,
    confidence) and ``default``: how the covariance the map's own
    calibration published compares with the errors (its factor, 1 = calibrated; the confidence's reliability)."""
    import dataclasses

    from pose2rgbd.dataset import Dataset
    from pose2rgbd.dataset.splits import SPLIT_KINDS
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.inference.structure_calibration import (
        coverage_ratios,
        fit_structure_calibration,
        keyframe_spacing,
        map_calibration,
        published_factors,
    )
    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.placemap.keyframe_map import keyframes_digest
    from pose2rgbd.placemap.selection import selection_split

    ds = Dataset(dataset)
    pm = PlaceMap(map_path)
    pm.check_dataset(ds.fingerprint(), str(dataset), path=ds.path, frames=len(ds))
    sel = pm.selection  # the one selection: the map's own split, seed and fractions (map build's select_frames)
    kind = split or sel.split or "all"
    notes: list[str] = []
    if kind == "all":
        frames = np.arange(len(ds))
    elif kind in SPLIT_KINDS:
        frames = selection_split(ds, dataclasses.replace(sel, split=kind)).val
    else:
        raise ConfigError(f"split {kind!r} is not one of {', '.join(SPLIT_KINDS)}, all")
    inside = np.isin(frames, pm.frames)
    which = "the dataset's" if kind == "all" else f"the {kind} split's validation"
    if inside.any():
        notes.append(f"{int(inside.sum())} of {which} frames are keyframes of the map: left out")
    frames = frames[~inside]
    own = map_calibration(pm)
    if own is not None and own.gate and len(frames):
        # frames beyond what the map covers (a map of a part of the dataset: --piece, --sources) measure places
        # the map does not hold: their fixes, where any, would widen the covariance of every fix in the map
        pr, qr = coverage_ratios(pm.poses, ds.frames.T_world_cam[frames], own.gate)
        far_p = own.gate.get("gap_max_position_ratio", own.gate.get("max_position_ratio", np.inf))
        far_q = own.gate.get("gap_max_pose_ratio", own.gate.get("max_pose_ratio", np.inf))
        beyond = (pr > far_p) | (qr > far_q)
        if beyond.any():
            notes.append(
                f"{int(beyond.sum())} of {which} frames outside the map lie beyond its coverage (farther from its "
                f"keyframes than its own calibration's outer range, {far_p:.3g} keyframe spacings): left out"
            )
            frames = frames[~beyond]
    if len(frames) < MIN_FRAMES:
        raise ConfigError(
            f"only {len(frames)} of {which} frames lie outside the map and within its coverage (need {MIN_FRAMES}) "
            "to calibrate on: give --split all (every frame outside the map), or a dataset of other frames of the "
            "same place"
        )
    if max_frames and len(frames) > max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    # fixes against the dataset's own poses: the map-relative covariance, without the map's own pose error
    cfg = dataclasses.replace(structure or StructureConfig(), use_previous_fix=False, ood_policy="flag",
                              map_pose_error=False)  # fmt: skip
    loc = StructureLocalizer(pm, cfg, ds.camera)  # the dataset's own frames: its camera
    fixes = [loc.localize_one(ds.read_rgb(int(i))) for i in bar(frames, progress=progress, desc="localize")]
    ok = np.array([f.ok for f in fixes], bool)
    notes.append(f"{int(ok.sum())} of {len(frames)} frames got a fix ({kind} frames outside the map)")
    if ok.sum() < MIN_FRAMES:
        raise ConfigError(
            f"only {int(ok.sum())} of {len(frames)} calibration frames got a fix (need {MIN_FRAMES}): a map of "
            "another place, or frames far from its keyframes"
        )
    good = [f for f in fixes if f.ok]
    T_true = ds.frames.T_world_cam[frames[ok]]
    default: dict[str, float] = {"source": {"map": 1.0, "none": 0.0}.get(loc.calibration_source, 0.0)}
    if loc.calibration is not None:
        flagged = np.array([bool(f.flag) for f in good])
        default["flagged"] = float(flagged.sum())
        inside_fixes = [f for f, fl in zip(good, flagged) if not fl]
        if len(inside_fixes) >= MIN_FRAMES:
            default.update(published_factors(inside_fixes, T_true[~flagged]))
        if flagged.any():
            default.update({f"flagged_{k}": v for k, v in published_factors(
                [f for f, fl in zip(good, flagged) if fl], T_true[flagged]).items()})  # fmt: skip
    spacing = keyframe_spacing(pm.T_world_cam, pm.poses.rot_weight_m)
    pr, qr = coverage_ratios(pm.poses, np.stack([f.T_world_cam for f in good]), spacing)
    source = {"map": str(map_path), "map_keyframes_digest": keyframes_digest(pm.manifest), "method": "structure",
              "dataset": str(ds.path), "dataset_fingerprint": ds.fingerprint(), "split": kind,
              "fix_rate": float(ok.mean())}  # fmt: skip
    cal = fit_structure_calibration(good, T_true, pr, qr, spacing, gate_quantile=min(ood_quantile, 0.5),
                                    scale_level=scale_level, source=source)  # fmt: skip
    return cal, notes, default
