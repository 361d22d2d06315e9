"""The adversarial term of Pose2RGBD (``model.adversarial_weight``): off = the paper's model exactly; on = a
pose-conditioned discriminator (PoseGAN's blocks) in its own optimizer group, updates that leave the other
network bit-identical, a discriminator that learns, checkpoints that resume, serving and export that ignore it."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from pose2rgbd.errors import ConfigError
from pose2rgbd.experiments.toy import make_toy_dataset
from pose2rgbd.methods.pose2rgbd import PAPER_PARAMETERS, build_model, preset_config
from pose2rgbd.methods.pose2rgbd.adversarial import PoseDiscriminator
from pose2rgbd.methods.pose2rgbd.config import PAPER_PRESETS, Pose2RGBDConfig
from pose2rgbd.methods.posegan.losses import hinge_d
from pose2rgbd.models import DepthNormalizer, count_parameters, load_checkpoint
from pose2rgbd.models.base import backward_and_step
from pose2rgbd.training import TrainConfig, train

SIZE = 64


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BatchNorm statistics, spectral-norm vectors), cloned."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _renderer_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in _state(model).items() if not k.startswith("discriminator.")}


def _toy_batch(n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Real frames with structure an untrained renderer cannot produce: a horizon, a sky gradient, stripes."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    rgb = torch.empty(n, 3, SIZE, SIZE)
    depth = torch.empty(n, 1, SIZE, SIZE)
    for i in range(n):
        h = float(torch.rand((), generator=g)) * 0.6 - 0.3
        ground = yy > h
        stripes = torch.sign(torch.sin(12 * xx + 3 * i))
        rgb[i, 0] = torch.where(ground, 0.4 * stripes, -0.6 + 0.3 * yy)
        rgb[i, 1] = torch.where(ground, 0.2 + 0.3 * stripes, -0.2 + 0.3 * yy)
        rgb[i, 2] = torch.where(ground, -0.5 * stripes, 0.9 + 0.1 * yy)
        depth[i, 0] = torch.where(ground, 5.0 + 40.0 * (1 - (yy - h) / (1 - h)), torch.full_like(yy, float("inf")))
    depth[:, :, :2, :2] = float("nan")  # some pixels without depth
    pose = torch.rand(n, 7, generator=g) * 2 - 1
    return {"pose": pose, "rgb": rgb, "depth": depth}


def _model(**kw: object):
    torch.manual_seed(0)
    small = {"dense_channels": 128, "trunk_channels": [64, 32, 32, 16, 16, 16]}  # a small renderer: fast tests
    m = build_model(preset_config("base", size=SIZE, adversarial_weight=0.1, adversarial_channels=8, **small, **kw))
    m.set_depth_normalizer(DepthNormalizer(0.0, 60.0))
    return m.train()


def _optimizers(model) -> dict[str, torch.optim.Optimizer]:
    groups = model.get_param_groups()
    d = model.optimizer_defaults()["discriminator"]
    return {
        "model": torch.optim.Adam(groups["model"], lr=1e-3),
        "discriminator": torch.optim.Adam(groups["discriminator"], lr=d["lr"], betas=d["betas"]),
    }


def _no_autocast():
    return torch.autocast("cpu", enabled=False)


def test_switch_off_is_the_paper_model() -> None:
    for p in PAPER_PRESETS:
        cfg = preset_config(p, size=512, outputs="depth")
        assert cfg.adversarial_weight == 0 and not cfg.uses_adversarial
        net = build_model(cfg)
        assert not hasattr(net, "discriminator") and not any("discriminator" in k for k in net.state_dict())
        assert list(net.get_param_groups()) == ["model"] and net.optimizer_defaults() == {}
        assert abs(count_parameters(net) / PAPER_PARAMETERS[p] - 1) < 0.005
    # on: the renderer is the same network (same parameter count and names), the discriminator comes on top
    for p in ("base", "slice10"):
        off = build_model(preset_config(p, size=SIZE))
        on = build_model(preset_config(p, size=SIZE, adversarial_weight=0.01))
        assert sum(x.numel() for x in on.renderer_parameters()) == count_parameters(off)
        assert count_parameters(on) == count_parameters(off)  # the printed / reported count: the renderer's
        assert count_parameters(on.discriminator) > 0
        assert {k for k in on.state_dict() if not k.startswith("discriminator.")} == set(off.state_dict())
        groups = on.get_param_groups()
        assert set(groups) == {"model", "discriminator"}
        assert {id(x) for x in groups["discriminator"]} == {id(x) for x in on.discriminator.parameters()}
        assert not {id(x) for x in groups["model"]} & {id(x) for x in groups["discriminator"]}
        assert on.optimizer_defaults()["discriminator"]["betas"] == (0.0, 0.9)


@pytest.mark.parametrize(("size", "blocks"), [(64, 4), (128, 5), (256, 6), (512, 7)])
def test_discriminator_depth_follows_the_image_size(size: int, blocks: int) -> None:
    d = PoseDiscriminator(4, 7, size, 2)
    assert len(d.blocks) == blocks
    x = torch.rand(2, 4, size, size) * 2 - 1
    h = x
    for b in d.blocks:
        h = b(h)
    assert h.shape[-2:] == (4, 4)
    y = torch.rand(2, 7) * 2 - 1
    s = d(x, y)
    assert s.shape == (2,)
    assert not torch.allclose(s, d(x, -y))  # the pose conditions the score


def test_switch_validation() -> None:
    with pytest.raises(ConfigError, match="adversarial_depth"):
        Pose2RGBDConfig(preset="base", outputs="rgb", size=SIZE, adversarial_weight=0.1, adversarial_depth=True)
    with pytest.raises(ConfigError, match="adversarial_weight"):
        Pose2RGBDConfig(preset="base", size=SIZE, adversarial_weight=-0.1)
    with pytest.raises(ConfigError, match="adversarial_channels"):
        Pose2RGBDConfig(preset="base", size=SIZE, adversarial_weight=0.1, adversarial_channels=0)
    assert (
        Pose2RGBDConfig(preset="base", outputs="depth", size=SIZE, adversarial_weight=0.1).adversarial_in_channels == 1
    )
    assert Pose2RGBDConfig(preset="base", size=SIZE, adversarial_weight=0.1).adversarial_in_channels == 3
    cfg = Pose2RGBDConfig(preset="base", size=SIZE, adversarial_weight=0.1, adversarial_depth=True)
    assert cfg.adversarial_in_channels == 4


@pytest.mark.parametrize("rgbd", [False, True])
def test_each_update_leaves_the_other_network_bit_identical(rgbd: bool) -> None:
    model = _model(adversarial_depth=rgbd)
    opts = _optimizers(model)
    batch = _toy_batch()
    ref = copy.deepcopy(model)
    ref_opts = _optimizers(ref)
    # D step: the renderer (weights and BatchNorm statistics) is untouched, D moves
    outputs = model.get_outputs(batch)
    g0, d0 = _renderer_state(model), _state(model.discriminator)
    logs = model.discriminator_update(batch, outputs, opts["discriminator"], _no_autocast, step=0)
    assert set(logs) == {"discriminator/loss", "discriminator/real_score", "discriminator/fake_score"}
    assert _same(_renderer_state(model), g0)
    assert not _same(_state(model.discriminator), d0)
    # G step (with the adversarial term): D (weights and spectral-norm vectors) is untouched, the renderer moves
    d1 = _state(model.discriminator)
    losses = model.get_loss_dict(outputs, batch)
    losses["adversarial"] = 0.1 * model.adversarial_term(outputs, batch, _no_autocast)
    backward_and_step(losses, [opts["model"]], step=0)
    assert _same(_state(model.discriminator), d1)
    assert not _same(_renderer_state(model), g0)
    assert all(p.requires_grad for p in model.discriminator.parameters()) and model.discriminator.training
    # the full train_step does exactly these two updates: D as after its own update, the renderer as above
    ref.train_step(batch, ref_opts, autocast=_no_autocast, step=0)
    assert _same(_state(ref.discriminator), d1)
    assert _same(_renderer_state(ref), _renderer_state(model))


def test_discriminator_learns_real_from_rendered() -> None:
    model = _model()
    opts = _optimizers(model)  # D: its default Adam 2e-4, betas (0, 0.9)
    batch = _toy_batch(8)

    @torch.no_grad()
    def scores() -> tuple[float, float, float]:
        """(hinge loss, mean real score, mean rendered score) of D on the batch, eval mode (nothing updated)."""
        model.eval()
        real, fake = model.discriminator_images(model.get_outputs(batch), batch)
        s_real, s_fake = model.discriminator(real, batch["pose"]), model.discriminator(fake, batch["pose"])
        model.train()
        return float(hinge_d(s_real, s_fake)), float(s_real.mean()), float(s_fake.mean())

    before = scores()
    logs = [model.train_step(batch, opts, autocast=_no_autocast, step=k) for k in range(10)]
    after = scores()
    assert before[0] > 1.5  # an untrained D cannot tell them apart (hinge ~ 2)
    assert after[0] < 0.6 * before[0], (before, after, [x["discriminator/loss"] for x in logs])
    assert after[1] > after[2] + 0.5, (before, after)
    assert logs[-1]["discriminator/loss"] < logs[0]["discriminator/loss"]
    assert all(float(x["adversarial"]) == pytest.approx(-0.1 * x["discriminator/fake_score"], abs=0.5) for x in logs)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("adv") / "ds", n_survey=10, n_route=3, size=SIZE)


def _tc(**kw: object) -> TrainConfig:
    base = {
        "epochs": 1, "batch_size": 4, "max_steps": 2, "lr": 1e-3, "split": "random", "progress": False,
        "tensorboard": False, "device": "cpu", "val_every": 0, "recalibrate_bn": False,
    }  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_smoke_train_checkpoint_resume_and_serving(toy: Path, tmp_path: Path) -> None:
    from pose2rgbd.inference import EngineConfig, RenderEngine, load_engine
    from pose2rgbd.models.export import export_onnx, load_onnx_checkpoint

    mc = preset_config(
        "base", size=SIZE, adversarial_weight=0.01, adversarial_channels=8, dense_channels=128,
        trunk_channels=[64, 32, 32, 16, 16, 16],
    )  # fmt: skip
    r = train("pose2rgbd", toy, tmp_path / "run", mc, _tc(), cache_root=toy.parent / "cache")
    assert r.steps == 2
    logged = (tmp_path / "run" / "log.csv").read_text()
    assert ",adversarial," in logged and "discriminator/loss" in logged, logged[:500]
    # the checkpoint holds D and both optimizers; loading restores D exactly
    raw = torch.load(r.last, map_location="cpu", weights_only=False)
    assert any(k.startswith("discriminator.") for k in raw["state_dict"])
    assert set(raw["optimizers"]) == {"model", "discriminator"} and raw["optimizers"]["discriminator"]["state"]
    ck = load_checkpoint(r.last)
    assert ck.model_config.adversarial_weight == 0.01
    for k, v in raw["state_dict"].items():
        assert torch.equal(ck.model.state_dict()[k], v), k
    # resume continues both groups from the saved state (2 more steps)
    r2 = train("pose2rgbd", toy, tmp_path / "run", mc, _tc(max_steps=4, epochs=3), resume=True,
               cache_root=toy.parent / "cache")  # fmt: skip
    assert r2.steps == 4
    raw2 = torch.load(r2.last, map_location="cpu", weights_only=False)
    dkeys = [k for k in raw["state_dict"] if k.startswith("discriminator.") and k.endswith("original")]
    assert dkeys and any(not torch.equal(raw["state_dict"][k], raw2["state_dict"][k]) for k in dkeys)
    # serving: the render engine and the ONNX export see only the renderer; outputs are the torch model's
    T = np.stack([np.eye(4), np.eye(4)])
    T[1, :3, 3] = [3.0, -2.0, 1.0]
    eng = load_engine(EngineConfig(checkpoint=str(r2.last), device="cpu", precision="fp32", warmup=0))
    assert isinstance(eng, RenderEngine)
    out = eng.render(T)
    assert out.rgb is not None and out.rgb.shape == (2, SIZE, SIZE, 3) and out.depth is not None
    ck2 = load_checkpoint(r2.last)
    rep = export_onnx(ck2, tmp_path / "m.onnx", exporter="torchscript")
    assert max(rep.max_abs_error.values()) <= 1e-3
    import onnx

    names = {i.name for i in onnx.load(str(rep.path)).graph.initializer}
    assert not any("discriminator" in n for n in names), sorted(names)[:20]
    back = load_onnx_checkpoint(rep.path)
    assert back.model_config.adversarial_weight == 0.01


def test_optimizer_settings_and_experiment_variants() -> None:
    from pose2rgbd.experiments.runner import parse_variant
    from pose2rgbd.training.config import resolve_optimizer_configs

    model = build_model(preset_config("base", size=SIZE, adversarial_weight=0.01, adversarial_channels=4))
    groups = list(model.get_param_groups())
    got = resolve_optimizer_configs(TrainConfig(lr=0.01), groups, model.optimizer_defaults())
    assert (got["discriminator"].optimizer, got["discriminator"].lr, tuple(got["discriminator"].betas)) == (
        "adam", 2e-4, (0.0, 0.9),
    )  # fmt: skip
    assert got["model"].lr == 0.01 and got["model"].optimizer == TrainConfig.optimizer
    tc = TrainConfig(lr=0.01, groups={"discriminator": {"lr": 1e-4, "betas": [0.5, 0.999]}})
    over = resolve_optimizer_configs(tc, groups, model.optimizer_defaults())["discriminator"]
    assert over.lr == 1e-4 and tuple(over.betas) == (0.5, 0.999)
    # the experiments command's variant syntax passes the switch through
    label, preset, kv = parse_variant("adv=base:adversarial_weight=0.01:adversarial_depth=true")
    cfg = preset_config(preset, size=SIZE, **dict(kv))
    assert (label, cfg.adversarial_weight, cfg.adversarial_depth, cfg.preset) == ("adv", 0.01, True, "base")
