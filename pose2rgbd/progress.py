"""Progress bars that appear only on a terminal.

Every long loop in pose2rgbd draws its bar through :func:`bar`. A bar is drawn when the caller wants one
(``progress=True``, the default of the ``--no-progress`` flags) **and** its stream (stderr) is a terminal, so
redirected logs (CI, ``| tee``, systemd, a file) stay free of bar updates. ``pose2rgbd --progress <command>``
or the environment variable ``POSE2RGBD_PROGRESS=1`` asks for bars on any stream.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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


LOG_EVERY_S = 30.0  # without a bar (a log file): a progress line of a long pass at most this often

log = logging.getLogger(__name__)


def logged_pass(
    items: Sequence[int],
    what: str,
    unit: str,
    *,
    progress: bool = False,
    every_s: float = LOG_EVERY_S,
    clock: Callable[[], float] = time.monotonic,
    logger: logging.Logger | None = None,
) -> Iterator[int]:
    """``items``, one at a time, with their progress shown as COLMAP's mapping shows it
    (:func:`pose2rgbd.geometry.colmap_sfm.sequential_sfm`): a bar where one is drawn (``progress`` on a terminal,
    :func:`pose2rgbd.progress.bar_enabled`), otherwise a log line at most every ``every_s`` seconds with the
    items done of the total, the time so far and an estimate of the time left (a log file sees a long pass
    move), on ``logger`` (default this module's)."""
    out = logger or log
    total = len(items)
    shown = bar_enabled(progress)
    t0 = last = clock()
    with bar(total=total, desc=what, unit=unit, progress=progress) as b:
        for done, item in enumerate(items, 1):
            yield item
            b.update(1)
            now = clock()
            if not shown and done < total and now - last >= every_s:
                last = now
                left = (now - t0) / done * (total - done)
                out.info("%s: %d of %d %ss done (%.0f s so far, about %.0f s left)", what, done, total, unit,
                         now - t0, left)  # fmt: skip
