"""The hybrid warp-and-fill model kind: the torch splat against the numpy reprojection baseline on an analytic
scene, outputs, the keyframe store (training frames only, the query and its neighbours left out in training),
2-step training through the CLI, checkpoint round trip, serving through the render engine, whole-model ONNX refusal
(the network part alone is served by ONNX Runtime: test_hybrid_serving.py), and a
short training run that must not be worse than the reprojection baseline it starts from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pose2rgbd.errors import CheckpointError
from pose2rgbd.evaluation.reprojection import reproject_nearest, splat
from pose2rgbd.experiments.toy import make_toy_dataset
from pose2rgbd.inference import EngineConfig, RenderEngine
from pose2rgbd.methods.hybrid import HybridConfig, build_model, splat_keyframes
from pose2rgbd.methods.hybrid.net import ground_depth_from_terms
from pose2rgbd.methods.hybrid.recipe import sequence_positions, store_indices
from pose2rgbd.models import DepthNormalizer, PoseNormalizer, load_checkpoint
from pose2rgbd.models.registry import get_family
from pose2rgbd.testing.ground_plane import (
    forward_pose,
    look_down_pose,
    make_ground_plane_checkpoint,
    render_ground_plane,
)
from pose2rgbd.training import TrainConfig, train

SIZE = 64


@pytest.fixture(scope="module")
def plane():
    ck = make_ground_plane_checkpoint(SIZE, hfov_deg=90.0)
    return ck, ck.camera


def _render(ck, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = render_ground_plane(ck, np.asarray(T).reshape(-1, 4, 4))
    return out["rgb"], out["depth"].astype(np.float32)


def _sources_and_query() -> tuple[np.ndarray, np.ndarray]:
    src = np.stack([look_down_pose(0.0, 0.0, 25.0, yaw=0.0), look_down_pose(6.0, 2.0, 24.0, yaw=0.3)])
    return src, look_down_pose(3.0, 1.0, 22.0, yaw=0.15)


def test_torch_splat_reproduces_the_numpy_reprojection_baseline(plane) -> None:
    ck, cam = plane
    src, query = _sources_and_query()
    rgbs, ds = _render(ck, src)
    ref_rgb, ref_d, ref_valid = splat(rgbs, ds, src, cam, query, cam)
    assert 0.5 < ref_valid.mean() < 1.0  # some holes: the comparison covers both
    rgb_t = torch.from_numpy(rgbs).permute(0, 3, 1, 2).float()[None]
    d_t = torch.from_numpy(ds)[None, :, None]
    T_q_src = torch.from_numpy(np.linalg.inv(query)[None] @ src)[None]
    rgb, depth, valid, hits = splat_keyframes(rgb_t, d_t, T_q_src, torch.from_numpy(cam.K), far_m=100.0)
    v = valid[0, 0].numpy()
    assert (v != ref_valid).mean() < 0.002  # rounding at exact half pixels may differ on a few pixels
    both = v & ref_valid
    np.testing.assert_allclose(depth[0, 0].numpy()[both], ref_d[both], rtol=1e-4)
    same_rgb = (rgb[0].permute(1, 2, 0).numpy().round().astype(np.uint8) == ref_rgb).all(axis=-1)
    assert same_rgb[both].mean() > 0.995
    assert np.isnan(depth[0, 0].numpy()[~v]).all()
    assert hits.max() == 2 and (hits[0, 0].numpy()[v] >= 1).all()
    # a keyframe marked unusable splats nothing
    _, _, v1, _ = splat_keyframes(
        rgb_t, d_t, T_q_src, torch.from_numpy(cam.K), far_m=100.0, usable=torch.tensor([[True, False]])
    )
    only0 = splat(rgbs[:1], ds[:1], src[:1], cam, query, cam)[2]
    assert (v1[0, 0].numpy() != only0).mean() < 0.002


def _plane_model(plane, n_key: int = 6, yaw_step: float = 0.05, depth_step: float = 0.0, **cfg) -> tuple:
    """A hybrid model (untrained) whose store holds ground-plane frames along a line, turned ``yaw_step`` from one
    to the next; keyframe ``i``'s depth scaled by ``1 + depth_step * i`` (as sensors or networks that disagree)."""
    ck, cam = plane
    model = build_model(
        HybridConfig(size=SIZE, dense_channels=32, trunk_channels=[16] * 6, **cfg),
        pose_normalizer=PoseNormalizer("6dof-quat", [-50, -50, 5, -1, -1, -1, 0], [50, 50, 60, 1, 1, 1, 1]),
    )
    model.set_depth_normalizer(DepthNormalizer(0.0, 80.0))
    T = np.stack([look_down_pose(2.0 * i, 0.5 * i, 24.0, yaw=yaw_step * i) for i in range(n_key)])
    rgb, depth = _render(ck, T)
    depth = depth * (1.0 + depth_step * np.arange(n_key, dtype=np.float32))[:, None, None]
    model.set_keyframes(
        rgb, depth, T, cam, source_id=np.zeros(n_key), seq_pos=np.arange(n_key), index=np.arange(n_key),
        rot_weight_m=20.0,
    )  # fmt: skip
    return model.eval(), T


def test_outputs_and_an_untrained_model_answers_the_reprojection_baseline(plane) -> None:
    ck, cam = plane
    # the defaults (background depth and colour; blended colours and depths of the warped pixels) differ, below
    model, T = _plane_model(plane, hole_depth="nearest", hole_rgb="nearest", warp_colour="nearest-surface",
                            warp_depth="nearest-surface", neighbours=3, behind_keyframe=False,
                            decoder=True)  # fmt: skip
    query = look_down_pose(3.1, 0.9, 23.0, yaw=0.08)[None]
    x, _ = model.poses_to_input(query)
    with torch.no_grad():
        out = model(x)
    for k in ("rgb", "depth", "confidence", "decoder_rgb", "decoder_depth"):
        assert out[k].shape[:1] == (1,) and out[k].shape[-2:] == (SIZE, SIZE), k
    arrays = model.outputs_to_arrays(out)
    # the reprojection baseline with the same neighbours (PoseSet distance, nearest first), holes filled
    rows, _ = model.select_keyframes(query)
    assert len(rows[0]) == 3 and rows[0][0] == 2  # x = 3.1 is nearest the keyframe at x = 4 ... and 2
    rgb_k, d_k = _render(ck, T[rows[0]])
    ref = reproject_nearest(rgb_k, d_k, T[rows[0]], cam, query[0], fill="nearest")
    assert np.abs(arrays["rgb"].astype(int)[0] - ref.rgb).max() <= 1
    np.testing.assert_allclose(arrays["depth"][0], ref.depth, rtol=2e-3, atol=0.05)  # depth stored as float16
    np.testing.assert_array_equal(arrays["confidence"][0] > 0.5, ref.valid)
    # and the reprojection is a real answer: far closer to the truth than the nearest keyframe alone
    truth, _ = _render(ck, query)
    assert np.abs(arrays["rgb"][0].astype(int) - truth[0]).mean() < 0.5 * np.abs(rgb_k[0].astype(int) - truth[0]).mean()


@pytest.mark.parametrize("kernel", ["numba", "torch"])
def test_blended_colour_averages_the_keyframes_that_see_the_surface(kernel: str) -> None:
    """warp_colour blend: a pixel takes the weighted mean colour of the keyframes whose own nearest point there
    lies within the tolerance of the nearest surface; a keyframe that sees something far behind it (what the
    surface occludes) adds none of its colour; the depth and the holes stay the z-buffer's."""
    from pose2rgbd.methods.hybrid.warp import blend_weights, warp_gathered

    H = W = 8
    K = torch.tensor([[8.0, 0.0, 3.5], [0.0, 8.0, 3.5], [0.0, 0.0, 1.0]])
    rgb = torch.zeros(1, 3, H, W, 3, dtype=torch.uint8)
    rgb[0, 0], rgb[0, 1], rgb[0, 2] = 200, 100, 0
    depth = torch.full((1, 3, H, W), 10.0)
    depth[0, 1] = 11.0  # 10 % behind: the same surface
    depth[0, 2, :, :4] = 10.5  # the left half the same surface too, the right half 3x as far
    depth[0, 2, :, 4:] = 30.0
    depth[0, :, 0, 0] = float("nan")  # a hole in every keyframe
    T = torch.eye(4, dtype=torch.float64).expand(1, 3, 4, 4).clone()
    args = (rgb, depth, T, K, torch.ones(1, 3, dtype=torch.bool))
    kw = {"depth_min_m": 1.0, "depth_max_m": 50.0, "kernel": kernel}
    w = torch.tensor([[2.0, 1.0, 1.0]])
    out = warp_gathered(*args, **kw, blend_tolerance=0.2, weights=w)
    winner = warp_gathered(*args, **kw)
    got = (out["rgb"][0].double() + 1.0) * 127.5
    seen = torch.ones(H, W, dtype=torch.bool)
    seen[0, 0] = False
    left, right = seen.clone(), seen.clone()
    left[:, 4:], right[:, :4] = False, False
    np.testing.assert_allclose(got[:, left].numpy(), (2 * 200 + 100 + 0) / 4, atol=1e-3)
    np.testing.assert_allclose(got[:, right].numpy(), (2 * 200 + 100) / 3, atol=1e-3)  # not the far one's 0
    assert torch.equal(out["depth"], winner["depth"]) and torch.equal(out["valid"], winner["valid"])
    assert torch.equal(out["rgb"][:, :, 0, 0], winner["rgb"][:, :, 0, 0])  # a hole: the nearest keyframe's pixel
    np.testing.assert_allclose((winner["rgb"][0, :, seen] + 1.0) * 127.5, 200.0, atol=1e-3)  # the winner alone
    # a tighter tolerance leaves the keyframe 10 % behind out
    tight = warp_gathered(*args, **kw, blend_tolerance=0.05, weights=w)
    np.testing.assert_allclose((tight["rgb"][0][:, left].double() + 1.0) * 127.5, (2 * 200 + 0) / 3, atol=1e-3)
    # the smallest tolerance still counts the winner itself: its colour alone, never an empty mean
    tiny = warp_gathered(*args, **kw, blend_tolerance=1e-9, weights=w)
    np.testing.assert_allclose((tiny["rgb"][0][:, seen].double() + 1.0) * 127.5, 200.0, atol=1e-3)
    # a query at a keyframe's pose answers that keyframe's colours (its weight 1 / (0 + 1e-6))
    at = warp_gathered(*args, **kw, blend_tolerance=0.2, weights=torch.from_numpy(blend_weights([[0.0, 1.0, 1.0]])))
    np.testing.assert_allclose((at["rgb"][0][:, seen].double() + 1.0) * 127.5, 200.0, atol=1e-3)
    with pytest.raises(ValueError, match="weights"):
        warp_gathered(*args, **kw, blend_tolerance=0.2)
    # blend_depth: the same keyframes' depths, with the same weights; the colours, the holes and validity unchanged
    both = warp_gathered(*args, **kw, blend_tolerance=0.2, weights=w, blend_depth=True)
    metres = (both["depth"][0, 0].double() + 1.0) / 2.0 * 49.0 + 1.0  # the normalization of depth_min/max_m
    np.testing.assert_allclose(metres[left].numpy(), (2 * 10 + 11 + 10.5) / 4, atol=1e-4)
    np.testing.assert_allclose(metres[right].numpy(), (2 * 10 + 11) / 3, atol=1e-4)  # not the far one's 30 m
    assert torch.equal(both["rgb"], out["rgb"]) and torch.equal(both["valid"], out["valid"])
    assert both["depth"][0, 0, 0, 0] == winner["depth"][0, 0, 0, 0]  # a hole: the nearest keyframe's depth
    with pytest.raises(ValueError, match="blend_depth"):
        warp_gathered(*args, **kw, blend_depth=True)
    # blend_colour False: the depth blended, the colour the winner's
    depth_only = warp_gathered(*args, **kw, blend_tolerance=0.2, weights=w, blend_depth=True, blend_colour=False)
    assert torch.equal(depth_only["depth"], both["depth"]) and torch.equal(depth_only["rgb"], winner["rgb"])


