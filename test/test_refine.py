"""Render-and-compare refinement: the differentiable pose path of the models, the se(3) increment, and recovery
of known perturbed poses on the analytic ground-plane scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.encoding import encode_poses
from pose2rgbd.inference.refine import RefineConfig, RefinedLocalizer, Refiner, se3_exp
from pose2rgbd.models.interfaces import _encode_poses_torch
from pose2rgbd.testing.ground_plane import look_down_pose, make_ground_plane_checkpoint, render_ground_plane


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: many small ops, and on a busy 2-core machine two threads spin against each other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _errors(T: np.ndarray, T_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos = np.linalg.norm(T[:, :3, 3] - T_true[:, :3, 3], axis=1)
    rel = np.einsum("nji,njk->nik", T[:, :3, :3], T_true[:, :3, :3])
    return pos, np.rad2deg(Rotation.from_matrix(rel).magnitude())


def _perturb(T: np.ndarray, dt: np.ndarray, drot_deg: np.ndarray) -> np.ndarray:
    out = T.copy()
    out[:, :3, 3] += dt
    out[:, :3, :3] = Rotation.from_rotvec(np.deg2rad(drot_deg)).as_matrix() @ out[:, :3, :3]
    return out


def test_torch_pose_encoding_matches_numpy_and_has_gradients() -> None:
    rng = np.random.default_rng(3)
    T = np.repeat(np.eye(4)[None], 500, axis=0)
    T[:, :3, :3] = Rotation.random(500, random_state=4).as_matrix()
    T[:, :3, 3] = rng.normal(size=(500, 3)) * 20
    for kind in ("6dof-quat", "6dof-euler", "6dof-rot6d"):
        np.testing.assert_allclose(_encode_poses_torch(torch.from_numpy(T), kind).numpy(), encode_poses(T, kind),
                                   atol=1e-9)  # fmt: skip
    ck = make_ground_plane_checkpoint(8)
    Tt = torch.from_numpy(T[:4]).requires_grad_(True)
    x = ck.model.poses_to_input_torch(Tt)
    np.testing.assert_allclose(x.detach().numpy(), ck.model.poses_to_input(T[:4])[0].numpy(), atol=1e-6)
    x.sum().backward()
    assert Tt.grad is not None and torch.isfinite(Tt.grad).all() and Tt.grad.abs().sum() > 0


def test_se3_exp_is_a_rigid_transform_with_the_right_rotation() -> None:
    xi = torch.tensor([[1.0, -2.0, 0.5, 0.1, -0.2, 0.3], [0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    T = se3_exp(xi).numpy()
    np.testing.assert_allclose(T[1], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(T[0, :3, :3], Rotation.from_rotvec([0.1, -0.2, 0.3]).as_matrix(), atol=1e-10)
    np.testing.assert_allclose(T[0, 3], [0, 0, 0, 1], atol=1e-12)
    pure = se3_exp(torch.tensor([[1.0, -2.0, 0.5, 0, 0, 0]], dtype=torch.float64)).numpy()[0]
    np.testing.assert_allclose(pure[:3, 3], [1.0, -2.0, 0.5], atol=1e-12)


def test_refinement_recovers_a_perturbed_pose_on_the_ground_plane() -> None:
    ck = make_ground_plane_checkpoint(32)
    T_true = np.stack([look_down_pose(3.0, -7.0, 30.0, 0.4), look_down_pose(-20.0, 10.0, 25.0, -1.0)])
    images = render_ground_plane(ck, T_true)["rgb"]
    assert images is not None
    T0 = _perturb(T_true, np.array([[2.0, -1.5, 1.0], [-2.0, 2.0, -1.5]]), np.array([[2, -3, 4], [3, 2, -4.0]]))
    pos0, rot0 = _errors(T0, T_true)
    res = Refiner(ck.model, RefineConfig(iterations=60)).refine(images, T0)
    pos1, rot1 = _errors(res.T_world_cam, T_true)
    assert np.all(pos0 > 2.5) and np.all(rot0 > 5.0)
    assert np.all(pos1 < 0.25 * pos0), (pos0, pos1)
    assert np.all(rot1 < 0.25 * rot0), (rot0, rot1)
    assert np.all(res.residual_after < 0.2 * res.residual_before)
    assert res.iterations > 0 and res.seconds > 0 and res.stop_reason in ("converged", "max_iterations")
    R = res.T_world_cam[:, :3, :3]
    np.testing.assert_allclose(np.einsum("nji,njk->nik", R, R), np.repeat(np.eye(3)[None], 2, 0), atol=1e-9)
    # the reported residual is the model's cost at the returned pose
    np.testing.assert_allclose(Refiner(ck.model).residual(images, res.T_world_cam), res.residual_after, rtol=1e-5)


def test_refinement_at_the_true_pose_stays_and_respects_its_budget() -> None:
    ck = make_ground_plane_checkpoint(16)
    T_true = look_down_pose(5.0, 5.0, 20.0, 0.2)[None]
    images = render_ground_plane(ck, T_true)["rgb"]
    res = Refiner(ck.model, RefineConfig(levels=1, iterations=3)).refine(images, T_true)
    assert res.iterations <= 3
    pos, rot = _errors(res.T_world_cam, T_true)
    assert pos[0] < 1e-6 and rot[0] < 1e-4  # never returns a worse fit than the start
    with pytest.raises(ConfigError, match="2 images but 1 initial poses"):
        Refiner(ck.model).refine(np.concatenate([images, images]), T_true)
    with pytest.raises(ConfigError, match="uint8"):
        Refiner(ck.model).refine(images.astype(np.float32), T_true)
    with pytest.raises(ConfigError, match=r"^iterations: .* outside its range"):
        RefineConfig(iterations=0)
    with pytest.raises(ConfigError, match="pose -> image model"):
        Refiner(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_refined_localizer_wraps_any_localizer() -> None:
    ck = make_ground_plane_checkpoint(24)
    T_true = np.stack([look_down_pose(0.0, 0.0, 30.0, 0.0), look_down_pose(10.0, -5.0, 28.0, 0.5)])
    images = render_ground_plane(ck, T_true)["rgb"]
    T_bad = _perturb(T_true, np.array([[1.5, 1.0, 0.0], [-1.0, 1.5, 0.5]]), np.array([[0, 0, 3.0], [0, 0, -3.0]]))

    class Fixed:
        camera = None
        world_frame = "map"
        input_hw = (24, 24)

        def localize(self, imgs: np.ndarray):
            from pose2rgbd.inference.localize import LocalizeResult

            return LocalizeResult(T_bad[: len(imgs)], np.full(len(imgs), 0.5, np.float32), 0.0)

    loc = RefinedLocalizer(Fixed(), Refiner(ck.model, RefineConfig(iterations=40)), chunk=1)
    out = loc.localize(images)
    assert len(loc.last) == 2 and np.all(out.confidence == 0.5)
    pos0, _ = _errors(T_bad, T_true)
    pos1, _ = _errors(out.T_world_cam, T_true)
    assert np.all(pos1 < 0.5 * pos0)
