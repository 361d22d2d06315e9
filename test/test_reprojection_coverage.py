"""The reprojection baseline (nearest RGB-D frames warped into the query pose) and the pose coverage measure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose2rgbd.errors import ConfigError, GeometryError
from pose2rgbd.evaluation.reprojection import reproject_nearest, splat
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.coverage import PoseSet
from pose2rgbd.testing.ground_plane import look_down_pose, make_ground_plane_checkpoint, render_ground_plane

SIZE = 64


@pytest.fixture(scope="module")
def plane():
    ck = make_ground_plane_checkpoint(SIZE, hfov_deg=90.0)
    return ck, ck.camera


def _render(ck, T):
    out = render_ground_plane(ck, np.asarray(T)[None])
    return out["rgb"][0], out["depth"][0].astype(np.float64)


def test_integer_pixel_shift_reproduces_the_held_out_frame_exactly_where_visible(plane) -> None:
    ck, cam = plane
    f = cam.fx  # 32 px at 90 deg over 64 px
    h = 20.0
    dx = 4 * h / f  # the ground moves by exactly 4 pixels
    src, query = look_down_pose(0.0, 0.0, h), look_down_pose(dx, 0.0, h)
    rgb_s, d_s = _render(ck, src)
    rgb_q, d_q = _render(ck, query)
    r = reproject_nearest(rgb_s, d_s, src, cam, query)
    assert 0.05 < r.hole_fraction < 0.08  # the 4-column strip the source never saw (4 / 64 = 6.25 %)
    np.testing.assert_array_equal(r.rgb[r.valid], rgb_q[r.valid])
    np.testing.assert_allclose(r.depth[r.valid], d_q[r.valid], rtol=1e-6)
    assert np.isnan(r.depth[~r.valid]).all() and (r.rgb[~r.valid] == 0).all()
    # a query that is not the source: the unwarped source differs where the warp is exact
    assert np.abs(rgb_s.astype(int) - rgb_q).mean() > 5 * np.abs(r.rgb[r.valid].astype(int) - rgb_q[r.valid]).mean()


def test_general_pose_depth_follows_the_plane_and_fill_uses_the_nearest_frame(plane) -> None:
    ck, cam = plane
    src = [look_down_pose(0.0, 0.0, 25.0, yaw=0.0), look_down_pose(6.0, 2.0, 24.0, yaw=0.3)]
    query = look_down_pose(3.0, 1.0, 22.0, yaw=0.15)
    tilt = np.eye(4)
    tilt[:3, :3] = Rotation.from_euler("x", 8, degrees=True).as_matrix()
    query = query @ tilt
    rgbs, ds = zip(*(_render(ck, T) for T in src))
    _, d_q = _render(ck, query)
    r = reproject_nearest(np.stack(rgbs), np.stack(ds), np.stack(src), cam, query)
    assert r.valid.mean() > 0.8
    rel = np.abs(r.depth[r.valid] - d_q[r.valid]) / d_q[r.valid]
    assert np.median(rel) < 0.01 and rel.max() < 0.06  # rounding to the nearest pixel, nothing more
    filled = reproject_nearest(np.stack(rgbs), np.stack(ds), np.stack(src), cam, query, fill="nearest")
    assert filled.filled and np.isfinite(filled.depth).all()
    np.testing.assert_array_equal(filled.rgb[~r.valid], rgbs[0][~r.valid])
    np.testing.assert_array_equal(filled.valid, r.valid)


def test_z_buffer_keeps_the_nearest_surface_whatever_the_source_order() -> None:
    cam = PinholeCamera.from_fov(8, 8, 60.0)
    I = np.eye(4)
    near = np.full((8, 8), 2.0)
    far = np.full((8, 8), 5.0)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((8, 8, 3), np.uint8)
    blue[..., 2] = 255
    for order in ((0, 1), (1, 0)):
        rgbs, ds = np.stack([red, blue])[list(order)], np.stack([near, far])[list(order)]
        rgb, depth, valid = splat(rgbs, ds, np.stack([I, I]), cam, I, cam)
        assert valid.all()
        np.testing.assert_allclose(depth, 2.0)
        assert (rgb == red).all()


def test_bad_inputs_are_named() -> None:
    cam = PinholeCamera.from_fov(8, 8, 60.0)
    with pytest.raises(ConfigError, match="rgb"):
        splat(np.zeros((1, 4, 4, 3), np.uint8), np.ones((1, 8, 8)), np.eye(4)[None], cam, np.eye(4), cam)
    with pytest.raises(ConfigError, match="fill"):
        reproject_nearest(np.zeros((8, 8, 3), np.uint8), np.ones((8, 8)), np.eye(4), cam, np.eye(4), fill="mean")
    with pytest.raises(GeometryError):
        PoseSet(np.zeros((0, 4, 4)), rot_weight_m=10.0)


def test_coverage_reports_the_nearest_training_pose_in_metres_and_degrees() -> None:
    refs = np.stack([look_down_pose(x, 0.0, 30.0) for x in (0.0, 10.0, 20.0)])
    ps = PoseSet(refs, rot_weight_m=30.0)
    q = look_down_pose(12.0, 1.0, 30.0)
    rot = np.eye(4)
    rot[:3, :3] = Rotation.from_euler("y", 5, degrees=True).as_matrix()
    c = ps.coverage(np.stack([q @ rot, refs[0]]))
    assert c.index.tolist() == [1, 0]
    np.testing.assert_allclose(c.position_m, [np.hypot(2.0, 1.0), 0.0], atol=1e-9)
    np.testing.assert_allclose(c.angle_deg, [5.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(c.distance, c.position_m + 30.0 * np.radians(c.angle_deg), atol=1e-9)
    # a turn in place can make a farther camera the nearest: the weight trades metres for radians
    turned = refs[1] @ np.block([[Rotation.from_euler("z", 90, degrees=True).as_matrix(), np.zeros((3, 1))],
                                 [np.zeros((1, 3)), np.ones((1, 1))]])  # fmt: skip
    far = ps.coverage(turned)
    assert far.angle_deg[0] == pytest.approx(90.0, abs=1e-6) and far.position_m[0] == pytest.approx(0.0)


class _KeyframesOfTwoCameras:
    """Keyframes whose intrinsics differ per keyframe (the :class:`~pose2rgbd.placemap.keyframes.Keyframes`
    protocol)."""

    def __init__(self, frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, PinholeCamera]]) -> None:
        self._frames = frames
        self.T_world_cam = np.stack([f[2] for f in frames])
        self.poses = PoseSet(self.T_world_cam, rot_weight_m=20.0)

    def __len__(self) -> int:
        return len(self._frames)

    def camera(self, i: int) -> PinholeCamera:
        return self._frames[i][3]

    def rgb(self, i: int) -> np.ndarray:
        return self._frames[i][0]

    def depth(self, i: int) -> np.ndarray:
        return self._frames[i][1].astype(np.float32)


def test_reprojection_of_keyframes_is_that_of_the_nearest_frames(plane) -> None:
    """The baseline over :class:`Keyframes`: the keyframes' own index picks the sources, nearest first, and the view
    is the arrays' reprojection of those frames (the same pixels, the same holes, the same fill)."""
    from pose2rgbd.evaluation.reprojection import reproject_keyframes, reprojection_answers
    from pose2rgbd.placemap.keyframes import ArrayKeyframes

    ck, cam = plane
    T = np.stack([look_down_pose(x, 0.3 * x, 24.0 - 0.2 * x, yaw=0.05 * x) for x in range(8)])
    rgbs, ds = (np.stack(a) for a in zip(*(_render(ck, t) for t in T)))
    kf = ArrayKeyframes(rgbs, ds.astype(np.float32), T, cam, rows=np.array([0, 2, 3, 5, 7]), rot_weight_m=20.0)
    query = look_down_pose(4.6, 1.5, 23.0, yaw=0.25)
    rows = kf.rows[kf.poses.nearest(query, 2)[0]]
    assert rows.tolist() == [5, 3]  # frame 4 is nearer, but not a keyframe
    r = reproject_keyframes(kf, query, cam, 2, fill="nearest")
    ref = reproject_nearest(rgbs[rows], ds[rows].astype(np.float32), T[rows], cam, query, fill="nearest")
    np.testing.assert_array_equal(r.valid, ref.valid)
    np.testing.assert_array_equal(r.rgb, ref.rgb)
    np.testing.assert_array_equal(r.depth, ref.depth)
    rgb_b, depth_b, holes = reprojection_answers(kf, query[None], cam, 2, (0.0, 1000.0))
    np.testing.assert_array_equal(rgb_b[0], ref.rgb)
    np.testing.assert_array_equal(depth_b[0], ref.depth)  # no depth beyond the range here: clipping keeps it
    assert holes == [pytest.approx(ref.hole_fraction)]


