"""Localization metrics (hand-computed errors and statistics), the retrieval baseline, grayscale images, the
report table and the figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose2rgbd.errors import ConfigError
from pose2rgbd.evaluation.localization import (
    LocalizationReport,
    RetrievalLocalizer,
    error_cdf_figure,
    evaluate_localizers,
    pose_errors,
    real_vs_generated_grid,
    summarize,
    summary_markdown,
    to_grayscale,
    trajectory_figure,
)
from pose2rgbd.inference import Localizer
from pose2rgbd.testing.ground_plane import look_down_pose, make_ground_plane_checkpoint, render_ground_plane


def test_pose_errors_by_hand() -> None:
    a = np.stack([np.eye(4), np.eye(4)])
    b = a.copy()
    b[0, :3, 3] = [3.0, 4.0, 0.0]  # 5 m away
    b[1, :3, :3] = Rotation.from_euler("z", 30, degrees=True).as_matrix()  # 30 degrees about z
    pos, rot = pose_errors(a, b)
    np.testing.assert_allclose(pos, [5.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(rot, [0.0, 30.0], atol=1e-9)
    with pytest.raises(ConfigError, match="2 estimates for 1 true poses"):
        pose_errors(a, b[:1])


def test_summary_statistics_and_table() -> None:
    s = summarize(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert s["median"] == 3.0 and s["mean"] == 22.0
    assert s["p90"] == pytest.approx(4.0 + 0.6 * 96.0)  # numpy's linear percentile
    assert all(np.isnan(v) for v in summarize(np.array([])).values())
    T = np.repeat(np.eye(4)[None], 4, axis=0)
    est = T.copy()
    est[:, 0, 3] = [0.0, 1.0, 2.0, 10.0]
    rep = LocalizationReport("m", est, T, seconds=0.4)
    row = rep.summary()
    assert row["frames"] == 4 and row["position_m"]["median"] == 1.5 and row["ms_per_frame"] == pytest.approx(100.0)
    md = summary_markdown([row])
    assert "| m | 4 | 1.50 | 0.00 | 3.25 |" in md and "median pos (m)" in md


def _scene(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    ck = make_ground_plane_checkpoint(24)
    rng = np.random.default_rng(seed)
    T = np.stack([look_down_pose(*rng.uniform(-40, 40, 2), rng.uniform(20, 35), rng.uniform(-3, 3)) for _ in range(n)])
    rgb = render_ground_plane(ck, T)["rgb"]
    assert rgb is not None
    return rgb, T


def test_retrieval_finds_training_images_and_nearby_views() -> None:
    imgs, T = _scene(60, 0)
    ret = RetrievalLocalizer(imgs, T, thumb=8)
    assert isinstance(ret, Localizer) and ret.input_hw == (24, 24)
    res = ret.localize(imgs[:10])  # a training image is its own best match
    np.testing.assert_allclose(res.T_world_cam, T[:10])
    assert np.all(res.confidence > 0.99)
    # query views near training views: retrieval answers with a near pose, far better than a random training pose
    q = T[:20].copy()
    q[:, :2, 3] += 0.5
    ck = make_ground_plane_checkpoint(24)
    q_img = render_ground_plane(ck, q)["rgb"]
    reports = evaluate_localizers({"retrieval": ret}, q_img, q)
    pos = reports["retrieval"].position_error_m
    rand_pos, _ = pose_errors(T[np.random.default_rng(1).permutation(60)[:20]], q)
    assert np.median(pos) < 0.25 * np.median(rand_pos)
    with pytest.raises(ConfigError, match="3 training images but 2 poses"):
        RetrievalLocalizer(imgs[:3], T[:2])


def test_grayscale_keeps_three_equal_channels() -> None:
    imgs, _ = _scene(3, 1)
    g = to_grayscale(imgs)
    assert g.shape == imgs.shape and g.dtype == np.uint8
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
    assert not np.array_equal(g, imgs)
    with pytest.raises(ConfigError, match="uint8"):
        to_grayscale(imgs.astype(np.float32))


def test_figures_are_written(tmp_path: Path) -> None:
    imgs, T = _scene(8, 2)
    est = T.copy()
    est[:, :2, 3] += np.random.default_rng(0).normal(size=(8, 2))
    reps = [LocalizationReport("a", est, T), LocalizationReport("b", T, T)]
    for p in (
        error_cdf_figure(reps, tmp_path / "cdf.png", title="t"),
        trajectory_figure(T, {"a": est}, tmp_path / "traj.png"),
        real_vs_generated_grid(imgs[:4], imgs[4:], tmp_path / "grid.png", labels=["0", "1", "2", "3"]),
    ):
        assert p.exists() and p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


# -- the experiments command with a toy image -> pose (+ pose -> image) kind ------------------------------------
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from pose2rgbd.models import ImageToPose, ModelBase, ModelFamily, PoseToImage  # noqa: E402
from pose2rgbd.models.registry import register_family, unregister_family  # noqa: E402


@dataclass
class ToyLocGanConfig:
    size: int = 16
    preset: str = "posegan"


class ToyLocGan(ImageToPose, PoseToImage, ModelBase):
    """Both ways, like PoseGAN: images (N, 3, S, S) -> pose; poses (N, 7) -> RGB."""

    kind = "toy-locgan"

    def __init__(self, config: ToyLocGanConfig) -> None:
        super().__init__()
        self.config = config
        self.init_pose_normalization("6dof-quat")
        s = config.size
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 4, 4), nn.ReLU(), nn.Flatten(), nn.Linear(8 * (s // 4) ** 2, 7))
        self.dec = nn.Linear(7, 3 * s * s)

    input_hw = property(lambda self: (self.config.size, self.config.size))
    image_hw = property(lambda self: (self.config.size, self.config.size))
    has_rgb = property(lambda self: True)
    has_depth = property(lambda self: False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim == 2:
            s = self.config.size
            return {"rgb": torch.tanh(self.dec(x)).view(-1, 3, s, s)}
        return {"pose": torch.tanh(self.enc(x))}

    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"pose": self(batch["rgb"])["pose"], "rgb": self(batch["pose"])["rgb"]}

    def get_loss_dict(self, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"pose_mse": ((outputs["pose"] - batch["pose"]) ** 2).mean(),
                "rgb_mse": ((outputs["rgb"] - batch["rgb"]) ** 2).mean()}  # fmt: skip


def toy_recipe(ctx: Any) -> Any:
    from pose2rgbd.dataset import build_cache
    from pose2rgbd.dataset.torch_dataset import PoseRGBDDataset
    from pose2rgbd.models import PoseNormalizer
    from pose2rgbd.training.train import TrainingSetup, split_for

    mc, tc = ctx.model_config, ctx.train_config
    cache = build_cache(ctx.dataset, mc.size, progress=False)
    split = split_for(cache, tc.split, tc.seed, tc.val_fraction)
    torch.manual_seed(tc.seed)
    model = ctx.model or ToyLocGan(mc)
    if ctx.model is None:
        model.set_pose_normalizer(PoseNormalizer.fit(cache.T_world_cam[split.train], "6dof-quat"))
    return TrainingSetup(model, PoseRGBDDataset(cache, split.train, model), None, split, cache.camera, "toy")


TOY_LOCGAN = ModelFamily(
    kind="toy-locgan", config_cls=ToyLocGanConfig, build=ToyLocGan,
    presets={"posegan": {"preset": "posegan"}, "configA": {"preset": "configA"}}, default_preset="posegan",
    data="image_to_pose", engine="localize", train=lambda: toy_recipe,
)  # fmt: skip


@pytest.fixture
def toy_locgan():
    register_family(TOY_LOCGAN)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield TOY_LOCGAN
    torch.set_num_threads(n)
    unregister_family(TOY_LOCGAN.kind)


def test_localization_experiments_command(toy_locgan: ModelFamily, tmp_path: Path, monkeypatch: Any) -> None:
    import json

    from pose2rgbd.cli.main import main
    from pose2rgbd.experiments.toy import make_toy_dataset

    ds = make_toy_dataset(tmp_path / "ds", n_survey=24, n_route=8, size=16)
    out = tmp_path / "exp"
    argv = ["experiments", "localization", "--out", str(out), "--no-progress", "--set", f"dataset={ds}",
            "--set", "kind=toy-locgan", "--set", "size=16", "--set", "steps=3", "--set", "minutes=0",
            "--presets", "posegan", "configA", "--refine-frames", "2", "--set", "refine.iterations=3",
            "--set", "refine.levels=1", "--set", "threads=1", "--set", "grid_frames=3"]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((out / "localization.json").read_text())
    runs = data["runs"]
    assert {(r["split"], r["preset"]) for r in runs} == {
        (s, p) for s in ("random", "route") for p in ("posegan", "configA", "retrieval")
    }
    for split in ("random", "route"):
        rs = [r for r in runs if r["split"] == split]
        assert len({r["test_frames"] for r in rs}) == 1  # every method on the same frames
        for r in rs:
            assert r["color"]["position_m"]["median"] >= 0 and "gray" in r
        trained = [r for r in rs if r["preset"] != "retrieval"]
        assert all(r["steps"] == 3 for r in trained)
        main_run = next(r for r in rs if r["preset"] == "posegan")
        ref = main_run["refine"]
        assert ref["frames"] == 2 and ref["after"]["position_m"]["median"] >= 0
        assert ref["residual_after"]["median"] <= ref["residual_before"]["median"] + 1e-9  # never worse
        for fig in ("cdf", "trajectory", "real_vs_generated"):
            assert (out / f"{fig}_{split}.png").exists(), fig
        # retrieval's training images are not the test frames, and the route split holds out source 1
        est = np.load(out / "runs" / split / "retrieval-s0" / "estimates.npz")
        assert len(est["test"]) == rs[0]["test_frames"]
    md = (out / "localization.md").read_text()
    assert "## Table 1 analog -- route split" in md and "## Table 2 analog -- grayscale" in md
    assert "PoseGAN-configA" in md and "image retrieval" in md and "Targets:" in md and "Refinement" in md
    assert "Command: `pose2rgbd" in md or "Command: `" in md
    # the toy world is too plain for a place map: the structure localizer says so, the other rows stand
    assert "Structure localizer (seed 0): not evaluated" in md

    # re-running reuses every finished run: no training at all
    def no_training(*a: Any, **k: Any) -> None:
        raise AssertionError("a finished run was trained again")

    import importlib

    monkeypatch.setattr(importlib.import_module("pose2rgbd.training.train"), "train", no_training)
    assert main(argv) == 0


def test_localization_experiments_refuse_a_kind_that_does_not_localize(tmp_path: Path) -> None:
    from pose2rgbd.experiments.localization import LocalizationExperimentsConfig, run_localization_experiments

    with pytest.raises(ConfigError, match="does not localize images"):
        run_localization_experiments(tmp_path, LocalizationExperimentsConfig(kind="ground-plane", presets=["default"]))
    with pytest.raises(ConfigError, match="splits"):
        LocalizationExperimentsConfig(splits=["diagonal"])


def test_frame_view_prepares_frames_as_the_model_does(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pose2rgbd.dataset import build_cache
    from pose2rgbd.experiments.localization import FrameView
    from pose2rgbd.experiments.toy import make_toy_dataset

    ds = make_toy_dataset(tmp_path / "ds", n_survey=6, n_route=3, size=24)

    def crop(imgs: np.ndarray) -> np.ndarray:
        return imgs[:, 2:18, 2:18]

    model = SimpleNamespace(input_hw=(16, 16), config=SimpleNamespace(load_size=20), prepare_images=crop)
    view = FrameView(model, ds)
    idx = np.array([5, 1, 3])
    got = view.images(idx)
    ref = np.asarray(build_cache(ds, 20, progress=False).rgb)[idx][:, 2:18, 2:18]
    assert got.shape == (3, 16, 16, 3) and np.array_equal(got, ref)  # order kept, prepared like the model
    plain = FrameView(SimpleNamespace(input_hw=(12, 12)), ds).images(idx)
    assert plain.shape == (3, 12, 12, 3)


def test_localization_experiments_with_the_posegan_kind(tmp_path: Path) -> None:
    """The real kind end to end at a toy budget: D localizes, G renders for refinement, frames cropped like
    PoseGAN's evaluation (load size 36 -> centre 32)."""
    import json

    from pose2rgbd.experiments.localization import LocalizationExperimentsConfig, run_localization_experiments
    from pose2rgbd.experiments.toy import make_toy_dataset
    from pose2rgbd.inference.refine import RefineConfig

    ds = make_toy_dataset(tmp_path / "ds", n_survey=16, n_route=6, size=40)
    cfg = LocalizationExperimentsConfig(
        dataset=str(ds), size=32, steps=2, minutes=0, presets=["posegan", "configA"], splits=["route"],
        model_set={"g_channels": 8, "d_channels": 8}, eval_max_frames=6, refine_frames=1,
        refine=RefineConfig(levels=1, iterations=2), threads=1, recalibrate_batches=1, grid_frames=2,
    )  # fmt: skip
    n = torch.get_num_threads()
    try:
        run_localization_experiments(tmp_path / "out", cfg, progress=False)
    finally:
        torch.set_num_threads(n)
    data = json.loads((tmp_path / "out" / "localization.json").read_text())
    runs = {r["preset"]: r for r in data["runs"]}
    assert set(runs) == {"posegan", "configA", "retrieval"} and runs["posegan"]["input_size"] == 32
    assert runs["posegan"]["refine"]["frames"] == 1 and runs["posegan"]["steps"] == 2
    assert (tmp_path / "out" / "real_vs_generated_route.png").exists()
