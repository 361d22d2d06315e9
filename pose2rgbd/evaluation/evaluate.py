"""Evaluate a checkpoint on a dataset split: metrics table (Markdown + JSON) for the model and the
baselines (nearest pose, reprojection, fused geometry), a qualitative grid (paper Fig. 6), training curves, and a
fly-through video along a route the model never trained on."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd import config as cfgmod
from pose2rgbd.dataset import Dataset, build_cache
from pose2rgbd.dataset.cache import TrainingCache
from pose2rgbd.errors import ConfigError
from pose2rgbd.evaluation.baseline import (
    NearestPoseBaseline,
    default_rot_weight,
    nearest_answers,
    training_keyframes,
    without_training_repeats,
)
from pose2rgbd.evaluation.config import EVAL_SPLITS, EvaluateConfig
from pose2rgbd.evaluation.fused import describe_fused, fused_answers, fused_baseline
from pose2rgbd.evaluation.metrics import (
    PSNR_CAP_DB,
    MetricAccumulator,
    SigmaAccumulator,
    SigmaCurves,
    add_frame_errors,
)
from pose2rgbd.evaluation.plots import (
    coverage_plot,
    depth_sigma_plot,
    evenly_spaced,
    flythrough_frames,
    qualitative_grid,
    training_curves,
    write_video,
)
from pose2rgbd.evaluation.point_depth import (
    FramePoints,
    PointDepthAccumulator,
    estimated_depth_source,
    triangulate_test_frames,
)
from pose2rgbd.evaluation.reprojection import reprojection_answers
from pose2rgbd.inference import EngineConfig, RenderEngine
from pose2rgbd.jsonio import json_text
from pose2rgbd.models import LoadedCheckpoint, PoseToImage, count_parameters, load_checkpoint
from pose2rgbd.output_guard import EVALUATION, OutputError, check_output
from pose2rgbd.placemap.keyframes import ArrayKeyframes
from pose2rgbd.progress import bar as progress_bar
from pose2rgbd.training.splits import Split, split_from_config

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    out_dir: Path
    metrics: dict[str, dict[str, float]]  # {"model": {...}, "baseline": {...}}
    files: dict[str, Path]
    split: str
    frames: int
    depth_unit: str
    info: dict[str, Any] = field(default_factory=dict)
    # per test frame (in ``frame`` order): the model's errors and the distance to the nearest training camera
    per_frame: dict[str, np.ndarray] = field(default_factory=dict)
    # the share of the scored test pixels within k depth_sigma, by kind, over all of them (SigmaAccumulator.curves)
    sigma_curves: SigmaCurves | None = None
    # the method that estimated the dataset's depth (point_depth.estimated_depth_source); None: measured
    depth_estimated_by: str | None = None


def depth_unit_label(depth_kind: str) -> str:
    """How depth values are labelled: metres, dataset units (unscaled depth), or '' without depth."""
    return {"metric": "m", "none": ""}.get(depth_kind, "units, unscaled")


def predict(engine: RenderEngine, T_world_cam: np.ndarray, *, batch_size: int = 16) -> dict[str, np.ndarray | None]:
    """Model predictions in data units for ``(N, 4, 4)`` poses, rendered by ``engine`` in batches:
    ``{"rgb": uint8 (N, S, S, 3) | None, "depth": float32 (N, S, S) | None, "confidence": ... | None,
    "depth_sigma": ... | None}`` (``depth_sigma``: the depth's uncertainty, where the checkpoint carries one)."""
    parts = [engine.render(T_world_cam[s : s + batch_size]) for s in range(0, len(T_world_cam), batch_size)]
    out: dict[str, np.ndarray | None] = {}
    for k in ("rgb", "depth", "confidence", "depth_sigma"):
        vals = [getattr(p, k) for p in parts]
        out[k] = None if not vals or vals[0] is None else np.concatenate(vals)
    return out


def evaluation_engine(loaded: LoadedCheckpoint, device: str = "auto", precision: str = "trained") -> RenderEngine:
    """The render engine evaluation predicts with, no warm-up: with ``precision`` ``trained`` fp32, no BatchNorm
    folding or layout change (the metrics are those of the model as trained); with an ``engine.precision`` the
    model as a render node with that precision serves it."""
    if precision == "trained":
        cfg = EngineConfig(device=device, precision="fp32", fuse_bn=False, channels_last=False, warmup=0)
    else:
        cfg = EngineConfig(device=device, precision=precision, warmup=0)
    return RenderEngine(cfg.as_batch_job(), loaded)


def _split(cache: TrainingCache, kind: str, train_cfg: dict[str, Any]) -> Split:
    if kind == "all":
        n = len(cache)
        return Split("all", np.zeros(0, np.int64), np.arange(n), f"all {n} frames")
    return split_from_config(cache.source_id, cache.stamp_ns, {**train_cfg, "split": kind})


def _route_frames(cache: TrainingCache, split: Split, n_max: int) -> tuple[np.ndarray, str]:
    """Frames of one never-trained route, in time order, at most ``n_max`` (uniform stride)."""
    test = split.test
    sids = cache.source_id[test]
    train_sources = set(np.unique(cache.source_id[split.train]).tolist())
    held = [s for s in np.unique(sids) if s not in train_sources]
    if split.kind == "all":
        sid = np.bincount(sids - sids.min()).argmax() + sids.min()
        sel = test[sids == sid]
        what = f"route of source {int(sid)} (all frames evaluated)"
    elif held:
        counts = {s: int((sids == s).sum()) for s in held}
        sid = max(counts, key=lambda s: counts[s])
        sel = test[sids == sid]
        what = f"held-out route (source {int(sid)}), never trained on"
    else:
        sel = test
        what = {
            "route": "held-out time blocks of the recording",
            "blocks": "held-out time blocks of the recordings",
            "every-nth": "every N-th frame of the recording (interleaved with training frames)",
        }.get(split.kind, "test frames (random split: interleaved with training frames)")
    sel = sel[np.argsort(cache.stamp_ns[sel], kind="stable")]
    stride = max(1, math.ceil(len(sel) / max(n_max, 1)))
    return sel[::stride][:n_max], what


def format_metrics_markdown(rows: list[tuple[str, dict[str, float]]], depth_unit: str) -> str:
    """A Markdown table of metric dicts (one row per method). A column no row has a value for (the depth
    columns of an RGB-only model on a dataset without depth) is left out instead of showing "n/a" throughout."""
    cols = [
        ("RGB MAE (px)", "rgb_mae_px", ".2f"),
        ("PSNR (dB)", "rgb_psnr_db", ".2f"),
        ("SSIM", "rgb_ssim", ".3f"),
        (f"depth MAE ({depth_unit})", "depth_mae", ".3f"),
        (f"depth RMSE ({depth_unit})", "depth_rmse", ".3f"),
        ("AbsRel", "depth_absrel", ".3f"),
        (f"depth MAE at points ({depth_unit})", "point_depth_mae", ".3f"),
        ("AbsRel at points", "point_depth_absrel", ".3f"),
    ]

    def ok(v: float | None) -> bool:
        return v is not None and math.isfinite(v)

    cols = [c for c in cols if any(ok(m.get(c[1])) for _, m in rows)]

    def f(m: dict[str, float], k: str, fmt: str) -> str:
        v = m.get(k)
        return format(v, fmt) if ok(v) else "n/a"

    head = "| method | frames | " + " | ".join(c[0] for c in cols) + " |\n|---|---:|" + "---:|" * len(cols) + "\n"
    lines = [
        f"| {name} | {int(m.get('frames', 0))} | " + " | ".join(f(m, k, fmt) for _, k, fmt in cols) + " |"
        for name, m in rows
    ]
    return head + "\n".join(lines) + "\n"


def evaluate(
    checkpoint: str | Path,
    dataset: str | Path | Dataset,
    split: str | None = None,
    *,
    config: EvaluateConfig | None = None,
    out_dir: str | Path | None = None,
    cache_root: str | Path | None = None,
    write_files: bool = True,
    **settings: Any,
) -> EvaluationResult:
    """Evaluate ``checkpoint`` on ``dataset``.

    The settings are an :class:`EvaluateConfig` (``config``; default: its defaults), each of which may also be
    given as a keyword (``max_frames=50``, ``baseline=False``, ...; a keyword wins over ``config``), and
    ``split`` positionally (it wins over both). ``split``: ``random`` | ``route`` | ``every-nth`` | ``all``
    (``None``: the split the checkpoint was trained with, same seed and fractions, so the test frames are its test
    frames, never its validation frames, unless it was trained with ``test_fraction`` 0). The
    checkpoint must come from this dataset (fingerprint) unless ``allow_other_dataset`` (then ``split`` defaults
    to ``all`` and there is no baseline). Writes into ``out_dir`` (default ``<checkpoint dir>/eval-<split>``):
    ``metrics.json``, ``metrics.md``, ``per_frame.csv``, ``grid.png``, ``coverage.png`` (with a baseline),
    ``depth_sigma.png`` (with a depth uncertainty), ``flythrough.mp4`` (GIF if MP4 cannot be written),
    ``curves.png`` (when ``log.csv`` sits next to the checkpoint); nothing with ``write_files=False``.
    """
    cfg = evaluate_config(config, split=split, **settings)
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    if out_dir is not None and write_files:  # it only adds files, so it may hold the checkpoint, not be it
        check_output(out_dir, EVALUATION, inputs=[ds.path])
        if Path(out_dir).is_file():
            raise OutputError(f"output {out_dir} is a file (e.g. the checkpoint); give a folder for the results")
        refuse_the_users_files(Path(out_dir))
    # a hybrid opens the place map its checkpoint names (pose2rgbd.methods.hybrid.stored)
    loaded = load_checkpoint(checkpoint, expect_fingerprint=None if cfg.allow_other_dataset else ds.fingerprint())
    model = loaded.model
    if not isinstance(model, PoseToImage):
        raise ConfigError(f"{checkpoint}: evaluation renders images from poses; a {loaded.kind!r} model does not")
    engine = evaluation_engine(loaded, cfg.device, cfg.precision)
    size = model.image_hw[0]
    other = loaded.dataset_fingerprint != ds.fingerprint()
    kind = cfg.split or ("all" if other else str(loaded.train_config.get("split", "random")))
    if kind not in EVAL_SPLITS:
        raise ConfigError(f"evaluation split {kind!r} is not one of {list(EVAL_SPLITS)}")
    out = Path(out_dir) if out_dir is not None else Path(checkpoint).parent / f"eval-{kind}"
    if write_files and out_dir is None:  # the default folder, known now: before the cache is built
        refuse_the_users_files(out)
    cache = build_cache(ds, size, cache_root=cache_root, progress=cfg.progress)
    sp = _split(cache, kind, loaded.train_config)
    notes: list[str] = []
    if kind != "all" and kind != loaded.train_config.get("split") and not other:
        notes.append(
            f"evaluated on the {kind} split but trained with the {loaded.train_config.get('split')} split: "
            "test frames may have been seen in training"
        )
    if kind != "all" and not sp.separate_test:
        notes.append(
            "no separate test set (trained with test_fraction 0 or before the three-way split): the test frames are "
            "the validation frames that selected best.pt, which flatters best.pt"
        )
    test = sp.test  # never the validation frames that picked best.pt, unless the run had no test set
    test, repeated = without_training_repeats(cache.rgb, sp.train, test, notes)
    if cfg.max_frames and len(test) > cfg.max_frames:
        test = test[evenly_spaced(len(test), cfg.max_frames)]
    if len(test) == 0:
        raise ConfigError(f"{ds.path}: the {kind} split has no test frames")
    use_baseline = cfg.baseline and len(sp.train) > 0 and not other
    # no depth anywhere (an RGB-only model on a dataset without depth): no depth unit, no depth columns
    unit = depth_unit_label(loaded.depth_kind if model.has_depth or cache.depth is not None else "none")
    pose_unit = "m" if ds.manifest.resolved_pose_units == "m" else "units"  # unscaled poses: no metres

    nn_base = train_kf = None  # the baselines read the training frames as keyframes
    rot_w: float | None = None  # their pose distance's metres per radian, once computed
    if use_baseline:
        rot_w = _rot_weight(cfg, cache, sp.train)
        train_kf = training_keyframes(cache, sp.train, rot_weight_m=rot_w)
        nn_base = NearestPoseBaseline.of_keyframes(train_kf)
    depth_kf = train_kf if cache.depth is not None else None  # those with depth: reprojection and fused geometry
    max_depth = _range(model)[1] if model.depth_range_m is not None else np.inf
    acc_m, acc_b = MetricAccumulator(max_depth), MetricAccumulator(max_depth)
    acc_r = None  # the reprojection baseline: needs metric depth of the training frames
    if depth_kf is not None and cfg.reprojection_frames > 0:
        acc_r = MetricAccumulator(max_depth)
    holes: list[float] = []
    fused, acc_f, holes_f, fused_note = fused_baseline(cfg, depth_kf, max_depth)
    points, acc_p = _test_points(cfg, ds, cache, sp, test, model.has_depth, max_depth, rot_w)
    per_frame: dict[str, list[float]] = {"frame": [], "rgb_mae": [], "rgb_psnr_db": [], "depth_mae": []}
    if engine.depth_uncertainty is not None and cache.depth is not None:
        per_frame["depth_sigma_within"] = []  # each frame's share within its depth_sigma (coverage.png)
    sigma_acc = SigmaAccumulator(max_depth, engine.depth_uncertainty)
    far = _farther_half(engine, cache.T_world_cam[test])  # the bound's honesty nearer and farther from the keyframes
    oob = model.out_of_bounds(cache.T_world_cam[test], margin=0.0)
    bar = progress_bar(total=len(test), desc=f"evaluate {kind}", unit="frame", progress=cfg.progress, leave=False)
    for s in range(0, len(test), cfg.batch_size):
        idx = test[s : s + cfg.batch_size]
        order = np.argsort(idx)  # memmap reads in increasing order
        idx = idx[order]
        gt_rgb = np.asarray(cache.rgb[idx])
        gt_depth = None if cache.depth is None else np.asarray(cache.depth[idx])
        pred = predict(engine, cache.T_world_cam[idx], batch_size=cfg.batch_size)
        acc_m.add(pred["rgb"], gt_rgb, pred["depth"], gt_depth)
        if gt_depth is not None:
            sigma_acc.add(pred["depth"], gt_depth, pred["depth_sigma"], pred["confidence"],
                          None if far is None else far[s : s + cfg.batch_size][order])  # fmt: skip
        answers: dict[str, np.ndarray | None] = {"model": pred["depth"], "dataset_depth": gt_depth}
        add_frame_errors(per_frame, idx, pred, gt_rgb, gt_depth, max_depth)
        T_idx = cache.T_world_cam[idx]
        if acc_r is not None and depth_kf is not None:
            r_rgb, r_depth, h = reprojection_answers(depth_kf, T_idx, cache.camera, cfg.reprojection_frames,
                                                     _range(model))  # fmt: skip
            acc_r.add(r_rgb if model.has_rgb else None, gt_rgb, r_depth if model.has_depth else None, gt_depth)
            holes += h
            answers["reprojection"] = r_depth
        if fused is not None and acc_f is not None:
            f_rgb, f_depth, h = fused_answers(fused, T_idx, cache.camera, _range(model))
            acc_f.add(f_rgb if model.has_rgb else None, gt_rgb, f_depth if model.has_depth else None, gt_depth)
            holes_f += h
            answers["fused"] = f_depth
        if nn_base is not None and train_kf is not None:
            b_rgb, bd = nearest_answers(train_kf, nn_base.query(T_idx)[0])
            b_depth = None
            if model.has_depth and cache.depth is not None:
                # the baseline answers in the model's output range, like the model (sky -> range max)
                b_depth = np.where(np.isnan(bd), np.float32(np.nan), np.clip(bd, *_range(model)))
            acc_b.add(b_rgb if model.has_rgb else None, gt_rgb, b_depth, gt_depth)
            answers["baseline"] = b_depth
        for key, acc in acc_p.items():
            acc.add(idx, answers.get(key))
        bar.update(len(idx))
    bar.close()
    metrics = {"model": {**acc_m.result(), **sigma_acc.result(engine.depth_uncertainty)}}
    if nn_base is not None:
        metrics["baseline"] = acc_b.result()
    if acc_r is not None:
        metrics["reprojection"] = {**acc_r.result(), "hole_fraction": float(np.mean(holes))}
    if acc_f is not None:
        metrics["fused"] = {**acc_f.result(), "hole_fraction": float(np.mean(holes_f))}
    for key, acc in acc_p.items():
        if key == "dataset_depth":
            metrics[key] = {"frames": float(len(test)), **acc.result()}
        elif key in metrics:
            metrics[key].update(acc.result())
    frames = np.asarray(per_frame["frame"], np.int64)
    arrays = {k: np.asarray(v) for k, v in per_frame.items()}
    if nn_base is not None:
        cov = nn_base.poses.coverage(cache.T_world_cam[frames])
        arrays["coverage_m"], arrays["coverage_deg"] = cov.position_m, cov.angle_deg
        for name, a in (("m", cov.position_m), ("deg", cov.angle_deg)):
            metrics["model"][f"coverage_median_{name}"] = float(np.median(a))
            metrics["model"][f"coverage_p90_{name}"] = float(np.percentile(a, 90))
    if "depth_sigma_within" in arrays:  # after the columns it came after before (per_frame.csv's order kept)
        arrays["depth_sigma_within"] = arrays.pop("depth_sigma_within")
    metrics["model"]["poses_outside_training_range"] = float(np.mean(oob))
    mcd = cfgmod.to_dict(loaded.model_config)
    info: dict[str, Any] = {
        "checkpoint": str(Path(checkpoint)),
        "dataset": str(ds.path),
        "model_kind": loaded.kind,
        **{k: mcd[k] for k in ("preset", "outputs", "encoding") if k in mcd},
        "size": size,
        "parameters": count_parameters(model),
        "step": loaded.step,
        "epoch": loaded.epoch,
        "split": sp.description,
        "precision": "the trained weights in fp32" if cfg.precision == "trained" else f"as served ({engine.precision})",
        "depth_unit": unit,
        "pose_unit": pose_unit,
        "baseline": None
        if nn_base is None
        else f"nearest training pose, d = |dt| + {nn_base.rot_weight_m:.1f} {pose_unit}/rad * angle ("
        + (
            "--rot-weight"
            if cfg.rot_weight_m is not None
            else "the median depth of the training frames"
            if cache.depth is not None
            else "the default without depth; set it with --rot-weight"
        )
        + ")",
        "notes": notes,
        "test_frames_repeating_training": repeated,
        "baseline_rot_weight_m": None if nn_base is None else nn_base.rot_weight_m,
    }
    if acc_r is not None:
        info["reprojection"] = (
            f"the {cfg.reprojection_frames} nearest training RGB-D frames (baseline distance) warped into the test "
            f"pose with their depth, z-buffered; holes ({100 * metrics['reprojection']['hole_fraction']:.1f} % of "
            "pixels) filled from the nearest frame"
        )
    estimated_by = estimated_depth_source(ds)
    if points is not None:
        info["point_depth"] = points.describe(max_depth, unit or "dataset units") + (
            f"; the dataset's depth was estimated ({estimated_by}): the depth columns score against it, the point "
            "columns do not"
            if estimated_by
            else ""
        )
    if "depth_sigma_within" in metrics["model"]:
        info["depth_uncertainty"] = sigma_acc.describe(metrics["model"])
        trained_split = loaded.train_config.get("split")
        if not other and (kind == "all" or not sp.separate_test or kind != trained_split):
            metrics["model"]["depth_sigma_in_sample"] = 1.0
            notes.append(
                "the depth uncertainty was fitted on this checkpoint's validation frames, which these test frames "
                f"include or may include (the {kind} split of a run trained on the {trained_split} split"
                + ("" if sp.separate_test else " without a separate test set")
                + "): depth_sigma_within is in-sample here, not a check of it"
            )
    elif model.has_depth and engine.depth_uncertainty is None:
        notes.append("the checkpoint carries no depth uncertainty (trained before `train` fitted one): evaluate with "
                     "--fit-depth-uncertainty to fit it on its validation frames")  # fmt: skip
    if acc_f is not None and fused is not None:
        info["fused"] = describe_fused(fused, metrics["fused"]["hole_fraction"])
    elif fused_note:
        notes.append(fused_note)
    curves = sigma_acc.curves(engine.depth_uncertainty) if "depth_sigma_within" in metrics["model"] else None
    result = EvaluationResult(out, metrics, {}, kind, len(test), unit, info, arrays, curves,
                              estimated_by)  # fmt: skip
    if write_files:
        _write_outputs(result, loaded, engine, cache, sp, test, train_kf, grid_rows=cfg.grid_rows,
                       fly_frames=cfg.fly_frames, fps=cfg.fps)  # fmt: skip
    return result


def _farther_half(engine: RenderEngine, T_world_cam: np.ndarray) -> np.ndarray | None:
    """Per test pose, whether its coverage distance (the engine's: to the keyframes it warps, or the training cameras)
    is above the test poses' median; None where the engine measures none or every pose is as far."""
    if engine.coverage_poses is None or len(T_world_cam) < 2:
        return None
    d = engine.coverage_poses.coverage(T_world_cam).distance
    far = d > np.median(d)
    return far if far.any() else None


def _rot_weight(cfg: EvaluateConfig, cache: TrainingCache, train: np.ndarray) -> float:
    """Metres per radian of the pose distance: ``cfg.rot_weight_m``, else the training frames' median depth
    (:func:`~pose2rgbd.evaluation.baseline.default_rot_weight`: 10 m without depth or training frames)."""
    return cfg.rot_weight_m if cfg.rot_weight_m is not None else default_rot_weight(cache.depth, train)


def _test_points(
    cfg: EvaluateConfig,
    ds: Dataset,
    cache: TrainingCache,
    sp: Split,
    test: np.ndarray,
    has_depth: bool,
    max_depth: float,
    rot_weight_m: float | None,
) -> tuple[FramePoints | None, dict[str, PointDepthAccumulator]]:
    """The test frames' triangulated points and one accumulator per answer scored at them (the model, the
    baselines, the dataset's own depth), where ``cfg.point_depth`` asks for them and the model predicts depth.
    ``rot_weight_m``: the baselines' rotation weight where they computed it (else computed here the same way)."""
    want = cfg.point_depth == "on" or (cfg.point_depth == "auto" and estimated_depth_source(ds) is not None)
    if not want or not has_depth or len(test) < 2:
        return None, {}
    w = rot_weight_m if rot_weight_m is not None else _rot_weight(cfg, cache, sp.train)
    pts = triangulate_test_frames(ds, test, cache.T_world_cam[test], cache.camera, rot_weight_m=w,
                                  progress=cfg.progress)  # fmt: skip
    keys = ["model", "baseline", "reprojection", "fused"] + (["dataset_depth"] if cache.depth is not None else [])
    return pts, {k: PointDepthAccumulator(pts, max_depth) for k in keys}


def evaluate_config(
    config: EvaluateConfig | None = None, *, split: str | None = None, **settings: Any
) -> EvaluateConfig:
    """``config`` (default: the defaults) with the keyword ``settings`` and a non-None ``split`` applied,
    coerced and validated like a config file (an unknown keyword names the closest valid ones)."""
    data = cfgmod.to_dict(config if config is not None else EvaluateConfig())
    data.update(settings)
    if split is not None:
        data["split"] = split
    return cfgmod.from_dict(EvaluateConfig, data, where="evaluate")


def _range(model: PoseToImage) -> tuple[float, float]:
    """The model's depth range (its own state), (0, 1) for a model without one."""
    return model.depth_range_m or (0.0, 1.0)


def _label(info: dict[str, Any]) -> str:
    """``preset / outputs / encoding`` of the model as far as its kind has them (else the kind)."""
    parts = [str(info[k]) for k in ("preset", "outputs", "encoding") if k in info]
    return " / ".join(parts) or str(info.get("model_kind", "model"))


def _valid_share(metrics: dict[str, dict[str, float]]) -> str:
    """'valid share: model 93.1 %, nearest-pose baseline 80.2 % (19.8 % without an answer)' for metrics.md."""
    names = {"model": "model", "baseline": "nearest-pose baseline", "reprojection": "reprojection baseline",
             "fused": "fused-geometry baseline"}  # fmt: skip
    parts = []
    for key, m in metrics.items():
        v = m.get("depth_valid_fraction")
        if v is None or key not in names:
            continue
        miss = m.get("depth_pred_missing_fraction", 0.0)
        parts.append(f"{names[key]} {100 * v:.1f} %" + (f" ({100 * miss:.1f} % without an answer)" if miss else ""))
    return "valid share of the pixels: " + (", ".join(parts) if parts else "n/a")


# what baselines_ahead compares: metric key, words, True where higher is better
_HEADLINE = (("rgb_mae_px", "RGB MAE", False, "px"), ("depth_mae", "depth MAE", False, ""),
             ("rgb_psnr_db", "PSNR", True, "dB"))  # fmt: skip


def baselines_ahead(rows: list[tuple[str, dict[str, float]]], model: dict[str, float], depth_unit: str) -> str:
    """A sentence for metrics.md (and a warning) where a training-free baseline of ``rows`` (name, metrics) beats
    the model in a headline metric (RGB MAE, depth MAE, PSNR): which, by how much, and what to do; "" where none
    does. The dataset's own depth (a row of its own, not a renderer) is not a baseline."""
    found = []
    for key, words, higher, unit in _HEADLINE:
        mine = model.get(key)
        if mine is None or not np.isfinite(mine):
            continue
        u = f" {unit or depth_unit}".rstrip()
        ahead = []
        for name, m in rows:
            v = m.get(key)
            if name.startswith("the dataset's") or v is None or not np.isfinite(v):
                continue
            if f"{v:.4g}" != f"{mine:.4g}" and ((v > mine) if higher else (v < mine)):  # ahead as printed: no tie
                ahead.append(f"the {name}'s {v:.4g}{u}")
        if ahead:
            found.append(f"{words} {mine:.4g}{u} against {' and '.join(ahead)}")
    if not found:
        return ""
    return (
        "the model is behind a training-free baseline here: " + "; ".join(found) + ". A longer training "
        '(train --max-minutes) may close it, or not: docs/results.md has both ("Real data")'
    )


# the files evaluate writes into its folder (_write_outputs)
EVALUATION_FILES = ("metrics.json", "metrics.md", "per_frame.csv", "grid.png", "coverage.png", "depth_sigma.png",
                    "curves.png", "flythrough.mp4", "flythrough.gif")  # fmt: skip


def _is_evaluation(metrics_json: Path) -> bool:
    """Whether ``metrics_json`` is one :func:`_write_metrics_json` wrote (its two sections), not the user's own."""
    try:
        data = json.loads(metrics_json.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("metrics"), dict) and isinstance(data.get("info"), dict)


def refuse_the_users_files(out: Path) -> None:
    """Evaluation adds its files (:data:`EVALUATION_FILES`) to ``out``, which may hold other things (the checkpoint),
    and replaces those of an earlier evaluation there. In a folder that holds no earlier evaluation (no
    ``metrics.json`` of one), a file of one of those names is the user's: refused, named, before any work."""
    if not out.is_dir() or _is_evaluation(out / "metrics.json"):
        return
    clash = [n for n in EVALUATION_FILES if (out / n).exists() or (out / n).is_symlink()]
    if clash:
        them = "them" if len(clash) > 1 else "it"
        raise OutputError(
            f"{out} holds {', '.join(clash)}, which evaluate writes, and no earlier evaluation (no metrics.json of "
            f"one): evaluating into it would replace {them}. Choose another --out, or move {them} out of {out} "
            "(nothing was written)"
        )


def _write_metrics_json(path: Path, res: EvaluationResult) -> None:
    """metrics.json as strict JSON: a metric with no value (no pixel to evaluate) is ``null``, never ``NaN``."""
    path.write_text(json_text({"metrics": res.metrics, "info": res.info}, default=str))


def _write_outputs(
    res: EvaluationResult,
    loaded: LoadedCheckpoint,
    engine: RenderEngine,
    cache: TrainingCache,
    sp: Split,
    test: np.ndarray,
    train_kf: ArrayKeyframes | None,
    *,
    grid_rows: int,
    fly_frames: int,
    fps: float,
) -> None:
    out = res.out_dir
    out.mkdir(parents=True, exist_ok=True)
    model = engine.model
    size = int(res.info["size"])
    label = _label(res.info)
    rows = [(f"model ({label.replace(' / ', ', ')})", res.metrics["model"])]
    if "baseline" in res.metrics:
        rows.append(("nearest-pose baseline", res.metrics["baseline"]))
    if "reprojection" in res.metrics:
        rows.append(("reprojection baseline", res.metrics["reprojection"]))
    if "fused" in res.metrics:
        rows.append(("fused-geometry baseline", res.metrics["fused"]))
    if "dataset_depth" in res.metrics:
        rows.append(("the dataset's own depth", res.metrics["dataset_depth"]))
    _write_metrics_json(out / "metrics.json", res)
    md = f"# Evaluation: {res.info['split']}\n\n" + format_metrics_markdown(rows, res.depth_unit)
    md += (
        f"\ncheckpoint `{res.info['checkpoint']}` (step {loaded.step}, epoch {loaded.epoch}), {size}x{size}, "
        f"rendered {res.info['precision']}.\n"
    )
    if res.info["baseline"]:
        md += f"Baseline: {res.info['baseline']}.\n"
    if res.info.get("reprojection"):
        md += f"Reprojection baseline: {res.info['reprojection']}.\n"
    if res.info.get("fused"):
        md += f"Fused-geometry baseline: {res.info['fused']}.\n"
    if res.info.get("point_depth"):
        md += (f"Depth at points: {res.info['point_depth']}; a render is scored at each point's pixel "
               "(docs/models.md, \"Depth at triangulated points\").\n")  # fmt: skip
    if "coverage_median_m" in res.metrics["model"]:
        m, pu = res.metrics["model"], res.info.get("pose_unit", "m")
        md += (
            f"Coverage (test pose to the nearest training camera): median {m['coverage_median_m']:.2f} {pu} / "
            f"{m['coverage_median_deg']:.1f} deg, 90th percentile {m['coverage_p90_m']:.2f} {pu} / "
            f"{m['coverage_p90_deg']:.1f} deg; per frame in per_frame.csv, error against it in coverage.png.\n"
        )
    if res.info.get("depth_uncertainty"):
        md += f"Depth uncertainty: {res.info['depth_uncertainty']} (depth_sigma.png).\n"
    far = res.metrics["model"].get("depth_far_fraction")
    scored = any(m.get("depth_valid_fraction") is not None for m in res.metrics.values())
    if res.depth_unit and not scored:  # a model with depth on a dataset without: nothing to score it against
        md += "Depth: the dataset has no depth to score the renders against, so the table has no depth columns.\n"
    elif res.depth_unit:  # nothing to say about depth when there is none
        md += (
            "Depth metrics over the pixels valid in both the answer and the ground truth (sky = +inf and invalid = "
            "NaN excluded; " + _valid_share(res.metrics) + ")"
        )
        if far is not None:
            md += (f", up to the model's depth range maximum {_range(model)[1]:.1f} {res.depth_unit} ({100 * far:.2f} "
                   "% of pixels beyond it)")  # fmt: skip
        md += ".\n"
    if "rgb_psnr_db" in res.metrics["model"]:
        md += (f"PSNR: the mean of the per-frame PSNR, each capped at {PSNR_CAP_DB:.0f} dB (an identical frame "
               "would score +inf); per frame in per_frame.csv.\n")  # fmt: skip
    behind = baselines_ahead(rows[1:], res.metrics["model"], res.depth_unit)
    if behind:
        md += f"\nNote: {behind}.\n"
        log.warning("%s", behind)
    for n in res.info["notes"]:
        md += f"\nNote: {n}.\n"
    (out / "metrics.md").write_text(md)
    res.files.update({"metrics_json": out / "metrics.json", "metrics_md": out / "metrics.md"})
    if res.per_frame:
        cols = list(res.per_frame)
        table = np.column_stack([res.per_frame[c].astype(np.float64) for c in cols])
        np.savetxt(out / "per_frame.csv", table, delimiter=",", header=",".join(cols), comments="", fmt="%.6g")
        res.files["per_frame"] = out / "per_frame.csv"
        if "coverage_m" in res.per_frame:
            level = res.metrics["model"].get("depth_sigma_level")
            res.files["coverage"] = coverage_plot(out / "coverage.png", res.per_frame, res.depth_unit, level)
    if res.sigma_curves is not None:
        res.files["depth_sigma"] = depth_sigma_plot(out / "depth_sigma.png", res.sigma_curves)

    rng = _range(model)
    sel = np.sort(test[evenly_spaced(len(test), grid_rows)])
    pred = predict(engine, cache.T_world_cam[sel])
    gt_depth = None if cache.depth is None else np.asarray(cache.depth[sel])
    base_rgb = base_depth = None
    if train_kf is not None:  # the nearest-pose baseline's answer, as a column of the grid
        base_rgb, bd = nearest_answers(
            train_kf, NearestPoseBaseline.of_keyframes(train_kf).query(cache.T_world_cam[sel])[0]
        )
        if model.has_depth and cache.depth is not None:
            base_depth = np.where(np.isnan(bd), np.float32(np.nan), np.clip(bd, *rng))
    res.files["grid"] = qualitative_grid(
        out / "grid.png",
        np.asarray(cache.rgb[sel]),
        pred["rgb"],
        gt_depth,
        pred["depth"],
        pred["confidence"],
        depth_range=rng,
        depth_unit=res.depth_unit,
        title=f"{label} -- {res.info['split']}",
        row_labels=[f"frame {int(i)}" for i in sel],
        baseline_rgb=base_rgb,
        baseline_depth=base_depth,
        depth_estimated_by=res.depth_estimated_by,
    )
    route, what = _route_frames(cache, sp, fly_frames)
    frames: list[np.ndarray] = []
    for s in range(0, len(route), 32):
        idx = route[s : s + 32]
        p = predict(engine, cache.T_world_cam[idx])
        gd = None if cache.depth is None or not model.has_depth else np.asarray(cache.depth[idx])
        frames += flythrough_frames(np.asarray(cache.rgb[idx]), p["rgb"], gd, p["depth"], depth_range=rng,
                                    tile=max(256, size), depth_estimated_by=res.depth_estimated_by)  # fmt: skip
    res.files["flythrough"] = write_video(frames, out / "flythrough.mp4", fps=fps)
    res.info["flythrough"] = f"{len(frames)} frames of the {what}"
    log_csv = Path(res.info["checkpoint"]).parent / "log.csv"
    if log_csv.exists():
        res.files["curves"] = training_curves(
            log_csv, out / "curves.png", title=" / ".join(label.split(" / ")[:2]), depth_unit=res.depth_unit
        )
    _write_metrics_json(out / "metrics.json", res)
