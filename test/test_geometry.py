"""Geometry conventions: rotations, transforms, interpolation, geodesy, pose encodings (round-trip properties)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation, Slerp

from pose2rgbd.errors import GeometryError
from pose2rgbd.geometry import (
    Q_BODY_OPTICAL_XYZW,
    R_BODY_OPTICAL,
    Datum,
    PinholeCamera,
    Pose,
    T_from_tq,
    canonical_quat_xyzw,
    decode_poses,
    ecef_to_geodetic,
    encode_poses,
    encoding_dim,
    geodetic_to_ecef,
    interpolate_poses,
    inverse,
    matrix_to_quat_xyzw,
    matrix_to_rpy,
    quat_wxyz_to_xyzw,
    quat_xyzw_to_matrix,
    quat_xyzw_to_wxyz,
    relative,
    rpy_to_matrix,
    slerp_quat_xyzw,
    tq_from_T,
    transform_points,
)
from pose2rgbd.geometry.encoding import encoding_jumps
from pose2rgbd.models.normalization import PoseNormalizer

finite = st.floats(-1e3, 1e3, allow_nan=False)
quat_st = st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1)


def random_T(rng: np.random.Generator, n: int) -> np.ndarray:
    R = Rotation.random(n, random_state=int(rng.integers(1 << 31))).as_matrix()
    t = rng.uniform(-100, 100, (n, 3))
    return T_from_tq(t, matrix_to_quat_xyzw(R))


@given(quat_st)
def test_quat_matrix_round_trip_and_canonical_sign(q):
    qc = canonical_quat_xyzw(np.array(q))
    assert qc[3] >= 0
    assert np.isclose(np.linalg.norm(qc), 1.0)
    back = matrix_to_quat_xyzw(quat_xyzw_to_matrix(qc))
    np.testing.assert_allclose(back, qc, atol=1e-9)
    # -q is the same rotation; canonical form is unique
    np.testing.assert_allclose(canonical_quat_xyzw(-qc), qc, atol=1e-12)


def test_matrix_to_quat_orthogonalizes_only_what_is_not_a_rotation() -> None:
    """Rotation matrices skip SciPy's orthogonalization and give its answer; a matrix that is not orthonormal (a
    scaled one, a perturbed one, one of them in a batch of rotations) still gets the quaternion of the nearest
    rotation; a reflection is not taken for a rotation. The sign rule holds on both paths, w = 0 included."""
    R = Rotation.random(64, random_state=3).as_matrix()
    R[0] = np.diag([1.0, -1.0, -1.0])  # 180 deg about x: w = 0, x decides the sign
    R[1] = np.diag([-1.0, -1.0, 1.0])  # about z: w = 0 and x = y = 0, z decides
    full = Rotation.from_matrix(R).as_quat()
    want = np.where(full[:, 3:] < 0, -full, full)
    want[0], want[1] = [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]
    np.testing.assert_allclose(matrix_to_quat_xyzw(R), want, atol=1e-12)
    rng = np.random.default_rng(0)
    bent = R + rng.normal(0.0, 1e-3, R.shape)
    for batch in (bent, 1.01 * R, np.concatenate([R[:8], bent[8:9]])):
        got = matrix_to_quat_xyzw(batch)
        nearest = Rotation.from_matrix(batch).as_quat()  # SciPy's orthogonalization
        np.testing.assert_allclose(got, np.where(nearest[:, 3:] < 0, -nearest, nearest), atol=1e-12)
        assert not np.allclose(got, Rotation.from_matrix(batch, assume_valid=True).as_quat(), atol=1e-6)
    mirror = np.concatenate([R[:3], (R[3] @ np.diag([1.0, 1.0, -1.0]))[None]])  # orthonormal, det -1
    with pytest.raises(GeometryError, match="rotation matrix 3: determinant -1 <= 0, a reflection"):
        matrix_to_quat_xyzw(mirror)


def test_quat_order_is_xyzw():
    # 90 deg about z: x, y, z, w = 0, 0, sin45, cos45
    q = np.array([0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)])
    R = quat_xyzw_to_matrix(q)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(quat_xyzw_to_wxyz(q), [np.sqrt(0.5), 0, 0, np.sqrt(0.5)])
    np.testing.assert_allclose(quat_wxyz_to_xyzw(quat_xyzw_to_wxyz(q)), q)


@given(st.floats(-3.1, 3.1), st.floats(-1.5, 1.5), st.floats(-3.1, 3.1))
def test_rpy_round_trip(r, p, y):
    R = rpy_to_matrix(np.array([r, p, y]))
    np.testing.assert_allclose(rpy_to_matrix(matrix_to_rpy(R)), R, atol=1e-9)


def test_rpy_convention_is_rz_ry_rx():
    r, p, y = 0.1, -0.2, 0.3
    Rx = Rotation.from_euler("x", r).as_matrix()
    Ry = Rotation.from_euler("y", p).as_matrix()
    Rz = Rotation.from_euler("z", y).as_matrix()
    np.testing.assert_allclose(rpy_to_matrix(np.array([r, p, y])), Rz @ Ry @ Rx, atol=1e-12)


def test_body_to_optical_axes():
    R = np.array(R_BODY_OPTICAL)
    np.testing.assert_allclose(quat_xyzw_to_matrix(np.array(Q_BODY_OPTICAL_XYZW)), R, atol=1e-12)
    np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0])  # optical z (forward) = body x
    np.testing.assert_allclose(R @ [1, 0, 0], [0, -1, 0])  # optical x (right) = body -y
    np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, -1])  # optical y (down) = body -z
    assert np.isclose(np.linalg.det(R), 1.0)


def test_transform_compose_inverse_relative():
    rng = np.random.default_rng(0)
    T_w_a, T_w_b = random_T(rng, 2)
    T_a_b = relative(T_w_a, T_w_b)
    np.testing.assert_allclose(T_w_a @ T_a_b, T_w_b, atol=1e-9)
    np.testing.assert_allclose(inverse(T_w_a) @ T_w_a, np.eye(4), atol=1e-9)
    p_b = rng.normal(size=(5, 3))
    np.testing.assert_allclose(
        transform_points(T_w_b, p_b), transform_points(T_w_a, transform_points(T_a_b, p_b)), atol=1e-9
    )
    t, q = tq_from_T(T_w_a)
    np.testing.assert_allclose(T_from_tq(t, q), T_w_a, atol=1e-12)
    P = Pose.from_matrix(T_w_a)
    np.testing.assert_allclose((P @ P.inverse()).matrix(), np.eye(4), atol=1e-9)


def test_bad_input_raises():
    with pytest.raises(GeometryError, match="NaN"):
        quat_xyzw_to_matrix(np.array([np.nan, 0, 0, 1]))
    with pytest.raises(GeometryError, match="shape"):
        quat_xyzw_to_matrix(np.zeros(3))
    with pytest.raises(GeometryError, match="zero-norm"):
        canonical_quat_xyzw(np.zeros(4))
    with pytest.raises(GeometryError, match="orthonormal"):
        tq_from_T(np.diag([2.0, 1, 1, 1]))


def test_slerp_matches_scipy_and_takes_short_arc():
    rng = np.random.default_rng(3)
    q0, q1 = Rotation.random(2, random_state=4).as_quat()
    for a in (0.0, 0.3, 0.77, 1.0):
        ref = Slerp([0.0, 1.0], Rotation.from_quat([q0, q1]))([a]).as_quat()[0]
        got = slerp_quat_xyzw(q0, q1, a)
        assert min(np.abs(got - ref).max(), np.abs(got + ref).max()) < 1e-9
    # q and -q are the same rotation: the result must not take the long way round
    mid = slerp_quat_xyzw(q0, -q0, 0.5)
    assert min(np.abs(mid - q0).max(), np.abs(mid + q0).max()) < 1e-9
    near = canonical_quat_xyzw(q0 + rng.normal(0, 1e-6, 4))
    assert np.isclose(np.linalg.norm(slerp_quat_xyzw(q0, near, 0.5)), 1.0)


def test_interpolation_linear_and_slerp():
    stamps = np.array([0, 1_000_000_000], dtype=np.int64)
    t = np.array([[0.0, 0, 0], [10.0, 0, 0]])
    q = np.array([[0, 0, 0, 1.0], [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]])  # 0 -> 90 deg yaw
    ti, qi = interpolate_poses(stamps, t, q, np.array([250_000_000, 500_000_000], dtype=np.int64))
    np.testing.assert_allclose(ti[:, 0], [2.5, 5.0])
    yaw = Rotation.from_quat(qi).as_euler("xyz")[:, 2]
    np.testing.assert_allclose(np.rad2deg(yaw), [22.5, 45.0], atol=1e-9)
    # large int64 stamps (epoch ns) keep sub-microsecond precision
    base = 1_700_000_000_000_000_000
    ti2, _ = interpolate_poses(stamps + base, t, q, np.array([base + 1], dtype=np.int64))
    assert ti2[0, 0] == pytest.approx(1e-8, abs=1e-12)
    with pytest.raises(GeometryError, match="outside"):
        interpolate_poses(stamps, t, q, np.array([2_000_000_000]))
    with pytest.raises(GeometryError, match="increasing"):
        interpolate_poses(stamps[::-1].copy(), t, q, np.array([0]))
    with pytest.raises(GeometryError, match="integer"):
        interpolate_poses(stamps.astype(float), t, q, np.array([0]))


@settings(max_examples=50)
@given(
    st.floats(-80, 80),
    st.floats(-179, 179),
    st.floats(-100, 3000),
    st.floats(-10_000, 10_000),
    st.floats(-10_000, 10_000),
    st.floats(-200, 500),
)
def test_geodetic_enu_round_trip_sub_mm_within_10km(lat, lon, alt, e, n, u):
    datum = Datum(lat, lon, alt)
    lat2, lon2, alt2 = datum.from_enu(np.array([e, n, u]))
    enu = datum.to_enu(lat2, lon2, alt2)
    assert np.linalg.norm(enu - [e, n, u]) < 1e-3
    ecef = geodetic_to_ecef(lat2, lon2, alt2)
    lat3, lon3, alt3 = ecef_to_geodetic(ecef)
    assert np.linalg.norm(geodetic_to_ecef(lat3, lon3, alt3) - ecef) < 1e-3


def test_enu_axes_and_known_distance():
    datum = Datum(45.0, 7.0, 0.0)
    # one arc-minute of latitude is about 1852 m (nautical mile) at 45 deg
    enu = datum.to_enu(45.0 + 1 / 60, 7.0, 0.0)
    assert enu[1] == pytest.approx(1852.2, abs=1.0) and abs(enu[0]) < 1e-6
    assert datum.to_enu(45.0, 7.001, 0.0)[0] > 0  # east is +x
    with pytest.raises(GeometryError):
        datum.to_enu(95.0, 0.0, 0.0)


@pytest.mark.parametrize("kind", ["6dof-euler", "6dof-quat", "6dof-rot6d"])
def test_encoding_and_normalizer_round_trip(kind):
    rng = np.random.default_rng(1)
    # UAV-like attitudes (no gimbal lock): camera pitched down, yaw anywhere in (-pi, pi)
    rpy = np.stack([rng.uniform(-0.2, 0.2, 50), rng.uniform(-0.3, 0.3, 50), rng.uniform(-3, 3, 50)], -1)
    T = T_from_tq(rng.uniform(-150, 150, (50, 3)), matrix_to_quat_xyzw(rpy_to_matrix(rpy)))
    enc = encode_poses(T, kind)
    assert enc.shape == (50, encoding_dim(kind))
    np.testing.assert_allclose(decode_poses(enc, kind), T, atol=1e-9)
    norm = PoseNormalizer.fit(T, kind)
    x = norm.normalize(T)
    assert x.dtype == np.float32 and x.min() >= -1 - 1e-6 and x.max() <= 1 + 1e-6
    np.testing.assert_allclose(x.min(0), -1, atol=1e-6)
    np.testing.assert_allclose(x.max(0), 1, atol=1e-6)
    np.testing.assert_allclose(norm.denormalize(x), T, atol=1e-3)
    # stored and reloaded extremes give identical normalization
    again = PoseNormalizer.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.normalize(T), x)
    assert not norm.out_of_bounds(T).any()
    far = T[:1].copy()
    far[0, 0, 3] += 1000.0
    assert norm.out_of_bounds(far).all()


def _one_heading_flight(camera: str, yaw_deg: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Cameras of a flight that always faces one way: a forward camera pitched 30 deg down, or one looking straight
    down (its qw 0 at every heading), at ``xyz`` headed ``yaw_deg``."""
    from pose2rgbd.testing.ground_plane import forward_pose, look_down_pose

    def one(p: np.ndarray, yaw: float) -> np.ndarray:
        if camera == "forward":
            return forward_pose(*p, yaw=np.radians(yaw))
        return look_down_pose(*p, yaw=np.radians(yaw))

    return np.stack([one(p, y) for p, y in zip(np.atleast_2d(xyz), np.atleast_1d(yaw_deg))])


