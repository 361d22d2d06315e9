"""How to train a PoseGAN: the recipe the generic driver (:func:`pose2rgbd.training.train.train`) calls.

It builds the dataset cache at ``model.load_size`` (the paper's 144 for a 128 model: frames squashed to a
square, as every cache), makes the split, fits the pose normalization on the training poses (position +
canonical quaternion, per-dimension training extremes -> [-1, 1], saved as the model's buffers) and wraps the
frames as :class:`PoseImageDataset`: random ``size x size`` crops for training, centre crops for validation
(paper Sec. 5.1). The camera saved with the checkpoints is the centre crop's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as _TorchDataset

from pose2rgbd.dataset import build_cache
from pose2rgbd.dataset.cache import TrainingCache
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.methods.posegan.config import ENCODING, PoseGANConfig
from pose2rgbd.methods.posegan.net import PoseGAN, build_model
from pose2rgbd.models.normalization import PoseNormalizer, warn_encoding_jumps
from pose2rgbd.training.train import RecipeContext, TrainingSetup, split_for

log = logging.getLogger(__name__)


def center_crop_camera(camera: PinholeCamera, size: int) -> PinholeCamera:
    """Intrinsics of the centred ``size x size`` window of ``camera``'s image (the window's corner moves the
    principal point; the focal lengths stay)."""
    top, left = (camera.height - size) // 2, (camera.width - size) // 2
    return PinholeCamera(size, size, camera.fx, camera.fy, camera.cx - left, camera.cy - top)


class PoseImageDataset(_TorchDataset):
    """Items: ``{"pose": (7,) float32 normalized by the model, "rgb": (3, S, S) float32 in [-1, 1] (a random
    crop when ``random_crop``, else the centre crop), "rgb_center": (3, S, S) the centre crop, "index": int}``.

    A random crop is a function of ``seed``, the epoch (the trainer calls :meth:`set_epoch`) and the item, not a
    draw from a global generator: the batches made ahead in the trainer's background thread then neither race the
    training step for random numbers nor depend on when they were made, and a resumed run crops as an
    uninterrupted one."""

    def __init__(
        self,
        cache: TrainingCache,
        indices: Sequence[int] | np.ndarray,
        model: PoseGAN,
        *,
        random_crop: bool,
        seed: int = 0,
    ) -> None:
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(cache)):
            raise IndexError("split indices out of range for this cache")
        self.size = int(model.config.size)
        if cache.size < self.size:
            raise ConfigError(f"cache of {cache.size} px is smaller than the {self.size} px crop")
        self.random_crop = random_crop
        self.seed = int(seed)
        self.epoch = 0
        self.poses = torch.from_numpy(model.normalize_poses(cache.T_world_cam[self.indices]))

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next items are for (their random crops depend on it)."""
        self.epoch = int(epoch)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor | int]:
        i = int(self.indices[k])
        img = torch.from_numpy(np.array(self.cache.rgb[i])).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        s, r = self.size, img.shape[-1]
        c0 = (r - s) // 2
        center = img[:, c0 : c0 + s, c0 : c0 + s]
        if self.random_crop and r > s:
            rng = np.random.default_rng([self.seed % 2**32, self.epoch, k])
            t, left = (int(v) for v in rng.integers(0, r - s + 1, 2))
            rgb = img[:, t : t + s, left : left + s]
        else:
            rgb = center
        return {"pose": self.poses[k], "rgb": rgb.contiguous(), "rgb_center": center.contiguous(), "index": i}


def prepare(ctx: RecipeContext) -> TrainingSetup:
    """The model (pose normalization fitted, or that of ``ctx.model``) and its train / validation sets."""
    ds, mc, tc = ctx.dataset, ctx.model_config, ctx.train_config
    if not isinstance(mc, PoseGANConfig):
        raise ConfigError(f"posegan training needs a PoseGANConfig, got {type(mc).__name__}")
    cache = build_cache(ds, mc.load_size, cache_root=ctx.cache_root, progress=ctx.progress, deep=ctx.cache_deep)
    split = split_for(cache, tc)
    if len(split.train) == 0:
        raise ConfigError(f"{ds.path}: the {tc.split} split leaves no training frames")
    if ctx.model is not None:
        if not isinstance(ctx.model, PoseGAN):
            raise ConfigError(f"posegan training got a {type(ctx.model).__name__} model to continue")
        model = ctx.model
    else:
        torch.manual_seed(tc.seed)  # the initial weights follow train.seed (the trainer seeds only after this)
        model = build_model(mc, pose_normalizer=PoseNormalizer.fit(cache.T_world_cam[split.train], ENCODING))
        warn_encoding_jumps(
            cache.T_world_cam[split.train], ENCODING, "PoseGAN's pose head regresses this quaternion (the paper's); on "
            "such a flight localize with a place map (`pose2rgbd map build`, `localize images`; docs/place-map.md)",
        )  # fmt: skip
    train_set = PoseImageDataset(cache, split.train, model, random_crop=True, seed=tc.seed)
    val_set = PoseImageDataset(cache, split.val, model, random_crop=False) if len(split.val) else None
    return TrainingSetup(
        model=model,
        train_set=train_set,
        val_set=val_set,
        split=split,
        camera=center_crop_camera(cache.camera, int(mc.size)),
        description=f"posegan/{mc.preset}",
    )
