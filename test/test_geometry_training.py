"""Geometry-aware training switches of Pose2RGBD: warps on an exact analytic scene, the consistency loss (zero for
an exact renderer, growing with a pose error), pose-space augmentation targets, 2-step smoke training of each
switch through the generic driver, and the paper's presets untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pose2rgbd.errors import ConfigError
from pose2rgbd.experiments.toy import make_toy_dataset
from pose2rgbd.methods.pose2rgbd import PAPER_PARAMETERS, PRESETS, build_model, preset_config
from pose2rgbd.methods.pose2rgbd.config import GEOMETRY_SWITCHES, PAPER_PRESETS, Pose2RGBDConfig
from pose2rgbd.methods.pose2rgbd.geometry_losses import backward_warp, forward_splat, perturb_poses
from pose2rgbd.models import DepthNormalizer, PoseNormalizer, count_parameters, load_checkpoint
from pose2rgbd.testing.ground_plane import GroundPlaneConfig, GroundPlaneModel, look_down_pose
from pose2rgbd.training import TrainConfig, train

SIZE = 64
DEPTH_MAX = 60.0


def _plane() -> GroundPlaneModel:
    gp = GroundPlaneModel(GroundPlaneConfig(size=SIZE, hfov_deg=70.0))
    # every encoded dimension spans a range (a fitted one would pin the quaternion parts these poses share)
    lo, hi = np.array([-50.0] * 3 + [-1.0] * 4), np.array([50.0] * 3 + [1.0] * 4)
    gp.set_pose_normalizer(PoseNormalizer("6dof-quat", lo, hi))
    return gp.eval()


def _render(gp: GroundPlaneModel, T: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(rgb (B, 3, S, S) in [-1, 1], depth (B, 1, S, S) metres) of the exact analytic ground plane."""
    with torch.no_grad():
        x, _ = gp.poses_to_input(T)
        out = gp(x)
    return out["rgb"].clamp(-1, 1), out["depth"]


def _net(**switches: float):
    net = build_model(preset_config("base", size=SIZE, **switches))
    net.set_depth_normalizer(DepthNormalizer(0.0, DEPTH_MAX))
    return net


def _as_outputs(net, rgb: torch.Tensor, depth: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"rgb": rgb, "depth": net.depth_normalizer.normalize(depth)}


def _consistency(pose_error_m: float, *, seed: int = 0) -> dict[str, float]:
    """Consistency losses of 'models' that render the analytic plane; render 1 is made at the nearby pose plus
    ``pose_error_m`` sideways, i.e. it disagrees with the relative pose the loss is told."""
    gp = _plane()
    T0 = np.stack([look_down_pose(x, 1.0, 10.0, 0.3) for x in (-4.0, 0.0, 5.0)])
    g = torch.Generator().manual_seed(seed)
    T1, delta = perturb_poses(torch.from_numpy(T0), 0.6, 4.0, generator=g)
    T1_drawn = T1.numpy().copy()
    T1_drawn[:, 0, 3] += pose_error_m
    rgb0, d0 = _render(gp, T0)
    rgb1, d1 = _render(gp, T1_drawn)
    net = _net(consistency_weight=1.0, consistency_real_weight=1.0)
    net.set_training_camera(gp.camera)
    batch = {"rgb": rgb0, "depth": d0}
    losses = net.consistency_losses(_as_outputs(net, rgb0, d0), _as_outputs(net, rgb1, d1), batch, delta)
    return {k: float(v) for k, v in losses.items()}


def test_consistency_is_zero_for_an_exact_renderer_and_grows_with_pose_error() -> None:
    exact = _consistency(0.0)
    assert set(exact) == {"consistency", "consistency_real"}
    # zero up to bilinear resampling of a smooth texture (the analytic renders agree exactly in geometry)
    assert exact["consistency"] < 1e-3 and exact["consistency_real"] < 1e-3, exact
    errs = [_consistency(e) for e in (0.5, 2.0)]
    for name in exact:
        assert exact[name] * 3 < errs[0][name] < errs[1][name], (name, exact, errs)