@pytest.mark.parametrize("camera", ["forward", "down"])
@pytest.mark.parametrize("kind", ["6dof-euler", "6dof-quat", "6dof-rot6d"])
def test_a_small_turn_beyond_a_narrow_range_of_headings_is_not_out_of_bounds(kind: str, camera: str) -> None:
    """A flight that always faces one way (2 deg of headings) spans a sliver of each rotation component: a share of
    it as the margin flagged a camera turned 0.5 deg past the headings flown. The rotation's margin is at least
    ROTATION_MARGIN_DEG of turn; 30 deg past them, or a position far outside, is still out of bounds."""
    rng = np.random.default_rng(3)
    xyz = np.column_stack([rng.uniform(-100, 100, (200, 2)), rng.uniform(30, 35, 200)])
    yaw = rng.uniform(40.0, 42.0, 200)
    T = _one_heading_flight(camera, yaw, xyz)
    norm = PoseNormalizer.fit(T, kind)
    assert not norm.out_of_bounds(T).any()
    lo, hi = int(np.argmin(yaw)), int(np.argmax(yaw))
    xyz2 = xyz[[lo, hi]]
    for turn, flagged in ((0.5, False), (30.0, True)):
        turned = _one_heading_flight(camera, yaw[[lo, hi]] + np.array([-turn, turn]), xyz2)
        assert norm.out_of_bounds(turned).tolist() == [flagged, flagged], (turn, norm.normalize(turned))
    for margin in (0.0, 0.1):  # the floor holds at margin 0 too
        assert not norm.out_of_bounds(_one_heading_flight(camera, yaw[[hi]] + 0.5, xyz2[1:]), margin).any()
    far = T[:2].copy()
    far[0, 0, 3] += 1000.0  # a kilometre east of the flight
    far[1, 2, 3] -= 40.0  # 40 m below the lowest camera, under the ground
    assert norm.out_of_bounds(far).all()
    # the position's box is widened by the same metres on every side (0.1 x 100 m): 5 m below the lowest camera,
    # a thin side of the box (5 m of altitudes), is inside, 15 m below is not
    low = T[[int(np.argmin(xyz[:, 2]))] * 2].copy()
    low[:, 2, 3] -= np.array([5.0, 15.0])
    assert norm.out_of_bounds(low).tolist() == [False, True]
    assert norm.margins(0.1)[2] == pytest.approx(0.1 * norm.span[:3].max() / norm.span[2])


