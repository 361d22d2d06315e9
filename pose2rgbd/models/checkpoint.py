"""Checkpoints: ``torch.save`` of a dict of plain types and tensors, loadable with ``weights_only=True``.

Layout (format ``pose2rgbd-checkpoint`` v1)::

    format, version, model_kind ("pose2rgbd"), model_config (dict), state_dict, parameters (int),
    pose_normalizer (dict), depth_normalizer (dict | None), dataset_fingerprint (str), camera (dict, scaled
    to the output size), depth_kind ("metric" | "unscaled"), world_frame (str), train_config (dict),
    step, epoch, optimizers (dict of optimizer state dicts, for resume), extra (dict), created_utc, version.

Writes are atomic (temporary file + rename), so a crash never leaves half a checkpoint behind.
"""

from __future__ import annotations

import datetime as _dt
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pose2rgbd import config as cfgmod
from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.encoding import PoseNormalizer
from pose2rgbd.models.base import count_parameters
from pose2rgbd.models.config import ModelConfig
from pose2rgbd.models.net import Pose2RGBDNet, build_model
from pose2rgbd.models.normalization import DepthNormalizer

CHECKPOINT_FORMAT = "pose2rgbd-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class LoadedCheckpoint:
    """A checkpoint ready for inference (``model`` is in eval mode on ``map_location``)."""

    path: Path
    model: Pose2RGBDNet
    model_config: ModelConfig
    pose_normalizer: PoseNormalizer
    depth_normalizer: DepthNormalizer | None
    dataset_fingerprint: str
    camera: PinholeCamera
    depth_kind: str
    world_frame: str
    train_config: dict[str, Any]
    step: int
    epoch: int
    optimizers: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.model_config.size


def save_checkpoint(
    path: str | Path,
    *,
    model: Pose2RGBDNet,
    pose_normalizer: PoseNormalizer,
    depth_normalizer: DepthNormalizer | None,
    dataset_fingerprint: str,
    camera: PinholeCamera,
    depth_kind: str,
    world_frame: str = "map",
    train_config: dict[str, Any] | None = None,
    step: int = 0,
    epoch: int = 0,
    optimizers: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``model`` (a :class:`Pose2RGBDNet`) and everything inference needs."""
    from pose2rgbd import __version__

    p = Path(path)
    mc: ModelConfig = model.config
    if camera.width != mc.size or camera.height != mc.size:
        camera = camera.scaled(mc.size, mc.size)
    if depth_normalizer is not None:
        model.set_depth_normalizer(depth_normalizer)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_kind": "pose2rgbd",
        "model_config": cfgmod.to_dict(mc),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "parameters": count_parameters(model),
        "pose_normalizer": pose_normalizer.to_dict(),
        "depth_normalizer": None if depth_normalizer is None else depth_normalizer.to_dict(),
        "dataset_fingerprint": str(dataset_fingerprint),
        "camera": camera.to_dict(),
        "depth_kind": str(depth_kind),
        "world_frame": str(world_frame),
        "train_config": dict(train_config or {}),
        "step": int(step),
        "epoch": int(epoch),
        "optimizers": optimizers or {},
        "extra": extra or {},
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "pose2rgbd_version": __version__,
    }
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def read_checkpoint_dict(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, validated as a pose2rgbd checkpoint (raises :class:`CheckpointError`)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found")
    try:
        data = torch.load(p, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, Exception) as e:
        raise CheckpointError(f"{p}: cannot read checkpoint (corrupt, truncated or not a torch file): {e}") from e
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: not a pose2rgbd checkpoint (no 'format: {CHECKPOINT_FORMAT}' entry)")
    if data.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{p}: checkpoint version {data.get('version')!r}, this pose2rgbd reads v1")
    missing = [
        k for k in ("model_config", "state_dict", "pose_normalizer", "dataset_fingerprint", "camera") if k not in data
    ]
    if missing:
        raise CheckpointError(f"{p}: checkpoint lacks {missing}")
    return data  # type: ignore[no-any-return]


def load_checkpoint(
    path: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    expect_fingerprint: str | None = None,
    expect_size: int | None = None,
    expect_preset: str | None = None,
    expect_outputs: str | None = None,
) -> LoadedCheckpoint:
    """Load a checkpoint for inference. Any problem, or a mismatch with an ``expect_*`` value, raises
    :class:`CheckpointError` naming what differs."""
    p = Path(path)
    data = read_checkpoint_dict(p, map_location=map_location)
    try:
        mc = cfgmod.from_dict(ModelConfig, data["model_config"], where="model_config")
    except ConfigError as e:
        raise CheckpointError(f"{p}: bad model_config: {e}") from e
    fp = str(data["dataset_fingerprint"])
    problems = []
    if expect_fingerprint is not None and fp != expect_fingerprint:
        problems.append(f"dataset fingerprint is {fp}, expected {expect_fingerprint} (trained on another dataset)")
    if expect_size is not None and mc.size != int(expect_size):
        problems.append(f"output size is {mc.size}, expected {expect_size}")
    if expect_preset is not None and mc.preset != expect_preset:
        problems.append(f"model preset is {mc.preset!r}, expected {expect_preset!r}")
    if expect_outputs is not None and mc.outputs != expect_outputs:
        problems.append(f"model outputs are {mc.outputs!r}, expected {expect_outputs!r}")
    if problems:
        raise CheckpointError(f"{p}: " + "; ".join(problems))
    try:
        pn = PoseNormalizer.from_dict(data["pose_normalizer"])
        dn = None if data.get("depth_normalizer") is None else DepthNormalizer.from_dict(data["depth_normalizer"])
        camera = PinholeCamera.from_dict(data["camera"])
    except Exception as e:
        raise CheckpointError(f"{p}: bad normalizer or camera entry: {e}") from e
    if pn.kind != mc.encoding:
        raise CheckpointError(f"{p}: pose normalizer is {pn.kind!r} but the model expects {mc.encoding!r}")
    model = build_model(mc, dn)
    try:
        model.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{p}: weights do not fit model {mc.preset}/{mc.outputs}/{mc.size}: {e}") from e
    model.to(map_location).eval()
    return LoadedCheckpoint(
        path=p,
        model=model,
        model_config=mc,
        pose_normalizer=pn,
        depth_normalizer=dn,
        dataset_fingerprint=fp,
        camera=camera,
        depth_kind=str(data.get("depth_kind", "metric")),
        world_frame=str(data.get("world_frame", "map")),
        train_config=dict(data.get("train_config") or {}),
        step=int(data.get("step", 0)),
        epoch=int(data.get("epoch", 0)),
        optimizers=dict(data.get("optimizers") or {}),
        extra=dict(data.get("extra") or {}),
    )
