"""A trained self-supervised depth model run over a dataset (Algorithm 2, line 1): the depth of every frame, the
relative pose between consecutive frames, and the video-only pseudo-absolute trajectory."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pose2rgbd.dataset import Dataset
from pose2rgbd.dataset.sequences import SequenceFrames
from pose2rgbd.errors import ConfigError
from pose2rgbd.methods.selfsup_depth.net import SelfSupDepthNet, depth_spread, is_collapsed
from pose2rgbd.methods.selfsup_depth.trajectory import TrajectoryConfig, compose_poses, fill_unregistered, pose_graph
from pose2rgbd.models import load_checkpoint

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Network outputs for every frame of a dataset: ``depth`` (N, h, w) network units, ``T_rel[k]`` =
    ``T_{k+1}_k`` (N-1, 4, 4; identity across a change of source, where ``same_source[k]`` is False)."""

    depth: np.ndarray
    T_rel: np.ndarray
    same_source: np.ndarray


@torch.no_grad()
def predict(
    model: SelfSupDepthNet, frames: SequenceFrames, *, batch_size: int = 16, progress: bool = False
) -> Prediction:
    """Depth of every frame and the pose network's relative pose between consecutive frames."""
    from pose2rgbd.progress import bar

    model.eval()
    dev = next(model.parameters()).device
    n = len(frames)
    h, w = frames.rgb.shape[1:3]
    depth = np.empty((n, h, w), np.float32)
    T_rel = np.tile(np.eye(4), (max(n - 1, 0), 1, 1))
    same = frames.source_id[1:] == frames.source_id[:-1]

    def img(a: int, b: int) -> torch.Tensor:
        return torch.from_numpy(np.array(frames.rgb[a:b])).to(dev).permute(0, 3, 1, 2).float().div_(255.0)

    for a in bar(range(0, n, batch_size), desc="depth", unit="batch", progress=progress):
        b = min(n, a + batch_size)
        depth[a:b] = model.depth(img(a, b))[:, 0].cpu().numpy()
    # the pose network saw frames ``stride`` apart in training: ask it for T_{k+g}_k with g = stride (less at the
    # end of a run of one source) and take the g-th root (rotation vector / g, translation / g) as T_{k+1}_k
    s = model.used_stride
    end = np.arange(n)  # last index of the contiguous run of each frame's source
    for k in range(n - 2, -1, -1):
        if same[k]:
            end[k] = end[k + 1]
    ks = np.flatnonzero(same)
    js = np.minimum(ks + s, end[ks])
    for a in bar(range(0, len(ks), batch_size), desc="pose", unit="batch", progress=progress):
        kb, jb = ks[a : a + batch_size], js[a : a + batch_size]
        x = torch.from_numpy(np.array(frames.rgb[kb])).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
        y = torch.from_numpy(np.array(frames.rgb[jb])).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
        T = model.relative_pose(x, y).double().cpu().numpy()
        T_rel[kb] = _root(T, (jb - kb).astype(np.float64))
    T_rel[~same] = np.eye(4)
    return Prediction(depth, T_rel, same)


