"""Time synchronization of camera frames with GPS / odometry (Algorithm 1 of the paper, docs/convert.md)."""

from pose2rgbd.sync.estimator import (
    SyncConfig,
    SyncResult,
    correlate_signals,
    speed_from_positions,
    velocity_from_positions,
)
from pose2rgbd.sync.flow import FlowConfig, FlowMagnitude, to_flow_gray

__all__ = [
    "FlowConfig",
    "FlowMagnitude",
    "SyncConfig",
    "SyncResult",
    "correlate_signals",
    "speed_from_positions",
    "to_flow_gray",
    "velocity_from_positions",
]
