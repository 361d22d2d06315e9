"""The structure localizer keeps a query's geometry (camera, scale) per image size: a query camera set later
replaces it, and a sequence's fixes are those of images localized one by one with the previous fix as prior."""

from __future__ import annotations

import numpy as np


def test_a_query_camera_set_after_a_fix_is_used_for_the_next_image(map_world: dict) -> None:
    """The geometry kept for 128x128 queries is made again when the intrinsics change: an image localized with
    the map's camera, then with intrinsics of twice the focal length, gets another pose (before the change the
    kept geometry would give the same one), and back with the map's own values the first pose again."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import PlaceMap

    ds = Dataset(map_world["dataset"])
    img = ds.read_rgb(int(np.flatnonzero(ds.frames.source_id == 1)[2]))
    pm = PlaceMap(map_world["map"])
    loc = StructureLocalizer(pm, StructureConfig(use_previous_fix=False))
    first = loc.localize_one(img)
    assert first.ok
    cam = pm.camera(0)
    loc.query_intrinsics = (2 * cam.fx, 2 * cam.fy, cam.cx, cam.cy)
    other = loc.localize_one(img)
    assert not other.ok or not np.allclose(other.T_world_cam, first.T_world_cam)
    loc.query_intrinsics = (cam.fx, cam.fy, cam.cx, cam.cy)
    again = loc.localize_one(img)
    assert again.ok and np.array_equal(again.T_world_cam, first.T_world_cam)
    assert np.array_equal(again.quat_xyzw, first.quat_xyzw)
