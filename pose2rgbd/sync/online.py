"""Time-offset estimation while recording: :class:`OnlineSync` is fed camera frames (or flow values) and speeds
one at a time and answers with the batch core, :func:`pose2rgbd.sync.estimator.correlate_signals`, over the last
``buffer_s`` seconds whenever asked.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from pose2rgbd.errors import SyncError
from pose2rgbd.sync.estimator import SyncConfig, SyncResult, correlate_signals
from pose2rgbd.sync.flow import FlowMagnitude


class OnlineSync:
    """Incremental estimator for the recorder: feed frames (or flow values) and speeds as they arrive and
    call :meth:`estimate` whenever an answer is wanted. Keeps the last ``buffer_s`` seconds.

    Times are seconds on each stream's own clock (float); the result follows :func:`correlate_signals`.
    """

    def __init__(self, cfg: SyncConfig | None = None, *, buffer_s: float = 120.0) -> None:
        self.cfg = cfg or SyncConfig()
        self.buffer_s = float(buffer_s)
        self._flow = FlowMagnitude(self.cfg.flow)
        self._ref: deque[tuple[float, float, bool]] = deque()
        self._other: deque[tuple[float, float]] = deque()

    def _trim(self, q: deque[Any]) -> None:
        while q and q[-1][0] - q[0][0] > self.buffer_s:
            q.popleft()

    def add_flow(self, t_s: float, value: float, *, rotation_dps: float | None = None) -> None:
        """Add one flow value; ``rotation_dps`` (camera turn rate over the flow's frame pair, e.g. from the
        IMU) above ``cfg.max_rotation_dps`` keeps the sample out of the correlation."""
        if np.isfinite(value) and (not self._ref or t_s > self._ref[-1][0]):
            lim = self.cfg.max_rotation_dps
            ok = rotation_dps is None or lim <= 0 or not np.isfinite(rotation_dps) or rotation_dps <= lim
            self._ref.append((float(t_s), float(value), bool(ok)))
            self._trim(self._ref)

    def add_frame(
        self, t_s: float, image: np.ndarray, *, is_bgr: bool = False, rotation_dps: float | None = None
    ) -> float:
        """Add a camera frame (uint8 RGB/BGR/gray); returns its flow value (NaN for the first)."""
        v = self._flow.add_image(t_s, image, is_bgr=is_bgr)
        self.add_flow(self._flow.last_mid_t, v, rotation_dps=rotation_dps)
        return v

    def add_speed(self, t_s: float, speed_mps: float) -> None:
        if np.isfinite(speed_mps) and (not self._other or t_s > self._other[-1][0]):
            self._other.append((float(t_s), float(speed_mps)))
            self._trim(self._other)

    @property
    def n_ref(self) -> int:
        return len(self._ref)

    @property
    def n_other(self) -> int:
        return len(self._other)

    def estimate(self, *, fallback_offset_s: float | None = None) -> SyncResult:
        """Current estimate over the buffered data (raises :class:`SyncError` if too few samples)."""
        if len(self._ref) < 3 or len(self._other) < 3:
            raise SyncError(f"not enough data yet: {len(self._ref)} flow samples, {len(self._other)} speeds")
        tr, xr, vr = (np.asarray(c) for c in zip(*self._ref, strict=True))
        to, yo = np.asarray(self._other).T
        return correlate_signals(
            tr, xr, to, yo, self.cfg, fallback_offset_s=fallback_offset_s, ref_valid=vr.astype(bool)
        )
