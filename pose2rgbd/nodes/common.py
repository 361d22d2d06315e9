"""Small pieces shared by the node logic: throttled logging, topic-name resolution, and what every node serving an
engine (renderer, localizer) holds: its recent latencies (:class:`Latencies`) and the engine's release at cleanup
(:func:`close_engine`). What every node has in common is :class:`pose2rgbd.nodes.logic.NodeLogic`."""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np


class Throttle:
    """Let a message through at most once per ``period_s`` per key (clock: the node's ``now_ns``)."""

    def __init__(self, period_s: float) -> None:
        self.period_ns = int(period_s * 1e9)
        self._last: dict[str, int] = {}
        self.suppressed: dict[str, int] = {}

    def __call__(self, key: str, now_ns: int) -> bool:
        last = self._last.get(key)
        if last is not None and 0 <= now_ns - last < self.period_ns:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return False
        self._last[key] = now_ns
        return True


def throttled_warning(throttle: Throttle, log: Any, key: str, now_ns: int, text: str) -> None:
    """Log ``text`` unless ``throttle`` holds ``key`` back; the next one let through counts those suppressed."""
    if throttle(key, now_ns):
        n = throttle.suppressed.pop(key, 0)
        log.warning(text + (f" ({n} similar suppressed)" if n else ""))


def get_logger(logger: Any | None, name: str) -> Any:
    """The node logic logs pre-formatted strings only, so an rclpy logger works as well as a logging one."""
    return logger if logger is not None else logging.getLogger(name)


def resolve_topic(name: str, namespace: str = "", node_name: str = "") -> str:
    """ROS-style resolution for the offline runtime: ``rgb`` -> ``/ns/rgb``, ``~/x`` -> ``/ns/node/x``."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if name.startswith("/"):
        return name
    if name.startswith("~"):
        return f"{ns}/{node_name}/{name[1:].lstrip('/')}".replace("//", "/")
    return f"{ns}/{name}"


def latency_percentiles_ms(latencies_ms: Sequence[float]) -> tuple[float, float]:
    """``(p50, p99)`` of the recorded latencies (NaN, NaN before the first)."""
    if not latencies_ms:
        return float("nan"), float("nan")
    a = np.asarray(latencies_ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


class Latencies:
    """A node's recent latencies in ms (a part the node holds): the newest (:attr:`last_ms`, NaN before the first)
    and the last ``window`` for the diagnostics' p50 / p99."""

    def __init__(self, window: int = 1000) -> None:
        self.last_ms = math.nan
        self._recent: collections.deque[float] = collections.deque(maxlen=window)

    def add(self, ms: float) -> None:
        self.last_ms = ms
        self._recent.append(ms)

    def percentiles_ms(self) -> tuple[float, float]:
        """``(p50, p99)`` of the recent latencies (NaN, NaN before the first)."""
        return latency_percentiles_ms(self._recent)


def close_engine(engine: Any) -> None:
    """A node's cleanup (the host's ``close``): stop the engine's background work (look-ahead) and let go of the
    model; an engine without ``close`` holds nothing to stop."""
    close = getattr(engine, "close", None)
    if callable(close):
        close()