def test_backward_warp_reproduces_other_view_and_masks_outside() -> None:
    gp = _plane()
    T0 = look_down_pose(0.0, 0.0, 10.0)[None]
    T1 = T0.copy()
    T1[0, 0, 3] += 3.0  # 3 m to the side: part of view 0 is outside view 1
    rgb0, d0 = _render(gp, T0)
    rgb1, d1 = _render(gp, T1)
    K = torch.as_tensor(gp.camera.K)[None]
    T_1_0 = torch.from_numpy(np.linalg.inv(T1[0]) @ T0[0])[None]
    warped, z1, d1_at, valid = backward_warp(rgb1, d1, d0, T_1_0, K)
    frac = float(valid.float().mean())
    assert 0.6 < frac < 0.95  # the strip that view 1 does not see is masked
    err = (warped - rgb0).abs().mean(dim=1, keepdim=True)[valid]
    assert float(err.mean()) < 0.01
    assert torch.allclose(z1[valid], d1_at[valid], rtol=1e-3)


def test_forward_splat_targets_match_the_exact_render_where_not_holes() -> None:
    gp = _plane()
    T0 = look_down_pose(2.0, -1.0, 10.0, 0.2)[None]
    g = torch.Generator().manual_seed(3)
    T1, delta = perturb_poses(torch.from_numpy(T0), 0.5, 3.0, generator=g)
    rgb0, d0 = _render(gp, T0)
    rgb1, d1 = _render(gp, T1.numpy())
    K = torch.as_tensor(gp.camera.K)[None]
    rgb_t, d_t, valid = forward_splat(rgb0, d0, torch.linalg.inv(delta), K, far_m=DEPTH_MAX)
    assert 0.5 < float(valid.float().mean()) <= 1.0
    assert torch.isnan(d_t[~valid]).all() and torch.isfinite(d_t[valid]).all()
    # nearest-pixel splatting: within half a pixel's worth of the smooth texture / the plane's depth
    assert float((rgb_t - rgb1).abs().mean(dim=1, keepdim=True)[valid].mean()) < 0.03
    assert float(((d_t - d1).abs() / d1)[valid].mean()) < 0.02
    # a wrong relative pose gives visibly wrong targets
    shifted = torch.linalg.inv(delta).clone()
    shifted[:, 0, 3] += 1.5
    rgb_w, _, valid_w = forward_splat(rgb0, d0, shifted, K, far_m=DEPTH_MAX)
    both = valid & valid_w
    assert float((rgb_w - rgb1).abs().mean(dim=1, keepdim=True)[both].mean()) > 0.05


def test_forward_splat_z_buffer_keeps_the_nearest_point_and_sky_moves_with_rotation() -> None:
    K = torch.tensor([[[10.0, 0, 1.5], [0, 10.0, 1.5], [0, 0, 1]]], dtype=torch.float64)
    rgb = torch.zeros(1, 1, 4, 4)
    rgb[0, 0, 1, 1], rgb[0, 0, 1, 2] = 1.0, 2.0
    depth = torch.full((1, 1, 4, 4), float("inf"))
    depth[0, 0, 1, 1], depth[0, 0, 1, 2] = 5.0, 10.0
    depth[0, 0, 3, 3] = float("nan")
    # move the camera so that both points land on one pixel: the nearer (value 1) must win.
    # Source camera: a = (-0.25, -0.25, 5) (pixel (1, 1)), b = (0.5, -0.5, 10) (pixel (2, 1)); a destination
    # camera at x = -t sees a at u = 2 (t - 0.25) + 1.5 and b at (t + 0.5) + 1.5: both at pixel (3, 1) for t = 1.
    T = torch.eye(4, dtype=torch.float64)[None]
    T[0, 0, 3] = 1.0  # T_dst_src
    out, d, valid = forward_splat(rgb, depth, T, K, far_m=100.0)
    hit = (d > 0) & torch.isfinite(d)
    assert int(hit.sum()) == 1 and float(out[hit]) == 1.0 and float(d[hit]) == pytest.approx(5.0)
    assert out[0, 0, 1, 3] == 1.0 and not valid[0, 0, 1, 1] and not valid[0, 0, 3, 3]
    # sky stays sky where it was (13 sky pixels; the NaN one is skipped), except where the point now hides it
    assert int(torch.isposinf(d).sum()) == 12 and torch.isposinf(d[0, 0, 0]).all()


