"""pycolmap as every module of pose2rgbd imports it: ``from pose2rgbd.geometry.colmap_import import pycolmap``.

pycolmap installs glog's failure-signal handler when it is imported, SIGTERM among its signals: a SIGTERM (``kill``,
systemd, ``docker stop``) to a command that had imported it (``map build``'s self-calibration, ``localize images``,
the SfM of ``convert``) printed a native stack dump and ended the process at once, and the cleanup the command runs
for Ctrl-C and SIGTERM never ran. Its first import through here runs inside
:func:`pose2rgbd.atomic.signals.handlers_kept`, which leaves Ctrl-C and SIGTERM to the handlers they had (the
command line's: ``terminated (SIGTERM)``, exit 143; rclpy's in a ROS node: its shutdown), from any thread.
``test/test_signal_handling.py`` checks that no other module imports pycolmap itself.

An optional dependency: the name is looked up when it is imported from here (a module ``__getattr__``), so where
pycolmap is not installed (or ``sys.modules["pycolmap"]`` is None) that import raises ``ModuleNotFoundError``
(``name == "pycolmap"``), as ``import pycolmap`` would.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from pose2rgbd.atomic.signals import handlers_kept

if TYPE_CHECKING:
    import pycolmap as pycolmap

_kept: list[bool] = []  # the first import (through here) was made inside handlers_kept()


def __getattr__(name: str) -> ModuleType:
    if name != "pycolmap":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _kept:
        import pycolmap
    else:
        with handlers_kept():
            import pycolmap
        _kept.append(True)
    return pycolmap
