"""``map build``'s self-calibration of the structure localizer: an evenly spread share of the map's keyframes is
localized against a map of the rest, and the calibration fitted on them
(:func:`pose2rgbd.inference.structure_calibration.fit_structure_calibration`) goes into the map's manifest."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from pose2rgbd.inference.calibration import MIN_FRAMES
from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
from pose2rgbd.inference.structure_calibration import coverage_ratios, fit_structure_calibration, keyframe_spacing
from pose2rgbd.progress import bar

if TYPE_CHECKING:
    from pose2rgbd.placemap.build import SelfCalibrationConfig
    from pose2rgbd.placemap.view import MapView


def held_out_rows(n: int, cfg: SelfCalibrationConfig) -> np.ndarray:
    """The keyframes ``map build`` holds out: ``share`` of ``n`` (within ``min_queries`` .. ``max_queries``, at
    most a quarter of the map), evenly spread, never the first or the last (their neighbours are on one side)."""
    k = min(max(round(cfg.share * n), cfg.min_queries), cfg.max_queries, n // 4)
    if k < 1 or n < 3:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(1, n - 2, k).round().astype(np.int64))


def self_calibrate(view: MapView, cfg: SelfCalibrationConfig, progress: bool = False) -> dict[str, Any]:
    """``map build``'s calibration step (see the module docstring): ``view`` the map's keyframes
    (:class:`~pose2rgbd.placemap.view.MapView` with ``read_rgb``), ``cfg`` its
    :class:`~pose2rgbd.placemap.build.SelfCalibrationConfig`. Returns the manifest entry: ``status`` (``calibrated`` or
    ``not calibrated`` with the ``reason``), the counts, and the calibration."""
    n = len(view)
    held = held_out_rows(n, cfg)
    if len(held) < MIN_FRAMES:
        return {"status": "not calibrated", "reason": f"{n} keyframes: too few to hold out {MIN_FRAMES} and keep a "
                "map of the rest (calibrate with `pose2rgbd localize calibrate --map` on other frames)"}  # fmt: skip
    rest = view.without(held)
    loc = StructureLocalizer(rest, dataclasses.replace(StructureConfig(), use_previous_fix=False), view.camera(0))
    if view.read_rgb is None:
        raise ValueError("self-calibration localizes the map's own images: give the view its read_rgb")
    fixes = []
    for i in bar(held, progress=progress, desc="self-calibration"):
        loc.query_camera = view.camera(int(i))  # the map's own images: each with its keyframe's camera
        fixes.append(loc.localize_one(view.read_rgb(int(i))))
    ok = np.array([f.ok for f in fixes], bool)
    entry: dict[str, Any] = {"held_out": len(held), "fixes": int(ok.sum()), "share": float(len(held) / n)}
    if ok.sum() < MIN_FRAMES:
        reasons = sorted({f.reason for f in fixes if not f.ok})
        return {**entry, "status": "not calibrated",
                "reason": f"only {int(ok.sum())} of {len(held)} held-out keyframes got a fix ({', '.join(reasons)}): "
                "the keyframes are too sparse to localize one against the others"}  # fmt: skip
    good = [f for f, k in zip(fixes, ok) if k]
    T_true = view.T_world_cam[held[ok]]
    spacing = keyframe_spacing(view.T_world_cam, view.rot_weight_m)
    pr, qr = coverage_ratios(rest.poses, np.stack([f.T_world_cam for f in good]), spacing)
    cal = fit_structure_calibration(good, T_true, pr, qr, spacing, bound_m=cfg.bound_m,
                                    gate_quantile=cfg.gate_quantile, scale_level=cfg.scale_level,
                                    source={"method": "structure", "split": "map keyframes held out"})  # fmt: skip
    return {**entry, "status": "calibrated", "calibration": cal.to_dict()}
