"""Messages of a periodic stream that never arrived, told from the gaps in their header stamps (:class:`StampGaps`):
the record node's camera live, a bag's camera in ``convert bag``.

A camera stamps its frames at its own rate; where the node receives frame k and then frame k + 3, two frames were
lost on the way (the transport dropped them: FastDDS's default transport on one host loses large best-effort
images, docs/ros.md, "Large images over DDS"; a network link; a driver that skips). Nothing in the messages says
so, and a recording with half the camera's frames looks like a slower camera. The period is the stream's own: a
low quantile of the latest intervals between stamps (a lost frame only makes an interval longer, so the shortest
intervals are the camera's period even when most are doubled), and an interval of ``n`` periods counts ``n - 1``
lost frames.
"""

from __future__ import annotations

import collections

import numpy as np

WINDOW = 64  # intervals kept for the period and the latest share lost
MIN_INTERVALS = 16  # fewer, and the period is not estimated (nothing is counted)
PERIOD_QUANTILE = 0.2  # the period: this quantile of the window's intervals
GAP_PERIODS = 1.5  # an interval longer than this many periods lost frames (round(interval / period) - 1 of them)


def _missing(dt_ns: float, period_ns: float) -> int:
    """Frames lost in one interval of ``dt_ns`` on a stream of period ``period_ns``."""
    return round(dt_ns / period_ns) - 1 if period_ns > 0 and dt_ns > GAP_PERIODS * period_ns else 0


def missing_frames(stamps_ns: np.ndarray) -> int:
    """The frames lost between the increasing ``stamps_ns`` of a whole recording (a bag: every interval known
    before counting, so the losses before the period is learned count too; :class:`StampGaps` live)."""
    dt = np.diff(np.asarray(stamps_ns, np.int64))
    if len(dt) < MIN_INTERVALS:
        return 0
    period = float(np.quantile(dt, PERIOD_QUANTILE))
    return sum(_missing(float(d), period) for d in dt)


class StampGaps:
    """The lost frames of one stream, from its increasing stamps (int ns). :meth:`add` returns the frames lost just
    before this one; ``lost`` counts them all; :meth:`recent` gives the rate and the share lost over the window."""

    def __init__(self) -> None:
        self._last_ns: int | None = None
        self._intervals: collections.deque[int] = collections.deque(maxlen=WINDOW)
        self._lost_in_window: collections.deque[int] = collections.deque(maxlen=WINDOW)
        self.lost = 0

    def period_ns(self) -> float | None:
        """The stream's period (a low quantile of the latest intervals), or None before :data:`MIN_INTERVALS`."""
        if len(self._intervals) < MIN_INTERVALS:
            return None
        return float(np.quantile(np.fromiter(self._intervals, np.int64), PERIOD_QUANTILE))

    def add(self, stamp_ns: int) -> int:
        """Take the next stamp (later than the previous one; an earlier or equal one restarts the count: a bag
        played again, a clock jump) and return how many frames were lost just before it."""
        last, self._last_ns = self._last_ns, int(stamp_ns)
        if last is None or stamp_ns <= last:
            if last is not None:
                self._intervals.clear()
                self._lost_in_window.clear()
            return 0
        dt = int(stamp_ns) - last
        period = self.period_ns()
        self._intervals.append(dt)
        missing = 0 if period is None else _missing(dt, period)
        self._lost_in_window.append(missing)
        self.lost += missing
        return missing

    def recent(self) -> tuple[float, float] | None:
        """``(the stream's rate in Hz, the share of its frames lost)`` over the window, or None before the period
        is known."""
        period = self.period_ns()
        if period is None or period <= 0:
            return None
        received = len(self._lost_in_window)
        lost = sum(self._lost_in_window)
        return 1e9 / period, lost / max(received + lost, 1)
