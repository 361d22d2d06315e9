"""Process pools for the per-keyframe passes of a map build (``pose2rgbd map build --workers N``).

One mechanism for both passes of :func:`~pose2rgbd.placemap.build.build_map` (SIFT per keyframe; triangulation per
keyframe pair): :func:`ordered_map` runs ``fn(context, item)`` over the items in ``workers`` processes (1: in this
process, no pool) and yields the results **in the items' order**, so the map written does not depend on the worker
count. ``context`` is made once per process by ``setup(*setup_args)`` (open the dataset, map the feature files), so
what every item needs is not sent with every item. Only a few items per worker are in flight at a time: results
are written as they arrive and never pile up in memory.

Processes rather than threads: SIFT releases the GIL inside OpenCV, but the Python around it (lifting, encoding,
the triangulation's per-pair arithmetic) does not. Workers are started with ``spawn`` -- safe in a process that
already runs threads (torch, OpenCV), where ``fork`` can deadlock, and the same on every OS -- and run OpenCV
single-threaded, so N workers use N cores without oversubscribing them. Built on the standard library's
:class:`concurrent.futures.ProcessPoolExecutor`.

Arrays memory-mapped from a file travel to the workers as their file name (:func:`share` / :func:`unshare`), so a
worker maps the same file instead of receiving a copy.

Signals: a terminal's Ctrl-C reaches every process of its group, the workers too. They ignore it (from the moment
they start: SIGINT is blocked while one is started, and its initializer ignores it); the parent decides: its
``KeyboardInterrupt`` ends the pool (the items under way finish, the rest are dropped) and the command says
"interrupted" once. SIGTERM keeps its default action in a worker (it ends at once, silently): the pool itself
ends a worker with it when another died, and the parent, which gets the same SIGTERM from ``kill`` of the group,
``timeout`` or systemd, cleans up as for Ctrl-C.
"""

from __future__ import annotations

import itertools
import mmap
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from pose2rgbd.errors import Pose2RGBDError

C = TypeVar("C")
R = TypeVar("R")

IN_FLIGHT_PER_WORKER = 4
_context: dict[str, Any] = {}  # the worker process's context, made by its setup


class WorkerError(Pose2RGBDError):
    """A worker process of a pool died (not an error raised by the work itself: that is raised as it was)."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int) -> int:
    """``workers`` processes; 0: one per usable core."""
    return int(workers) if workers > 0 else usable_cores()


def _worker_setup(setup: Callable[..., Any], args: tuple[Any, ...]) -> None:
    import cv2

    # a terminal's Ctrl-C goes to the whole process group: the parent decides (it stops the pool, then says
    # "interrupted" once); a worker that raised KeyboardInterrupt too printed its own traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)  # one core per worker process
    _context["ctx"] = setup(*args)


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread while it may start a worker process (``submit`` starts them as work comes): the
    worker inherits the blocked signal through ``exec``, so a Ctrl-C while it starts (Python, its imports, the
    unpickling of ``setup``) is not raised there either, until :func:`_worker_setup` ignores it for good. This
    process loses nothing: another of its threads takes a Ctrl-C meanwhile, or this one as the block ends."""
    if not hasattr(signal, "pthread_sigmask"):  # (not POSIX: the initializer's SIG_IGN alone)
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _worker_call(fn: Callable[[Any, Any], Any], item: Any) -> Any:
    return fn(_context["ctx"], item)


def ordered_map(
    fn: Callable[[C, Any], R],
    items: Iterable[Any],
    *,
    workers: int,
    setup: Callable[..., C],
    setup_args: tuple[Any, ...] = (),
) -> Iterator[R]:
    """``fn(context, item)`` for every item, in order; ``context = setup(*setup_args)`` once per process.
    ``fn`` and ``setup`` must be module-level functions (they are sent to the workers by name)."""
    if workers <= 1:
        ctx = setup(*setup_args)
        for item in items:
            yield fn(ctx, item)
        return
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_setup,
        initargs=(setup, setup_args),
    )

    def submit(x: object) -> Future[R]:
        with _sigint_blocked():
            return pool.submit(_worker_call, fn, x)

    try:
        todo = iter(items)
        window: deque[Future[Any]] = deque(submit(x) for x in itertools.islice(todo, IN_FLIGHT_PER_WORKER * workers))
        while window:
            try:
                result = window.popleft().result()
            except BrokenProcessPool as e:
                raise WorkerError(
                    f"a worker process stopped abruptly ({e}): killed (out of memory?), or started from a script "
                    'that runs this without `if __name__ == "__main__":` (a worker imports the main script '
                    "again); guard the script, or use one process (workers 1, --workers 1)"
                ) from e
            for x in itertools.islice(todo, 1):
                window.append(submit(x))
            yield result
    finally:  # also when the caller stops early (an error while writing): drop what has not started
        pool.shutdown(wait=True, cancel_futures=True)


def share(a: np.ndarray) -> Any:
    """What sends ``a`` to a worker: a file-backed memory map as its file and layout, anything else as itself."""
    # only a map of a whole file region (a view's offset is not its own): what np.memmap(...) itself returned
    if isinstance(a, np.memmap) and isinstance(a.filename, str) and isinstance(a.base, mmap.mmap) and a.size:
        return ("memmap", a.filename, a.dtype.str, a.shape, int(a.offset))
    return a


def unshare(s: Any) -> np.ndarray:
    """The inverse of :func:`share` (in the worker): the same file mapped read-only again."""
    if isinstance(s, tuple) and len(s) == 5 and s[0] == "memmap":
        _, name, dtype, shape, offset = s
        return np.memmap(name, dtype=np.dtype(dtype), mode="r", shape=tuple(shape), offset=offset)
    return np.asarray(s)
