"""Ctrl-C during a training: stop after the step, keep what was trained.

Without it, Ctrl-C (``KeyboardInterrupt``) ended a training wherever it was and kept only the checkpoints written
so far: with ``checkpoint_every_seconds`` at its default (300 s) a run stopped in its first five minutes kept nothing,
and ``--resume`` started again from step 0. Under :func:`stop_after_the_step` the first Ctrl-C (or SIGTERM) asks the
trainer to stop after the step it is in (``trainer.should_stop``, ``stop_reason`` ``interrupted (Ctrl-C)``): the
final validation and ``last.pt`` (and ``best.pt`` where that validation improved on it) follow, as at the end of a
budget, and ``--resume`` continues from there. A second one goes to the handler that was there before (the command
line's: ``KeyboardInterrupt``, held while outputs are put in place, :mod:`pose2rgbd.atomic.signals`), for a user who
will not wait for the final validation.

Hand-written: a signal handler that sets a flag is all there is to it (PyTorch has none; Lightning's is part of its
trainer).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class Stoppable(Protocol):
    """What is asked to stop: :class:`~pose2rgbd.training.trainer.Trainer`'s flag and reason."""

    should_stop: bool
    stop_reason: str


def interrupted(reason: str) -> bool:
    """Whether a training stopped for :func:`stop_after_the_step`'s signal (its ``stop_reason``)."""
    return reason.startswith("interrupted")


def _pass_on(previous: object, signum: int, frame: FrameType | None) -> None:
    """A signal to the handler that was installed before."""
    if callable(previous):
        previous(signum, frame)
    elif signum == signal.SIGINT and previous != signal.SIG_IGN:
        signal.default_int_handler(signum, frame)
    elif previous == signal.SIG_DFL or previous is None:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # the default action (SIGTERM: the process ends)


def pass_on_the_stop(stop_reason: str) -> None:
    """After a training that :func:`stop_after_the_step` stopped (``stop_reason``, :func:`interrupted`): the signal
    that stopped it, delivered now to the handler installed again (a command line's: ``KeyboardInterrupt``), for a
    caller that stops as a whole at the first Ctrl-C but keeps what its training had (``convert video``'s depth
    stage). Where that handler ignores it, ``KeyboardInterrupt`` all the same: the caller stops."""
    signum = signal.SIGTERM if "SIGTERM" in stop_reason else signal.SIGINT
    _pass_on(signal.getsignal(signum), signum, None)
    raise KeyboardInterrupt(stop_reason)


@contextmanager
def stop_after_the_step(trainer: Stoppable) -> Iterator[None]:
    """For the block: the first Ctrl-C / SIGTERM asks ``trainer`` to stop after its step (see the module
    docstring), the next goes to the handler before. Off the main thread (where a handler cannot be installed) the
    block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    asked: list[int] = []
    pid = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != pid:  # a DataLoader worker forked with it (a terminal's Ctrl-C reaches the whole group):
            return  # the training process decides; the worker goes on serving batches until the loader ends it
        if asked:
            _pass_on(previous[signal.Signals(signum)], signum, frame)
            return
        asked.append(signum)
        trainer.should_stop = True
        trainer.stop_reason = f"interrupted ({NAMES.get(signal.Signals(signum), str(signum))})"
        log.warning(
            "%s: training stops after this step; the final validation and last.pt follow (a resumed run continues "
            "from it). Press it again to stop at once, keeping only the checkpoints written so far",
            NAMES.get(signal.Signals(signum), "signal"),
        )

    try:
        for s in SIGNALS:
            signal.signal(s, handler)
    except (ValueError, OSError):  # not the main interpreter: leave signals as they are
        for s, h in previous.items():
            if h is not None:
                signal.signal(s, h)
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
