"""Progress bars that appear only on a terminal.

Every long loop in pose2rgbd draws its bar through :func:`bar`. A bar is drawn when the caller wants one
(``progress=True``, the default of the ``--no-progress`` flags) **and** its stream (stderr) is a terminal, so
redirected logs (CI, ``| tee``, systemd, a file) stay free of bar updates. ``pose2rgbd --progress <command>``
or the environment variable ``POSE2RGBD_PROGRESS=1`` asks for bars on any stream.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

FORCE_ENV = "POSE2RGBD_PROGRESS"
_forced = False


def force_progress(on: bool = True) -> None:
    """Draw bars even when stderr is not a terminal (``pose2rgbd --progress``)."""
    global _forced
    _forced = bool(on)


def _is_tty(stream: IO[str] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed or wrapped streams
        return False


def bar_enabled(progress: bool = True, file: IO[str] | None = None) -> bool:
    """Whether a bar is drawn: wanted, and the stream (default stderr) is a terminal or bars are forced."""
    if not progress:
        return False
    if _forced or os.environ.get(FORCE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    return _is_tty(file if file is not None else sys.stderr)


def bar(iterable: Iterable[Any] | None = None, *, progress: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, disabled unless :func:`bar_enabled` (a disabled bar writes nothing)."""
    return tqdm(iterable, disable=not bar_enabled(progress, kwargs.get("file")), **kwargs)
