"""Rosbag / video + GPS -> dataset conversion with Algorithm 1 time synchronization (docs/convert.md).

Submodules are imported lazily by the CLI: :mod:`.bag` (``convert_bag``, ``align_gps_to_odometry``),
:mod:`.video` (``convert_video``), :mod:`.core` (``ConvertConfig``, pose planning), :mod:`.logs` (GPS and
attitude log readers, fix cleaning), :mod:`.report` (figures and summary).
"""

from pose2rgbd.convert.core import ConvertConfig

__all__ = ["ConvertConfig"]
