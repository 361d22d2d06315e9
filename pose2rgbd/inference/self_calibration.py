"""``map build``'s self-calibration of the structure localizer: an evenly spread share of the map's keyframes is
localized against a map of the rest, and the calibration fitted on them
(:func:`pose2rgbd.inference.structure_calibration.fit_structure_calibration`) goes into the map's manifest.

A single held-out keyframe keeps its neighbours in time, so on a dense video it is about one keyframe spacing from
the rest: its fixes vouch for queries that close to the map only. Queries of a route split's held-out block, or of
a later pass over the same place, sit in a *gap* of the map many spacings wide. So windows of consecutive keyframes
of one flight (4, 8, 16, ... of them, up to a quarter of the map; up to ``gap_windows`` per length, apart from each
other: :func:`held_out_windows`) are held out as well, each length against a map without its windows, and the
calibration is extended to the gaps their fixes reached (:func:`pose2rgbd.inference.structure_calibration.
extend_to_gaps`: a second range of the gate, with the covariance scale those fixes' errors need)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from pose2rgbd.inference.calibration import MIN_FRAMES
from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
from pose2rgbd.inference.structure_calibration import (
    coverage_ratios,
    extend_to_gaps,
    fit_structure_calibration,
    keyframe_spacing,
)
from pose2rgbd.inference.structure_fix import Fix
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


MIN_WINDOW = 4  # the shortest window of keyframes held out (a gap of about two spacings either side of its middle)
# queries per window at most: evenly spread over it, its middle (the farthest from the map) among them
WINDOW_QUERIES = 5


def keyframe_runs(n: int, source_id: np.ndarray | None, stamp_ns: np.ndarray | None) -> list[np.ndarray]:
    """A map's ``n`` rows as time-ordered runs, one per source (flight) -- by the keyframes' ``source_id`` and
    ``stamp_ns`` when known (:class:`~pose2rgbd.placemap.view.MapView`'s), else one run of all rows in the map's
    order. A window of :func:`held_out_windows` lies inside one run: consecutive keyframes of one flight, never the
    end of one and the start of another."""
    if source_id is None:
        return [np.arange(n)]
    src = np.asarray(source_id)
    stamp = np.arange(n) if stamp_ns is None else np.asarray(stamp_ns)
    return [r[np.argsort(stamp[r], kind="stable")] for r in (np.flatnonzero(src == s) for s in np.unique(src))]


def _fits(run: int, length: int) -> int:
    """How many windows of ``length`` fit in a run of ``run`` keyframes with at least one keyframe between two of
    them and between them and the run's first and last keyframe (the starts evenly spread, at least ``length + 1``
    apart: ``(run - 2 - length) / (k + 1) >= length + 1``)."""
    return max((run - 2 - length) // (length + 1) - 1, 0)


def held_out_windows(
    n: int, cfg: SelfCalibrationConfig, runs: list[np.ndarray] | None = None
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The windows ``map build`` holds out, per window length ``L`` (:data:`MIN_WINDOW`, twice that, ... up to a
    quarter of the ``n`` keyframes): ``(L, held, queries)``, the rows of up to ``cfg.gap_windows`` windows of ``L``
    consecutive keyframes of one run (``runs``: the rows of each flight in time order, :func:`keyframe_runs`;
    default: one run, the map's rows in order) and up to :data:`WINDOW_QUERIES` rows inside each that are
    localized. The windows never overlap or touch: within a run their starts are evenly spread with at least one
    keyframe between two windows and between a window and the run's first or last keyframe. A length gets fewer
    windows where ``gap_windows`` of them do not fit so (:func:`_fits`; the runs with room take them, the longer
    ones first), none in a run too short for one; a length no run has room for ends the lengths."""
    runs = [np.arange(n)] if runs is None else [np.asarray(r, np.int64) for r in runs]
    out: list[tuple[int, np.ndarray, np.ndarray]] = []
    w, length = int(cfg.gap_windows), MIN_WINDOW
    while w > 0 and length <= n // 4:
        cap = [_fits(len(r), length) for r in runs]
        k = [0] * len(runs)
        for _ in range(min(w, sum(cap))):  # one window at a time to the run with the most keyframes per window
            j = max((j for j in range(len(runs)) if k[j] < cap[j]), key=lambda j: len(runs[j]) / (k[j] + 1))
            k[j] += 1
        if not any(k):
            break
        inner = np.unique(np.linspace(0, length - 1, WINDOW_QUERIES + 2)[1:-1].round().astype(np.int64))
        held, queries = [], []
        for r, kr in zip(runs, k):
            for s in np.linspace(1, len(r) - 1 - length, kr + 2)[1:-1].round().astype(np.int64):
                held.append(r[s : s + length])
                queries.append(r[s + inner])
        out.append((length, np.concatenate(held), np.concatenate(queries)))
        length *= 2
    return out


