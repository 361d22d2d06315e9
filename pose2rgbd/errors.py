"""Typed errors. Library code raises these; only the CLI and the nodes catch, log and exit."""

from __future__ import annotations


class Pose2RGBDError(Exception):
    """Base class of every error pose2rgbd raises on purpose. ``says_what_to_do``: the message already ends in
    what the user can do, so the CLI adds no advice of the disk-full / read-only error it wraps."""

    says_what_to_do: bool = False
    logged: bool = False  # already logged where it arose (a ROS node's configure): its exit does not repeat it


class ConfigError(Pose2RGBDError, ValueError):
    """A configuration value or file is invalid."""


class GeometryError(Pose2RGBDError, ValueError):
    """Bad geometric input (wrong shape, NaN, non-unit quaternion, ...)."""


class DatasetError(Pose2RGBDError):
    """A dataset directory is missing, malformed or inconsistent."""


class BagError(Pose2RGBDError):
    """A bag cannot be read or written, or lacks what was asked of it."""


class SyncError(Pose2RGBDError):
    """Streams cannot be synchronized (no overlap, no valid fix, ...)."""


class CheckpointError(Pose2RGBDError):
    """A checkpoint is missing, corrupt, or incompatible with the request."""


class DamagedFileError(Pose2RGBDError):
    """A file pose2rgbd wrote is missing, truncated or changed since (its recorded size or digest differs).
    ``path``: the damaged file (the first, when several are)."""

    def __init__(self, message: str, *, path: object = None) -> None:
        super().__init__(message)
        self.path = path


class OutputError(Pose2RGBDError):
    """An output path would destroy an input or something that is not an earlier output of the same kind."""


class OutputExistsError(OutputError):
    """An output exists and replacing it was not asked for (``--overwrite``); see
    :func:`pose2rgbd.output_guard.refuse_existing`, the one place that raises it."""


# Modules of the optional extras (setup.py extras_require): a command that needs one names the extra to install.
EXTRA_MODULES = {"torch": "train", "kornia": "train", "tensorboard": "train", "onnx": "train", "onnxscript": "train"}


def missing_extra(e: ModuleNotFoundError) -> str | None:
    """The message for a module of an optional extra that is not installed, or None for any other module."""
    root = (e.name or "").split(".")[0]
    extra = EXTRA_MODULES.get(root)
    if extra is None:
        return None
    return (
        f"this command needs {root!r}, which is in the [{extra}] extra and is not installed here; install it with "
        f"pip install 'pose2rgbd[{extra}]' (or bash scripts/setup.sh, which installs every extra)"
    )
