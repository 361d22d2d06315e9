"""Readers of posed-image sources: ``transforms.json`` (:mod:`.transforms_json`), COLMAP models (:mod:`.colmap`),
LLFF ``poses_bounds.npy`` (:mod:`.llff`), KITTI / TUM trajectories + an image folder (:mod:`.trajectory`); the one
table of them is ``READERS`` in :mod:`pose2rgbd.convert.sources.images`. Each returns a
:class:`~.common.PosedImages`; :func:`pose2rgbd.convert.sources.images.convert_images` writes it as a dataset."""

from pose2rgbd.convert.posed_images.common import ImagesConfig, PosedImages, SourceCamera
from pose2rgbd.convert.posed_images.errors import PoseImportError

__all__ = ["ImagesConfig", "PoseImportError", "PosedImages", "SourceCamera"]
