"""Messages of a periodic stream that never arrived, told from the gaps in their header stamps (:class:`StampGaps`):
the record node's camera live, a bag's camera in ``convert bag``.

A camera stamps its frames at its own rate; where the node receives frame k and then frame k + 3, two frames were
lost on the way (the transport dropped them: FastDDS's default transport on one host loses large best-effort
images, docs/ros.md, "Large images over DDS"; a network link; a driver that skips). Nothing in the messages says
so, and a recording with half the camera's frames looks like a slower camera. The period is the stream's own, from
the latest intervals between stamps (:func:`period_of`: a lost frame only makes an interval longer, so the shortest
intervals are the camera's period even when most are doubled), and an interval of ``n`` periods counts ``n - 1``
lost frames; one longer than :data:`PAUSE_NS` is a pause, not a loss. Losses in the receiving node's own queue (a
node that falls behind its camera) are gaps as well: the count says the frames did not arrive, not where they went.
A camera that changes its rate is counted as losing frames until the window has learned the new period (live: about
the window's length; a whole recording: half of it around the change).
"""

from __future__ import annotations

import collections

import numpy as np

WINDOW = 64  # intervals kept for the period and the latest share lost
MIN_INTERVALS = 16  # fewer, and the period is not estimated (nothing is counted)
PERIOD_QUANTILE = 0.2  # the period's first guess: this quantile of the window's intervals
GAP_PERIODS = 1.5  # an interval longer than this many periods lost frames (round(interval / period) - 1 of them)
LOST_WARN_SHARE = 0.1  # lost frames above this share of the camera's are warned about (the record node, convert bag)
# what the warnings say of the likeliest cause on one machine, and its remedy
LOSS_ADVICE = (
    "on one machine, Fast DDS's default transport loses large images: the publisher -- the camera's driver, ros2 bag "
    'play -- on config/fastdds_large_images.xml keeps them; docs/ros.md, "Large images over DDS"'
)
PAUSE_NS = 1_000_000_000  # an interval longer than this is a pause of the stream (a driver restarted, a recording
# paused, two sessions in one bag), not frames lost on the way: not counted


def period_of(dt_ns: np.ndarray) -> float:
    """A stream's period from its intervals ``dt_ns``: the median of the intervals shorter than :data:`GAP_PERIODS`
    times their :data:`PERIOD_QUANTILE` quantile (the intervals of one period; a lost frame only makes an interval
    longer, so they are there even where most intervals span two periods), taken again with that median in place of
    the quantile. The quantile alone sits below the period by a share of the stamps' jitter, and its 1.5 times
    would count ordinary late stamps as gaps."""
    dt = np.asarray(dt_ns, np.float64)
    dt = dt[dt > 0]  # a repeated stamp says nothing of the period
    if len(dt) == 0:
        return 0.0
    period = float(np.quantile(dt, PERIOD_QUANTILE))
    for _ in range(2):  # the second pass from the first's median: the cut no longer trims the jitter's upper half
        period = float(np.median(dt[dt < GAP_PERIODS * period]))
    return period


def _missing(dt_ns: float, period_ns: float) -> int:
    """Frames lost in one interval of ``dt_ns`` on a stream of period ``period_ns`` (0 for a pause)."""
    if not period_ns > 0 or dt_ns <= GAP_PERIODS * period_ns or dt_ns > PAUSE_NS:  # (a NaN period: not known)
        return 0
    return round(dt_ns / period_ns) - 1


def missing_frames(stamps_ns: np.ndarray) -> int:
    """The frames lost between the increasing ``stamps_ns`` of a whole recording (a bag: every interval known
    before counting, so the losses before the period is learned count too; :class:`StampGaps` live). The period of
    each interval is that of the :data:`WINDOW` intervals around it, so a camera that changes its rate (an
    auto-exposure that lowers it in the dark) is not taken for one that loses frames."""
    dt = np.diff(np.asarray(stamps_ns, np.int64)).astype(np.float64)
    dt = dt[dt > 0]  # a repeated stamp is no interval
    if len(dt) < MIN_INTERVALS:
        return 0
    w = min(WINDOW, len(dt))
    periods = [period_of(x) for x in np.lib.stride_tricks.sliding_window_view(dt, w)]
    # interval i takes the window centred on it (the first and last windows at the ends)
    centre = np.clip(np.arange(len(dt)) - w // 2, 0, len(periods) - 1)
    return sum(_missing(float(d), float(periods[c])) for d, c in zip(dt, centre))


class StampGaps:
    """The lost frames of one stream, from its increasing stamps (int ns). :meth:`add` returns the frames lost just
    before this one; ``lost`` counts them all; :meth:`recent` gives the rate and the share lost over the window."""

    def __init__(self) -> None:
        self._last_ns: int | None = None
        self._intervals: collections.deque[int] = collections.deque(maxlen=WINDOW)
        self._lost_in_window: collections.deque[int] = collections.deque(maxlen=WINDOW)
        self.lost = 0

    def period_ns(self) -> float | None:
        """The stream's period (:func:`period_of` the latest intervals), or None before :data:`MIN_INTERVALS`."""
        if len(self._intervals) < MIN_INTERVALS:
            return None
        return period_of(np.fromiter(self._intervals, np.int64))

    def add(self, stamp_ns: int) -> int:
        """Take the next stamp (later than the previous one; an earlier or equal one restarts the window: a bag
        played again, a clock jump; the record node drops such images before they come here) and return how many
        frames were lost just before it."""
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
