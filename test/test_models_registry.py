"""A new model kind in under 100 lines: a toy pose -> 8x8 RGB model (``test/toy_renderer.py``) registered, trained two
steps, checkpointed, loaded by the generic loader and served by the render engine. Then registry errors and the
driver's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from toy_renderer import ToyRenderer, ToyRendererConfig

from pose2rgbd.geometry import PinholeCamera, T_from_tq
from pose2rgbd.inference import EngineConfig, RenderEngine, load_engine
from pose2rgbd.models import ModelFamily, PoseNormalizer, load_checkpoint, save_checkpoint
from pose2rgbd.models.registry import register_family, unregister_family
from pose2rgbd.training import TrainConfig, Trainer

TOY = ModelFamily(
    kind="toy-render", config_cls=ToyRendererConfig, build=ToyRenderer, presets={"tiny": {}}, default_preset="tiny",
    data="pose_to_image", engine="render", description="toy: pose -> 8x8 RGB through one linear layer",
)  # fmt: skip


@pytest.fixture
def toy_kind():
    register_family(TOY)
    yield TOY
    unregister_family(TOY.kind)


def _poses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    return T_from_tq(rng.uniform(-50, 50, (n, 3)), q / np.linalg.norm(q, axis=1, keepdims=True))


def test_a_new_kind_trains_checkpoints_loads_and_serves(toy_kind: ModelFamily, tmp_path: Path) -> None:
    T = _poses(8)
    model = toy_kind.build(toy_kind.make_config())
    model.set_pose_normalizer(PoseNormalizer.fit(T, "6dof-quat"))  # the model owns its transforms
    x = model.normalize_poses(T)
    data = [{"pose": torch.from_numpy(x[i]), "rgb": torch.full((3, 8, 8), float(i) / 8 - 0.5)} for i in range(8)]
    before = model.body[0].weight.detach().clone()
    cfg = TrainConfig(  # CPU: the toy batches are CPU tensors and the comparison below is exact
        epochs=1, batch_size=4, max_steps=2, val_every=0, progress=False, tensorboard=False, device="cpu", amp="off"
    )
    trainer = Trainer(model, data, cfg)  # type: ignore[arg-type]
    trainer.fit()
    assert trainer.step == 2 and not torch.equal(model.body[0].weight.detach(), before)

    camera = PinholeCamera.from_fov(64, 64, 90.0)
    path = save_checkpoint(tmp_path / "toy.pt", model, dataset_fingerprint="toy", camera=camera, step=trainer.step)
    ck = load_checkpoint(path, expect_kind="toy-render", expect_size=8)
    assert type(ck.model) is ToyRenderer and ck.kind == "toy-render" and ck.step == 2
    assert ck.camera is not None and (ck.camera.width, ck.camera.height) == (8, 8)  # scaled to the model's size
    np.testing.assert_allclose(ck.model.pose_normalizer.maximum, model.pose_normalizer.maximum)

    engine = load_engine(EngineConfig(checkpoint=str(path), warmup=0, device="cpu", precision="fp32"))
    assert isinstance(engine, RenderEngine)
    res = engine.render(T[:3])
    assert res.rgb is not None and res.rgb.shape == (3, 8, 8, 3) and res.rgb.dtype == np.uint8
    assert res.depth is None and res.confidence is None and not res.out_of_bounds.any()
    assert not np.array_equal(res.rgb[0], res.rgb[1])  # the image depends on the pose
    with torch.no_grad():
        direct = model.eval().outputs_to_arrays(model(torch.from_numpy(x[:3])))["rgb"]
    np.testing.assert_array_equal(res.rgb, direct)


# -- registry errors and the driver's dataset check ------------------------------------------------------------
def test_registry_lookup_and_errors(toy_kind: ModelFamily) -> None:
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.models import family_names, get_family

    assert {"pose2rgbd", "toy-render"} <= set(family_names())
    fam = get_family("pose2rgbd")
    assert fam.engine == "render" and fam.data == "pose_to_image" and fam.default_preset in fam.presets
    assert fam.make_config("base", size=64).preset == "base" and fam.make_config().preset == fam.default_preset
    assert fam.load_recipe().__name__ == "prepare"
    with pytest.raises(ConfigError, match=r"unknown model kind 'Hybird'; did you mean 'hybrid'\? Known kinds: "):
        get_family("Hybird")  # a capital and two letters swapped
    with pytest.raises(ConfigError, match=r"unknown model kind 'no-such-kind'; known kinds: .*pose2rgbd.*toy-render"):
        get_family("no-such-kind")
    with pytest.raises(ConfigError, match="already registered"):
        register_family(ModelFamily(kind="toy-render", config_cls=ToyRendererConfig, build=ToyRenderer))
    with pytest.raises(ConfigError, match="already registered"):  # a built-in kind cannot be shadowed silently
        register_family(ModelFamily(kind="pose2rgbd", config_cls=ToyRendererConfig, build=ToyRenderer))
    with pytest.raises(ConfigError, match="unknown pose2rgbd preset 'huge'"):
        fam.make_config("huge")
    with pytest.raises(ConfigError, match="has no field"):
        fam.make_config("base", colour=3)
    with pytest.raises(ConfigError, match="data 'video'"):
        ModelFamily(kind="x", config_cls=ToyRendererConfig, build=ToyRenderer, data="video")
    with pytest.raises(ConfigError, match="engine 'fly'"):
        ModelFamily(kind="x", config_cls=ToyRendererConfig, build=ToyRenderer, engine="fly")


def test_driver_refuses_data_the_dataset_cannot_give(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.experiments.toy import make_toy_dataset
    from pose2rgbd.training import train

    seq = ModelFamily(
        kind="toy-seq", config_cls=ToyRendererConfig, build=ToyRenderer, data="sequences", train=lambda: print
    )
    register_family(seq)
    try:
        ds = Dataset(make_toy_dataset(tmp_path / "ds", n_survey=6, n_route=3, size=16))
        assert {"pose_to_image", "image_to_pose", "sequences"} <= ds.capabilities()
        monkeypatch.setattr(Dataset, "capabilities", lambda self: {"pose_to_image", "image_to_pose"})
        with pytest.raises(ConfigError, match="'toy-seq' trains on sequences data, this dataset gives image_to_pose"):
            train("toy-seq", ds, tmp_path / "out", ToyRendererConfig())
        with pytest.raises(ConfigError, match="takes a ToyRendererConfig"):
            train("toy-seq", ds, tmp_path / "out", object())
    finally:
        unregister_family("toy-seq")


def test_a_method_owns_its_policy_for_a_dataset_without_depth() -> None:
    """Pose2RGBD's fit_dataset policy (its recipe, not the CLI): RGB-only when the user chose nothing, one error
    naming what was chosen otherwise; a kind without a policy leaves the config as it is."""
    from types import SimpleNamespace

    from pose2rgbd.errors import ConfigError
    from pose2rgbd.models.registry import get_family

    fam = get_family("pose2rgbd")
    no_depth = SimpleNamespace(has_depth=False, path="ds", manifest=SimpleNamespace(depth_kind="none"))
    mc, note = fam.fit_to_dataset(fam.make_config(), no_depth, {})
    assert (mc.outputs, mc.preset) == ("rgb", "base") and "RGB-only" in note
    with pytest.raises(ConfigError, match="preset 'slice10'"):
        fam.fit_to_dataset(fam.make_config(), no_depth, {"preset": "slice10"})
    with_depth = SimpleNamespace(has_depth=True)
    mc2, note2 = fam.fit_to_dataset(fam.make_config(), with_depth, {})
    assert mc2 == fam.make_config() and note2 == ""
    hyb = get_family("hybrid")
    assert hyb.fit_to_dataset("unchanged", no_depth, {}) == ("unchanged", "")