@pytest.mark.parametrize("kind", ["6dof-quat", "6dof-rot6d"])
def test_a_turn_under_the_rotation_margin_never_leaves_the_box(kind: str) -> None:
    """rotation_margin bounds how far a turn of ROTATION_MARGIN_DEG moves any rotation component: a training pose
    turned by less, about any axis, is inside the box of the training poses (a tenth of a degree of headings, margin
    0); turned by twice as much about the vertical, it is not."""
    from pose2rgbd.models.normalization import ROTATION_MARGIN_DEG, rotation_margin

    rng = np.random.default_rng(4)
    xyz = np.column_stack([rng.uniform(0, 50, (20, 2)), np.full(20, 30.0)])
    T = _one_heading_flight("forward", rng.uniform(40.0, 40.1, 20), xyz)
    norm = PoseNormalizer.fit(T, kind)
    assert (norm.span[3:] > 0).any() and (norm.span[3:] < 0.01).all()  # a sliver of each rotation component
    axes = rng.normal(size=(500, 3))
    angles = np.radians(rng.uniform(0.9, 0.999, 500) * ROTATION_MARGIN_DEG)
    turns = Rotation.from_rotvec(axes / np.linalg.norm(axes, axis=1, keepdims=True) * angles[:, None]).as_matrix()
    turned = np.repeat(T[:1], 500, axis=0)
    turned[:, :3, :3] = turns @ turned[:, :3, :3]  # turned in the world
    moved = np.abs(encode_poses(turned, kind)[:, 3:] - encode_poses(T[:1], kind)[:, 3:]).max(axis=1)
    assert moved.max() <= rotation_margin(kind) and moved.max() > 0.8 * rotation_margin(kind)  # a tight bound
    assert not norm.out_of_bounds(turned, margin=0.0).any()
    twice = _one_heading_flight("forward", np.array([40.1 + 2 * ROTATION_MARGIN_DEG]), xyz[:1])
    assert norm.out_of_bounds(twice, margin=0.0).all()