@pytest.mark.parametrize("kernel", ["numba", "torch"])
def test_a_fallback_keyframe_lands_only_in_the_holes_the_others_leave(kernel: str) -> None:
    """fallback: the last keyframe's points land only where none of the others landed, never in front of them
    (though nearer here), and stay out of the others' colour blend; hits count per main keyframe."""
    from pose2rgbd.methods.hybrid.warp import warp_gathered

    H = W = 8
    K = torch.tensor([[8.0, 0.0, 3.5], [0.0, 8.0, 3.5], [0.0, 0.0, 1.0]])
    rgb = torch.zeros(1, 2, H, W, 3, dtype=torch.uint8)
    rgb[0, 0], rgb[0, 1] = 200, 50
    depth = torch.full((1, 2, H, W), 10.0)
    depth[0, 0, :, 4:] = float("nan")  # the main keyframe sees the left half only
    depth[0, 1] = 5.0  # the fallback sees everything, nearer
    depth[0, :, 0, 0] = float("nan")  # a hole in both
    T = torch.eye(4, dtype=torch.float64).expand(1, 2, 4, 4).clone()
    args = (rgb, depth, T, K, torch.ones(1, 2, dtype=torch.bool))
    kw = {"depth_min_m": 0.0, "depth_max_m": 20.0, "kernel": kernel, "blend_tolerance": 1.0,
          "weights": torch.tensor([[1.0, 1.0]])}  # fmt: skip
    out = warp_gathered(*args, **kw, fallback=1)
    got = (out["rgb"][0].double() + 1.0) * 127.5
    d_m = (out["depth"][0, 0].double() + 1.0) * 10.0
    left = torch.zeros(H, W, dtype=torch.bool)
    left[:, :4] = True
    left[0, 0] = False
    right = torch.zeros(H, W, dtype=torch.bool)
    right[:, 4:] = True
    np.testing.assert_allclose(got[:, left].numpy(), 200.0, atol=1e-3)  # not blended with the fallback's 50
    np.testing.assert_allclose(d_m[left].numpy(), 10.0, atol=1e-4)  # not its nearer 5 m
    np.testing.assert_allclose(got[:, right].numpy(), 50.0, atol=1e-3)
    np.testing.assert_allclose(d_m[right].numpy(), 5.0, atol=1e-4)
    assert not out["valid"][0, 0, 0, 0] and out["valid"][0, 0][left | right].all()
    assert torch.equal(out["hits"][0, 0][left | right], torch.ones(int((left | right).sum())))  # / 1 main keyframe
    # the same keyframes without the fallback rule: the nearer one wins everywhere it lands
    plain = warp_gathered(*args, **{**kw, "blend_tolerance": 0.2})
    np.testing.assert_allclose(((plain["rgb"][0].double() + 1.0) * 127.5)[:, left | right].numpy(), 50.0, atol=1e-3)
    with pytest.raises(ValueError, match="fallback"):
        warp_gathered(*args, **kw, fallback=2)


def test_the_keyframe_from_behind_fills_the_border_holes_of_a_camera_ahead(plane) -> None:
    """behind_keyframe: one more keyframe, the nearest behind the query camera's image plane and not already a
    neighbour, lands only where the neighbours left holes: a camera lower than every keyframe (ahead of them along
    its view) gets fewer holes, and every pixel the neighbours reached is unchanged."""
    model, T = _plane_model(plane, neighbours=2)
    plain, _ = _plane_model(plane, neighbours=2, behind_keyframe=False)
    assert model.config.behind_keyframe
    low = look_down_pose(3.1, 0.9, 15.0, yaw=0.3)[None]  # every keyframe 9 m behind it (it looks down)
    rows, usable, fallback = model.keyframes_to_warp(low)
    near, _ = model.select_keyframes(low)
    d = model.keyframes.poses.distances(low)[0]
    assert fallback == 1 and np.array_equal(rows[:, :2], near) and usable.all()
    assert rows[0, 2] == next(i for i in np.argsort(d, kind="stable") if i not in near[0])  # the next nearest
    a, b = model.warp(low), plain.warp(low)
    holes_a, holes_b = float((~a["valid"]).float().mean()), float((~b["valid"]).float().mean())
    assert holes_b > 0.05 and holes_a < 0.7 * holes_b  # (37 % -> 23 % here)
    kept = b["valid"].expand(-1, 3, -1, -1)
    assert torch.equal(a["rgb"][kept], b["rgb"][kept]) and torch.equal(a["depth"][b["valid"]], b["depth"][b["valid"]])
    # a camera above every keyframe has none behind it: the fallback is unusable and the warp is the plain one
    high = look_down_pose(3.1, 0.9, 40.0, yaw=0.3)[None]
    _, usable, _ = model.keyframes_to_warp(high)
    assert usable[0, :2].all() and not usable[0, 2]
    a, b = model.warp(high), plain.warp(high)
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["depth"], b["depth"])
    # training's exclusion holds for it too: the query's own frame and its neighbours in time are never taken
    q = T[3:4].copy()
    q[0, 2, 3] -= 6.0  # lower than keyframe 3, so all keyframes lie behind it
    rows, usable, _ = model.keyframes_to_warp(q, (np.array([0]), np.array([3]), np.array([1])))
    assert not set(rows[0][usable[0]]) & {2, 3, 4} and usable[0, 2]


def test_the_keyframe_from_behind_is_the_nearest_behind_however_far(plane) -> None:
    """keyframes_to_warp looks among the nearest keyframes first and scans them all only where none of those is
    behind: the answer is the brute-force one either way (here 101 keyframes, the only one behind a high query
    200 m away, beyond the first candidates)."""
    from pose2rgbd.methods.hybrid.net import BEHIND_CANDIDATES

    ck, cam = plane
    model, _ = _plane_model(plane, neighbours=3)
    T = np.stack([look_down_pose(2.0 * i, 0.0, 24.0) for i in range(100)] + [look_down_pose(200.0, 0.0, 40.0)])
    assert len(T) > BEHIND_CANDIDATES
    rgb, depth = _render(ck, T)
    model.set_keyframes(rgb, depth, T, cam, source_id=np.zeros(len(T)), seq_pos=np.arange(len(T)),
                        index=np.arange(len(T)), rot_weight_m=20.0)  # fmt: skip
    q = np.stack([look_down_pose(10.0, 0.0, 15.0), look_down_pose(0.0, 0.0, 30.0), look_down_pose(0.0, 0.0, 45.0)])
    rows, usable, _ = model.keyframes_to_warp(q)
    d = model.keyframes.poses.distances(q)
    along = np.einsum("bnk,bk->bn", T[None, :, :3, 3] - q[:, None, :3, 3], q[:, :3, 2])
    d = np.where(along < 0.0, d, np.inf)
    np.put_along_axis(d, rows[:, :3], np.inf, axis=1)
    assert np.array_equal(rows[:2, 3], np.argmin(d[:2], axis=1)) and usable[:2, 3].all()
    assert rows[1, 3] == 100  # the high one at the far end: the only keyframe behind the query at 30 m
    assert not usable[2, 3]  # above every keyframe: none behind


