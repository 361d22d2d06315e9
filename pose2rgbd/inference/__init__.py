"""Inference: load a checkpoint and render RGB + metric depth for ``T_world_cam`` poses (no ROS)."""

from pose2rgbd.inference.engine import (
    EngineConfig,
    InferenceEngine,
    RenderResult,
    check_pose_batch,
    extrapolate_constant_velocity,
)

__all__ = ["EngineConfig", "InferenceEngine", "RenderResult", "check_pose_batch", "extrapolate_constant_velocity"]