def test_normalizer_constant_dimension_maps_to_zero():
    T = T_from_tq(np.array([[0.0, 0, 5], [1.0, 0, 5]]), np.array([[0, 0, 0, 1.0]] * 2))
    x = PoseNormalizer.fit(T, "6dof-quat").normalize(T)
    assert np.all(x[:, 2] == 0)  # tz constant
    np.testing.assert_allclose(x[:, 0], [-1, 1])


def test_camera_project_backproject_and_scaling():
    cam = PinholeCamera.from_fov(64, 48, 90.0)
    depth = np.full((48, 64), 7.0)
    pts = cam.backproject(depth)
    uv, z = cam.project(pts.reshape(-1, 3))
    u, v = np.meshgrid(np.arange(64), np.arange(48))
    np.testing.assert_allclose(uv[:, 0], u.ravel(), atol=1e-9)
    np.testing.assert_allclose(uv[:, 1], v.ravel(), atol=1e-9)
    np.testing.assert_allclose(z, 7.0)
    half = cam.scaled(32, 24)
    assert half.fx == pytest.approx(cam.fx / 2) and half.cx == pytest.approx((cam.cx + 0.5) / 2 - 0.5)
    # same 3-D point projects to consistent pixel coordinates in both resolutions
    p = np.array([1.0, -0.5, 4.0])
    uv_full, _ = cam.project(p)
    uv_half, _ = half.project(p)
    np.testing.assert_allclose((uv_full + 0.5) / 2 - 0.5, uv_half, atol=1e-9)
    with pytest.raises(GeometryError):
        PinholeCamera(0, 10, 1, 1, 0, 0)