@pytest.mark.parametrize("tree", [False, True])
def test_one_search_gives_the_neighbours_and_the_keyframe_from_behind(plane, monkeypatch, tree: bool) -> None:
    """keyframes_to_warp takes the neighbours and the keyframe from behind from one search (one distance row per
    query on a small map, the k-d tree's nearest candidates on a large one): the neighbours are select_keyframes'
    own, ties (keyframes at one pose) to the lower row, and the keyframe from behind the brute-force one, for queries
    among, below and above the keyframes, with and without training's exclusion."""
    import pose2rgbd.methods.hybrid.net as net_module
    from pose2rgbd.geometry import coverage

    if tree:  # every map is "large": the k-d tree's path (its brute-force size too, so the tree answers)
        monkeypatch.setattr(net_module, "COVERAGE_TREE_MIN", 1)
        monkeypatch.setattr(coverage, "BRUTE_FORCE_MAX", 1)
    ck, cam = plane
    model, _ = _plane_model(plane, neighbours=3)
    line = [look_down_pose(2.0 * i, 0.0, 24.0 + (i % 3)) for i in range(40)]
    T = np.stack([*line, line[5], line[5], line[5], look_down_pose(20.0, 0.0, 50.0)])  # 5 at one pose; a high one
    rgb, depth = _render(ck, T)
    model.set_keyframes(rgb, depth, T, cam, source_id=np.zeros(len(T)), seq_pos=np.arange(len(T)),
                        index=np.arange(len(T)), rot_weight_m=20.0)  # fmt: skip
    q = np.stack([line[5], look_down_pose(9.0, 0.3, 20.0), look_down_pose(40.0, 0.0, 30.0),
                  look_down_pose(30.0, 0.0, 60.0)])  # fmt: skip
    d_all = model.keyframes.poses.distances(q)
    along = np.einsum("bnk,bk->bn", T[None, :, :3, 3] - q[:, None, :3, 3], q[:, :3, 2])
    exclude = (np.zeros(len(q)), np.array([5, 4, 20, 15]), np.full(len(q), 1))
    for ex in (None, exclude):
        rows, usable, fallback = model.keyframes_to_warp(q, ex)
        near, near_usable = model.select_keyframes(q, ex)
        assert fallback == 1 and np.array_equal(rows[:, :3], near) and np.array_equal(usable[:, :3], near_usable)
        d = d_all if ex is None else model._excluded(d_all, ex)
        want = np.stack([np.lexsort((np.arange(len(T)), r))[:3] for r in d])  # by distance, ties by row
        assert np.array_equal(near, want)
        db = np.where(along < 0.0, d, np.inf)
        np.put_along_axis(db, near, np.inf, axis=1)
        assert np.array_equal(rows[:, 3], np.argmin(db, axis=1))
        assert np.array_equal(usable[:, 3], np.isfinite(db.min(axis=1)))
        assert not usable[3, 3]  # above every keyframe: none behind
        # four keyframes at the query's pose tie: the lowest rows (5 itself left out in training, its time window)
        assert list(rows[0, :3]) == ([5, 40, 41] if ex is None else [40, 41, 42])


def test_the_default_blend_renders_a_keyframe_pose_as_that_keyframe(plane) -> None:
    """The model's blend weights come from the pose distances: at a keyframe's own pose its colours come back,
    between keyframes the colours differ from the z-buffer winner's (a mean of the views)."""
    model, T = _plane_model(plane, neighbours=3)
    assert model.config.warp_colour == "blend"
    w = model.warp(T[2:3])
    rows, _ = model.select_keyframes(T[2:3])
    assert rows[0][0] == 2
    kf_rgb = model.gather_keyframes(rows)[0][0, 0].permute(2, 0, 1).float() / 127.5 - 1.0
    valid = w["valid"][0].expand(3, -1, -1)
    assert valid.float().mean() > 0.9
    assert (w["rgb"][0][valid] - kf_rgb[valid]).abs().max() < 1e-3
    q = look_down_pose(3.1, 0.9, 23.0, yaw=0.08)[None]
    rows, _ = model.select_keyframes(q)  # turned and moved: the weights are 1 / the selection's own distance
    d = model.keyframes.poses.distances(q)[0, rows[0]]
    np.testing.assert_allclose(model._blend_weights(q, rows)[0], 1.0 / (d + 1e-6), rtol=1e-6)
    solo, _ = _plane_model(plane, neighbours=3, warp_colour="nearest-surface")
    a, b = model.warp(q), solo.warp(q)
    assert torch.equal(a["depth"], b["depth"]) and (a["rgb"] != b["rgb"]).any()
    # warp_depth blend (the default): where the views that see the ground straight down agree on its depth, their
    # mean is the z-buffer winner's; where their depths disagree by a few per cent, the mean lies behind the nearest
    assert model.config.warp_depth == "blend"
    nearest, _ = _plane_model(plane, neighbours=3, warp_depth="nearest-surface")
    c = nearest.warp(q)
    assert torch.equal(c["rgb"], a["rgb"]) and torch.equal(c["valid"], a["valid"])
    torch.testing.assert_close(c["depth"], a["depth"], atol=1e-5, rtol=0.0)
    noisy, _ = _plane_model(plane, neighbours=3, depth_step=0.04)
    noisy_nearest, _ = _plane_model(plane, neighbours=3, depth_step=0.04, warp_depth="nearest-surface")
    d, e = noisy.warp(q), noisy_nearest.warp(q)
    v = d["valid"] & torch.isfinite(d["depth"])
    assert torch.equal(d["valid"], e["valid"]) and torch.equal(d["rgb"], e["rgb"])  # the colour rule is the same
    assert (d["depth"][v] >= e["depth"][v] - 1e-6).all()  # never nearer than the winner
    assert (d["depth"][v] > e["depth"][v] + 1e-4).float().mean() > 0.5  # farther where another view agrees


def test_training_exclusion_leaves_out_the_query_and_its_neighbours(plane) -> None:
    model, T = _plane_model(plane, n_key=8, neighbours=2)
    rows, usable = model.select_keyframes(T[3:4])
    assert rows[0][0] == 3 and usable.all()  # without exclusion a keyframe's own pose is its nearest
    rows, usable = model.select_keyframes(T[3:4], (np.array([0]), np.array([3]), np.array([0])))
    assert 3 not in rows[0] and usable.all()
    rows, usable = model.select_keyframes(T[3:4], (np.array([0]), np.array([3]), np.array([2])))
    assert not set(rows[0]) & {1, 2, 3, 4, 5} and usable.all()
    assert set(rows[0]) == {0, 6}
    # another source is never excluded
    rows, _ = model.select_keyframes(T[3:4], (np.array([1]), np.array([3]), np.array([2])))
    assert rows[0][0] == 3
    # everything excluded: the frames are returned but marked unusable, and the warp has only holes
    rows, usable = model.select_keyframes(T[3:4], (np.array([0]), np.array([3]), np.array([10])))
    assert not usable.any()
    w = model.warp(T[3:4], (np.array([0]), np.array([3]), np.array([10])))
    assert not w["valid"].any() and torch.isfinite(w["depth"]).all()


def test_store_positions_and_subsampling() -> None:
    pos = sequence_positions(np.array([1, 0, 1, 0, 0]), np.array([5, 9, 1, 3, 4]))
    np.testing.assert_array_equal(pos, [1, 2, 0, 0, 1])
    keep = store_indices(np.arange(100, 200), 10)
    assert len(keep) == 10 and keep[0] == 100 and keep[-1] == 199
    np.testing.assert_array_equal(store_indices(np.array([5, 2]), 10), [2, 5])


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("hyb") / "ds", n_survey=30, n_route=8, size=SIZE)


