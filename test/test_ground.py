"""The ground plane of a place's keyframes (pose2rgbd.placemap.ground): what is and is not a ground, the up
direction from the cameras, and where a ray meets the plane."""

from __future__ import annotations

import numpy as np
import pytest

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.placemap.ground import (
    ENU_UP,
    GroundPlane,
    fit_ground_plane,
    keyframe_samples,
    keyframes_ground,
    up_direction,
    up_fits_cameras,
)
from pose2rgbd.placemap.keyframes import ArrayKeyframes
from pose2rgbd.testing.ground_plane import forward_pose


def _cameras(n: int = 24, height: float = 30.0, **kw) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.stack([forward_pose(*rng.uniform(-40, 40, 2), height + rng.uniform(-2, 2), yaw=rng.uniform(-np.pi, np.pi),
                                  **kw) for _ in range(n)])  # fmt: skip


def _square(n: int, z: float, half: float, rng: np.random.Generator) -> np.ndarray:
    return np.column_stack([rng.uniform(-half, half, (n, 2)), np.full(n, z)])


def test_up_from_forward_nadir_and_rolled_cameras() -> None:
    np.testing.assert_allclose(up_direction(_cameras(pitch_deg=30.0)), [0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(up_direction(_cameras(pitch_deg=90.0)), [0, 0, 1], atol=1e-9)  # nadir: view down
    tilted = np.diag([1.0, 1.0, 1.0, 1.0])
    tilted[:3, :3] = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])  # a world whose up is -y (a y-down SfM frame)
    T = np.einsum("ij,njk->nik", tilted, _cameras())
    np.testing.assert_allclose(up_direction(T), [0, -1, 0], atol=1e-9)
    straight = np.stack([forward_pose(2.0 * i, 0.1 * i, 30.0, yaw=0.01 * (i % 3)) for i in range(40)])
    assert up_direction(straight) is None  # one heading: any direction square to it fits the x axes
    rng = np.random.default_rng(2)  # a handheld camera turned freely in roll: up is not pinned down
    rolled = np.stack([forward_pose(0, 0, 1.5, yaw=rng.uniform(-3, 3), roll=rng.uniform(-1.2, 1.2)) for _ in range(40)])
    assert up_direction(rolled) is None


def test_the_ground_not_the_larger_facade_nor_the_desk() -> None:
    rng = np.random.default_rng(0)
    C = _cameras()[:, :3, 3]
    up = np.array([0.0, 0.0, 1.0])
    ground = _square(3000, 0.0, 60.0, rng)
    facade = np.column_stack([np.full(6000, 70.0), rng.uniform(-60, 60, 6000), rng.uniform(0, 40, 6000)])
    roofs = _square(1500, 18.0, 15.0, rng)  # level, under the cameras, with the ground's points below it
    g = fit_ground_plane(np.concatenate([ground, facade, roofs]), C, up, tolerance_m=0.8)  # 2 % of ~40 m
    assert g is not None
    np.testing.assert_allclose(g.normal, up, atol=5e-3)  # within 0.3 deg: the facade's foot is near the ground
    assert 0.2 < g.inliers < 0.35  # 3,000 of 10,500 points
    assert np.abs(g.height(ground)).max() < 0.25  # within a third of the inlier tolerance over the 120 m square
    np.testing.assert_allclose(g.height(C), C[:, 2], atol=0.25)
    # indoors: a desk under the cameras, the floor beside it seen too -> the floor; the desk alone -> the desk
    desk, floor = _square(4000, 0.75, 0.8, rng), _square(600, 0.0, 2.5, rng)
    cams = C / 20.0 + [0, 0, 0.2]  # 1.5 m above the floor
    g2 = fit_ground_plane(np.concatenate([desk, floor]), cams, up, tolerance_m=0.03)
    assert g2 is not None and abs(g2.offset) < 0.01
    g3 = fit_ground_plane(desk, cams, up, tolerance_m=0.03)
    assert g3 is not None and abs(g3.offset + 0.75) < 0.01
    # no level plane with the cameras above it: none (a ceiling above the cameras is not a ground)
    assert fit_ground_plane(_square(3000, 40.0, 60.0, rng), C, up, tolerance_m=0.8) is None
    assert fit_ground_plane(facade, C, up, tolerance_m=0.8) is None
    assert fit_ground_plane(ground, C, None, tolerance_m=0.8) is None  # up unknown


def test_the_street_under_a_long_street_level_track() -> None:
    """A kilometre of street between two facades, cameras 1.6 m up: the tolerance follows the points' depth, not
    the place's extent (a tolerance of 1 % of a kilometre would put the cameras inside the ground's band)."""
    rng = np.random.default_rng(4)
    street = np.column_stack([rng.uniform(0, 1000, 8000), rng.uniform(-10, 10, 8000), np.zeros(8000)])
    walls = np.column_stack([rng.uniform(0, 1000, 12000), rng.choice([-10.0, 10.0], 12000), rng.uniform(0, 20, 12000)])
    C = np.column_stack([np.linspace(0, 1000, 200), np.zeros(200), np.full(200, 1.6)])
    g = fit_ground_plane(np.concatenate([street, walls]), C, np.array([0.0, 0.0, 1.0]), tolerance_m=0.2)
    assert g is not None and g.normal[2] > np.cos(np.radians(0.5))
    assert np.abs(g.height(street)).max() < 0.1