def _root(T: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The ``g``-th root of rigid transforms (B, 4, 4): ``expm(logm(T) / g)`` (SciPy), the per-frame motion of a
    camera moving with constant velocity (screw motion) over ``g`` frames."""
    from scipy.linalg import expm, logm

    out = np.array(T, dtype=np.float64, copy=True)
    for i in np.flatnonzero(g != 1):
        out[i] = expm(np.real(logm(T[i])) / g[i])
    out[:, 3] = (0.0, 0.0, 0.0, 1.0)
    return out


@torch.no_grad()
def check_trained_depth(
    dataset: str | Path | Dataset, checkpoint: str | Path, *, frames: int = 32
) -> tuple[dict[str, float], bool]:
    """``(spread, collapsed)`` of the depth the model in ``checkpoint`` predicts on ``frames`` evenly spread frames
    of ``dataset`` (:func:`~pose2rgbd.methods.selfsup_depth.net.depth_spread`, :func:`~.net.is_collapsed`)."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    model = load_checkpoint(checkpoint).model
    if not isinstance(model, SelfSupDepthNet):
        raise ConfigError(f"{checkpoint}: holds a {type(model).__name__}, not a selfsup-depth model")
    mc = model.config
    model.eval()
    pick = np.unique(np.linspace(0, len(ds) - 1, min(frames, len(ds))).round().astype(int))
    rgb = np.stack([cv2.resize(ds.read_rgb(int(i)), (mc.width, mc.height), interpolation=cv2.INTER_AREA) for i in pick])
    depth = model.depth(torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div_(255.0))
    spread = depth_spread(depth, mc.min_depth, mc.max_depth)
    return spread, is_collapsed(spread)


@torch.no_grad()
def video_trajectory(
    model: SelfSupDepthNet,
    frames: SequenceFrames,
    pred: Prediction,
    cfg: TrajectoryConfig | None = None,
    *,
    read_rgb: Callable[[int], np.ndarray] | None = None,
    K: np.ndarray | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Pseudo-absolute ``T_world_cam`` (N, 4, 4) from video alone, per source, relative to the source's first
    frame (the key frame, at the identity; network units, up to scale), by ``cfg.backend``
    (:class:`~pose2rgbd.methods.selfsup_depth.trajectory.TrajectoryConfig`): the consecutive relative poses
    composed; or refined by a pose graph over those and skip edges ``(i, i + k)`` predicted by the pose network
    (:func:`~pose2rgbd.methods.selfsup_depth.trajectory.pose_graph`); or COLMAP structure from motion on the frames
    ``read_rgb(i)`` (default: ``frames.rgb``) with intrinsics ``K`` (default: ``frames.camera.K``), its
    unregistered frames filled from the composed chain
    (:func:`~pose2rgbd.methods.selfsup_depth.trajectory.fill_unregistered`). Also returns what was done per source
    (``{"backend", "sources": {id: {"frames", "registered", "tried", "models", "seconds"}}}``)."""
    cfg = cfg or TrajectoryConfig()
    dev = next(model.parameters()).device
    out = np.empty((len(frames), 4, 4))
    info: dict[str, Any] = {"backend": cfg.backend, "sources": {}}
    for sid in np.unique(frames.source_id):
        idx = np.flatnonzero(frames.source_id == sid)
        t0 = time.monotonic()
        T = compose_poses(pred.T_rel[idx[:-1]])
        entry: dict[str, Any] = {"frames": len(idx)}
        if cfg.backend == "pose-graph" and len(idx) > 2:
            edges = [(k, k + 1) for k in range(len(idx) - 1)]
            meas = [pred.T_rel[idx[k]] for k in range(len(idx) - 1)]
            for s in cfg.skips:
                a = np.arange(0, len(idx) - s, max(1, s // 2))
                for b0 in range(0, len(a), batch_size):
                    ks = a[b0 : b0 + batch_size]
                    x = torch.from_numpy(np.array(frames.rgb[idx[ks]])).to(dev).permute(0, 3, 1, 2).float() / 255.0
                    y = torch.from_numpy(np.array(frames.rgb[idx[ks + s]])).to(dev).permute(0, 3, 1, 2).float() / 255.0
                    Tm = model.relative_pose(x, y).double().cpu().numpy()
                    edges += [(int(k), int(k + s)) for k in ks]
                    meas += list(Tm)
            T = pose_graph(T, edges, np.stack(meas))
        elif cfg.backend == "colmap" and len(idx) < 3:  # sfm.MIN_REGISTERED: COLMAP can never register enough
            entry.update(registered=0, tried=0, models=0)
            log.info("source %d: %d frame(s), too few for structure from motion: composed network poses", sid,
                     len(idx))  # fmt: skip
        elif cfg.backend == "colmap":
            from pose2rgbd.methods.selfsup_depth.sfm import colmap_poses

            rd = read_rgb or (lambda i: np.asarray(frames.rgb[i]))
            sfm = colmap_poses(rd, idx, frames.camera.K if K is None else K, cfg, progress=progress)
            T = fill_unregistered(sfm.T_world_cam, sfm.registered, T, model=sfm.model)
            entry.update(registered=sfm.n_registered, tried=sfm.tried, models=int(sfm.model.max()) + 1)
            log.info("source %d: COLMAP registered %d of %d frames given (%d in the source; the rest filled from "
                     "the composed network poses)", sid, sfm.n_registered, sfm.tried, len(idx))  # fmt: skip
        entry["seconds"] = round(time.monotonic() - t0, 2)
        info["sources"][str(int(sid))] = entry
        out[idx] = T
    return out, info


def video_poses(
    model: SelfSupDepthNet,
    frames: SequenceFrames,
    pred: Prediction,
    *,
    refine: bool = False,
    cfg: TrajectoryConfig | None = None,
    **kw: Any,
) -> np.ndarray:
    """:func:`video_trajectory`'s poses; ``refine=True`` is ``backend: pose-graph``, else ``cfg`` (default
    ``compose``)."""
    cfg = TrajectoryConfig(backend="pose-graph") if refine else (cfg or TrajectoryConfig(backend="compose"))
    return video_trajectory(model, frames, pred, cfg, **kw)[0]