@pytest.fixture(scope="module")
def trained(toy: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 2-step run through the CLI (`pose2rgbd train --method hybrid`), random three-way split."""
    from pose2rgbd.cli.main import main

    out = tmp_path_factory.mktemp("hybrun") / "run"
    rc = main(
        [
            "train", "--method", "hybrid", "--preset", "hybrid-lite", "--dataset", str(toy), "--out", str(out),
            "--cache-root", str(toy.parent / "cache"), "--set", "model.size=64", "--set", "train.split=random",
            "--set", "train.max_steps=2", "--set", "train.batch_size=4", "--set", "train.epochs=1",
            "--set", "train.device=cpu", "--set", "train.progress=false", "--set", "train.tensorboard=false",
            "--set", "train.recalibrate_bn=false", "--set", "train.val_fraction=0.2",
            "--set", "train.test_fraction=0.2",
            "--set", "model.max_keyframes=12", "--set", "model.decoder=true",
        ]
    )  # fmt: skip
    assert rc == 0
    return out


def test_two_step_cli_train_and_store_holds_training_frames_only(trained: Path) -> None:
    import json

    ck = load_checkpoint(trained / "last.pt")
    assert ck.kind == "hybrid" and ck.step == 2 and ck.model_config.preset == "hybrid-lite"
    split = json.loads((trained / "split.json").read_text())
    kept = set(ck.model.keyframes.frames.tolist())
    assert len(kept) == 12 == ck.model.n_keyframes  # subsampled to max_keyframes
    assert kept <= set(split["train"])
    assert not kept & (set(split["val"]) | set(split["test"]))
    assert torch.isfinite(ck.model.hole_border_fit[3])  # training fitted the border holes' rule (pixels seen)
    log = (trained / "log.csv").read_text()
    assert "decoder_rgb_loss" in log and "rgb_loss" in log


def test_checkpoint_round_trip_renders_identically_and_the_engine_serves_it(
    trained: Path, toy: Path, tmp_path: Path
) -> None:
    from pose2rgbd.dataset import build_cache
    from pose2rgbd.models import save_checkpoint

    a = load_checkpoint(trained / "last.pt")  # a fresh model (empty store) resized to the saved keyframes
    assert a.model.n_keyframes == 12
    cache = build_cache(toy, SIZE, cache_root=toy.parent / "cache", progress=False)
    kf = a.model.keyframes.frames
    kf_rgb, kf_depth, _ = a.model.gather_keyframes(np.arange(len(kf))[:, None])
    np.testing.assert_array_equal(kf_rgb[:, 0].numpy(), cache.rgb[kf])
    np.testing.assert_allclose(kf_depth[:, 0].float().numpy(), cache.depth[kf], rtol=1e-3)  # float16
    save_checkpoint(tmp_path / "copy.pt", a.model, dataset_fingerprint=a.dataset_fingerprint, camera=a.camera)
    b = load_checkpoint(tmp_path / "copy.pt")
    T = cache.T_world_cam[[1, 7, 33]]
    ea = RenderEngine(EngineConfig(device="cpu", precision="fp32", fuse_bn=False, channels_last=False, warmup=0), a)
    eb = RenderEngine(EngineConfig(device="cpu", precision="fp32", fuse_bn=False, channels_last=False, warmup=0), b)
    ra, rb = ea.render(T), eb.render(T)
    np.testing.assert_array_equal(ra.rgb, rb.rgb)
    np.testing.assert_array_equal(ra.depth, rb.depth)
    # the serving engine as the render node builds it (BatchNorm folded, channels-last, warm-up) serves it too
    served = RenderEngine.from_config(EngineConfig(checkpoint=str(trained / "last.pt"), device="cpu", precision="fp32"))
    r = served.render(T)
    assert r.rgb.shape == (3, SIZE, SIZE, 3) and r.depth.shape == (3, SIZE, SIZE) and r.confidence is not None
    assert np.abs(r.rgb.astype(int) - ra.rgb).max() <= 2
    assert np.nanmax(np.abs(r.depth - ra.depth)) < 0.5
    assert r.coverage_m is not None


def test_onnx_export_is_refused_with_a_reason(trained: Path, tmp_path: Path) -> None:
    from pose2rgbd.models.export import export_onnx

    with pytest.raises(CheckpointError, match=r"cannot be exported to ONNX.*engine.backend torch.*export --bundle"):
        export_onnx(load_checkpoint(trained / "last.pt"), tmp_path / "h.onnx")
    assert not (tmp_path / "h.onnx").exists()


def test_config_checks_and_presets() -> None:
    fam = get_family("hybrid")
    assert set(fam.presets) == {"hybrid", "hybrid-lite", "hybrid-fast", "hybrid-subpixel"}
    for size in (64, 512):
        assert fam.make_config("hybrid", size=size).decoder_config().size == size
        fast = fam.make_config("hybrid-fast", size=size)  # valid at every size: 3 fill levels even at 64
        assert (fast.fill_channels, fast.fill_levels, fast.dense_channels) == (8, 3, 256)
        sub = fam.make_config("hybrid-subpixel", size=size)  # at 64: 2 levels from 32x32 leave 8x8
        assert (sub.fill_channels, sub.fill_levels, sub.fill_space_to_depth) == (16, 2, 2)
    from pose2rgbd.errors import ConfigError

    bads = (
        {"size": 96}, {"neighbours": 0}, {"loss": "huber"}, {"fill_levels": 4, "size": 64}, {"hole_depth": "x"},
        {"hole_rgb": "learned"}, {"rgb_correction": "valid"}, {"warp_depth": "mean"}, {"hole_border": "learned"},
        {"fill_space_to_depth": 3}, {"fill_space_to_depth": 0}, {"fill_levels": -1},
    )  # fmt: skip
    for bad in bads:
        with pytest.raises(ConfigError):
            fam.make_config("hybrid", **bad)
    with pytest.raises(ConfigError, match=r"at least 8x8 at the lowest level \(model.size 64 / model.fill_space_to"):
        fam.make_config("hybrid", size=64, fill_levels=2, fill_space_to_depth=4)  # 64 / 4 = 16 -> 8 -> 4


@pytest.mark.slow  # trains and evaluates: 65 s on 2 loaded cores (not timed on a quiet machine)
def test_short_training_is_not_worse_than_the_reprojection_it_starts_from(toy: Path, tmp_path: Path) -> None:
    from pose2rgbd.evaluation import evaluate

    fam = get_family("hybrid")
    mc = fam.make_config(
        "hybrid-lite", size=SIZE, dense_channels=32, trunk_channels=[16] * 6, fill_channels=8, exclude_window=3,
        loss="l1",
    )  # fmt: skip
    tc = TrainConfig(
        epochs=40, batch_size=4, max_steps=12, lr=1e-3, split="route", progress=False, tensorboard=False,
        device="cpu", val_every=0, recalibrate_bn=False,
    )  # fmt: skip
    r = train("hybrid", toy, tmp_path / "run", mc, tc, cache_root=toy.parent / "cache")
    res = evaluate(r.last, toy, "route", write_files=False, cache_root=toy.parent / "cache")
    m, rp = res.metrics["model"], res.metrics["reprojection"]
    # the residual starts at zero (the reprojection answer); a short training must not make it worse
    assert m["rgb_mae_px"] <= rp["rgb_mae_px"] * 1.03, (m, rp)
    assert m["depth_mae"] <= rp["depth_mae"] * 1.05, (m, rp)


def test_refinement_refuses_the_hybrid_whose_warp_has_no_pose_gradient(plane) -> None:
    """The warped keyframes (most of the render) carry no gradient to the pose: refinement would silently follow
    the decoder's gradient alone (zero for an untrained fill), so it is refused with the reason."""
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.inference.refine import Refiner

    for decoder in (True, False):
        model, T = _plane_model(plane, decoder=decoder)
        Tt = torch.as_tensor(T[:1]).requires_grad_(True)
        g = torch.autograd.grad(model(model.poses_to_input_torch(Tt))["rgb"].sum(), Tt, allow_unused=True)[0]
        assert g is None or float(g.abs().sum()) == 0.0  # why: no gradient reaches the pose through the output
        with pytest.raises(ConfigError, match=r"hybrid.*gradient"):
            Refiner(model)


def test_the_depth_range_read_once_follows_every_change_of_the_buffer() -> None:
    """The forward reads the depth range from its buffer once (on a GPU each read waits for the queued kernels);
    setting a new range and loading a state dict with another must both be seen by the next read."""
    model = build_model(HybridConfig(size=SIZE, dense_channels=32, trunk_channels=[16] * 6))
    model.set_depth_normalizer(DepthNormalizer(0.5, 40.0))
    assert (model.depth_normalizer.min_m, model.depth_normalizer.max_m) == (0.5, 40.0)
    model.set_depth_normalizer(DepthNormalizer(1.0, 80.0))
    assert (model.depth_normalizer.min_m, model.depth_normalizer.max_m) == (1.0, 80.0)
    other = build_model(HybridConfig(size=SIZE, dense_channels=32, trunk_channels=[16] * 6))
    other.set_depth_normalizer(DepthNormalizer(2.0, 300.0))
    model.load_state_dict(other.state_dict())
    assert (model.depth_normalizer.min_m, model.depth_normalizer.max_m) == (2.0, 300.0)
    assert model.depth_range_m == (2.0, 300.0)


def test_a_pose_dimension_constant_in_training_still_reaches_the_warp(plane) -> None:
    """The engine gives the model only the normalized pose; a dimension that never varied in training (here the
    altitude: every keyframe at 24 m) used to normalize to 0 and come back as 24 m, so a query at 21 m was warped
    as if at 24 m. The warp must see the query's own pose; the decoder keeps seeing 0 on that dimension."""
    ck, cam = plane
    T = np.stack([look_down_pose(2.0 * i, 0.5 * i, 24.0, yaw=0.05 * i) for i in range(6)])
    model = build_model(
        HybridConfig(size=SIZE, dense_channels=32, trunk_channels=[16] * 6),
        pose_normalizer=PoseNormalizer.fit(T, "6dof-quat"),
    )
    model.set_depth_normalizer(DepthNormalizer(0.0, 80.0))
    rgb, depth = _render(ck, T)
    model.set_keyframes(rgb, depth, T, cam, source_id=np.zeros(6), seq_pos=np.arange(6), index=np.arange(6),
                        rot_weight_m=20.0)  # fmt: skip
    model.eval()
    query = look_down_pose(3.1, 0.9, 21.0, yaw=0.08)[None]
    x, _ = model.poses_to_input(query)
    with torch.no_grad():
        served = model(x)["depth"]
        truth = model(x, query)["depth"]
    np.testing.assert_allclose(model._poses(x)[0], query[0], atol=1e-4)
    torch.testing.assert_close(served, truth)
    # the altitude is marked fixed; training poses still normalize to 0 there (what the decoder learnt on)
    z = 2  # 6dof-quat: x, y, z, qx, qy, qz, qw
    assert bool(model.pose_fixed[z])
    assert np.abs(model.poses_to_input(T)[0].numpy()[:, z]).max() < 1e-6


def test_batchnorm_recalibration_draws_no_random_numbers(plane) -> None:
    """The trainer recalibrates BatchNorm before every validation and promises not to perturb training; the
    hybrid's training forward draws each query's exclusion window, so recalibration must not go through it."""
    model, T = _plane_model(plane, decoder=True)
    model.train()
    x, _ = model.poses_to_input(T[:4])
    batch = {"pose": x, "T_world_cam": torch.from_numpy(T[:4]), "source_id": torch.zeros(4, dtype=torch.long),
             "seq_pos": torch.arange(4)}  # fmt: skip
    state = torch.get_rng_state()
    with torch.no_grad():
        model.recalibration_forward(batch)
    assert torch.equal(torch.get_rng_state(), state)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(int(m.num_batches_tracked) == 1 for m in bn)  # the decoder's statistics were updated


def test_background_fill_takes_the_farther_surface_around_a_hole() -> None:
    from pose2rgbd.methods.hybrid.hole_depth import RING_STEPS, background_fill

    w = 2 * RING_STEPS + 12
    d = torch.full((1, 1, 3, w), -0.6)  # a near surface on the left ...
    d[..., w // 2 :] = 0.3  # ... a farther one on the right
    valid = torch.ones_like(d, dtype=torch.bool)
    valid[..., w // 2 - 1 : w // 2 + 2] = False  # a narrow disocclusion at the depth edge, all rows
    out = background_fill(d, valid)
    assert torch.equal(out[valid], d[valid])
    np.testing.assert_allclose(out[..., w // 2 :].numpy(), 0.3)  # reached from both sides: the farther wins
    np.testing.assert_allclose(out[..., w // 2 - 1].numpy(), -0.6)  # reached from the near side first
    # a hole wider than the rings grow: its middle takes the farther of the row's known depths beside it
    valid2 = torch.ones_like(d, dtype=torch.bool)
    valid2[..., 2 : w - 2] = False
    out2 = background_fill(d, valid2)
    mid = out2[0, 0, 1, 2 + RING_STEPS : w - 2 - RING_STEPS]
    assert len(mid) and torch.allclose(mid, torch.tensor(0.3))
    # sky (normalized 1) is no surface; a row with nothing known keeps its input value
    d3 = torch.full((1, 1, 20, 4), 0.5)
    d3[..., 0, :] = 1.0
    v3 = torch.zeros_like(d3, dtype=torch.bool)
    v3[..., 0, :] = True  # a sky row
    v3[..., 19, 0] = True
    d3[..., 19, 0] = -0.2
    out3 = background_fill(d3, v3)
    np.testing.assert_allclose(out3[0, 0, :10].numpy(), d3[0, 0, :10].numpy())  # beyond the rings: unchanged
    np.testing.assert_allclose(out3[0, 0, 12:].numpy(), -0.2)  # the rings from the one surface pixel


def test_background_hole_depth_changes_only_the_holes(plane) -> None:
    from pose2rgbd.methods.hybrid.hole_depth import background_fill

    near, _ = _plane_model(plane, hole_depth="nearest")
    back, _ = _plane_model(plane)  # the default
    back.load_state_dict(near.state_dict())
    query = look_down_pose(3.1, 0.9, 18.0, yaw=0.4)[None]  # lower and turned: holes at the borders
    x, _ = near.poses_to_input(query)
    with torch.no_grad():
        a, b = near(x), back(x)
    valid = a["confidence"] > 0.5
    assert (~valid).sum() > 0 and torch.equal(a["depth"][valid], b["depth"][valid])
    torch.testing.assert_close(b["depth"], torch.where(valid, a["depth"], background_fill(a["depth"], valid)))
    assert not torch.equal(a["depth"][~valid], b["depth"][~valid])


def test_the_ground_bounds_the_holes_depth(plane) -> None:
    """hole_ground: the keyframes' ground plane is fitted with them (kept in the state_dict); a view far behind
    them, looking ahead and down, has the near ground in its holes, where the background rule gives the depth of
    the farther ground the keyframes saw: with the plane those holes take where their rays meet it. (The
    keyframes turn, so their cameras tell up: arrays have no datum.)"""
    ck, _ = plane
    off, _ = _plane_model(plane, yaw_step=0.5, hole_ground=False)
    on, _ = _plane_model(plane, yaw_step=0.5)  # the default
    assert off.ground is None and not torch.isfinite(off.ground_plane).any()
    g = on.ground
    assert g is not None
    np.testing.assert_allclose(g.normal, [0.0, 0.0, 1.0], atol=1e-3)
    assert abs(g.offset) < 0.05
    on.load_state_dict(off.state_dict() | {"ground_plane": on.ground_plane})
    query = forward_pose(-45.0, 1.0, 20.0, pitch_deg=30.0)[None]  # the keyframes' ground ahead, 20-70 m away
    x, _ = on.poses_to_input(query)
    with torch.no_grad():
        a, b = off(x), on(x)
    holes = a["confidence"] < 0.5
    assert torch.equal(a["depth"][~holes], b["depth"][~holes])
    dn = on.depth_normalizer
    truth = torch.from_numpy(np.asarray(_render(ck, query)[1], np.float32)).reshape(a["depth"].shape)
    ground = torch.from_numpy(g.depth(query, on.camera.rays())).reshape(truth.shape)
    np.testing.assert_allclose(ground[torch.isfinite(truth)], truth[torch.isfinite(truth)], rtol=1e-3)
    bounded = torch.minimum(a["depth"], dn.normalize(ground.clamp(max=1e3)).float())
    torch.testing.assert_close(b["depth"], torch.where(holes, bounded, a["depth"]))
    # on a GPU computed there, in torch (no frame-sized work on the host): the same depth, in float32 also under
    # bfloat16 autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        toward, above = (torch.from_numpy(t) for t in g.camera_terms(query))
        own = ground_depth_from_terms(toward, above, torch.from_numpy(on.camera.rays().astype(np.float32)))
    torch.testing.assert_close(own, ground.float())
    seen = holes & (truth <= dn.max_m)  # scored as evaluate scores: within the model's depth range
    err_off = (dn.denormalize(a["depth"]) - truth)[seen].abs()
    err_on = (dn.denormalize(b["depth"]) - truth)[seen].abs()
    assert seen.float().mean() > 0.2
    assert err_on.mean() < 0.5 * err_off.mean()  # the near ground no longer at the depth of the far one
    # a state_dict written before the plane existed loads strictly, without one
    old_sd = {k: v for k, v in on.state_dict().items() if k != "ground_plane"}
    older, _ = _plane_model(plane, yaw_step=0.5)
    older.load_state_dict(old_sd, strict=True)
    assert older.ground is None and not torch.isfinite(older.ground_plane).any()
    # the plane travels with the checkpoint: a copy loaded from the state_dict has it without the fit
    copy, _ = _plane_model(plane)  # (its keyframes along one heading: no plane of its own)
    assert copy.ground is None
    copy.load_state_dict(on.state_dict())
    assert copy.ground is not None and np.array_equal(copy.ground.normal, g.normal)


def test_border_holes_are_the_holes_that_reach_the_image_border() -> None:
    from pose2rgbd.methods.hybrid.hole_depth import border_holes

    valid = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    valid[0, 0, 3:5, 3:5] = False  # enclosed: a disocclusion
    valid[0, 0, 6:, 0:3] = False  # at the bottom-left corner
    valid[0, 0, 5, 1] = False  # joined to the corner's hole
    valid[0, 0, 0, 7] = False  # a corner pixel ...
    valid[0, 0, 1, 6] = False  # ... and one touching it only diagonally: not joined (4-neighbours)
    valid[1, 0] = False  # nothing landed: all border
    got = border_holes(valid)
    want = torch.zeros_like(valid)
    want[0, 0, 6:, 0:3] = True
    want[0, 0, 5, 1] = True
    want[0, 0, 0, 7] = True
    want[1, 0] = True
    assert torch.equal(got, want)


def _border_place(plane, same_depth: bool, n: int = 12, **cfg) -> tuple:
    """Ground-plane keyframes at different heights (20-29 m), turning: with their true depth (``same_depth`` False:
    a view's holes at its border are best filled from the geometry around them), or all with the first keyframe's
    depth image (as a network that predicts the same depth for every view of a walk: the nearest keyframe's own
    depth is the view's)."""
    ck, cam = plane
    model = build_model(
        HybridConfig(size=SIZE, exclude_window=1, **cfg),
        pose_normalizer=PoseNormalizer("6dof-quat", [-50, -50, 5, -1, -1, -1, 0], [50, 50, 60, 1, 1, 1, 1]),
    )
    model.set_depth_normalizer(DepthNormalizer(0.0, 80.0))
    T = np.stack([look_down_pose(2.0 * i, 0.5 * i, 20.0 + 3.0 * (i % 4), yaw=0.1 * i) for i in range(n)])
    rgb, depth = _render(ck, T)
    if same_depth:
        depth = np.repeat(depth[:1], n, axis=0)
    model.set_keyframes(rgb, depth, T, cam, source_id=np.zeros(n), seq_pos=np.arange(n), index=np.arange(n),
                        rot_weight_m=20.0)  # fmt: skip
    return model.eval(), T


def test_each_place_chooses_the_depth_of_its_border_holes_from_its_own_keyframes(plane) -> None:
    """hole_border auto: each keyframe warped from the others (its time window left out) tells which rule is nearer
    its own depth in the holes at its border; true geometry keeps the background rule, a per-view depth that
    repeats from view to view takes the nearest keyframe's."""
    geometric, _ = _border_place(plane, same_depth=False)
    assert geometric.config.hole_border == "auto" and geometric.hole_border_rule == "background"  # before a fit
    fit = geometric.fit_hole_border(min_pixels=100)
    assert fit is not None and fit["pixels"] >= 100
    assert fit["background"] < 0.1 < 1.0 < fit["nearest"]  # the heights differ by 3-9 m
    assert geometric.hole_border_rule == "background"
    repeated, _ = _border_place(plane, same_depth=True)
    fit = repeated.fit_hole_border(min_pixels=100)
    assert fit is not None and fit["nearest"] < 0.1 < 1.0 < fit["background"]
    assert repeated.hole_border_rule == "nearest"
    np.testing.assert_allclose(repeated.hole_border_fit.numpy(), [1.0, fit["background"], fit["nearest"],
                                                                   fit["pixels"]])  # fmt: skip
    # too few such pixels to tell: the background rule
    assert repeated.fit_hole_border(min_pixels=10**7) is not None and repeated.hole_border_rule == "background"
    # a rule given in the config is not fitted
    fixed, _ = _border_place(plane, same_depth=True, hole_border="background")
    assert fixed.fit_hole_border() is None and fixed.hole_border_rule == "background"
    assert not torch.isfinite(fixed.hole_border_fit[1:]).any()


def test_border_holes_take_the_nearest_keyframes_depth_where_the_place_chose_it(plane) -> None:
    """The chosen rule changes only the depth of what the neighbours leave open at the border (the holes that reach
    it, and what only the keyframe from behind landed on); the rule travels with the state_dict, and a state_dict
    from before it loads with the background rule."""
    from pose2rgbd.methods.hybrid.hole_depth import border_holes

    chose, _ = _border_place(plane, same_depth=True)
    chose.fit_hole_border(min_pixels=100)
    assert chose.hole_border_rule == "nearest"
    back, _ = _border_place(plane, same_depth=True, hole_border="background")
    back.load_state_dict(chose.state_dict())
    assert back.hole_border_rule == "background"  # the config's rule, whatever the buffer says
    query = look_down_pose(9.0, 2.0, 36.0, yaw=0.9)[None]  # above every keyframe (none behind it): border holes
    x, _ = chose.poses_to_input(query)
    with torch.no_grad():
        a, b, w = chose(x, query), back(x, query), chose.warp(query)
    border = border_holes(w["valid"])
    assert border.float().mean() > 0.02
    assert torch.equal(a["depth"][border], w["depth"][border].float())  # the nearest keyframe's depth
    assert not torch.equal(b["depth"][border], w["depth"][border].float())
    assert torch.equal(a["depth"][~border], b["depth"][~border]) and torch.equal(a["rgb"], b["rgb"])
    # below the keyframes, turned: the keyframe from behind lands where the neighbours left the border open; there
    # the depth is the nearest keyframe's too, while its colour stays
    low = look_down_pose(12.0, 3.0, 15.0, yaw=1.3)[None]
    x, _ = chose.poses_to_input(low)
    with torch.no_grad():
        a, b, w = chose(x, low), back(x, low), chose.warp(low)
    fb = w["from_fallback"]
    assert fb.float().mean() > 0.03 and not (fb & ~w["valid"]).any()
    assert torch.equal(a["depth"][fb], w["nearest_depth"][fb].float())
    assert not torch.equal(b["depth"][fb], a["depth"][fb]) and torch.equal(a["rgb"], b["rgb"])
    open_ = border_holes(w["valid"]) | fb
    assert torch.equal(a["depth"][~open_], b["depth"][~open_])
    copy, _ = _border_place(plane, same_depth=True)
    copy.load_state_dict(chose.state_dict())
    assert copy.hole_border_rule == "nearest"
    # the config is read at every forward: a rule given later holds at once
    copy.config = dataclasses.replace(copy.config, hole_border="background")
    assert copy.hole_border_rule == "background"
    # a state_dict from before the setting, loaded strictly into the model that chose: the background rule again
    chose.load_state_dict({k: v for k, v in chose.state_dict().items() if k != "hole_border_fit"}, strict=True)
    assert chose.hole_border_rule == "background" and not torch.isfinite(chose.hole_border_fit[1:]).any()


def test_hole_colour_follows_the_background_depth_and_the_correction_stays_in_the_holes(plane) -> None:
    """hole_rgb background: a hole takes the colour of the pixel whose depth it took; rgb_correction holes: the
    fill network's colour correction (random here, so it shows) changes no pixel a keyframe point landed on."""
    from pose2rgbd.methods.hybrid.hole_depth import background_colour, background_fill_with_source

    # 3 keyframes, as the reprojection baseline: enough holes in this scene (5, the default, leave 2 %)
    # (and no keyframe from behind, which fills most of them here)
    old, _ = _plane_model(plane, hole_rgb="nearest", rgb_correction="everywhere", neighbours=3, behind_keyframe=False)
    new, _ = _plane_model(plane, neighbours=3, behind_keyframe=False, rgb_correction="holes")
    assert new.config.hole_rgb == "background"  # the default
    assert HybridConfig().rgb_correction == "everywhere"  # the default, which "old" shares
    with torch.no_grad():
        new.fill.out.weight.normal_(0.0, 0.05)
    old.load_state_dict(new.state_dict())
    query = look_down_pose(3.1, 0.9, 18.0, yaw=0.4)[None]  # lower and turned: holes at the borders
    x, _ = new.poses_to_input(query)
    with torch.no_grad():
        a, b, w = old(x, query), new(x, query), new.warp(query)  # the exact pose: the blend's weights follow it
    valid = w["valid"].expand(-1, 3, -1, -1)
    assert 0.05 < (~valid).float().mean() < 0.9
    assert torch.equal(b["rgb"][valid], w["rgb"][valid])  # the keyframes' colour where they landed
    assert not torch.equal(a["rgb"][valid], w["rgb"][valid])  # (everywhere: corrected there too)
    depth, source = background_fill_with_source(w["depth"], w["valid"])
    base = background_colour(w["rgb"], source)
    assert not torch.equal(base[~valid], w["rgb"][~valid])  # the background colour is not the nearest keyframe's
    res = b["rgb"][~valid] - base[~valid]  # the hole = background colour + the network's correction
    assert res.abs().max() > 1e-3
    holes = ~w["valid"]
    assert torch.equal(b["depth"][holes], depth[holes])  # the holes' depth: the background rule's, in both
    assert torch.equal(a["depth"][holes], depth[holes])


def test_hybrid_checkpoints_written_before_the_colour_and_ground_rules_keep_their_behaviour() -> None:
    from pose2rgbd.methods.hybrid import FAMILY
    from pose2rgbd.methods.hybrid.config import BEFORE_DEFAULTS

    old = {"model_config": {"preset": "hybrid", "size": 64, "hole_depth": "nearest"}, "state_dict": {}}
    got = FAMILY.migrate(old)
    assert got["model_config"] == {**old["model_config"], **BEFORE_DEFAULTS}
    current = {"model_config": {"hole_rgb": "background", "rgb_correction": "holes", "fill_init": "pretrained",
                                "hole_ground": True, "warp_colour": "blend", "warp_depth": "blend",
                                "hole_border": "auto", "behind_keyframe": True, "decoder": True}}  # fmt: skip
    # a checkpoint that records its settings is left as it is, the earlier defaults included
    assert FAMILY.migrate(current) == current


def test_background_fill_numba_and_torch_agree() -> None:
    """The CPU path (numba, over the hole pixels) and the torch path (CUDA's) give the same fill, and take it from
    the same pixels (the colour follows)."""
    from pose2rgbd.methods.hybrid.hole_depth import _background_fill_torch, background_fill_with_source

    def background_fill(d, valid):  # both answers of the CPU path, compared with the torch path's below
        return background_fill_with_source(d, valid)

    g = torch.Generator().manual_seed(0)
    d = torch.rand((2, 1, 40, 56), generator=g) * 2 - 1
    d[0, 0, :5] = 1.0  # sky rows
    valid = torch.rand((2, 1, 40, 56), generator=g) > 0.3
    valid[1, 0, :, 10:40] = False  # a hole wider than the rings grow
    valid[0, 0, 20:] = False  # rows with nothing known below the rings' reach
    torch.testing.assert_close(background_fill(d, valid), _background_fill_torch(d, valid))
    # holes as a warp leaves them: blobs of every size (smooth noise thresholded), at the image borders too
    noise = torch.nn.functional.interpolate(torch.rand((3, 1, 9, 12), generator=g), size=(72, 96), mode="bicubic")
    d2 = torch.rand((3, 1, 72, 96), generator=g) * 2 - 1
    valid2 = noise > torch.tensor([0.3, 0.5, 0.7]).reshape(3, 1, 1, 1)
    assert 0.2 < (~valid2).float().mean() < 0.8
    torch.testing.assert_close(background_fill(d2, valid2), _background_fill_torch(d2, valid2))
    # surface points on a sparse lattice (a close-up of a far keyframe): rings wider than half the image
    lattice = torch.zeros((1, 1, 64, 64), dtype=torch.bool)
    lattice[..., ::5, ::5] = True
    torch.testing.assert_close(
        background_fill(d2[:1, :, :64, :64], lattice), _background_fill_torch(d2[:1, :, :64, :64], lattice)
    )


def test_the_fill_unet_sums_two_convolutions_where_it_would_concatenate() -> None:
    """Each up stage's convolution of [upsampled, skip] runs as two convolutions summed (no concatenated copy):
    the same answer as the concatenation, in training (gradients) and inference."""
    from pose2rgbd.methods.hybrid.network import FillUNet

    torch.manual_seed(0)
    u = FillUNet(10, 4, 2)
    with torch.no_grad():
        u.out.weight.normal_(0.0, 0.1)

    def with_concatenation(x: torch.Tensor) -> torch.Tensor:
        skips = [u.stem(x)]
        for stage in u.down:
            skips.append(stage(skips[-1]))
        y = skips.pop()
        for stage in u.up:
            s = skips.pop()
            y = stage(torch.cat([torch.nn.functional.interpolate(y, size=s.shape[-2:], mode="bilinear"), s], dim=1))
        return u.out(y)

    x = torch.randn(2, 10, 32, 40, requires_grad=True)
    a, b = u(x), with_concatenation(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    ga = torch.autograd.grad(a.square().sum(), x)[0]
    gb = torch.autograd.grad(b.square().sum(), x)[0]
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # serving: split copies of the weights, made once, remade when a weight changes
        torch.testing.assert_close(u(x), with_concatenation(x), rtol=1e-5, atol=1e-6)
        for stage in u.up:
            stage[0].weight.mul_(1.5)
        torch.testing.assert_close(u(x), with_concatenation(x), rtol=1e-5, atol=1e-6)


def test_the_fill_unet_leaves_out_leading_channels_known_to_be_zero() -> None:
    """``absent``: the first convolution runs on the channels after the zero ones (a model without a decoder),
    the same answer and the same gradients as the full input with zeros there; in serving the weight's copy is
    remade when the weight changes."""
    from pose2rgbd.methods.hybrid.network import DECODER_CHANNELS, FILL_INPUTS, FillUNet

    torch.manual_seed(0)
    u = FillUNet(FILL_INPUTS, 4, 2)
    with torch.no_grad():
        u.out.weight.normal_(0.0, 0.1)
    live = torch.randn(2, FILL_INPUTS - DECODER_CHANNELS, 24, 32)
    full = torch.cat([torch.zeros(2, DECODER_CHANNELS, 24, 32), live], dim=1)
    a, b = u(live, absent=DECODER_CHANNELS), u(full)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    stem = u.stem[0][0]
    ga = torch.autograd.grad(u(live, absent=DECODER_CHANNELS).square().sum(), stem.weight)[0]
    gb = torch.autograd.grad(u(full).square().sum(), stem.weight)[0]
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)
    assert float(gb.abs().sum()) > 0.0
    with torch.no_grad():
        torch.testing.assert_close(u(live, absent=DECODER_CHANNELS), u(full), rtol=1e-5, atol=1e-6)
        stem.weight[:, DECODER_CHANNELS:].mul_(-2.0)
        torch.testing.assert_close(u(live, absent=DECODER_CHANNELS), u(full), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("space_to_depth", [1, 2])
def test_training_on_a_cpu_runs_the_fill_in_channels_last_with_float64s_gradients(
    space_to_depth: int,
) -> None:
    """With gradients on a CPU the fill's convolutions see channels-last inputs (oneDNN's faster layout for training);
    without them the eager forward keeps the input's layout. The answer and the weights' gradients are those of the
    same network in float64, to float32's rounding."""
    from pose2rgbd.methods.hybrid.network import DECODER_CHANNELS, FILL_INPUTS, FillUNet

    torch.manual_seed(1)
    u = FillUNet(FILL_INPUTS, 4, 2, space_to_depth)
    with torch.no_grad():
        u.out.weight.normal_(0.0, 0.1)
    x = torch.randn(2, FILL_INPUTS - DECODER_CHANNELS, 32, 32)
    seen: list[bool] = []
    hook = u.stem[1][0].register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    y = u.forward_eager(x, DECODER_CHANNELS)
    grads = torch.autograd.grad(y.square().sum(), list(u.parameters()))
    with torch.no_grad():
        u.forward_eager(x, DECODER_CHANNELS)
    hook.remove()
    assert seen == [True, False]
    ref = FillUNet(FILL_INPUTS, 4, 2, space_to_depth).double()
    ref.load_state_dict(u.state_dict())
    y64 = ref.forward_eager(x.double(), DECODER_CHANNELS)
    grads64 = torch.autograd.grad(y64.square().sum(), list(ref.parameters()))
    torch.testing.assert_close(y.double(), y64, rtol=1e-4, atol=1e-5)
    for g, g64 in zip(grads, grads64, strict=True):
        assert float(g64.abs().sum()) > 0.0
        torch.testing.assert_close(g.double(), g64, rtol=1e-3, atol=1e-4)


def test_a_fill_at_half_resolution_answers_every_pixel_from_its_block() -> None:
    """``space_to_depth`` 2: the U-Net runs on the 2x2 blocks (no convolution at full resolution) and answers at
    full resolution. The zero start answers zero; an input changed in one pixel changes the answer around it only
    (a 3x3 convolution at half resolution per level reaches a block's neighbours, not the far side); the leading
    channels known to be zero are still left out with the same answer and gradients; sides that are not a multiple
    of the block are refused by name."""
    from pose2rgbd.methods.hybrid.network import DECODER_CHANNELS, FILL_INPUTS, FillUNet

    torch.manual_seed(0)
    u = FillUNet(FILL_INPUTS, 8, 1, 2)
    assert next(m.in_channels for m in u.modules() if isinstance(m, torch.nn.Conv2d)) == 4 * FILL_INPUTS
    x = torch.randn(2, FILL_INPUTS, 64, 96)
    with torch.no_grad():
        assert u(x).shape == (2, 4, 64, 96) and float(u(x).abs().max()) == 0.0  # the zero start: the warp's answer
        u.out.weight.normal_(0.0, 0.1)
        u.out.bias.normal_(0.0, 0.1)
        a = u(x)
        y = x.clone()
        y[:, :, 30, 40] += 5.0
        diff = (u(y) - a).abs().amax(dim=(0, 1))
    assert float(diff[30, 40]) > 0.0 and float(diff[31, 41]) > 0.0  # the pixel and its block's other pixels
    far = torch.ones_like(diff, dtype=torch.bool)
    far[30 - 24 : 30 + 25, 40 - 24 : 40 + 25] = False  # 5 convolutions in blocks, 2 in blocks of blocks, 1 upsampling
    assert float(diff[far].max()) == 0.0 and float(diff[~far].min()) == 0.0  # local, and not everywhere near
    live = x[:, DECODER_CHANNELS:].clone()
    full = torch.cat([torch.zeros_like(x[:, :DECODER_CHANNELS]), live], dim=1)
    torch.testing.assert_close(u(live, absent=DECODER_CHANNELS), u(full), rtol=1e-5, atol=1e-6)
    stem = u.stem[0][0]
    ga = torch.autograd.grad(u(live, absent=DECODER_CHANNELS).square().sum(), stem.weight)[0]
    gb = torch.autograd.grad(u(full).square().sum(), stem.weight)[0]
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="multiples of 2, got 31x48"):
        u(torch.randn(1, FILL_INPUTS, 31, 48))
    from pose2rgbd.methods.hybrid import fill_serving

    if not fill_serving.fused_available(torch.bfloat16):
        return  # no fused bfloat16 convolutions here (NO_FUSED_BF16): the eager forward above is all it serves
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # serving, once prepared, too
        u(live, absent=DECODER_CHANNELS)
        with pytest.raises(ValueError, match="multiples of 2, got 32x47"):
            u(torch.randn(1, FILL_INPUTS - DECODER_CHANNELS, 32, 47), absent=DECODER_CHANNELS)
        assert u.__dict__["_fused_serving"].prepared is not None  # the input's error: the fused path serves on


@pytest.mark.parametrize("blocks", [2, 4])
def test_the_blocks_first_convolution_is_one_strided_convolution_of_the_full_image(blocks: int) -> None:
    """Serving reads the blocks straight from the full-resolution input: the stem's 3x3 convolution over the
    blocks as channels is one (3s x 3s, stride s, padding s) convolution (float64: the same sums in another order)."""
    from pose2rgbd.methods.hybrid.fill_serving import blocks_kernel

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8 * blocks, 12 * blocks, generator=g, dtype=torch.float64)
    w = torch.randn(7, 5 * blocks**2, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(7, generator=g, dtype=torch.float64)
    want = torch.nn.functional.conv2d(torch.nn.functional.pixel_unshuffle(x, blocks), w, b, padding=1)
    k = blocks_kernel(w, blocks)
    assert k.shape == (7, 5, 3 * blocks, 3 * blocks)
    got = torch.nn.functional.conv2d(x, k, b, stride=blocks, padding=blocks)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_upsampling_and_a_convolution_are_one_convolution_at_half_resolution() -> None:
    """The composite kernel (float64: the same sums in another order): the 3x3 convolution of the 2x bilinear
    upsampling is one 3x3 convolution of the input padded by replication, its phases rearranged, away from the
    edges; the rearranging is a pixel shuffle with the phases leading."""
    from pose2rgbd.methods.hybrid.fill_serving import phases_to_image, upsample_conv_kernel

    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 5, 7, 9, generator=g, dtype=torch.float64)
    w = torch.randn(3, 5, 3, 3, generator=g, dtype=torch.float64)
    up = torch.nn.functional.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
    want = torch.nn.functional.conv2d(up, w, padding=1)
    padded = torch.nn.functional.pad(y, (1, 1, 1, 1), mode="replicate")
    got = phases_to_image(torch.nn.functional.conv2d(padded, upsample_conv_kernel(w)))
    torch.testing.assert_close(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], rtol=1e-12, atol=1e-12)
    assert float((got - want).abs().max()) > 0.1  # the outer ring differs: what the serving path mends
    z = torch.randn(2, 12, 5, 6, generator=g, dtype=torch.float64)  # 3 outputs, phases leading
    shuffled = torch.nn.functional.pixel_shuffle(z.view(2, 4, 3, 5, 6).transpose(1, 2).reshape(2, 12, 5, 6), 2)
    assert torch.equal(phases_to_image(z), shuffled)
    assert phases_to_image(z.contiguous(memory_format=torch.channels_last)).is_contiguous(
        memory_format=torch.channels_last
    )


@pytest.mark.parametrize(("h", "w", "batch"), [(8, 8, 1), (5, 7, 2), (2, 3, 1), (1, 4, 1)])
def test_the_fused_up_stage_answers_as_upsampling_then_convolving_to_the_edges(h: int, w: int, batch: int) -> None:
    """The serving path's up stage with the composite kernel, edges mended, in float32 through the fused op: the
    eager upsampling and convolution's answer to the last pixel, odd sides and a batch included (1 x 4: too small
    for the composite, upsampled on its own)."""
    from pose2rgbd.methods.hybrid import fill_serving as fs

    op = fs._op()
    if op is None:
        pytest.skip("this torch has no oneDNN fused convolution")
    g = torch.Generator().manual_seed(1)
    y = torch.randn(batch, 16, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    wy, b = torch.randn(8, 16, 3, 3, generator=g) / 4, torch.randn(8, generator=g)
    want = torch.nn.functional.conv2d(
        torch.nn.functional.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False), wy, b, padding=1
    )
    k = fs.upsample_conv_kernel(wy).contiguous(memory_format=torch.channels_last)
    geometry = fs._Geometry([1, 1], [1, 1], [1, 1], 1)
    stage = fs._UpStage(wy.contiguous(memory_format=torch.channels_last), None, b, geometry, k, b.repeat(4))
    got = fs._upsample_conv(op, y, want.shape[-2:], stage)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_the_composite_up_stage_is_prepared_only_for_a_stage_of_few_channels() -> None:
    """hybrid-fast's fill (8 channels, 3 levels): its last up stage (8 outputs) takes the composite kernel, the
    wider ones upsample on their own (there the composite was no faster); the 16-channel fill takes it nowhere."""
    from pose2rgbd.methods.hybrid import fill_serving as fs
    from pose2rgbd.methods.hybrid.network import DECODER_CHANNELS, FILL_INPUTS, FillUNet

    fast = fs._Prepared(FillUNet(FILL_INPUTS, 8, 3, 1), torch.bfloat16, DECODER_CHANNELS, ())
    assert [st.k is not None for st in fast.up] == [False, False, True]
    assert fast.up[-1].k is not None and fast.up[-1].k.shape == (32, 16, 3, 3)
    wide = fs._Prepared(FillUNet(FILL_INPUTS, 16, 2, 1), torch.bfloat16, DECODER_CHANNELS, ())
    assert [st.k is not None for st in wide.up] == [False, False]


NO_FUSED_BF16 = (
    "no fused bfloat16 convolutions here: this torch has no oneDNN fused op, or this CPU's oneDNN has no bfloat16 "
    "convolutions (they need avx512bw, avx512vl and avx512dq, or avx_ne_convert)"
)


def test_a_cpu_without_onednn_bfloat16_serves_the_fill_eager_without_trying_the_fused_op(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where oneDNN cannot run bfloat16 convolutions (a CPU with AVX2 alone: the op raises) the fill in bf16 autocast
    serves the eager forward without calling the op, checking it or logging; float32 stays the fused path's."""
    from pose2rgbd.methods.hybrid import fill_serving
    from pose2rgbd.methods.hybrid.network import DECODER_CHANNELS, FILL_INPUTS, FillUNet

    class Untouchable:
        def __call__(self, *args: object) -> torch.Tensor:
            raise AssertionError("the fused op was called on a CPU that cannot run it")

        def binary(self, *args: object) -> torch.Tensor:
            raise AssertionError("the fused op was called on a CPU that cannot run it")

    monkeypatch.setattr(fill_serving, "_op", Untouchable)
    monkeypatch.setattr(fill_serving, "_cpu_runs", lambda dtype: dtype != torch.bfloat16)
    assert not fill_serving.fused_available(torch.bfloat16)
    assert fill_serving.fused_available(torch.float32)  # oneDNN runs float32 convolutions on any x86 CPU
    torch.manual_seed(2)
    u = FillUNet(FILL_INPUTS, 8, 2).eval()
    with torch.no_grad():
        u.out.weight.normal_(0.0, 0.1)
    x = torch.randn(1, FILL_INPUTS - DECODER_CHANNELS, 24, 40)
    logs = caplog.at_level("INFO", logger="pose2rgbd.methods.hybrid.fill_serving")
    with logs, torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = u(x, absent=DECODER_CHANNELS).float()
        want = u.forward_eager(x, absent=DECODER_CHANNELS).float()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert "_fused_serving" not in u.__dict__  # never prepared nor refused: not tried
    assert caplog.text == ""
    monkeypatch.setattr(fill_serving, "_cpu_runs", lambda dtype: True)
    assert fill_serving.fused_available(torch.bfloat16)  # the CPU check is what turned it off


@pytest.mark.parametrize(
    ("channels", "levels", "blocks"),
    [(8, 3, 1), (16, 2, 1), (16, 2, 2), (8, 1, 4)],  # hybrid-fast, hybrid, hybrid-subpixel; 1/4 resolution
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_each_preset_fill_serves_fused_within_rounding_of_the_eager_forward(
    channels: int, levels: int, blocks: int, dtype: torch.dtype
) -> None:
    """bfloat16 (where the CPU runs it) within its 8 bits; float32, on every CPU, within float32's rounding."""
    from pose2rgbd.methods.hybrid import fill_serving
    from pose2rgbd.methods.hybrid.network import DECODER_CHANNELS, FILL_INPUTS, FillUNet

    if not fill_serving.fused_available(dtype):
        pytest.skip(NO_FUSED_BF16)
    torch.manual_seed(1)
    u = FillUNet(FILL_INPUTS, channels, levels, blocks).eval()
    with torch.no_grad():
        u.out.weight.normal_(0.0, 0.1)
    x = torch.randn(1, FILL_INPUTS - DECODER_CHANNELS, 40, 56)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        got, want = u(x, absent=DECODER_CHANNELS).float(), u.forward_eager(x, absent=DECODER_CHANNELS).float()
    prepared = u.__dict__["_fused_serving"].prepared
    assert prepared is not None and prepared.dtype == dtype  # the fused path served, in that dtype
    share = 0.02 if dtype == torch.bfloat16 else 1e-4  # float32: the path's own check (another CPU, other kernels)
    assert float((got - want).abs().max()) <= share * float(want.abs().max())


def test_the_fill_serves_bfloat16_through_fused_convolutions_checked_against_the_eager_forward(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On a CPU in bf16 without gradients the fill runs its convolutions fused (fill_serving), once checked against
    the eager forward and prepared again when the weights change; with gradients, in float32, or where the fused op
    disagrees (a stand-in that answers wrong), the eager forward serves, and the refusal is logged."""
    from pose2rgbd.methods.hybrid import fill_serving
    from pose2rgbd.methods.hybrid.network import DECODER_CHANNELS, FILL_INPUTS, FillUNet

    if not fill_serving.fused_available(torch.bfloat16):
        pytest.skip(NO_FUSED_BF16)
    torch.manual_seed(0)
    u = FillUNet(FILL_INPUTS, 8, 2).eval()
    with torch.no_grad():
        u.out.weight.normal_(0.0, 0.1)
    x = torch.randn(2, FILL_INPUTS - DECODER_CHANNELS, 32, 48)

    def served() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return u(x, absent=DECODER_CHANNELS).float()

    def eager() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return u.forward_eager(x, absent=DECODER_CHANNELS).float()

    a, want = served(), eager()
    assert u.__dict__["_fused_serving"].prepared is not None  # the fused path served
    assert a.shape == want.shape == (2, 4, 32, 48)
    assert float((a - want).abs().max()) <= 0.02 * float(want.abs().max())
    assert not torch.equal(a, want)  # not the eager forward's tensor handed back: bf16 sums in another order
    with torch.no_grad():
        u.up[0][0].weight.mul_(-1.0)
    again = served()
    prepared = u.__dict__["_fused_serving"].prepared  # the fused path served again, for the new weights
    assert prepared is not None and prepared.key == fill_serving._weights_key(u, torch.bfloat16, DECODER_CHANNELS)
    assert float((again - eager()).abs().max()) <= 0.02 * float(eager().abs().max())
    assert float((again - a).abs().max()) > 0.05 * float(a.abs().max())  # the new weights, not the old layout

    v = FillUNet(FILL_INPUTS, 8, 2).eval()
    with torch.no_grad():
        v.out.weight.normal_(0.0, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # gradients on: eager
        assert fill_serving.fused_forward(v, x, DECODER_CHANNELS) is None

    real = fill_serving._op()

    class Off:  # the fused op answering 1 too high everywhere
        def __call__(self, *args: object) -> torch.Tensor:
            return real(*args) + 1.0  # type: ignore[no-any-return]

        def binary(self, *args: object) -> torch.Tensor:
            return real.binary(*args) + 1.0  # type: ignore[no-any-return]

    mp = pytest.MonkeyPatch()
    mp.setattr(fill_serving, "_op", Off)
    try:
        logs = caplog.at_level("WARNING", logger="pose2rgbd.methods.hybrid.fill_serving")
        with logs, torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            got = v(x, absent=DECODER_CHANNELS).float()
            want_v = v.forward_eager(x, absent=DECODER_CHANNELS).float()
    finally:
        mp.undo()
    torch.testing.assert_close(got, want_v, rtol=0, atol=0)
    assert "serving the eager forward" in caplog.text
    assert v.__dict__["_fused_serving"].prepared is None

    class Fails:  # the checked op failing later (an input unlike the first): that render is served eager
        def __call__(self, *args: object) -> torch.Tensor:
            raise RuntimeError("no such kernel")

    caplog.clear()
    mp.setattr(fill_serving, "_op", Fails)
    try:
        logs = caplog.at_level("WARNING", logger="pose2rgbd.methods.hybrid.fill_serving")
        with logs, torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            got = u(x, absent=DECODER_CHANNELS).float()
    finally:
        mp.undo()
    torch.testing.assert_close(got, eager(), rtol=0, atol=0)
    assert "failed on a (2, 6, 32, 48) input" in caplog.text
    assert u.__dict__["_fused_serving"].prepared is None


def test_the_fill_serves_float32_through_fused_convolutions_checked_against_the_eager_forward(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In float32 without gradients (a CPU with AVX2 alone serves float32) the fill of a space-to-depth preset runs
    its convolutions fused, the blocks read by one strided convolution, within float32 rounding of the eager forward;
    with gradients it is eager; a fused op answering 1e-3 off (far inside bfloat16's tolerance) is refused in
    float32 and the refusal logged."""
    from pose2rgbd.methods.hybrid import fill_serving
    from pose2rgbd.methods.hybrid.network import DECODER_CHANNELS, FILL_INPUTS, FillUNet

    if fill_serving._op() is None:
        pytest.skip("this torch has no oneDNN fused convolution")
    torch.manual_seed(3)
    u = FillUNet(FILL_INPUTS, 8, 2, 2).eval()
    with torch.no_grad():
        u.out.weight.normal_(0.0, 0.1)
    x = torch.randn(2, FILL_INPUTS - DECODER_CHANNELS, 32, 48)
    with torch.inference_mode():
        got, want = u(x, absent=DECODER_CHANNELS), u.forward_eager(x, absent=DECODER_CHANNELS)
    prepared = u.__dict__["_fused_serving"].prepared
    assert prepared is not None and prepared.key == fill_serving._weights_key(u, torch.float32, DECODER_CHANNELS)
    assert got.dtype == torch.float32 and got.shape == want.shape == (2, 4, 32, 48)
    assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())
    assert fill_serving.fused_forward(u, x, DECODER_CHANNELS) is None  # gradients on: eager

    real = fill_serving._op()
    assert real is not None

    class Off:  # 1e-3 too high everywhere: bfloat16's tolerance would let it pass, float32's must not
        def __call__(self, *args: object) -> torch.Tensor:
            return real(*args) + 1e-3

        def binary(self, *args: object) -> torch.Tensor:
            return real.binary(*args) + 1e-3

    v = FillUNet(FILL_INPUTS, 8, 2, 2).eval()
    with torch.no_grad():
        v.out.weight.normal_(0.0, 0.1)
    mp = pytest.MonkeyPatch()
    mp.setattr(fill_serving, "_op", Off)
    try:
        logs = caplog.at_level("WARNING", logger="pose2rgbd.methods.hybrid.fill_serving")
        with logs, torch.inference_mode():
            got_v, want_v = v(x, absent=DECODER_CHANNELS), v.forward_eager(x, absent=DECODER_CHANNELS)
    finally:
        mp.undo()
    torch.testing.assert_close(got_v, want_v, rtol=0, atol=0)
    assert "serving the eager forward" in caplog.text
    assert v.__dict__["_fused_serving"].prepared is None


def test_resuming_a_run_from_before_the_colour_rules_says_which_settings_to_give(tmp_path: Path) -> None:
    from pose2rgbd.models.checkpoint import LoadedCheckpoint
    from pose2rgbd.training.run_folder import check_resume

    fam = get_family("hybrid")
    old = fam.make_config("hybrid", size=SIZE, hole_rgb="nearest", decoder=True)  # as migrated
    ck = LoadedCheckpoint(path=None, model=None, family=fam, model_config=old, dataset_fingerprint="f", camera=None)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match=r"--set model\.decoder=True --set model\.hole_rgb=nearest"):
        check_resume(tmp_path / "last.pt", ck, fam, fam.make_config("hybrid", size=SIZE), None, "f")  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="trained on dataset"):  # with them given, the model check passes
        check_resume(tmp_path / "last.pt", ck, fam, old, None, "other")  # type: ignore[arg-type]


def test_resuming_a_run_of_another_preset_says_which_preset_and_settings_to_give(tmp_path: Path) -> None:
    """A run of `hybrid` (the default before `hybrid-fast`) resumed with the default preset: the hint is `--preset
    hybrid` and the settings that differ beyond it, and with those given the model check passes."""
    from pose2rgbd.models.checkpoint import LoadedCheckpoint
    from pose2rgbd.training.run_folder import check_resume

    fam = get_family("hybrid")
    old = fam.make_config("hybrid", size=SIZE, neighbours=3)
    ck = LoadedCheckpoint(path=None, model=None, family=fam, model_config=old, dataset_fingerprint="f", camera=None)  # type: ignore[arg-type]
    requested = fam.make_config(size=SIZE)  # the default preset
    assert requested.preset == "hybrid-fast"
    with pytest.raises(
        CheckpointError, match=r"the checkpoint's \(--preset hybrid --set model\.neighbours=3\); for another model"
    ):
        check_resume(tmp_path / "last.pt", ck, fam, requested, None, "f")  # type: ignore[arg-type]
    given = fam.make_config("hybrid", size=SIZE, neighbours=3)  # what the hint says
    with pytest.raises(CheckpointError, match="trained on dataset"):  # the model check passes
        check_resume(tmp_path / "last.pt", ck, fam, given, None, "other")  # type: ignore[arg-type]
