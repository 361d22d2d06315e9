"""Evaluation: metrics in data units, the nearest-pose baseline, figures, fly-through (imports torch)."""

from pose2rgbd.evaluation.baseline import NearestPoseBaseline, default_rot_weight
from pose2rgbd.evaluation.config import EvaluateConfig
from pose2rgbd.evaluation.evaluate import (
    EvaluationResult,
    evaluate,
    evaluate_config,
    evaluation_engine,
    format_metrics_markdown,
    predict,
)
from pose2rgbd.evaluation.metrics import MetricAccumulator, abs_rel, depth_mae, psnr, rgb_mae, ssim

__all__ = [
    "EvaluateConfig",
    "EvaluationResult",
    "MetricAccumulator",
    "NearestPoseBaseline",
    "abs_rel",
    "default_rot_weight",
    "depth_mae",
    "evaluate",
    "evaluate_config",
    "evaluation_engine",
    "format_metrics_markdown",
    "predict",
    "psnr",
    "rgb_mae",
    "ssim",
]
