"""The TF a node looks transforms up in, the same for both runtimes (the offline runner and the rclpy host).

:class:`TFInput` is one :class:`~pose2rgbd.geometry.tf_buffer.TFBuffer` keeping :data:`TF_CACHE_S` of history per
dynamic link (tf2's default is 10 s; an image that arrives late still resolves), fed with every
``tf2_msgs/TFMessage`` from ``/tf`` and ``/tf_static`` (:func:`tf_topics`: which of them a node's
:class:`~pose2rgbd.nodes.spec.TFNeed` reads). A transform the buffer rejects (a NaN translation, a quaternion
breaking the rule, a self transform, a dynamic one jumping more than :data:`FUTURE_STAMP_S` ahead of the node's clock)
is skipped, counted as ``tf_rejected`` in the node's counters (its diagnostics) and logged as a throttled warning:
through :meth:`NodeLogic.warning <pose2rgbd.nodes.logic.NodeLogic.warning>` (the node's ``warn_throttle_s``) for a
logic built on :class:`~pose2rgbd.nodes.logic.NodeLogic`, else at most every :data:`TF_WARN_THROTTLE_S`.
"""

from __future__ import annotations

from typing import Any

from pose2rgbd.geometry.tf_buffer import TFBuffer
from pose2rgbd.nodes.logic import NodeLogic, Throttle, throttled_warning
from pose2rgbd.nodes.spec import TFNeed

TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
TF_CACHE_S = 30.0  # history kept per dynamic TF link (tf2 keeps 10 s; the offline runner always kept 30 s)
TF_WARN_THROTTLE_S = 5.0  # rejected-transform warnings of a logic that is no NodeLogic
TIME_JUMP_BACK_S = 1.0  # the node's clock going back more than this (a bag played again under sim time): TF cleared
# a dynamic transform stamped more than this after the node's clock, on a link whose stamps were in step with it, is
# refused (a latest-time lookup would answer it, hiding every transform after it, until the clock reached its stamp;
# TFBuffer.add_tf_message), and so is a pose on the render node's pose topic. Above the post-dating some publishers do
# on purpose (AMCL's map -> odom by transform_tolerance, 1 s by default in Nav2)
FUTURE_STAMP_S = 5.0


def tf_topics(need: TFNeed, tf_topic: str = TF_TOPIC, tf_static_topic: str = TF_STATIC_TOPIC) -> list[tuple[str, bool]]:
    """``[(topic, static), ...]`` that feed a node with this TF need (``/tf_static`` alone for a static need)."""
    if need.static_only:
        return [(tf_static_topic, True)]
    return [(tf_topic, False), (tf_static_topic, True)]


class TFInput:
    """A node's TF buffer and the handling of rejected transforms (see the module docstring)."""

    def __init__(self, logic: Any, log: Any) -> None:
        self.buffer = TFBuffer(cache_time_s=TF_CACHE_S)
        self.logic = logic
        self.log = log  # for a logic that is no NodeLogic
        self._throttle = Throttle(TF_WARN_THROTTLE_S)
        self._last_now_ns: int | None = None

    @property
    def rejected(self) -> int:
        return self.buffer.rejected

    def lookup_transform(self, target: str, source: str, time_ns: int = 0) -> Any:
        return self.buffer.lookup_transform(target, source, time_ns)

    def add(self, msg: Any, topic: str, *, static: bool, now_ns: int) -> int:
        """Add a TFMessage received on ``topic`` at ``now_ns`` (the node's clock: the stamp of a transform without
        one); returns how many of its transforms were rejected (counted and logged). Where the clock went back by
        more than :data:`TIME_JUMP_BACK_S` since the last message (a bag played again, or looped, under sim time),
        the dynamic history is cleared first, as tf2_ros does: else the newest transforms of the first play hide the
        second's and the node answers nothing."""
        if self._last_now_ns is not None and now_ns < self._last_now_ns - int(TIME_JUMP_BACK_S * 1e9):
            n = self.buffer.clear_dynamic()
            self.log.info(f"time jumped back {(self._last_now_ns - now_ns) / 1e9:.1f} s (a bag played again?): the "
                          f"history of {n} dynamic TF link(s) cleared")  # fmt: skip
        self._last_now_ns = now_ns
        # the clock at 0: sim time before the first /clock, nothing to compare with
        bad = self.buffer.add_tf_message(msg, static=static, default_stamp_ns=now_ns,
                                         clock_ns=now_ns if now_ns > 0 else None,
                                         max_ahead_ns=int(FUTURE_STAMP_S * 1e9))  # fmt: skip
        if bad:
            self._rejected(topic, now_ns)
        return bad

    def _rejected(self, topic: str, now_ns: int) -> None:
        b = self.buffer
        counters = getattr(self.logic, "counters", None)
        if isinstance(counters, dict):  # in the node's diagnostics
            counters["tf_rejected"] = b.rejected
        text = f"rejected a transform on {topic} ({b.rejected} so far): {b.last_rejection}"
        if isinstance(self.logic, NodeLogic):
            self.logic.warning("tf_rejected", now_ns, text)
        else:
            throttled_warning(self._throttle, self.log, "tf_rejected", now_ns, text)
