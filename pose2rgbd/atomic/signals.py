"""Ctrl-C and SIGTERM held while outputs are swapped, in every thread of the process.

``signal.pthread_sigmask`` blocks a signal in the calling thread only: with worker threads alive (a renderer's,
a data loader's, a checkpoint writer's) the kernel hands a process-directed SIGINT to one of them, Python's C
handler flags it, and the main thread raises ``KeyboardInterrupt`` soon after -- in the middle of the
swap. So signals are held at the Python level instead: a handler on the main thread (where Python runs every
signal handler, whichever thread the kernel picked) records the signal while any thread is inside
:func:`signals_held`, and the signal is delivered, to the handler that was there before, when the last such
block ends. A signal a worker thread took is noticed by CPython's main thread only at a later switch between
threads; a swap asks for it (:func:`pending`) before it decides, so one that came during its renames undoes them.

* On the main thread :func:`signals_held` installs that handler itself for the length of the block.
* Off the main thread a handler cannot be installed (``signal.signal`` raises there); the block is then held
  only if :func:`signal_deferral` is active on the main thread -- the command line keeps it active for the
  whole command, so every swap of a command is held whichever thread runs it. Without it (an application
  embedding pose2rgbd that runs a swap in its own thread) the swap itself is still never torn, since Python
  raises ``KeyboardInterrupt`` in the main thread only, but the main thread may go on while the swap finishes.

Python runs a signal handler between any two bytecodes, also inside a finalizer (``__del__``, a weakref callback
of the garbage collector), and an exception raised there is printed as "Exception ignored" and dropped: the
command would run on after Ctrl-C or SIGTERM. While the handler is installed, :data:`sys.unraisablehook` keeps
such a ``KeyboardInterrupt`` and a short-lived thread sends SIGINT to the main thread until our handler has raised
it again, the same exception, outside any finalizer (a raise inside the hook would be dropped as well, so the
handler waits while the hook is on the stack; one that lands in another finalizer comes back to the hook). A kick
that lands after the main thread's last look at its signals and before a blocking call starts (``time.sleep``,
a lock) does not end that call: Python runs the handler only when the call returns. So a kick not taken within
:data:`RESEND_AFTER_S` is sent again (kicks that reach the main thread before its handler runs are one handler call).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

HELD = (signal.SIGINT, signal.SIGTERM)


class _Block:
    """One running :func:`signals_held` block: the token in ``_active``, naming its thread for :func:`holders`."""

    __slots__ = ("thread",)

    def __init__(self) -> None:
        self.thread = threading.current_thread()

    def __repr__(self) -> str:
        alive = "alive" if self.thread.is_alive() else "ended"
        return f"a held block in thread {self.thread.name!r} ({alive})"


# The blocks of signals_held() now running, all threads together: one token each, added and removed with single
# list operations (atomic), so that a KeyboardInterrupt between any two bytecodes never leaves a token behind; no
# lock, since the handler runs on the main thread and could wait for a lock that thread holds.
_active: list[_Block] = []
_pending: list[int] = []  # signals recorded while a block runs (list.append / pop are atomic)
_previous: dict[int, Any] = {}  # the handlers our handler stands in front of, while it is installed
_dropped: list[BaseException] = []  # a KeyboardInterrupt a finalizer swallowed, to be raised again
# The kicker's mark: set (to the time of sending) right before each SIGINT the kicker sends, so the handler takes that
# SIGINT for a kick and not for the user's Ctrl-C; one key, so that setting it and taking it (dict.pop) are each one
# step that no other thread's bytecode can split.
_kicks: dict[str, float] = {}
# A kick not taken this long after it was sent is sent again, at growing intervals (a signal that came just before
# a blocking call does not end it; a long C call that does not look at signals takes it late, and what was sent
# meanwhile arrives as one handler call, which takes the one mark).
RESEND_AFTER_S = 0.05
RESEND_MAX_S = 1.0
_kicking: list[bool] = []  # a kicker thread runs (set and cleared under _kick_lock)
# held by the kicker around "still wanted? then kick", by the hook around "kicker running? else start one" and by
# uninstall around restoring the handlers, so that no kick is sent once our handler is gone and no dropped interrupt
# waits for a kicker that is on its way out. Re-entrant: a finalizer can run (and drop an interrupt into the hook)
# on the main thread while that thread holds it in uninstall.
_kick_lock = threading.RLock()


def holders() -> list[str]:
    """The :func:`signals_held` blocks now running, by thread: while any runs, a signal waits for it to end (a
    diagnostic, e.g. for a test that finds a signal held longer than it expects)."""
    return [repr(b) for b in list(_active)]


def pending() -> bool:
    """Whether a held signal waits to be delivered. On the main thread it first runs the handlers of signals that
    arrived in another thread: CPython marks those for the main thread without making it look at once (it
    notices them at a later switch between threads), and ``signal.signal`` runs them before it does anything."""
    if not _pending and _on_main_thread():
        with contextlib.suppress(ValueError, OSError, TypeError):
            handler = signal.getsignal(signal.SIGINT)
            if handler is not None:
                signal.signal(signal.SIGINT, handler)  # the same handler again: only the check is wanted
    return bool(_pending)


class Held:
    """What a :func:`signals_held` block sees: whether a signal is waiting to be delivered after it."""

    @property
    def pending(self) -> bool:
        return pending()


def _handler(signum: int, frame: FrameType | None) -> None:
    kicked = signum == signal.SIGINT and _kicks.pop("sent", None) is not None
    if not kicked:  # the kicker's SIGINT is not a signal to deliver
        _pending.append(signum)
    if _dropped and _in_hook(frame):  # raised here it would be dropped again; the kicker comes back
        return
    if not _active:  # no block is running (any more): deliver now
        _deliver(frame)


def _deliver(frame: FrameType | None = None) -> None:
    """Deliver the first waiting signal to the handler that stood before ours (a second Ctrl-C during the
    block means the same as the first); on the main thread only. A ``KeyboardInterrupt`` a finalizer dropped
    comes first: it is raised again as it was (the handler that raised it may have changed since, as the CLI's
    SIGTERM handler ignores a second SIGTERM)."""
    first: int | None = None
    while True:
        try:
            s = _pending.pop(0)
        except IndexError:
            break
        first = s if first is None else first
    try:
        dropped = _dropped.pop()
    except IndexError:
        pass
    else:
        raise dropped
    if first is None:
        return
    _call(_previous.get(first, signal.getsignal(first)), first, frame)


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """``sys.unraisablehook`` while our handler is installed: a ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM as the
    CLI raises it) that a finalizer on the main thread dropped is kept and raised again there; anything else goes
    on to the hook that was there before. If it lands in a finalizer again, it comes back here again."""
    exc = unraisable.exc_value
    ours = _on_main_thread() and signal.getsignal(signal.SIGINT) is _handler  # (another hook may keep calling us)
    if not (isinstance(exc, KeyboardInterrupt) and ours):
        _hook_before(unraisable)
        return
    with _kick_lock:
        if not _dropped:  # a second one while the first waits means the same
            _dropped.append(exc)
        if not _kicking:
            _kicking.append(True)
            try:
                kicker = threading.Thread(target=_kick, args=(threading.get_ident(),), name="pose2rgbd-signal")
                kicker.daemon = True
                kicker.start()
            except BaseException:  # no thread (interpreter shutting down, no threads left): uninstall raises it
                _kicking.clear()
                raise


def _kick(main_thread: int) -> None:
    """Send SIGINT to the main thread until our handler has raised the dropped exception (a real signal: it also
    ends a blocking call there). Handlers run between bytecodes, so the hook cannot raise it itself. Each kick sets
    the mark (``_kicks``) before it is sent, so the handler call it reaches takes it for a kick, not for the user's
    Ctrl-C. One kick at a time: the next once the handler has taken the mark. While a held block keeps the handler
    from raising, the kicks slow down (2 ms, doubling to 50 ms). A kick the handler has not taken after
    :data:`RESEND_AFTER_S` (doubling up to :data:`RESEND_MAX_S`) is sent again: it may have landed just before the
    main thread went into a blocking call, which a signal ends only while the call is under way. Signals that reach
    the main thread before its handler runs are one handler call, which takes the one mark: none is left over."""
    pause, resend_after = 0.002, RESEND_AFTER_S
    try:
        while True:
            with _kick_lock:
                if not (_dropped and signal.getsignal(signal.SIGINT) is _handler):
                    _kicking.clear()  # under the lock: a hook that finds it set can count on this thread
                    return
                now, sent = time.monotonic(), _kicks.get("sent")  # (the handler may take it at any bytecode)
                if sent is None or now - sent >= resend_after:
                    if sent is None:
                        pause, resend_after = (min(0.05, 2.0 * pause) if _active else 0.002), RESEND_AFTER_S
                    else:  # not taken in time: sent again
                        resend_after = min(RESEND_MAX_S, 2.0 * resend_after)
                    _kicks["sent"] = now  # the mark first: the handler call this signal reaches finds it
                    signal.pthread_kill(main_thread, signal.SIGINT)
            time.sleep(pause)
    except BaseException:  # the thread fails: the next dropped interrupt starts a kicker of its own
        with _kick_lock:
            _kicking.clear()
        raise


def _in_hook(frame: FrameType | None) -> bool:
    """Whether the handler interrupted :func:`_unraisable` (or what it calls)."""
    while frame is not None:
        if frame.f_code is _unraisable.__code__:
            return True
        frame = frame.f_back
    return False


_hook_before: Callable[[sys.UnraisableHookArgs], object] = sys.__unraisablehook__


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
    global _hook_before
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
    if before[signal.SIGINT] is not _handler:
        _kicks.clear()  # none of ours is on its way: a SIGINT now is the user's
    hook_before = sys.unraisablehook
    if hook_before is not _unraisable:
        _hook_before = hook_before
        sys.unraisablehook = _unraisable

    def uninstall() -> None:
        raised: BaseException | None = None
        with _kick_lock:  # no kick is sent while (and after) the handlers go back
            for s, h in before.items():
                if h is None or h is _handler:  # set from C, or ours already before (a nested install): as it is
                    continue
                for _ in range(8):  # signal.signal first runs the handlers of signals that arrived: ours may raise
                    if signal.getsignal(s) is not _handler:
                        break
                    try:
                        signal.signal(s, h)
                    except BaseException as e:
                        raised = raised or e
            if sys.unraisablehook is _unraisable and hook_before is not _unraisable:
                sys.unraisablehook = hook_before
            _kicks.clear()  # a kick still on its way went to the handler that was restored (the next install: fresh)
            dropped, _dropped[:] = list(_dropped), []
        if raised is not None:  # a signal delivered while the handlers went back: after they are back
            raise raised
        if dropped:  # not raised again before the handler went: raised here, on the main thread
            raise dropped[0]

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
    token = _Block()
    uninstall: Callable[[], None] | None = None
    try:
        # a block off the main thread without signal_deferral() holds nothing (the signal goes straight to the
        # main thread's handler): it must not count as holding, or a block on the main thread meanwhile would
        # keep its signal waiting for this one to end
        if _on_main_thread() or signal.getsignal(signal.SIGINT) is _handler:
            _active.append(token)
        else:
            log.debug("signals are not held for this swap: it runs off the main thread without signal_deferral()")
        uninstall = _install()
        yield Held()
    finally:
        if token in _active:
            _active.remove(token)
        try:
            if not _active and _pending:
                if _on_main_thread():
                    _deliver()  # (our handler still in front: a signal now is delivered at once as well)
                else:  # the main thread's handler delivers it (Python runs signal handlers there only)
                    with contextlib.suppress(IndexError):  # the main thread delivered it meanwhile
                        signal.pthread_kill(threading.main_thread().ident or 0, _pending[0])
        finally:
            if uninstall is not None:
                uninstall()


# more than any C library's struct sigaction (glibc on x86-64: 152 bytes): saved and put back whole, unread
_SIGACTION_BYTES = 1024


@contextmanager
def handlers_kept() -> Iterator[None]:
    """Ctrl-C and SIGTERM keep their handlers across the block: for the import of a native library that installs
    its own when it is imported. pycolmap does (glog's failure-signal handler, for SIGTERM too): a SIGTERM then
    printed a native stack dump (``*** SIGTERM received by PID ...``) and ended the process at once, with none of
    the cleanup a command runs for Ctrl-C or SIGTERM (its hidden partial output stayed behind).

    The process's actions for the two signals are saved before the block and put back after it, as they were, on
    any thread (POSIX ``sigaction``, whole). Not Python's view of them (``signal.getsignal``) installed again: a
    handler installed from C is not in that view -- rclpy's, which shuts a ROS node down on SIGINT and SIGTERM --
    and installing the view over it (SIG_DFL for SIGTERM) made the localize node, which imports pycolmap at its
    first image, die at once on SIGTERM (``docker stop``, systemd, launch) with no shutdown. The library keeps what
    it installed for the crash signals (SIGSEGV, SIGABRT, ...), whose stack dump is worth having. Where the C
    library's ``sigaction`` cannot be called (not POSIX), Python's view is installed again on the main thread."""
    saved = _native_actions()
    try:
        yield
    finally:
        if saved:
            _put_back(saved)
        elif _on_main_thread():
            for s in HELD:
                handler = signal.getsignal(s)
                if handler is not None:  # (None: installed from C, not by Python: nothing of Python's to put back)
                    signal.signal(s, handler)  # Python's view of the handler made true again


def _libc_sigaction() -> Callable[..., int] | None:
    if os.name != "posix":
        return None
    import ctypes

    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).sigaction
    except (OSError, AttributeError):
        return None
    return fn


def _native_actions() -> list[tuple[int, bytes]]:
    """The process's current action (``struct sigaction``, as bytes) for each of :data:`HELD`."""
    import ctypes

    fn = _libc_sigaction()
    if fn is None:
        return []
    out = []
    for s in HELD:
        buf = ctypes.create_string_buffer(_SIGACTION_BYTES)
        if fn(int(s), None, buf) == 0:
            out.append((int(s), buf.raw))
    return out


def _put_back(saved: list[tuple[int, bytes]]) -> None:
    """Make the actions :func:`_native_actions` saved the process's again."""
    import ctypes

    fn = _libc_sigaction()
    if fn is None:
        return
    for s, raw in saved:
        if fn(s, ctypes.create_string_buffer(raw, _SIGACTION_BYTES), None) != 0:
            log.debug("could not put back the action of signal %d (errno %d)", s, ctypes.get_errno())