def _localize(
    view: MapView, held: np.ndarray, queries: np.ndarray, progress: bool, desc: str
) -> tuple[list[Fix], MapView]:
    """Fixes of the keyframes ``queries`` (rows of ``view``) against a map of ``view`` without ``held``."""
    rest = view.without(held)
    # the map's own images with their own cameras: nothing for the queries' focal check (focal_check.py) to judge
    cfg = dataclasses.replace(StructureConfig(), use_previous_fix=False, focal_tolerance=0.0)
    loc = StructureLocalizer(rest, cfg, view.camera(0))
    if view.read_rgb is None:
        raise ValueError("self-calibration localizes the map's own images: give the view its read_rgb")
    fixes = []
    for i in bar(queries, progress=progress, desc=desc):
        loc.query_camera = view.camera(int(i))  # the map's own images: each with its keyframe's camera
        fixes.append(loc.localize_one(view.read_rgb(int(i))))
    return fixes, rest


def _gap_windows(
    view: MapView, cfg: SelfCalibrationConfig, spacing: dict[str, float], progress: bool
) -> tuple[list[Fix], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """The fixes of :func:`held_out_windows` (those with a fix), their true poses, their coverage ratios (position,
    pose; over the map's ``spacing``, :func:`keyframe_spacing`) against the map they were localized against, and the
    manifest's record of the windows."""
    good: list[Fix] = []
    T_true, pr, qr = [], [], []
    lengths, queried = [], 0
    for L, held, queries in held_out_windows(len(view), cfg, keyframe_runs(len(view), view.source_id, view.stamp_ns)):
        fixes, rest = _localize(view, held, queries, progress, f"self-calibration, gaps of {L} keyframes")
        lengths.append(L)
        queried += len(queries)
        ok = [k for k, f in enumerate(fixes) if f.ok]
        if not ok:
            continue
        T_est = np.stack([fixes[k].T_world_cam for k in ok])
        p, q = coverage_ratios(rest.poses, T_est, spacing)
        good += [fixes[k] for k in ok]
        T_true.append(view.T_world_cam[queries[ok]])
        pr.append(p)
        qr.append(q)
    record = {"window_lengths": lengths, "queries": queried, "fixes": len(good)}
    if not good:
        return [], np.zeros((0, 4, 4)), np.zeros(0), np.zeros(0), record
    return good, np.concatenate(T_true), np.concatenate(pr), np.concatenate(qr), record


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
    fixes, rest = _localize(view, held, held, progress, "self-calibration")
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
    if cfg.gap_windows > 0 and cal.gate:  # without a gate there is no range to extend
        wfix, wT, wpr, wqr, record = _gap_windows(view, cfg, spacing, progress)
        entry["gaps"] = {**record, **extend_to_gaps(cal, wfix, wT, wpr, wqr, scale_level=cfg.scale_level)}
    return {**entry, "status": "calibrated", "calibration": cal.to_dict()}
