"""The fused geometry of a place: one consistent surface made once from every keyframe's depth, and the
training-free renderer that takes its colours from the keyframes that see each point (docs/place-map.md,
"Fused geometry").

* :mod:`~pose2rgbd.placemap.fused.tsdf`: the keyframes' depth fused into a TSDF (Open3D ``VoxelBlockGrid``),
  its surface extracted as a triangle mesh, stored beside a place map (``pose2rgbd map fuse``) and ray-cast
  (Open3D ``RaycastingScene``) for the depth of any pose.
* :mod:`~pose2rgbd.placemap.fused.exposure`: per-keyframe gain and offset per channel, fitted by least squares on
  co-visible pixels (auto-exposure and white balance differ from frame to frame).
* :mod:`~pose2rgbd.placemap.fused.render`: for each ray-cast pixel, the colour of the nearest keyframes that see the
  point (a visibility test against their depth and the fused surface), blended by viewing angle and distance
  (unstructured lumigraph).

Open3D is imported only when fusing or ray casting; the rest of the package never loads it.
"""

from pose2rgbd.placemap.fused.tsdf import (
    FusedGeometry,
    FusionConfig,
    fuse_keyframes,
    fuse_map,
    load_fused,
    voxel_words,
)
from pose2rgbd.placemap.keyframes import ArrayKeyframes, Keyframes

__all__ = [
    "ArrayKeyframes",
    "FusedGeometry",
    "FusionConfig",
    "Keyframes",
    "fuse_keyframes",
    "fuse_map",
    "load_fused",
    "voxel_words",
]
