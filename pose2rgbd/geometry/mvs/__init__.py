"""Multi-view stereo from metric poses, on the CPU: a plane sweep per frame against its neighbours (:mod:`.sweep`),
checked across views (:mod:`.consistency`), over a posed sequence and combined with a network's depth
(:mod:`.sequence`). What ``convert video --depth mvs`` / ``selfsup+mvs`` write (:mod:`pose2rgbd.convert.mvs_depth`)."""

from pose2rgbd.geometry.mvs.consistency import consistent_depth, reproject
from pose2rgbd.geometry.mvs.sequence import (
    CombinedDepth,
    MvsResult,
    combine_frame,
    depth_range_from_points,
    mvs_sequence,
    pick_sources,
)
from pose2rgbd.geometry.mvs.sweep import MvsConfig, sweep_depth

__all__ = [
    "CombinedDepth",
    "MvsConfig",
    "MvsResult",
    "combine_frame",
    "consistent_depth",
    "depth_range_from_points",
    "mvs_sequence",
    "pick_sources",
    "reproject",
    "sweep_depth",
]
