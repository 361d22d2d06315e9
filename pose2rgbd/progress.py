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
import threading
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


LOG_EVERY_S = 30.0  # without a bar (a log file): a progress line of a long pass at most this often

log = logging.getLogger(__name__)


class LoggedBar(tqdm):  # type: ignore[type-arg]
    """A tqdm bar that, where it is wanted but not drawn (``progress`` on, stderr not a terminal: a log file, a
    pipe, systemd), says on ``logger`` at most every ``every_s`` seconds how far it got, with the time so far and,
    with a total, an estimate of the time left -- so a long pass in a log file is seen to move. Nothing is logged
    where the bar is drawn, nor with ``progress`` off (``--no-progress``), nor after the last item."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        log_lines: bool = False,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        **kwargs: Any,
    ) -> None:
        self._what = str(kwargs.get("desc") or "progress")
        unit = str(kwargs.get("unit") or "it")
        self._unit = "item" if unit == "it" else unit
        self._initial = int(kwargs.get("initial") or 0)  # a resumed run starts past 0
        self._done: float = self._initial
        self._every_s = LOG_EVERY_S if every_s is None else every_s  # (read at each bar: a test may set it)
        self._clock, self._log = clock, logger or log
        self._t0 = self._last = clock()
        self._count_lock = threading.Lock()
        super().__init__(iterable, **kwargs)
        self._lines = bool(log_lines and self.disable)

    def __iter__(self) -> Iterator[Any]:
        if not self._lines:
            yield from super().__iter__()
            return
        for item in self.iterable:
            yield item
            self._count(1)

    def update(self, n: float | None = 1) -> bool | None:
        if self._lines:
            self._count(n or 0)
            return None
        return super().update(n)  # type: ignore[no-any-return]

    def _count(self, n: float) -> None:
        with self._count_lock:  # updates may come from worker threads (a Dask build's callbacks)
            self._done += n
            now = self._clock()
            total = self.total
            if now - self._last < self._every_s or (total is not None and self._done >= total):
                return
            self._last = now
        so_far = now - self._t0
        if total:
            left = so_far / max(self._done - self._initial, 1) * (total - self._done)  # the rate of this run alone
            self._log.info("%s: %d of %d %ss done (%.0f s so far, about %.0f s left)", self._what, self._done,
                           int(total), self._unit, so_far, left)  # fmt: skip
        else:
            self._log.info("%s: %d %ss done (%.0f s so far)", self._what, self._done, self._unit, so_far)


def bar(
    iterable: Iterable[Any] | None = None, *, progress: bool = True, lines: bool | None = None, **kwargs: Any
) -> LoggedBar:
    """``tqdm(iterable, **kwargs)``, drawn only where :func:`bar_enabled`; where it is not drawn, a log line at most
    every :data:`LOG_EVERY_S` seconds instead (:class:`LoggedBar`; ``every_s``, ``clock`` and ``logger`` may be
    given) -- when ``progress`` is on, or whatever it is with ``lines=True`` (a pass long enough that a log should
    show it move even where the caller turned bars off: COLMAP's mapping, the stereo pass)."""
    return LoggedBar(iterable, disable=not bar_enabled(progress, kwargs.get("file")),
                     log_lines=progress if lines is None else lines, **kwargs)  # fmt: skip


def logged_pass(
    items: Sequence[int],
    what: str,
    unit: str,
    *,
    progress: bool = False,
    every_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    logger: logging.Logger | None = None,
) -> Iterator[int]:
    """``items``, one at a time, through :func:`bar` with ``lines=True``: a bar where one is drawn, otherwise a line at
    most every ``every_s`` seconds with the items done of the total, the time so far and the time left, on
    ``logger`` (default this module's), whatever ``progress`` is."""
    yield from bar(items, progress=progress, lines=True, desc=what, unit=unit, every_s=every_s, clock=clock,
                   logger=logger)  # fmt: skip
