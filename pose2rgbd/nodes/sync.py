"""Online synchronizers used by the recorder.

* :class:`InterpolatingStream` + the recorder's camera-driven policy: GPS / odometry samples are buffered;
  each camera stamp is served by interpolating the two samples that bracket it, if they are at most
  ``max_gap`` apart.
* :class:`ApproximateTimeSync`: the ``message_filters.ApproximateTimeSynchronizer`` (Python) policy: one
  queue per input keyed by stamp, at most ``queue_size`` each (oldest dropped); when a message arrives, the
  other queues' stamps within ``slop`` of it are tried, closest first, and the first combination whose
  spread is strictly below ``slop`` is emitted and removed from the queues. Re-implemented here because
  message_filters needs rclpy; the semantics (queue size, slop, closest-first search) are the same.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np


class InterpolatingStream:
    """Time-sorted samples ``(stamp_ns, value)`` of one input, at most ``horizon_ns`` of history."""

    def __init__(self, horizon_ns: int, max_len: int = 10000) -> None:
        self.horizon_ns = int(horizon_ns)
        self.max_len = max_len
        self.stamps: list[int] = []
        self.values: list[Any] = []

    def add(self, stamp_ns: int, value: Any) -> None:
        i = bisect.bisect_right(self.stamps, stamp_ns)
        if i > 0 and self.stamps[i - 1] == stamp_ns:
            self.values[i - 1] = value
            return
        self.stamps.insert(i, stamp_ns)
        self.values.insert(i, value)
        cut = max(bisect.bisect_left(self.stamps, self.stamps[-1] - self.horizon_ns), len(self.stamps) - self.max_len)
        if cut > 0:
            del self.stamps[:cut], self.values[:cut]

    def status(self, t: int, max_gap_ns: int) -> tuple[str, Any]:
        """``('ready', (v0, v1, alpha))``, ``('wait', None)`` (no sample after ``t`` yet) or ``('drop', reason)``."""
        s = self.stamps
        if not s:
            return "wait", None
        i = bisect.bisect_left(s, t)
        if i < len(s) and s[i] == t:
            return "ready", (self.values[i], self.values[i], 0.0)
        if i == len(s):
            return "wait", None
        if i == 0:
            return "drop", f"no sample before the image (first at +{(s[0] - t) * 1e-9:.3f} s)"
        gap = s[i] - s[i - 1]
        if gap > max_gap_ns:
            return "drop", f"samples around the image are {gap * 1e-9:.3f} s apart (max_gap_s {max_gap_ns * 1e-9})"
        return "ready", (self.values[i - 1], self.values[i], (t - s[i - 1]) / gap)


class ApproximateTimeSync:
    """message_filters-compatible approximate time policy over ``n`` inputs (see module docstring)."""

    def __init__(self, n: int, queue_size: int, slop_ns: int, callback: Callable[..., None]) -> None:
        self.queues: list[dict[int, Any]] = [{} for _ in range(n)]
        self.queue_size = queue_size
        self.slop_ns = int(slop_ns)
        self.callback = callback
        self.dropped = 0

    def add(self, index: int, stamp_ns: int, msg: Any) -> None:
        q = self.queues[index]
        q[stamp_ns] = msg
        while len(q) > self.queue_size:
            del q[min(q)]
            self.dropped += 1
        others = [j for j in range(len(self.queues)) if j != index]
        candidates = []
        for j in others:
            near = sorted((abs(s - stamp_ns), s) for s in self.queues[j] if abs(s - stamp_ns) <= self.slop_ns)
            if not near:
                return
            candidates.append([s for _, s in near])
        for combo in itertools.product(*candidates):
            stamps = list(combo)
            stamps.insert(index, stamp_ns)
            if max(stamps) - min(stamps) < self.slop_ns and all(s in self.queues[k] for k, s in enumerate(stamps)):
                msgs = [self.queues[k].pop(s) for k, s in enumerate(stamps)]
                self.callback(*msgs)
                return


def lerp(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    return np.asarray(a) + alpha * (np.asarray(b) - np.asarray(a))
