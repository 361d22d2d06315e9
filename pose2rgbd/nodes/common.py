"""Small pieces shared by the node logic: throttled logging, topic-name resolution, latency percentiles, and what
every node serving an engine has in common (:class:`EngineNode`; what every node has in common is
:class:`pose2rgbd.nodes.logic.NodeLogic`)."""

from __future__ import annotations

import logging
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


class EngineNode:
    """Mixin of the node logic that serves an engine (renderer, localizer), next to
    :class:`~pose2rgbd.nodes.logic.NodeLogic`. It expects ``self.engine`` and ``self._latency_ms`` (recent
    latencies, ms)."""

    engine: Any
    _latency_ms: Sequence[float]

    def close(self) -> None:
        """The host's cleanup: stop the engine's background work (look-ahead) and let go of the model."""
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()

    def latency_percentiles_ms(self) -> tuple[float, float]:
        return latency_percentiles_ms(self._latency_ms)
