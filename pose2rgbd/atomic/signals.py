"""Ctrl-C and SIGTERM held while outputs are swapped, in every thread of the process.

``signal.pthread_sigmask`` blocks a signal in the calling thread only: with worker threads alive (a renderer's,
a data loader's, a checkpoint writer's) the kernel hands a process-directed SIGINT to one of them, Python's C
handler flags it, and the main thread raises ``KeyboardInterrupt`` at its next bytecode -- in the middle of the
swap. So signals are held at the Python level instead: a handler on the main thread (where Python runs every
signal handler, whichever thread the kernel picked) records the signal while any thread is inside
:func:`signals_held`, and the signal is delivered, to the handler that was there before, when the last such
block ends.

* On the main thread :func:`signals_held` installs that handler itself for the length of the block.
* Off the main thread a handler cannot be installed (``signal.signal`` raises there); the block is then held
  only if :func:`signal_deferral` is active on the main thread -- the command line keeps it active for the
  whole command, so every swap of a command is held whichever thread runs it. Without it (an application
  embedding pose2rgbd that runs a swap in its own thread) the swap itself is still never torn, since Python
  raises ``KeyboardInterrupt`` in the main thread only, but the main thread may go on while the swap finishes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

HELD = (signal.SIGINT, signal.SIGTERM)

_lock = threading.Lock()  # guards _depth changes (never taken by the handler: it runs on the main thread)
_depth = 0  # blocks of signals_held() now running, all threads together
_pending: list[int] = []  # signals recorded while _depth > 0 (list.append / pop are atomic)
_previous: dict[int, Any] = {}  # the handlers our handler stands in front of, while it is installed


class Held:
    """What a :func:`signals_held` block sees: whether a signal is waiting to be delivered after it."""

    @property
    def pending(self) -> bool:
        return bool(_pending)


def _handler(signum: int, frame: FrameType | None) -> None:
    _pending.append(signum)
    if _depth == 0:  # no block is running (any more): deliver now
        _deliver(frame)


def _deliver(frame: FrameType | None = None) -> None:
    """Deliver the first waiting signal to the handler that stood before ours (a second Ctrl-C during the
    block means the same as the first); on the main thread only."""
    first: int | None = None
    while True:
        try:
            s = _pending.pop(0)
        except IndexError:
            break
        first = s if first is None else first
    if first is None:
        return
    _call(_previous.get(first, signal.getsignal(first)), first, frame)


def _call(handler: Any, signum: int, frame: FrameType | None) -> None:
    if handler is _handler or handler is None:  # ours again (nested install) or set from C: the default
        handler = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        if signum == signal.SIGINT:
            signal.default_int_handler(signum, frame)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # the default action (SIGTERM: the process ends)
    # SIG_IGN: ignored, as it would have been


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install() -> Callable[[], None] | None:
    """Put our handler in front of the current ones (main thread only); returns how to take it away again, or
    None when it is installed already (or cannot be)."""
    if not _on_main_thread() or all(signal.getsignal(s) is _handler for s in HELD):
        return None
    before = {s: signal.getsignal(s) for s in HELD}
    try:
        for s in HELD:
            if before[s] is not _handler:
                _previous[s] = before[s]
                signal.signal(s, _handler)
    except (ValueError, OSError):  # not the main interpreter: leave signals as they are
        for s, h in before.items():
            if h is not None:
                signal.signal(s, h)
        return None

    def uninstall() -> None:
        for s, h in before.items():
            if signal.getsignal(s) is _handler and h is not None:
                signal.signal(s, h)

    return uninstall


@contextmanager
def signal_deferral() -> Iterator[None]:
    """Keep the holding handler installed for a whole run (main thread): :func:`signals_held` blocks in other
    threads are then held too. A signal that arrives outside a block goes straight to the earlier handler."""
    uninstall = _install()
    try:
        yield
    finally:
        if uninstall is not None:
            uninstall()


@contextmanager
def signals_held() -> Iterator[Held]:
    """Hold Ctrl-C and SIGTERM until the block ends (the renames of a swap); the first one that came is
    delivered right after it, to the handler that was installed before (``KeyboardInterrupt`` for Ctrl-C).
    ``Held.pending`` tells the block that one came, e.g. to undo its renames before it is delivered."""
    global _depth
    uninstall = _install()
    if not _on_main_thread() and signal.getsignal(signal.SIGINT) is not _handler:
        log.debug("signals are not held for this swap: it runs off the main thread without signal_deferral()")
    with _lock:
        _depth += 1
    try:
        yield Held()
    finally:
        with _lock:
            _depth -= 1
            last = _depth == 0
        if uninstall is not None:
            uninstall()
        if last and _pending:
            if _on_main_thread():
                _deliver()
            else:  # the main thread's handler delivers it (Python runs signal handlers there only)
                signal.pthread_kill(threading.main_thread().ident or 0, _pending[0])
