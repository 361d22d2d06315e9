"""The depth uncertainty a trained renderer's checkpoint carries (:mod:`pose2rgbd.models.depth_uncertainty`), fitted
at the end of training on the validation frames, which no weight was fitted on, with the weights each checkpoint
keeps, and with each frame's coverage distance to what the checkpoint measures it against (the render engine's:
:func:`pose2rgbd.models.coverage.coverage_poses`), so that the bound grows with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pose2rgbd.dataset.torch_dataset import PoseRGBDDataset
from pose2rgbd.geometry.coverage import PoseSet
from pose2rgbd.models import LoadedCheckpoint, load_checkpoint
from pose2rgbd.models.base import ModelBase
from pose2rgbd.models.checkpoint import save_loaded
from pose2rgbd.models.coverage import coverage_poses
from pose2rgbd.models.depth_uncertainty import EXTRA_KEY, DepthUncertainty, fit_depth_uncertainty
from pose2rgbd.models.device import batch_to_device
from pose2rgbd.models.interfaces import PoseToImage

Frames = Dataset[dict[str, torch.Tensor]]  # a training recipe's frames: items with "depth" (and the model's inputs)


MAX_PIXELS = 2_000_000  # the most held-out pixels a fit keeps (evenly strided over the frames): bounded memory


@torch.no_grad()
def held_out_depth(
    model: ModelBase,
    frames: Frames,
    *,
    batch_size: int = 16,
    device: torch.device | None = None,
    poses: PoseSet | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None] | None:
    """``model``'s depth answers (metres), the frames' own depth, the answers' confidence (or ``None``) and each
    pixel's frame's coverage distance to ``poses`` (metres; ``None`` without ``poses``, or for frames that are not a
    :class:`~pose2rgbd.dataset.torch_dataset.PoseRGBDDataset`, whose items name their frame) over ``frames`` (a
    training recipe's dataset: items with ``"depth"``), the model in eval mode, as flat arrays of at most about
    :data:`MAX_PIXELS` pixels (every n-th of each batch's); ``None`` for a model without a depth output or frames
    without depth."""
    n_frames = len(frames)  # type: ignore[arg-type]
    if not isinstance(model, PoseToImage) or not model.has_depth or n_frames == 0:
        return None
    dev = device or next(model.parameters()).device
    h, w = model.image_hw
    step = max(1, -(-n_frames * h * w // MAX_PIXELS))
    cache = frames.cache if poses is not None and isinstance(frames, PoseRGBDDataset) else None
    was_training = model.training
    model.eval()
    depth: list[np.ndarray] = []
    truth: list[np.ndarray] = []
    conf: list[np.ndarray] = []
    dist: list[np.ndarray] = []
    try:
        for batch in DataLoader(frames, batch_size=batch_size, shuffle=False):
            if "depth" not in batch:
                return None
            arrays = model.outputs_to_arrays(model.get_outputs(batch_to_device(batch, dev)))
            if arrays["depth"] is None:
                return None
            depth.append(arrays["depth"].reshape(-1)[::step])
            truth.append(batch["depth"][:, 0].numpy().reshape(-1)[::step])
            if arrays["confidence"] is not None:
                conf.append(arrays["confidence"].reshape(-1)[::step])
            if cache is not None and poses is not None:
                per_frame = poses.coverage(cache.T_world_cam[batch["index"].numpy()]).distance
                dist.append(np.repeat(per_frame, h * w)[::step])
    finally:
        model.train(was_training)
    return (np.concatenate(depth), np.concatenate(truth), (np.concatenate(conf) if conf else None),
            (np.concatenate(dist) if dist else None))  # fmt: skip


def fit_on_frames(
    model: ModelBase,
    frames: Frames,
    *,
    batch_size: int = 16,
    device: torch.device | None = None,
    poses: PoseSet | None = None,
) -> DepthUncertainty | None:
    """:func:`held_out_depth` of ``frames``, then :func:`~pose2rgbd.models.depth_uncertainty.fit_depth_uncertainty`
    over the depth range the model answers, growing with the coverage distance to ``poses`` where given (None where
    there is nothing to fit)."""
    got = held_out_depth(model, frames, batch_size=batch_size, device=device, poses=poses)
    if got is None:
        return None
    depth, truth, conf, dist = got
    assert isinstance(model, PoseToImage)  # held_out_depth checked
    rng = model.depth_range_m
    n_frames = float(len(frames))  # type: ignore[arg-type]
    return fit_depth_uncertainty(
        depth,
        truth,
        conf,
        distance_m=dist,
        max_depth=np.inf if rng is None else float(rng[1]),
        fitted_on={"frames": n_frames},
    )


def add_to_checkpoint(
    path: Path,
    frames: Frames,
    *,
    batch_size: int = 16,
    device: str = "cpu",
    loaded: LoadedCheckpoint | None = None,
) -> DepthUncertainty | None:
    """Fit the uncertainty of the checkpoint at ``path`` (or of ``loaded``, that checkpoint already loaded) on
    ``frames``, its model on ``device`` for the renders (loaded on the CPU: no second optimizer state beside a
    training's on its GPU), growing with the frames' coverage distance to what its renders are measured against
    (:func:`~pose2rgbd.models.coverage.coverage_poses`), and write it into the checkpoint's extra
    (:data:`~pose2rgbd.models.depth_uncertainty.EXTRA_KEY`; everything else as it was, the optimizers' state included,
    written atomically). Returns it, or None (nothing written) where there is nothing to fit."""
    ck = loaded if loaded is not None else load_checkpoint(path, map_location="cpu")
    dev = torch.device(device)
    try:
        fitted = fit_on_frames(ck.model.to(dev), frames, batch_size=batch_size, device=dev, poses=coverage_poses(ck))
    finally:
        ck.model.to("cpu")
    if fitted is None:
        return None
    save_loaded(ck, path, extra={**ck.extra, EXTRA_KEY: fitted.to_dict()}, keep_optimizers=True)
    return fitted


__all__ = ["MAX_PIXELS", "add_to_checkpoint", "fit_on_frames", "held_out_depth"]
