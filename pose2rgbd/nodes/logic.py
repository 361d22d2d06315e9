"""What every node's logic does the same way, so a node declares only what differs.

:class:`NodeLogic` holds the config, the message factory, the logger and the counters the runtimes report; it
gives throttled warnings (:meth:`NodeLogic.warning`, at most once per ``warn_throttle_s`` per key, with a count
of those suppressed), counting (:meth:`NodeLogic.count`), the diagnostics timer (:meth:`NodeLogic.diagnostics_tick`)
and live parameters (:meth:`NodeLogic.on_parameter_change`: the spec's rule, :func:`~pose2rgbd.nodes.spec.
parameter_change`, applied to the class's :attr:`~NodeLogic.live` names). A node adds its own refusals
(:meth:`NodeLogic.refuse_parameter`) and what a change must update besides the config
(:meth:`NodeLogic.parameter_applied`).

The config of a node built on it has ``warn_throttle_s`` and ``topics.diagnostics``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pose2rgbd.nodes.common import Throttle, get_logger, throttled_warning
from pose2rgbd.nodes.spec import parameter_change

Outgoing = tuple[str, Any]


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
