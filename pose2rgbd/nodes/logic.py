"""What every node's logic does the same way, so a node declares only what differs.

:class:`NodeLogic` holds the config, the message factory, the logger and the counters the runtimes report; it
gives throttled warnings (:meth:`NodeLogic.warning`, at most once per ``warn_throttle_s`` per key, with a count
of those suppressed), counting (:meth:`NodeLogic.count`), the diagnostics timer (:meth:`NodeLogic.diagnostics_tick`)
and live parameters (:meth:`NodeLogic.on_parameter_change`: the spec's rule, :func:`~pose2rgbd.nodes.spec.
parameter_change`, applied to the class's :attr:`~NodeLogic.live` names). A node adds its own refusals
(:meth:`NodeLogic.refuse_parameter`) and what a change must update besides the config
(:meth:`NodeLogic.parameter_applied`).

The config of a node built on it has ``warn_throttle_s`` and ``topics.diagnostics``.

The parts it is made of are here too: the throttle behind its warnings (:class:`Throttle`,
:func:`throttled_warning`; the TF input warns through one as well) and its logger (:func:`get_logger`); and what a
node serving an engine (renderer, localizer) holds besides: its recent latencies (:class:`Latencies`) and the
engine's release at cleanup (:func:`close_engine`).
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pose2rgbd.nodes.spec import parameter_change

Outgoing = tuple[str, Any]
# the config key of the topic of :meth:`NodeLogic.diagnostics_tick`; the lifecycle host publishes on it while the node
# is inactive too (pose2rgbd_ros/host.py)
DIAGNOSTICS_TOPIC = "topics.diagnostics"


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


class NodeLogic:
    """Base of the node logic (see the module docstring). Subclasses set :attr:`live` (the spec's live
    parameters) and :attr:`logger_name`, and implement :meth:`diagnostics`."""

    live: tuple[str, ...] = ()
    logger_name = "pose2rgbd.node"

    def __init__(self, cfg: Any, factory: Any, logger: Any = None, counters: Mapping[str, int] | None = None) -> None:
        self.cfg = cfg
        self.f = factory
        self.log = get_logger(logger, self.logger_name)
        self._warn = Throttle(cfg.warn_throttle_s)
        self.counters: dict[str, int] = dict(counters or {})

    # ------------------------------------------------------------------ warnings and counters
    def warning(self, key: str, now_ns: int, text: str) -> None:
        """Log ``text`` as a warning unless one with the same ``key`` was logged less than ``warn_throttle_s``
        ago (node clock); the next one that passes says how many were suppressed."""
        throttled_warning(self._warn, self.log, key, now_ns, text)

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to counter ``key`` (a new key starts at 0)."""
        self.counters[key] = self.counters.get(key, 0) + n

    # ------------------------------------------------------------------ live parameters
    def refuse_parameter(self, name: str, value: Any) -> str:
        """Why this node refuses ``name = value`` beyond the spec's rule ("" when it does not)."""
        return ""

    def parameter_applied(self, name: str) -> None:
        """Update what depends on parameter ``name`` after ``self.cfg`` took its new value."""

    def on_parameter_change(self, name: str, value: Any) -> tuple[bool, str]:
        """Apply a parameter change at once (``(True, "")``) or refuse it with the reason."""
        reason = self.refuse_parameter(name, value)
        if reason:
            return False, reason
        new, reason = parameter_change(self.cfg, name, value, self.live)
        if new is None:
            return False, reason
        self.cfg = new
        self._warn.period_ns = int(new.warn_throttle_s * 1e9)
        self.parameter_applied(name)
        self.log.info(f"parameter {name} = {value!r} applied")
        return True, ""

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self, now_ns: int) -> Any:
        """The node's DiagnosticArray."""
        raise NotImplementedError

    def diagnostics_tick(self, now_ns: int) -> list[Outgoing]:
        """The diagnostics timer: one DiagnosticArray on ``topics.diagnostics``."""
        return [(self.cfg.topics.diagnostics, self.diagnostics(now_ns))]


# ---------------------------------------------------------------------------------------------- engine nodes
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