def test_keyframes_of_another_camera_are_lifted_with_their_own_intrinsics() -> None:
    """A keyframe taken with a narrower lens than the query's: lifted with its own intrinsics, its pixels land
    where the query camera sees the same ground (lifted with the query's, they would not)."""
    from pose2rgbd.evaluation.reprojection import reproject_keyframes

    wide = make_ground_plane_checkpoint(SIZE, hfov_deg=90.0)
    narrow = make_ground_plane_checkpoint(SIZE, hfov_deg=50.0)
    key = look_down_pose(0.0, 0.0, 20.0)
    query = look_down_pose(1.0, 0.5, 21.0)
    rgb_k, d_k = _render(narrow, key)
    _, d_q = _render(wide, query)
    kf = _KeyframesOfTwoCameras([(rgb_k, d_k, key, narrow.camera)])
    r = reproject_keyframes(kf, query, wide.camera, 1)
    assert 0.1 < r.valid.mean() < 0.6  # the narrow view covers the middle of the wide one
    rel = np.abs(r.depth[r.valid] - d_q[r.valid]) / d_q[r.valid]
    assert np.median(rel) < 0.01
    wrong = reproject_keyframes(_KeyframesOfTwoCameras([(rgb_k, d_k, key, wide.camera)]), query, wide.camera, 1)
    assert wrong.valid.mean() > 0.8  # a wrong camera spreads the keyframe over the whole view


