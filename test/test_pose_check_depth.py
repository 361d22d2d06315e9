"""The pose check on a handheld RGB-D sweep in a world that is not z-up (issue: a correct sweep was called
SUSPECT): what the depth proves outweighs the geometric guesses, and a wrong convention still fails, named."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose2rgbd.convert.pose_check import DepthEvidence, check_poses, depth_sample, other_quaternion_order
from pose2rgbd.geometry.camera_axes import GL_FROM_OPTICAL

W, H = 64, 48
K = np.array([[50.0, 0.0, W / 2], [0.0, 50.0, H / 2], [0.0, 0.0, 1.0]])
ROOM_LO, ROOM_HI = np.array([-3.0, 0.0, -1.5]), np.array([3.0, 2.6, 3.0])  # y is up (a SLAM-style world)


def _sweep(n: int = 30, seed: int = 0, pan_deg: float = 15.0) -> np.ndarray:
    """A handheld sweep: sideways along x at chest height, looking at the far wall (-z) and panning outwards
    by +-``pan_deg`` (the optical axes diverge: their least-squares meeting point lies behind the cameras),
    with hand jitter."""
    rng = np.random.default_rng(seed)
    R0 = np.array([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])  # columns: optical x, y (down), z (forward) in the world
    T = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        pan = Rotation.from_rotvec([0.0, np.radians(pan_deg * (1 - 2 * i / (n - 1))), 0.0]).as_matrix()
        jitter = Rotation.from_euler("yxz", rng.normal(0, [3.0, 3.0, 2.0]), degrees=True).as_matrix()
        T[i, :3, :3] = pan @ R0 @ jitter
        T[i, :3, 3] = [-1.5 + 3.0 * i / (n - 1), 1.4 + rng.normal(0, 0.03), 1.5 + rng.normal(0, 0.05)]
    return T


def _room_depth(T: np.ndarray) -> np.ndarray:
    """Depth along optical z of the inside of the room box, seen from camera pose ``T`` (T_world_cam)."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1) @ T[:3, :3].T
    c = T[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(rays > 0, (ROOM_HI - c) / rays, (ROOM_LO - c) / rays)
    t[~np.isfinite(t) | (t <= 0)] = np.inf
    return t.min(-1).astype(np.float32)  # ray z component is 1: the ray parameter is the optical depth


def _evidence(T: np.ndarray, depth_scale: float = 1.0) -> DepthEvidence:
    idx = depth_sample(len(T), 12)
    return DepthEvidence(idx, [K] * len(idx), [_room_depth(T[i]) * depth_scale for i in idx])


@pytest.mark.parametrize("pan_deg", [15.0, 25.0])
def test_a_correct_handheld_sweep_in_a_y_up_world_is_not_suspect(pan_deg: float) -> None:
    T = _sweep(pan_deg=pan_deg)
    # without depth: nearly parallel axes prove nothing, and +z is not this world's up: nothing is called a mistake,
    # but the poses' direction is said to be unverified (an inverted sweep would look the same)
    plain = check_poses(T, up_hint=np.array([0.0, 0.0, 1.0]))
    st = {f.name: f for f in plain.findings}
    assert plain.verdict == "check" and [f.name for f in plain.findings if f.status in ("warn", "fail")] == [
        "direction"], plain.mistakes  # fmt: skip
    assert "could not be verified" in st["direction"].message and "--depth" in st["direction"].message
    assert st["common_target"].status == "info" and "parallel" in st["common_target"].message
    assert st["upright"].status == "info" and "not gravity aligned" in st["upright"].message
    np.testing.assert_allclose(np.abs(st["upright"].values["estimated_up"]), [0, 1, 0], atol=0.15)
    # with depth: proven right
    c = check_poses(T, up_hint=np.array([0.0, 0.0, 1.0]), depth=_evidence(T))
    d = c.findings[0]
    assert d.name == "depth" and d.status == "ok", d.message
    assert d.values["agreeing_share_as_given"] > 0.9 and c.verdict == "ok"


@pytest.mark.parametrize(
    ("mistake", "named"),
    [("inverted", "world-to-camera"), ("opengl", "--camera-axes opengl"), ("scale", "depth units")],
)
def test_depth_names_the_convention_mistake(mistake: str, named: str) -> None:
    T = _sweep()
    if mistake == "inverted":
        Tw, ev = np.linalg.inv(T), _evidence(T)
    elif mistake == "opengl":
        Tw, ev = T @ GL_FROM_OPTICAL, _evidence(T)
    else:
        Tw, ev = T, _evidence(T, depth_scale=5.0)  # millimetres read with the wrong units per metre
    c = check_poses(Tw, depth=ev)
    d = c.findings[0]
    assert d.name == "depth" and d.status == "fail" and named in d.message, d.message
    assert c.verdict == "suspect"


def _read_in_order(T: np.ndarray, file_order: str, read_as: str) -> np.ndarray:
    """``T`` as an importer reading ``read_as`` makes it of quaternions written ``file_order``."""
    q = Rotation.from_matrix(T[:, :3, :3]).as_quat()  # x y z w
    numbers = q if file_order == "xyzw" else np.roll(q, 1, axis=1)
    xyzw = numbers if read_as == "xyzw" else np.roll(numbers, -1, axis=1)
    out = T.copy()
    out[:, :3, :3] = Rotation.from_quat(xyzw).as_matrix()
    return out


@pytest.mark.parametrize(("file_order", "read_as", "named"), [("wxyz", "xyzw", "w first"), ("xyzw", "wxyz", "w last")])
def test_depth_names_quaternions_in_the_other_order(file_order: str, read_as: str, named: str) -> None:
    """TUM's ``qx qy qz qw`` written w first (or COLMAP's ``qw qx qy qz`` written w last): the depth fits the poses
    with the quaternions read the other way, and the check says so; reading them back gives the poses again."""
    T = _sweep()
    wrong = _read_in_order(T, file_order, read_as)
    np.testing.assert_allclose(other_quaternion_order(wrong, read_as), T, atol=1e-9)
    c = check_poses(wrong, depth=_evidence(T), quaternion_order=read_as)
    d = c.findings[0]
    assert d.name == "depth" and d.status == "fail" and d.values["best_hypothesis"] == "quaternion order"
    assert named in d.message and "reorder the columns" in d.message and c.verdict == "suspect"
    assert check_poses(T, depth=_evidence(T), quaternion_order=read_as).verdict == "ok"  # read right: no doubt


@pytest.mark.parametrize("heading_deg", [0.0, 90.0, 180.0, 270.0])
def test_quaternions_in_the_other_order_are_not_passed_without_depth(heading_deg: float) -> None:
    """A forward camera pitched 20 deg down on a weaving flight, its TUM quaternions written w first: read as
    x y z w, the import is never OK -- the check names the other order, or says it could not verify the order,
    since read either way the cameras look along their travel. Read right, it is OK where the other reading would
    not look along the travel (headings 90 and 270 deg here) and 'not verified' where it would: without depth
    nothing tells the two apart. An inverted trajectory is never OK."""
    R0 = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # optical axes of a camera looking along world +x, z up
    heading = Rotation.from_euler("z", heading_deg, degrees=True).as_matrix()
    pitch = Rotation.from_euler("x", -20.0, degrees=True).as_matrix()
    T = np.tile(np.eye(4), (40, 1, 1))
    for i in range(40):
        T[i, :3, :3] = Rotation.from_euler("z", 30 * np.sin(i / 8), degrees=True).as_matrix() @ heading @ R0 @ pitch
        T[i, :3, 3] = 0.5 * i * heading[:, 0] + [0.0, 0.0, 1.5]
    wrong = check_poses(_read_in_order(T, "wxyz", "xyzw"), quaternion_order="xyzw")
    st = {f.name: f for f in wrong.findings}
    assert wrong.verdict == "check" and st["quaternion_order"].status == "warn", wrong.mistakes
    assert "w first (qw qx qy qz)" in st["quaternion_order"].message
    good = check_poses(T, quaternion_order="xyzw")
    if heading_deg in (90.0, 270.0):
        assert good.verdict == "ok", good.mistakes
    else:
        assert good.verdict == "check" and "could not be verified" in good.mistakes[0], good.mistakes
    assert check_poses(T).verdict == "ok"  # a format of matrices: no order to doubt
    inverted = check_poses(np.linalg.inv(T), quaternion_order="xyzw")
    assert inverted.verdict != "ok", [(f.name, f.status) for f in inverted.findings]


def test_cameras_looking_backwards_name_the_quaternion_order_beside_the_opengl_axes() -> None:
    """Cameras that look backwards along their travel as read, and forwards with the quaternions read w first: the
    check names that order as a likely cause (a warning: OpenGL axes explain cameras that look backwards too)."""
    R = Rotation.from_quat([-0.09, -0.121, 0.861, 0.486]).as_matrix()
    T = np.tile(np.eye(4), (40, 1, 1))
    for i in range(40):
        T[i, :3, :3] = Rotation.from_euler("z", 20 * np.sin(i / 8), degrees=True).as_matrix() @ R
        T[i, :3, 3] = -0.5 * i * R[:, 2]  # moving against the view
    c = check_poses(T, quaternion_order="xyzw")
    st = {f.name: f for f in c.findings}
    assert st["motion"].status == "warn" and "look backwards" in st["motion"].message
    q = st["quaternion_order"]
    assert q.status == "warn" and "may be written w first (qw qx qy qz)" in q.message and "OpenGL" in q.message
    assert "quaternion_order" not in {f.name for f in check_poses(T).findings}  # a format of matrices: not asked


def test_a_straight_capture_estimates_no_up_from_its_horizon() -> None:
    """Cameras whose x axes are all parallel (a walk that never turns, pitching only): every axis across them is
    perpendicular to all, so no up is estimated (before: an arbitrary one, about the viewing direction on a real
    walk, with "upright: ok, 100 % agree"); the upright test says why it is not judged."""
    R0 = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    T = np.tile(np.eye(4), (30, 1, 1))
    for i in range(30):
        T[i, :3, :3] = R0 @ Rotation.from_euler("x", 5 * np.sin(i / 4), degrees=True).as_matrix()  # nodding
        T[i, :3, 3] = [0.4 * i, 0.0, 1.6]
    up = {f.name: f for f in check_poses(T).findings}["upright"]
    assert up.status == "info" and "nearly parallel" in up.message and "estimated_up" not in up.values


def test_the_side_view_calls_z_up_only_when_the_world_has_a_known_up(tmp_path: Path) -> None:
    """poses.png's side view: a format's up (or the cameras' common horizon) is labelled as up; a COLMAP model of
    a capture whose horizon says nothing (no up: "upright ... not tested") draws the world's z, labelled as an axis
    whose up is not known."""
    from types import SimpleNamespace

    import matplotlib.pyplot as plt

    from pose2rgbd.convert.sources.images import plot_pose_report

    R0 = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    T = np.tile(np.eye(4), (30, 1, 1))
    for i in range(30):  # the straight, nodding walk above: no up from its horizon
        T[i, :3, :3] = R0 @ Rotation.from_euler("x", 5 * np.sin(i / 4), degrees=True).as_matrix()
        T[i, :3, 3] = [0.4 * i, 0.0, 1.6]
    labels: list[list[str]] = []
    real_save = plt.Figure.savefig

    def record(fig, *a, **kw):  # type: ignore[no-untyped-def]
        labels.append([ax.get_ylabel() for ax in fig.axes[:2]])
        return real_save(fig, *a, **kw)

    check = check_poses(T)
    assert "not tested" in {f.name: f for f in check.findings}["upright"].message
    for up_hint in (None, np.array([0.0, 0.0, 1.0])):
        pi = SimpleNamespace(up_hint=up_hint, T_world_cam=T, points=None, kind="colmap", source=tmp_path,
                             images=[f"{i}.jpg" for i in range(30)])  # fmt: skip
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(plt.Figure, "savefig", record)
            plot_pose_report(tmp_path, pi, check)  # type: ignore[arg-type]
    assert labels == [["y (world)", "z (world; up not known)"], ["y (world)", "z (world) = up"]], labels
    assert (tmp_path / "poses.png").stat().st_size > 10_000


def test_a_straight_down_survey_without_depth_is_unverified() -> None:
    """Cameras looking straight down along a line (a mapping flight) without depth or points: nothing tells the
    poses from their inverse, and the verdict says so instead of OK -- for the poses and their inverse alike."""
    R_down = np.array([[0.0, -1, 0], [-1, 0, 0], [0, 0, -1]])  # optical z down, x along -y: a nadir camera
    T = np.tile(np.eye(4), (30, 1, 1))
    for i in range(30):
        T[i, :3, :3] = R_down
        T[i, :3, 3] = [2.0 * i, 0.1 * np.sin(i), 50.0]
    for poses in (T, np.linalg.inv(T)):
        c = check_poses(poses, up_hint=np.array([0.0, 0.0, 1.0]))
        st = {f.name: f for f in c.findings}
        assert c.verdict == "check" and st["direction"].status == "warn", c.mistakes


def test_depth_outweighs_a_geometric_guess() -> None:
    """Cameras on a ring looking outwards (an inside-out capture of the room): their axes meet at the ring's
    centre, behind every camera, which the target test calls 'facing away'; the depth proves them right."""
    R0 = np.array([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])
    T = np.tile(np.eye(4), (36, 1, 1))
    for i in range(36):
        T[i, :3, :3] = Rotation.from_rotvec([0.0, np.radians(10.0 * i), 0.0]).as_matrix() @ R0
        T[i, :3, 3] = np.array([0.0, 1.4, 0.5]) + 0.5 * T[i, :3, 2]
    plain = check_poses(T)
    assert plain.verdict == "suspect" and "face away" in plain.mistakes[0]
    c = check_poses(T, depth=_evidence(T))
    st = {f.name: f for f in c.findings}
    assert c.verdict == "ok", c.mistakes
    assert st["depth"].status == "ok" and st["common_target"].status == "info"
    assert "outweighed" in st["common_target"].message and not c.bad_cameras.any()


def _write_transforms_json(root: Path, T: np.ndarray) -> Path:
    """The sweep as nerfstudio writes it (OpenGL camera axes) with 16-bit millimetre depth PNGs."""
    (root / "images").mkdir(parents=True)
    (root / "depth").mkdir()
    rng = np.random.default_rng(1)
    frames = []
    for i, Ti in enumerate(T):
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), rng.integers(0, 255, (H, W, 3), np.uint8))
        mm = np.clip(np.rint(_room_depth(Ti) * 1000.0), 0, 65535).astype(np.uint16)
        cv2.imwrite(str(root / "depth" / f"{i:03d}.png"), mm)
        frames.append({"file_path": f"images/{i:03d}.png", "depth_file_path": f"depth/{i:03d}.png",
                       "transform_matrix": (Ti @ GL_FROM_OPTICAL).tolist()})  # fmt: skip
    doc = {"fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "w": W, "h": H, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(doc))
    return root / "transforms.json"


def test_import_of_the_sweep_reports_what_depth_proves(tmp_path: Path) -> None:
    from pose2rgbd.convert.posed_images import ImagesConfig
    from pose2rgbd.convert.sources.images import convert_images

    src = _write_transforms_json(tmp_path / "sweep", _sweep())
    out = convert_images(src, tmp_path / "ds", ImagesConfig(strict=True), progress=False)  # strict: not suspect
    pc = json.loads((out / "report" / "summary.json").read_text())["pose_check"]
    assert pc["verdict"] == "ok", pc["mistakes"]
    assert pc["findings"][0]["name"] == "depth" and pc["findings"][0]["status"] == "ok"


@pytest.mark.parametrize(("height", "named"), [(0.0, "object capture"), (40.0, "looking down at one area")])
def test_a_common_target_below_every_camera_is_not_called_an_object_capture(height: float, named: str) -> None:
    """Cameras on a ring facing its centre: at the object's height an object capture; 40 m up and looking down at a
    point on the ground (a survey's orbit), cameras looking down at one area, the point below them named."""
    target = np.zeros(3)
    T = np.tile(np.eye(4), (24, 1, 1))
    for i in range(24):
        a = 2 * np.pi * i / 24
        c = np.array([30 * np.cos(a), 30 * np.sin(a), height])
        z = (target - c) / np.linalg.norm(target - c)
        x = np.cross(z, [0.0, 0.0, 1.0])
        x /= np.linalg.norm(x)
        T[i, :3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
        T[i, :3, 3] = c
    f = {f.name: f for f in check_poses(T, up_hint=np.array([0.0, 0.0, 1.0])).findings}["common_target"]
    assert f.status == "ok" and named in f.message, f.message


def test_an_unverified_quaternion_order_says_whether_depth_was_there_to_test_it() -> None:
    """The order of a forward flight's quaternions cannot be verified from the geometry (read w first, the cameras
    look along their travel too): without depth the warning says the import has none to test it against and how to
    give it; with depth that does not settle it (one frame of it: nothing to compare), it asks for no depth."""
    R0 = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    pitch = Rotation.from_euler("x", -20.0, degrees=True).as_matrix()
    T = np.tile(np.eye(4), (40, 1, 1))
    for i in range(40):
        T[i, :3, :3] = Rotation.from_euler("z", 30 * np.sin(i / 8), degrees=True).as_matrix() @ R0 @ pitch
        T[i, :3, 3] = [0.5 * i, 0.0, 1.5]
    plain = check_poses(T, quaternion_order="xyzw")
    q = {f.name: f for f in plain.findings}["quaternion_order"]
    assert plain.verdict == "check" and q.status == "warn", plain.mistakes
    assert "nothing points to a mistake" in q.message and "has no depth to test the order against" in q.message
    one = DepthEvidence([0], [K], [_room_depth(T[0])])
    c = check_poses(T, quaternion_order="xyzw", depth=one)
    st = {f.name: f for f in c.findings}
    assert st["depth"].status == "info" and st["quaternion_order"].status == "warn", c.mistakes
    assert "The depth test decides" in st["quaternion_order"].message
    assert "no depth" not in st["quaternion_order"].message and "--depth-list" not in st["quaternion_order"].message


@pytest.mark.parametrize("read_as", [100.0, 0.001, 0.02])
def test_depth_units_off_by_powers_of_ten_name_the_factor_itself(read_as: float) -> None:
    """Depth read 100x too large (centimetres as metres), 1000x too small, or 50x too small (centimetres read at
    TUM's 5000 units per metre): the check names the factor that fits (refined, not the nearest hypothesis), the
    one to divide --depth-scale by."""
    T = _sweep()
    d = check_poses(T, depth=_evidence(T, depth_scale=read_as)).findings[0]
    assert d.status == "fail" and "multiplied by about" in d.message and "--depth-scale" in d.message, d.message
    assert d.values["fitted_depth_factor"] == pytest.approx(1.0 / read_as, rel=0.12)


def test_a_far_scene_from_a_short_path_leaves_the_depth_scale_undecided_and_says_so() -> None:
    """Cameras a few centimetres apart looking at walls metres away: every depth scale fits the poses, so the check
    says the scale is not decided and gives the depth's median for the user to judge, instead of calling it right."""
    T = _sweep()
    c0 = T[:, :3, 3].mean(axis=0)
    near = T.copy()
    near[:, :3, 3] = c0 + 0.01 * (T[:, :3, 3] - c0)
    d = check_poses(near, depth=_evidence(near)).findings[0]
    assert d.status == "ok" and d.values["depth_scale_decided"] is False, d.message
    assert "not decided by the poses" in d.message and "Its median is 3 m" in d.message, d.message
    full = check_poses(T, depth=_evidence(T)).findings[0]
    assert full.values["depth_scale_decided"] is True and "the depth scale are right" in full.message, full.message


def test_a_corridor_walked_along_is_not_called_a_depth_units_mistake(monkeypatch: pytest.MonkeyPatch) -> None:
    """A camera walking down a long corridor without turning: the scene does not change along the motion, so a
    depth 1000x larger (no parallax) fits as well as the true one; with the depth as given agreeing, that is the scale
    undecided, not a failure (it had been: 'multiplied by about 3.16e+03')."""
    import test_pose_check_depth as here

    monkeypatch.setattr(here, "ROOM_LO", np.array([-1.5, 0.0, -60.0]))
    monkeypatch.setattr(here, "ROOM_HI", np.array([1.5, 2.6, 3.0]))
    R0 = np.array([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])
    for length in (2.0, 10.0):
        T = np.tile(np.eye(4), (60, 1, 1))
        T[:, :3, :3] = R0
        T[:, :3, 3] = np.stack([np.zeros(60), np.full(60, 1.3), -np.linspace(0.0, length, 60)], 1)
        c = check_poses(T, depth=_evidence(T))
        d = c.findings[0]
        assert d.status == "ok" and d.values["depth_scale_decided"] is False and c.verdict != "suspect", d.message


@pytest.mark.parametrize("noise", [0.01, 0.03])
def test_a_sensors_depth_noise_does_not_undecide_the_scale(noise: float) -> None:
    """Consumer RGB-D depth noise (1-3 % per pixel) raises every hypothesis' error alike: the room sweep's scale is
    still decided (an absolute margin, not a ratio of medians)."""
    T = _sweep()
    rng = np.random.default_rng(0)
    ev = _evidence(T)
    ev.depth = [d * (1.0 + rng.normal(0.0, noise, d.shape)).astype(np.float32) for d in ev.depth]
    d = check_poses(T, depth=ev).findings[0]
    assert d.status == "ok" and d.values["depth_scale_decided"] is True, d.message
