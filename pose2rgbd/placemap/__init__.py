"""The place map: the one keyframe store of a place (docs/place-map.md).

Built once from a dataset's frames (:func:`build_map`, ``pose2rgbd map build``): per keyframe the pose,
intrinsics, image, metric depth, SIFT features with their world points, a global descriptor for place
recognition, and a spatial index over the keyframe poses. Opened lazily (:class:`PlaceMap`): the structure
localizer, the hybrid renderer, the baselines and coverage read keyframes from it. Maps built separately (pieces
of a large place, other flights) are joined by :func:`merge_maps` (``pose2rgbd map merge``).
"""

from pose2rgbd.placemap.build import MapBuildConfig, build_map
from pose2rgbd.placemap.features import KeyframeFeatures
from pose2rgbd.placemap.format import PLACE_MAP, MapError
from pose2rgbd.placemap.merge import merge_maps
from pose2rgbd.placemap.place_map import PlaceMap
from pose2rgbd.placemap.selection import MapSelection, select_frames

__all__ = [
    "PLACE_MAP",
    "KeyframeFeatures",
    "MapBuildConfig",
    "MapError",
    "MapSelection",
    "PlaceMap",
    "build_map",
    "merge_maps",
    "select_frames",
]
