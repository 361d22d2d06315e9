"""The error of the posed-image importers (its own module, so that every importer module can raise it)."""

from __future__ import annotations

from pose2rgbd.errors import DatasetError


class PoseImportError(DatasetError):
    """A posed-image source (pose file, model, image folder) cannot be imported as it is."""


__all__ = ["PoseImportError"]