def _nadir_poses(n: int, wobble_rad: float, seed: int = 0) -> np.ndarray:
    """Cameras looking straight down (optical z = -world z) at every heading, tilted by ``wobble_rad`` of noise."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    h = rng.uniform(-np.pi, np.pi, n)
    x = np.stack([np.cos(h), np.sin(h), np.zeros(n)], -1)
    z = np.tile([0.0, 0.0, -1.0], (n, 1))
    R = np.stack([x, np.cross(z, x), z], -1) @ Rotation.from_rotvec(rng.normal(0, wobble_rad, (n, 3))).as_matrix()
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3], T[:, :3, 3] = R, rng.uniform(-100, 100, (n, 3))
    return T


def test_the_paper_encodings_jump_between_nearly_equal_downward_cameras_and_rot6d_does_not() -> None:
    """A camera looking straight down is a half turn about a horizontal axis (qw = 0, roll = +-pi) at every heading:
    the quaternion's sign rule and the Euler angles' wrap split nearly equal poses into far apart encodings."""
    T = _nadir_poses(400, 0.005)
    assert encoding_jumps(T, "6dof-quat") > 0.2 and encoding_jumps(T, "6dof-euler") > 0.2
    assert encoding_jumps(T, "6dof-rot6d") == 0.0
    # the continuous one moves with the rotation: 0.3 deg apart, at most 0.3 deg's worth of change
    from scipy.spatial.transform import Rotation

    T2 = T.copy()
    T2[:, :3, :3] = T[:, :3, :3] @ Rotation.from_rotvec([0.0, 0.0, np.radians(0.3)]).as_matrix()
    gap = np.abs(encode_poses(T2, "6dof-rot6d") - encode_poses(T, "6dof-rot6d")).max()
    assert gap <= np.radians(0.3) + 1e-9
    # a forward-looking, level camera: the paper's encodings are continuous there (no false alarm)
    level = np.tile(np.eye(4), (200, 1, 1))
    level[:, :3, :3] = Rotation.from_euler(
        "ZX", np.stack([np.linspace(-1, 1, 200), np.full(200, -np.pi / 2)], -1)
    ).as_matrix()
    assert encoding_jumps(level, "6dof-quat") == 0.0 and encoding_jumps(level, "6dof-euler") == 0.0


def test_rot6d_decodes_perturbed_columns_to_the_nearest_rotation_frame() -> None:
    T = _nadir_poses(20, 0.1, seed=2)
    enc = encode_poses(T, "6dof-rot6d")
    noisy = enc.copy()
    noisy[:, 3:] *= 1.7  # a network's output is not unit length
    D = decode_poses(noisy, "6dof-rot6d")
    np.testing.assert_allclose(D, T, atol=1e-9)
    R = D[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.tile(np.eye(3), (20, 1, 1)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