def test_coverage_is_the_distance_to_the_keyframes_a_model_warps() -> None:
    """Serving's coverage: to the keyframes a model warps (their own index) when it warps some, else to the
    training cameras the checkpoint carries, else none."""
    from types import SimpleNamespace

    from pose2rgbd.models.coverage import coverage_poses
    from pose2rgbd.placemap.keyframes import ArrayKeyframes

    T = np.stack([look_down_pose(x, 0.0, 20.0) for x in range(3)])
    kf = ArrayKeyframes(np.zeros((3, 4, 4, 3), np.uint8), np.ones((3, 4, 4), np.float32), T,
                        PinholeCamera.from_fov(4, 4, 60.0), rot_weight_m=5.0)  # fmt: skip
    tq = np.array([[0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 1.0]])
    extra = {"training_poses": tq, "coverage_rot_weight_m": 7.0}
    warping = SimpleNamespace(model=SimpleNamespace(keyframes=kf), extra=extra, where="x")
    assert coverage_poses(warping) is kf.poses  # type: ignore[arg-type]
    for model in (SimpleNamespace(keyframes=None), SimpleNamespace()):
        ps = coverage_poses(SimpleNamespace(model=model, extra=extra, where="x"))  # type: ignore[arg-type]
        assert ps is not None and len(ps) == 1 and ps.rot_weight_m == 7.0
    assert coverage_poses(SimpleNamespace(model=SimpleNamespace(), extra={}, where="x")) is None  # type: ignore[arg-type]
