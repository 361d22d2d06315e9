"""Readers of posed-image sources: ``transforms.json`` (:mod:`.transforms_json`), COLMAP models (:mod:`.colmap`),
KITTI / TUM trajectories + an image folder (:mod:`.trajectory`). Each returns a
:class:`~.common.PosedImages`; :func:`pose2rgbd.convert.sources.images.convert_images` writes it as a dataset."""

from pose2rgbd.convert.posed_images.common import ImagesConfig, PosedImages, PoseImportError, SourceCamera

__all__ = ["ImagesConfig", "PoseImportError", "PosedImages", "SourceCamera"]
