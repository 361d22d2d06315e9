"""The recorder's GPS input (:class:`GpsInput`): fixes below ``min_fix_status`` or without a usable position are
dropped and counted; the rest pass the GPS gate (:class:`pose2rgbd.sync.gps.FixGate`, shared with ``convert``:
a fix implying a jump faster than ``max_speed_mps`` from the last kept one is dropped, judged from a consensus
anchor that re-anchors when the fixes kept so far prove to be the outliers). The first kept fix is the ENU datum
unless one is set (or a resumed dataset has one)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pose2rgbd import messages as M
from pose2rgbd.geometry.geodesy import Datum
from pose2rgbd.nodes.recorder.append import DatasetAppend, datum_text
from pose2rgbd.nodes.recorder.config import RecorderConfig
from pose2rgbd.nodes.recorder.frame_sync import FixSample, FrameSync
from pose2rgbd.nodes.sync import InterpolatingStream
from pose2rgbd.sync.gps import REASON_JUMP, REASON_NULL_ISLAND, FixGate

Outgoing = tuple[str, Any]


# the fixes whose reported covariance the dataset's pose_error is the median of (the first ones: it is written when
# the dataset opens, at the first frame)
MAX_COVARIANCES = 10_000


class GpsInput(FrameSync, DatasetAppend):
    """Part of the :class:`~pose2rgbd.nodes.recorder.Recorder`: NavSatFix messages -> kept fixes -> the
    synchronizer."""

    cfg: RecorderConfig
    refused: str

    def _init_gps(self, cfg: RecorderConfig) -> None:
        self.gate = FixGate(cfg.max_speed_mps, cfg.jump_tolerance_m)
        # the kept fixes' reported covariance (ENU, m^2) and its type: the dataset's pose_error, when it opens
        self.fix_covariances: list[tuple[np.ndarray, int]] = []
        self._reanchors = 0
        self._datum_from_gate = False

    def _stamp(self, msg: Any, now_ns: int, what: str) -> int:
        """The header stamp, or the receive time (the recorder's)."""
        raise NotImplementedError

    def _other_input(self, now_ns: int, key: str) -> None:
        """A message other than an image arrived (the recorder's: counted, for its diagnostics)."""
        raise NotImplementedError

    def on_gps(self, msg: Any, now_ns: int) -> list[Outgoing]:
        self._other_input(now_ns, "fixes")
        fix = M.read_navsatfix(msg)
        if self.cfg.gps.altitude == "fixed":
            fix = dataclasses.replace(fix, lla=np.array([fix.lla[0], fix.lla[1], self.cfg.gps.fixed_altitude_m]))
        problem = fix.problem(self.cfg.min_fix_status)
        if problem is not None:
            if np.isfinite(fix.lla[:2]).all() and not np.isfinite(fix.lla[2]):
                problem = "NaN altitude (a 2-D receiver? set gps.altitude: fixed and gps.fixed_altitude_m)"
            self.count("bad_fixes")
            self.warning("fix", now_ns, f"ignoring GPS fix: {problem} (lat/lon/alt {fix.lla.tolist()})")
            return []
        stamp = self._stamp(msg, now_ns, "GPS")
        released, dropped = self.gate.add(
            stamp / 1e9, float(fix.lla[0]), float(fix.lla[1]), (stamp, FixSample(fix.lla, msg, fix))
        )
        for why in dropped:
            key = {REASON_JUMP: "fixes_dropped_jump", REASON_NULL_ISLAND: "fixes_dropped_cold_start"}.get(
                why, "fixes_dropped_stamp"
            )
            self.count(key)
            self.warning("fix_" + key, now_ns, f"ignoring GPS fix at {fix.lla[:2].tolist()}: {why}")
        if self.gate.reanchors != self._reanchors:  # the fixes kept so far were the outliers
            self._reanchors = self.gate.reanchors
            self.log.warning(
                f"GPS re-anchored at {fix.lla[:2].tolist()}: the fixes kept before disagree with the last "
                f"{self.gate.min_consensus}, which agree with each other; frames until now may be off"
            )
            self.gps = InterpolatingStream(self.gps.horizon_ns)  # never interpolate across the jump
            if self._datum_from_gate and self.writer is None:
                self.datum = None  # nothing written about it yet: take the new anchor
        out: list[Outgoing] = []
        for _, (st, item) in released:
            out += self._add_fix(st, item, now_ns)
        return out

    def _add_fix(self, stamp: int, item: FixSample, now_ns: int) -> list[Outgoing]:
        if self.refused:
            return []
        lla = item.lla
        if not self._check_resume_place(lla):
            return []
        if self.datum is None:
            self.datum = Datum(float(lla[0]), float(lla[1]), float(lla[2]))
            self._datum_from_gate = True
            self.log.info(f"ENU datum at the first fix the GPS gate kept: {datum_text(self.datum)} (lat,lon,alt)")
        if len(self.fix_covariances) < MAX_COVARIANCES:
            self.fix_covariances.append((item.reading.covariance, item.reading.covariance_type))
        return self._queue_fix(stamp, item, now_ns)