def test_paper_presets_unchanged_and_plus_presets_add_no_parameters() -> None:
    assert set(PAPER_PRESETS) <= set(PRESETS) and {"base+", "slice10+"} <= set(PRESETS)
    for p in PAPER_PRESETS:
        assert PRESETS[p] == {"preset": p}
        cfg = preset_config(p, size=512, outputs="depth")
        assert not cfg.uses_geometry
        assert abs(count_parameters(build_model(cfg)) / PAPER_PARAMETERS[p] - 1) < 0.005
    for plus, paper in (("base+", "base"), ("slice10+", "slice10")):
        cfg = preset_config(plus, size=64)
        assert cfg.uses_geometry and cfg.preset == paper
        assert {k: getattr(cfg, k) for k in GEOMETRY_SWITCHES} == GEOMETRY_SWITCHES
        assert count_parameters(build_model(cfg)) == count_parameters(build_model(preset_config(paper, size=64)))


def test_switch_validation() -> None:
    with pytest.raises(ConfigError, match="predicted depth"):
        Pose2RGBDConfig(preset="base", outputs="rgb", size=64, consistency_weight=0.1)
    with pytest.raises(ConfigError, match="pose_augment_radius_m"):
        Pose2RGBDConfig(preset="base", size=64, pose_augment_radius_m=-1.0)
    Pose2RGBDConfig(preset="base", outputs="rgb", size=64, pose_augment_weight=0.5)  # uses the data's depth


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("geo") / "ds", n_survey=10, n_route=3, size=SIZE)


@pytest.mark.parametrize(
    ("preset", "switches"),
    [
        ("base+", {}),  # every switch together (consistency, consistency against the real frame, augmentation)
        ("slice10", {"pose_augment_weight": 0.5}),  # augmentation alone, with the slice head
        ("base", {"consistency_weight": 0.5}),  # consistency between renders alone
    ],
)
def test_switch_smoke_trains_two_steps(toy: Path, tmp_path: Path, preset: str, switches: dict) -> None:
    mc = preset_config(preset, size=SIZE, **switches)
    tc = TrainConfig(
        epochs=1, batch_size=4, max_steps=2, lr=1e-3, split="random", progress=False, tensorboard=False,
        device="cpu", val_every=0, recalibrate_bn=False,
    )  # fmt: skip
    r = train("pose2rgbd", toy, tmp_path / "run", mc, tc, cache_root=toy.parent / "cache")  # one shared cache
    assert r.steps == 2
    # the checkpoint keeps the switches and serves like any pose2rgbd model (the terms are training-only)
    ck = load_checkpoint(r.last)
    assert {k: getattr(ck.model_config, k) for k in switches} == switches
    x, _ = ck.model.poses_to_input(np.stack([np.eye(4)]))
    with torch.no_grad():
        assert ck.model(x)["depth"].shape == (1, 1, SIZE, SIZE)
    logged = (tmp_path / "run" / "log.csv").read_text()
    names = {"consistency_weight": "consistency", "consistency_real_weight": "consistency_real"}
    for key in switches or {"consistency_weight": 1, "consistency_real_weight": 1, "pose_augment_weight": 1}:
        assert f",{names.get(key, 'augment')}," in logged, logged[:500]


@pytest.mark.parametrize(
    ("threads", "device"), [(1, "cpu"), (8, "cpu"), pytest.param(1, "cuda", marks=pytest.mark.gpu)]
)
def test_forward_splat_ties_go_to_the_last_source_pixel_whatever_the_threads(threads: int, device: str) -> None:
    """A plane square to the view, seen from twice as far: four source points of one depth land on each pixel.
    The last of them (in row-major source order) wins, as the numba warp's order says, with any thread count (the
    writes of many threads, or of CUDA, come in no fixed order)."""
    S, f, c = 64, 32.0, 31.5
    K = torch.tensor([[[f, 0, c], [0, f, c], [0, 0, 1]]], dtype=torch.float64)
    rgb = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 3, S, S)).astype(np.float32))
    depth = torch.full((1, 1, S, S), 5.0)
    T = torch.eye(4, dtype=torch.float64)[None]
    T[0, 2, 3] = 5.0  # the plane at 10 m from the destination: every point there has z = 10 exactly
    # expected, independently: each source pixel's destination pixel, the highest source index per pixel wins
    uu, vv = np.meshgrid(np.arange(S), np.arange(S))
    du = np.rint(f * ((uu - c) / f * 5.0) / 10.0 + c).astype(int)
    dv = np.rint(f * ((vv - c) / f * 5.0) / 10.0 + c).astype(int)
    dst = (dv * S + du).ravel()
    winner = np.full(S * S, -1)
    np.maximum.at(winner, dst, np.arange(S * S))
    hit = winner >= 0
    want = np.zeros((3, S * S), np.float32)
    want[:, hit] = rgb.reshape(3, S * S).numpy()[:, winner[hit]]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dev = torch.device(device)
        out, d, valid = (t.cpu() for t in forward_splat(rgb.to(dev), depth.to(dev), T.to(dev), K.to(dev), far_m=100.0))
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(valid.reshape(S * S).numpy(), hit) and 800 < hit.sum() < S * S / 3
    assert torch.equal(d[valid], torch.full((int(hit.sum()),), 10.0))
    np.testing.assert_array_equal(out.reshape(3, S * S).numpy(), want)


