"""The recorder's synchronization of camera, GPS and odometry (:class:`FrameSync`).

Policy ``interpolate`` (camera-driven, the default): every image waits in a queue until GPS and odometry both have
a sample after its stamp; the two samples bracketing the stamp are interpolated (GPS linearly in lat/lon/alt,
odometry position linearly and orientation by slerp) if they are at most ``sync.max_gap_s`` apart, otherwise the
image is dropped and counted. Policy ``approximate``: message_filters' ApproximateTimeSynchronizer semantics
(``queue_size``, ``slop_s``; :class:`~pose2rgbd.nodes.sync.ApproximateTimeSync`).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import numpy as np

from pose2rgbd import messages as M
from pose2rgbd.geometry.interpolation import slerp_quat_xyzw
from pose2rgbd.nodes.logic import NodeLogic
from pose2rgbd.nodes.recorder.config import RecorderConfig
from pose2rgbd.nodes.sync import ApproximateTimeSync, InterpolatingStream, lerp

Outgoing = tuple[str, Any]


@dataclass
class FixSample:
    """A GPS fix the gate kept: lat/lon/alt, the message, what was read from it."""

    lla: np.ndarray
    msg: Any
    reading: M.FixReading


@dataclass
class OdomSample:
    """An odometry message: position, orientation (xyzw), the message."""

    t: np.ndarray
    q: np.ndarray
    msg: Any


class FrameSync(NodeLogic):
    """Part of the :class:`~pose2rgbd.nodes.recorder.Recorder`: the synchronizer state and policies. Each matched
    image goes to :meth:`_emit` (the recorder's frame output)."""

    cfg: RecorderConfig

    def _emit(
        self, stamp: int, img: Any, lla: np.ndarray, t_odom: np.ndarray, q_odom: np.ndarray, fix: FixSample,
        odom: Any, now_ns: int,
    ) -> list[Outgoing]:  # fmt: skip
        raise NotImplementedError

    def _init_sync(self, cfg: RecorderConfig) -> None:
        horizon = int(cfg.sync.buffer_s * 1e9)
        self.gps = InterpolatingStream(horizon)
        self.odom = InterpolatingStream(horizon)
        self._pending: collections.deque[tuple[int, Any]] = collections.deque()
        self._approx = ApproximateTimeSync(3, cfg.sync.queue_size, int(cfg.sync.slop_s * 1e9), self._on_triple)
        self._approx_out: list[Outgoing] = []
        self._approx_now = 0

    def _queue_image(self, stamp: int, msg: Any, now_ns: int) -> list[Outgoing]:
        """An image to record: into the synchronizer (the policy's)."""
        if self.cfg.sync.policy == "approximate":
            return self._approx_add(0, stamp, (stamp, msg))
        self._pending.append((stamp, msg))
        while len(self._pending) > self.cfg.sync.queue_size:
            self._pending.popleft()
            self.count("dropped_queue")
            self.warning("queue", now_ns, "image queue full while waiting for GPS/odometry; dropping the oldest")
        return self._process(now_ns)

    def _queue_fix(self, stamp: int, item: FixSample, now_ns: int) -> list[Outgoing]:
        if self.cfg.sync.policy == "approximate":
            return self._approx_add(1, stamp, item)
        self.gps.add(stamp, item)
        return self._process(now_ns)

    def _queue_odom(self, stamp: int, item: OdomSample, now_ns: int) -> list[Outgoing]:
        if self.cfg.sync.policy == "approximate":
            return self._approx_add(2, stamp, item)
        self.odom.add(stamp, item)
        return self._process(now_ns)

    def _drop_pending(self, counter: str) -> None:
        """Forget the images waiting for GPS / odometry (counted in ``counter``)."""
        self.count(counter, len(self._pending))
        self._pending.clear()
        self._approx.queues = [{} for _ in self._approx.queues]

    def _process(self, now_ns: int) -> list[Outgoing]:
        out: list[Outgoing] = []
        gap = int(self.cfg.sync.max_gap_s * 1e9)
        while self._pending:
            stamp, img = self._pending[0]
            sg, g = self.gps.status(stamp, gap)
            so, o = self.odom.status(stamp, gap)
            if "drop" in (sg, so):
                self._pending.popleft()
                self.count("dropped_no_support")
                why = g if sg == "drop" else o
                self.warning(
                    "support", now_ns, f"image at {stamp} dropped: {'GPS' if sg == 'drop' else 'odometry'} {why}"
                )
                continue
            if "wait" in (sg, so):
                break
            self._pending.popleft()
            f0, f1, a = g
            o0, o1, b = o
            lla = lerp(f0.lla, f1.lla, a)
            t = lerp(o0.t, o1.t, b)
            q = slerp_quat_xyzw(o0.q, o1.q, b)
            near_fix: FixSample = f0 if a < 0.5 else f1
            near_odom = o0 if b < 0.5 else o1
            out += self._emit(stamp, img, lla, t, q, near_fix, near_odom.msg, now_ns)
        return out

    def _approx_add(self, index: int, stamp: int, item: Any) -> list[Outgoing]:
        self._approx_out = []
        self._approx_now = stamp
        self._approx.add(index, stamp, item)
        out, self._approx_out = self._approx_out, []
        return out

    def _on_triple(self, img_item: tuple[int, Any], fix: FixSample, odom: OdomSample) -> None:
        stamp, img = img_item
        self._approx_out += self._emit(stamp, img, fix.lla, odom.t, odom.q, fix, odom.msg, self._approx_now)
