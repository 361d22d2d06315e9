"""The hybrid with ``model.geometry fused``: the keyframes' fused surface as the fill network's depth and colour
input (pose2rgbd.methods.hybrid.fused_input), its training surfaces without the query's own time block, a short
CLI training run and the checkpoint round trip, and the option's checks."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fused_scene import ring_keyframes

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.methods.hybrid import HybridConfig, build_model
from pose2rgbd.models import DepthNormalizer, PoseNormalizer, load_checkpoint

pytest.importorskip("open3d")

SIZE = 64
CAM = PinholeCamera.from_fov(SIZE, SIZE, 70.0)
HOLE = (slice(44, 58), slice(12, 52))  # a patch of keyframe 0 without depth, on the floor (missing returns)


def _ring_model(n: int = 12, *, red_until: int = 0, depth: np.ndarray | None = None, **cfg):
    """A fused-geometry hybrid (untrained) over a ring of keyframes of the known scene (test/fused_scene.py):
    keyframe 0 with a hole in its depth; ``red_until`` first keyframes painted red (their depth kept)."""
    kf, _ = ring_keyframes(n, CAM)
    rgb = np.stack([kf.rgb(i) for i in range(n)])
    truth = np.stack([kf.depth(i) for i in range(n)])
    d = truth.copy() if depth is None else depth
    d[0][HOLE] = np.nan
    rgb[:red_until] = (255, 0, 0)
    model = build_model(
        HybridConfig(size=SIZE, dense_channels=32, trunk_channels=[16] * 6, geometry="fused", **cfg),
        pose_normalizer=PoseNormalizer.fit(kf.T_world_cam, "6dof-quat"),
    )
    model.set_depth_normalizer(DepthNormalizer(0.0, 10.0))
    model.set_keyframes(rgb, d, kf.T_world_cam, CAM, source_id=np.zeros(n), seq_pos=np.arange(n),
                        index=np.arange(n), rot_weight_m=3.0)  # fmt: skip
    return model.eval(), kf.T_world_cam, truth


def test_fused_input_at_a_keyframe_pose_is_its_depth_within_a_voxel_and_fills_its_holes() -> None:
    model, T, truth = _ring_model()
    assert model.fused_input is not None
    geo = model.fused_input.build(model)
    voxel = geo.voxel_size
    assert 0.01 < voxel < 0.1
    x, _ = model.poses_to_input(T[:1])
    with torch.no_grad():
        out = model(x)
    depth = model.outputs_to_arrays(out)["depth"][0]
    has = np.isfinite(truth[0])
    has[HOLE] = False
    err = np.abs(depth - truth[0])
    assert np.mean(err[has] <= voxel) >= 0.97  # the keyframe's own depth, where it has one
    # its hole: the surface the other keyframes saw, not a neighbour's warped depth nor a hole rule
    assert np.mean(err[HOLE] <= voxel) >= 0.97
    assert bool(out["confidence"][0, 0][HOLE].all())


def test_training_queries_see_a_surface_and_colours_without_their_own_time_block() -> None:
    model, T, _ = _ring_model(red_until=4, fused_folds=3)  # keyframes 0-3 (one of 3 time blocks) are red
    assert model.fused_input is not None
    model.fused_input.build(model)

    def red_share(exclude: tuple[np.ndarray, ...] | None) -> float:
        (view,) = model.fused_input.views(model, T[:1], exclude)  # at keyframe 0's pose
        rgb = view.rgb[view.valid].astype(int)
        assert len(rgb) > 0.5 * SIZE * SIZE
        return float(np.mean((rgb[:, 0] > 200) & (rgb[:, 1] < 30)))

    assert red_share(None) > 0.9  # serving: every keyframe, its own pose's colours first
    # training (source 0, position 0): the block of keyframes 0-3 is left out, its red never shows
    assert red_share((np.array([0]), np.array([0]), np.array([0]))) == 0.0
    # and the rest of the forward trains through it
    model.train()
    x, _ = model.poses_to_input(T[[0, 6]])
    batch = {"pose": x, "T_world_cam": torch.from_numpy(T[[0, 6]]), "source_id": torch.tensor([0, 0]),
             "seq_pos": torch.tensor([0, 6])}  # fmt: skip
    out = model.get_outputs(batch)
    assert out["rgb"].shape == (2, 3, SIZE, SIZE) and out["depth"].requires_grad


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-step run through the CLI with model.geometry fused on the toy dataset."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.experiments.toy import make_toy_dataset

    root = tmp_path_factory.mktemp("hybfused")
    toy = make_toy_dataset(root / "ds", n_survey=30, n_route=8, size=SIZE)
    out = root / "run"
    rc = main(
        [
            "train", "--method", "hybrid", "--preset", "hybrid-fast", "--dataset", str(toy), "--out", str(out),
            "--cache-root", str(root / "cache"), "--set", "model.size=64", "--set", "model.geometry=fused",
            "--set", "train.split=route", "--set", "train.max_steps=2", "--set", "train.batch_size=4",
            "--set", "train.device=cpu", "--set", "train.progress=false", "--set", "train.tensorboard=false",
            "--set", "train.recalibrate_bn=false",
        ]
    )  # fmt: skip
    assert rc == 0
    return out, toy


def test_fused_training_runs_and_the_checkpoint_round_trips(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from pose2rgbd.dataset import build_cache
    from pose2rgbd.inference import EngineConfig, RenderEngine
    from pose2rgbd.models import save_checkpoint

    run, toy = trained
    a = load_checkpoint(run / "last.pt")  # a fresh model, its fused surface resized to the saved one
    assert a.step == 2 and a.model_config.geometry == "fused"
    fi = a.model.fused_input
    assert fi is not None and fi.geometry is not None and fi.geometry.triangles.shape[0] > 100
    # stored with the run's keyframe map, as `map fuse` writes it; the checkpoint names it with its digest
    assert fi.source == run / "keyframes" and (run / "keyframes" / "fused" / "fused.json").is_file()
    raw = torch.load(run / "last.pt", weights_only=True)
    assert raw["extra"]["place_map"]["fused"] == fi.digest() and "fused" not in raw["extra"]
    save_checkpoint(tmp_path / "copy.pt", a.model, dataset_fingerprint=a.dataset_fingerprint, camera=a.camera)
    b = load_checkpoint(tmp_path / "copy.pt")
    assert b.model.fused_input is not None and b.model.fused_input.geometry is not None
    np.testing.assert_array_equal(b.model.fused_input.geometry.vertices, fi.geometry.vertices)
    cache = build_cache(toy, SIZE, cache_root=toy.parent / "cache", progress=False)
    T = cache.T_world_cam[[1, 7, 33]]
    cfg = EngineConfig(device="cpu", precision="fp32", fuse_bn=False, channels_last=False, warmup=0)
    ra, rb = RenderEngine(cfg, a).render(T), RenderEngine(cfg, b).render(T)
    np.testing.assert_array_equal(ra.rgb, rb.rgb)
    np.testing.assert_array_equal(ra.depth, rb.depth)
    # the serving engine as the render node builds it (a prepared copy of the model) serves it too
    cfg = EngineConfig(checkpoint=str(run / "last.pt"), device="cpu", precision="fp32")
    served = RenderEngine.from_config(cfg).render(T)
    assert np.abs(served.rgb.astype(int) - ra.rgb).max() <= 2
    # the answer is the fused surface's: a model of the same weights that warps answers otherwise
    warp = load_checkpoint(run / "last.pt")
    warp.model.fused_input = None
    rw = RenderEngine(cfg, warp).render(T)
    assert np.nanmax(np.abs(rw.depth - ra.depth)) > 0.01


def test_a_bundle_carries_the_surface_and_renders_as_the_map_backed_checkpoint(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """`export --bundle`: the keyframes and the fused surface inside one file, the same renders, no map needed."""
    import shutil

    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset import build_cache
    from pose2rgbd.inference import EngineConfig, RenderEngine

    run, toy = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["export", "--checkpoint", str(copy / "last.pt"), "--bundle", "--out", str(tmp_path / "b.pt")]) == 0
    raw = torch.load(tmp_path / "b.pt", weights_only=True)
    assert {"keyframes", "fused"} <= set(raw["extra"]) and "place_map" not in raw["extra"]
    cache = build_cache(toy, SIZE, cache_root=toy.parent / "cache", progress=False)
    T = cache.T_world_cam[[1, 7, 33]]
    cfg = EngineConfig(device="cpu", precision="fp32", fuse_bn=False, channels_last=False, warmup=0)
    ref = RenderEngine(cfg, load_checkpoint(copy / "last.pt")).render(T)
    shutil.rmtree(copy)  # the bundle needs neither the map nor its fused geometry
    got = RenderEngine(cfg, load_checkpoint(tmp_path / "b.pt")).render(T)
    np.testing.assert_array_equal(got.rgb, ref.rgb)
    np.testing.assert_array_equal(got.depth, ref.depth)


def test_a_map_gives_its_own_surface_with_exposure_by_its_own_keyframes(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """Served with another map of the dataset (engine.map, numbered otherwise: every other training keyframe), the
    model renders with that map's fused geometry, whose exposure gains index the map's own keyframes; a map not
    fused yet is refused naming `map fuse`; a checkpoint whose map was fused again since is refused."""
    import shutil

    from pose2rgbd.dataset import Dataset, build_cache
    from pose2rgbd.errors import CheckpointError
    from pose2rgbd.methods.hybrid.recipe import run_keyframe_map
    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.placemap.fused import FusionConfig, fuse_map

    run, toy = trained
    ds = Dataset(toy)
    cache = build_cache(toy, SIZE, cache_root=toy.parent / "cache", progress=False)
    rows = np.asarray(PlaceMap(run / "keyframes").frames)[::2]
    other = run_keyframe_map(ds, cache, rows, tmp_path / "other", 10.0, False).path
    with pytest.raises(CheckpointError, match=r"no fused geometry.*pose2rgbd map fuse --map"):
        load_checkpoint(run / "last.pt", place_map=other)
    fuse_map(other, progress=False)
    loaded = load_checkpoint(run / "last.pt", place_map=other)
    model, fi = loaded.model, loaded.model.fused_input
    assert fi is not None and fi.geometry is not None and fi.geometry.exposure is not None
    assert fi.source == other and len(fi.geometry.exposure) == len(rows) == model.n_keyframes
    x, _ = model.poses_to_input(cache.T_world_cam[[2, 9]])
    with torch.no_grad():
        assert torch.isfinite(model(x)["rgb"]).all()
    assert fi._renderer(model).exposure is not None  # the gains apply: fitted for these keyframes
    # the run's own map fused again with other settings: the checkpoint's surface is no longer there
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    fuse_map(copy / "keyframes", FusionConfig(voxel_size="0.5"), overwrite=True, progress=False)
    with pytest.raises(CheckpointError, match="fused again since"):
        load_checkpoint(copy / "last.pt")


def test_training_with_a_map_not_fused_is_refused_naming_map_fuse(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from pose2rgbd.methods.hybrid.recipe import training_geometry
    from pose2rgbd.placemap import PlaceMap

    run, _ = trained
    shutil.copytree(run / "keyframes", tmp_path / "m", ignore=shutil.ignore_patterns("fused"))
    pm = PlaceMap(tmp_path / "m")
    model = load_checkpoint(run / "last.pt", place_map=run / "keyframes").model
    with pytest.raises(ConfigError, match=r"has none: make it with `pose2rgbd map fuse --map"):
        training_geometry(model, pm, own_map=False, progress=False)
    assert not (tmp_path / "m" / "fused").exists()  # a map given is not written into


def test_the_option_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"model\.geometry 'mesh'"):
        HybridConfig(geometry="mesh")
    with pytest.raises(ConfigError, match="fused_folds"):
        HybridConfig(geometry="fused", fused_folds=-1)
    with pytest.raises(ConfigError, match="fused_neighbours"):
        HybridConfig(geometry="fused", fused_neighbours=0)
    assert build_model(HybridConfig()).fused_input is None  # warp, the default: no surface in its checkpoint
    # keyframes without depth: nothing to fuse
    model, _, _ = _ring_model(4, depth=np.full((4, SIZE, SIZE), np.nan, np.float32))
    with pytest.raises(ConfigError, match=r"model\.geometry fused: no keyframe has finite depth"):
        model.fused_input.build(model)
    # Open3D missing: how to get it, or the warp
    model, _, _ = _ring_model(4)
    monkeypatch.setitem(sys.modules, "open3d", None)
    with pytest.raises(ConfigError, match=r"needs Open3D.*pose2rgbd\[fusion\].*model.geometry warp"):
        model.fused_input.build(model)
    monkeypatch.undo()
    # an untrained model (no surface) refuses to render instead of answering the warp silently
    x, _ = model.poses_to_input(np.eye(4)[None])
    with pytest.raises(ConfigError, match="fused geometry is empty"):
        model(x)


def test_a_dataset_without_depth_is_refused_with_geometry_fused() -> None:
    from pose2rgbd.methods.hybrid.recipe import prepare
    from pose2rgbd.training import TrainConfig
    from pose2rgbd.training.train import RecipeContext

    no_depth = SimpleNamespace(has_depth=False, path="ds", manifest=SimpleNamespace(depth_kind="none"))
    ctx = RecipeContext(no_depth, HybridConfig(geometry="fused"), TrainConfig())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="this dataset has none") as e:
        prepare(ctx)
    assert "--depth selfsup+mvs" in str(e.value)  # how to give it depth, not only the RGB-only way out