def test_forward_splat_is_a_z_buffer_pixel_by_pixel() -> None:
    """Against a z-buffer written as a plain loop over the source points (the same projection): per pixel the
    nearest point, ties to the last source pixel; holes, sky (+inf, splatted far and written back as +inf), NaN and
    non-positive depth, points behind the camera and out of view, two frames in one batch."""
    from pose2rgbd.methods.pose2rgbd.geometry_losses import EPS_Z, _project

    rng = np.random.default_rng(4)
    B, H, W = 2, 12, 16
    rgb = torch.from_numpy(rng.uniform(-1, 1, (B, 3, H, W)).astype(np.float32))
    d = np.round(rng.uniform(1.0, 6.0, (B, 1, H, W)) * 2) / 2  # half metres: many ties
    d[rng.random(d.shape) < 0.1] = np.nan
    d[rng.random(d.shape) < 0.05] = np.inf
    d[rng.random(d.shape) < 0.05] = -1.0
    depth = torch.from_numpy(d.astype(np.float32))
    K = torch.tensor([[12.0, 0, 7.5], [0, 12.0, 5.5], [0, 0, 1]], dtype=torch.float64).expand(B, 3, 3)
    T = torch.eye(4, dtype=torch.float64).repeat(B, 1, 1)
    T[0, :3, 3] = torch.tensor([0.4, -0.2, 1.5])  # closer: points leave the view
    T[1, :3, :3] = torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=torch.float64)  # turned 90 deg
    T[1, :3, 3] = torch.tensor([0.0, 0.0, 3.0])  # some points end behind the camera
    far = 50.0
    out, dz, valid = forward_splat(rgb, depth, T, K, far_m=far)
    # the reference: every source point in order, the nearest wins, a tie goes to the later point
    dd = torch.from_numpy(d).double()
    sky = np.isposinf(d)
    ok_src = (np.isfinite(d) & (d > 0)) | sky
    proj = torch.where(torch.from_numpy(sky), torch.full_like(dd, 1000.0 * far),
                       torch.where(torch.from_numpy(ok_src), dd, torch.ones_like(dd)))  # fmt: skip
    uv, z = _project(proj, K, T)
    want_rgb = np.zeros((B, 3, H, W), np.float32)
    want_d = np.full((B, 1, H, W), np.nan, np.float32)
    best = np.full((B, H, W), np.inf)
    for b in range(B):
        for p in range(H * W):
            if not ok_src[b, 0].ravel()[p] or not z[b, p] > EPS_Z:
                continue
            u, v = int(torch.round(uv[b, p, 0])), int(torch.round(uv[b, p, 1]))
            if not (0 <= u < W and 0 <= v < H) or float(z[b, p]) > best[b, v, u]:
                continue
            best[b, v, u] = float(z[b, p])
            want_rgb[b, :, v, u] = rgb[b].reshape(3, -1)[:, p].numpy()
            want_d[b, 0, v, u] = np.inf if sky[b, 0].ravel()[p] else float(z[b, p])
    assert np.array_equal(valid.numpy()[:, 0], np.isfinite(best))
    assert 0.2 < np.isfinite(best).mean() < 0.9  # holes and landed pixels both
    np.testing.assert_array_equal(out.numpy(), want_rgb)
    np.testing.assert_array_equal(dz.numpy(), want_d)