def test_where_a_ray_meets_the_ground() -> None:
    cam = PinholeCamera(9, 7, 6.0, 6.0, 4.0, 3.0)
    g = GroundPlane(np.array([0.0, 0.0, 1.0]), -2.0, tolerance_m=0.1, inliers=1.0)  # the plane z = 2
    T = np.stack([forward_pose(0, 0, 12.0, pitch_deg=30.0), forward_pose(0, 0, 12.0, pitch_deg=90.0),
                  forward_pose(0, 0, 1.0, pitch_deg=60.0)])  # fmt: skip
    z = g.depth(T, cam.rays())
    assert z.shape == (3, 7, 9) and z.dtype == np.float32
    # the centre ray at 30 deg below the horizon, 10 m above the plane: 20 m along it, cos 0 -> z = 20
    assert z[0, 3, 4] == pytest.approx(10.0 / np.sin(np.radians(30.0)), rel=1e-5)
    assert z[1, 3, 4] == pytest.approx(10.0, rel=1e-5)  # nadir
    # every finite answer lies on the plane (at 30 deg below the horizon every ray descends: half the vertical
    # field of view is 26.6 deg)
    pts = cam.rays()[None] * np.where(np.isfinite(z), z, 0.0)[..., None]
    world = np.einsum("bij,bhwj->bhwi", T[:, :3, :3], pts) + T[:, None, None, :3, 3]
    fin = np.isfinite(z)
    np.testing.assert_allclose(world[fin][:, 2], 2.0, atol=1e-4)
    assert fin[:2].all() and not fin[2].any()  # a camera under the plane meets nothing
    flat = forward_pose(0, 0, 12.0, pitch_deg=0.0)[None]  # level: the rows above the centre row look up
    zf = g.depth(flat, cam.rays())
    assert not np.isfinite(zf[0, :4]).any() and np.isfinite(zf[0, 4:]).all()


def test_keyframes_ground_of_rendered_depth() -> None:
    """A store of depth images of the plane z = 0 (rendered analytically here) gives back that plane; its points
    are where the keyframes saw them, whatever size their depth images are stored at."""
    cam = PinholeCamera(32, 24, 20.0, 20.0, 15.5, 11.5)
    T = _cameras(12, height=25.0, pitch_deg=45.0)
    g0 = GroundPlane(np.array([0.0, 0.0, 1.0]), 0.0, tolerance_m=0.0, inliers=1.0)
    depth = g0.depth(T, cam.rays())
    rgb = np.zeros((*depth.shape, 3), np.uint8)
    kf = ArrayKeyframes(rgb, depth, T, cam)
    P = keyframe_samples(kf, points_per_keyframe=100)[0]
    assert 50 < len(P) < 12 * 200 and np.abs(P[:, 2]).max() < 1e-3
    g = keyframes_ground(kf)
    assert g is not None and abs(g.offset) < 1e-3 and g.normal[2] > 0.9999
    small = g0.depth(T, cam.scaled(16, 12).rays())  # depth stored at half the camera's size
    half = ArrayKeyframes(rgb[:, ::2, ::2], small, T, cam)
    assert np.abs(keyframe_samples(half)[0][:, 2]).max() < 1e-3


def test_a_geo_referenced_map_gives_the_ground_of_a_straight_flight(tmp_path) -> None:
    """A straight flight leaves up unknown to the cameras; a keyframe map of a dataset with a datum (its world a
    local ENU frame) gives it, and the hybrid fitted on that map finds the ground (a map without: none)."""
    from pose2rgbd.methods.hybrid import HybridConfig, build_model
    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.placemap.keyframe_map import write_keyframe_map

    cam = PinholeCamera(64, 64, 32.0, 32.0, 31.5, 31.5)
    T = np.stack([forward_pose(3.0 * i, 0.0, 40.0, pitch_deg=40.0) for i in range(30)])
    g0 = GroundPlane(np.array([0.0, 0.0, 1.0]), 0.0, tolerance_m=0.0, inliers=1.0)
    depth = g0.depth(T, cam.rays())
    assert up_direction(T) is None
    maps = {}
    for name, datum in (("geo", {"lat_deg": 44.43, "lon_deg": 26.1, "alt_m": 80.0}), ("local", None)):
        write_keyframe_map(
            tmp_path / name, rgb=lambda k: np.zeros((64, 64, 3), np.uint8), depth=lambda k: depth[k],
            T_world_cam=T, camera=cam, frames=np.arange(30), stamp_ns=np.arange(30) * 10**8,
            source_id=np.zeros(30, np.int64), dataset={"name": "straight", "datum": datum}, selection="all",
            rot_weight_m=10.0,
        )  # fmt: skip
        maps[name] = PlaceMap(tmp_path / name)
    g = keyframes_ground(maps["geo"], up=ENU_UP)
    assert g is not None and abs(g.offset) < 0.05 and g.normal[2] > 0.9999
    # the same flight in a world turned 90 deg about the track (GPS along a line does not fix that turn): the
    # cameras' image x points down in it, so its z is not taken for up, and the straight flight gives none
    turn = np.eye(4)
    turn[:3, :3] = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    turned = turn @ T
    assert up_fits_cameras(T, ENU_UP) and not up_fits_cameras(turned, ENU_UP)
    assert keyframes_ground(ArrayKeyframes(np.zeros((30, 64, 64, 3), np.uint8), depth, turned, cam), up=ENU_UP) is None
    for name, found in (("geo", True), ("local", False)):
        model = build_model(HybridConfig(size=64, dense_channels=32, trunk_channels=[16] * 6))
        model.use_keyframes(maps[name], camera=cam, rot_weight_m=10.0)
        assert (model.ground is not None) == found, name
        if found:
            assert model.ground is not None and abs(model.ground.offset) < 0.05
