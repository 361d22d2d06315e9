"""The hybrid's pretrained fill (``model.fill_init``), the decoder-less hybrid (``model.decoder`` false), the
pretraining driver, early stopping (``train.patience``) and an overwritten hybrid run keeping its keyframe map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pose2rgbd.errors import ConfigError
from pose2rgbd.experiments.toy import make_toy_dataset
from pose2rgbd.methods.hybrid import PRESETS, HybridConfig, build_model
from pose2rgbd.methods.hybrid.network import FILL_INPUTS, FillUNet
from pose2rgbd.methods.hybrid.pretrained import (
    DECODER_CHANNELS,
    first_conv,
    init_fill,
    read_fill_file,
    shipped_path,
    write_fill_file,
)
from pose2rgbd.models import DepthNormalizer, PoseNormalizer, load_checkpoint
from pose2rgbd.training import TrainConfig, train

SIZE = 64


def _model(**cfg) -> torch.nn.Module:
    m = build_model(
        HybridConfig(size=SIZE, dense_channels=32, trunk_channels=[16] * 6, **cfg),
        pose_normalizer=PoseNormalizer("6dof-quat", [-50, -50, 5, -1, -1, -1, 0], [50, 50, 60, 1, 1, 1, 1]),
    )
    m.set_depth_normalizer(DepthNormalizer(0.0, 80.0))
    return m


def _random_fill(channels: int, levels: int, seed: int = 0, blocks: int = 1) -> FillUNet:
    torch.manual_seed(seed)
    f = FillUNet(FILL_INPUTS, channels, levels, blocks)
    with torch.no_grad():
        for p in f.parameters():
            p.normal_(0.0, 0.1)
    return f


def test_every_preset_fill_shape_is_shipped_and_loads() -> None:
    for name, preset in PRESETS.items():
        mc = HybridConfig(**{**preset, "size": SIZE})
        shape = (mc.fill_channels, mc.fill_levels, mc.fill_space_to_depth)
        path = shipped_path(*shape)
        assert path.is_file(), f"preset {name}: no pretrained fill at {path}"
        ff = read_fill_file(path)
        assert (ff.channels, ff.levels, ff.space_to_depth) == shape
        assert ff.meta["places"] >= 5 and ff.meta["decoder"] is False and ff.meta["steps"] > 1000
        m = _model(fill_channels=shape[0], fill_levels=shape[1], fill_space_to_depth=shape[2], decoder=False)
        assert "pretrained" not in init_fill(m, "none")
        assert float(m.fill.out.weight.detach().abs().sum()) == 0.0  # zero start: the untrained model is the warp
        init_fill(m, "pretrained")
        for k, v in m.fill.state_dict().items():
            torch.testing.assert_close(v, ff.state_dict[k])
        assert float(m.fill.out.weight.detach().abs().sum()) > 0.0  # a pretrained fill corrects from the start


@pytest.mark.parametrize("blocks", [1, 2])  # a fill at full resolution; one at half (the decoder's 4 x 4 channels)
def test_a_model_with_a_decoder_starts_with_the_pretrained_answer(tmp_path: Path, blocks: int) -> None:
    """The decoder channels' weights start at zero: the decoder's render does not change the first answer."""
    f = _random_fill(8, 2, blocks=blocks)
    path = write_fill_file(tmp_path / "fill.pt", f, 8, 2, {"places": 3}, blocks)
    shape = {"fill_channels": 8, "fill_space_to_depth": blocks}
    with_dec, without = _model(**shape, decoder=True), _model(**shape, decoder=False)
    assert "3 places" in init_fill(with_dec, str(path))
    init_fill(without, str(path))
    w = first_conv(with_dec.fill).weight
    w = w.detach()
    dec = DECODER_CHANNELS * blocks**2
    assert float(w[:, :dec].abs().sum()) == 0.0 and float(w[:, dec:].abs().sum()) > 0
    x = torch.randn(2, FILL_INPUTS, SIZE, SIZE)
    x_zero_dec = x.clone()
    x_zero_dec[:, :DECODER_CHANNELS] = 0.0
    with torch.no_grad():
        torch.testing.assert_close(with_dec.fill(x), without.fill(x_zero_dec))
    # and the decoder channels learn: their weights get a gradient once the decoder renders something
    with_dec.fill(x).sum().backward()
    assert float(first_conv(with_dec.fill).weight.grad[:, :dec].abs().sum()) > 0


def test_fill_files_of_another_shape_or_kind_are_refused_with_the_fix(tmp_path: Path) -> None:
    path = write_fill_file(tmp_path / "fill.pt", _random_fill(8, 2), 8, 2, {})
    with pytest.raises(ConfigError, match="8 channels / 2 levels; this model's is 16 channels / 2 levels"):
        init_fill(_model(fill_channels=16), str(path))
    with pytest.raises(ConfigError, match="this model's is 8 channels / 2 levels from 1/2 resolution"):
        init_fill(_model(fill_channels=8, fill_space_to_depth=2), str(path))
    half = write_fill_file(tmp_path / "half.pt", _random_fill(8, 2, blocks=2), 8, 2, {}, 2)
    assert torch.load(half, weights_only=True)["version"] == 2 and torch.load(path, weights_only=True)["version"] == 1
    with pytest.raises(ConfigError, match="a fill of 8 channels / 2 levels from 1/2 resolution; this model's is 8 "):
        init_fill(_model(fill_channels=8), str(half))
    m = _model(fill_channels=8, fill_space_to_depth=2)
    init_fill(m, str(half))
    assert read_fill_file(half).space_to_depth == 2 and float(m.fill.out.weight.detach().abs().sum()) > 0
    # a header that does not match the weights (a full-resolution fill's weights under a half-resolution header)
    wrong = write_fill_file(tmp_path / "wrong.pt", _random_fill(8, 2), 8, 2, {}, 2)
    with pytest.raises(ConfigError, match=r"wrong\.pt: its weights do not fit the fill of 8 channels / 2 levels from"):
        init_fill(_model(fill_channels=8, fill_space_to_depth=2), str(wrong))
    torch.save({"model_state": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(ConfigError, match="not a hybrid fill file"):
        init_fill(_model(fill_channels=8), str(tmp_path / "ckpt.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="not a readable fill file"):
        init_fill(_model(fill_channels=8), str(tmp_path / "junk.pt"))
    with pytest.raises(ConfigError, match="no such file"):
        init_fill(_model(fill_channels=8), str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="fill_init is empty"):
        HybridConfig(fill_init=" ")
    # a shape the package ships nothing for starts from zero, without an error
    m = _model(fill_channels=12, fill_levels=1)
    assert "no pretrained fill" in init_fill(m, "pretrained")
    assert float(m.fill.out.weight.detach().abs().sum()) == 0.0


@pytest.mark.parametrize("blocks", [1, 2])
def test_a_model_without_decoder_renders_trains_and_exports(blocks: int, tmp_path: Path) -> None:
    m = _model(fill_channels=8, fill_space_to_depth=blocks, decoder=False)
    assert m.decoder is None
    n_with = sum(p.numel() for p in _model(fill_channels=8, fill_space_to_depth=blocks, decoder=True).parameters())
    assert sum(p.numel() for p in m.parameters()) < n_with
    f = _random_fill(8, 2, blocks=blocks)
    m.fill.load_state_dict(f.state_dict())
    pose = torch.rand(2, 7) * 2 - 1
    w = (torch.rand(2, 3, SIZE, SIZE) * 2 - 1, torch.rand(2, 1, SIZE, SIZE), torch.ones(2, 1, SIZE, SIZE))
    hits = torch.ones(2, 1, SIZE, SIZE)
    part = m.network_part()
    rgb, log_scale = part(pose, w[0], w[1], w[2], hits)
    x = torch.cat([torch.zeros(2, DECODER_CHANNELS, SIZE, SIZE), w[0], w[1], w[2], hits], dim=1)
    ref = f(x)
    torch.testing.assert_close(rgb, w[0] + ref[:, :3])
    torch.testing.assert_close(log_scale, ref[:, 3:4])
    pytest.importorskip("onnxruntime")
    from pose2rgbd.methods.hybrid.network import export_network_part

    # ONNX Runtime serving (engine.backend onnxruntime): the file answers as torch does (checked inside)
    assert export_network_part(part, tmp_path / "part.onnx", pose_dim=7, size=SIZE) < 1e-3


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("pre") / "ds", n_survey=30, n_route=8, size=SIZE)


def _tc(**kw) -> TrainConfig:
    base = dict(
        epochs=0, batch_size=4, max_steps=3, lr=1e-3, split="route", progress=False, tensorboard=False,
        device="cpu", val_every=0, recalibrate_bn=False,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _mc(**kw) -> HybridConfig:
    return HybridConfig(
        **{
            "size": SIZE,
            "dense_channels": 32,
            "trunk_channels": [16] * 6,
            "fill_channels": 8,
            "exclude_window": 3,
            **kw,
        }
    )


def test_an_overwritten_hybrid_run_keeps_its_own_keyframe_map(toy: Path, tmp_path: Path) -> None:
    """The earlier run moves aside before the new one writes its keyframe map (it was moved aside with the earlier
    run and deleted: the new checkpoint named a map that was gone)."""
    out = tmp_path / "run"
    train("hybrid", toy, out, _mc(), _tc(), cache_root=toy.parent / "cache")
    r = train("hybrid", toy, out, _mc(), _tc(), cache_root=toy.parent / "cache", overwrite=True)
    assert (out / "keyframes" / "map.json").is_file()
    assert load_checkpoint(r.last).model.n_keyframes > 0
    assert not list(out.glob("previous-run-*"))


def test_a_failing_overwrite_puts_the_earlier_run_back_with_its_keyframes(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train("hybrid", toy, out, _mc(), _tc(), cache_root=toy.parent / "cache")
    before = (out / "keyframes" / "map.json").read_bytes()
    with pytest.raises(ConfigError, match="fill_init"):
        train("hybrid", toy, out, _mc(fill_init=str(tmp_path / "no-such-fill.pt")), _tc(), overwrite=True,
              cache_root=toy.parent / "cache")  # fmt: skip
    assert (out / "keyframes" / "map.json").read_bytes() == before
    assert load_checkpoint(first.last).model.n_keyframes > 0


def test_patience_stops_training_when_validation_stops_improving(toy: Path, tmp_path: Path) -> None:
    # an improvement must be 99 % of the loss to count: the second validation cannot, and training stops there
    tc = _tc(max_steps=50, val_every_steps=2, val_min_seconds=0.0, patience=1, min_delta=0.99)
    r = train("hybrid", toy, tmp_path / "run", _mc(), tc, cache_root=toy.parent / "cache")
    # stopped at the second validation (step 4; the trainer ends at its next step check), far before the budget
    assert r.stop_reason.startswith("early stop: val/loss") and r.steps <= 5, (r.stop_reason, r.steps)
    r2 = train(
        "hybrid",
        toy,
        tmp_path / "run2",
        _mc(),
        _tc(max_steps=6, val_every_steps=2, val_min_seconds=0.0),
        cache_root=toy.parent / "cache",
    )
    assert r2.steps == 6  # without patience the budget sets the end
    with pytest.raises(ConfigError, match="patience"):
        TrainConfig(patience=-1)


def test_pretraining_takes_turns_over_places_and_resumes(toy: Path, tmp_path: Path, monkeypatch) -> None:
    from pose2rgbd.methods.hybrid import pretrain

    other = make_toy_dataset(tmp_path / "ds2", n_survey=30, n_route=8, size=SIZE, seed=3)
    seen: list[tuple[str, str]] = []
    import pose2rgbd.training as training  # pretrain_fill imports train_model from there when it runs

    orig = training.train_model

    def spy(ds, out, mc, tc, **kw):
        seen.append((Path(ds).name, mc.fill_init))
        assert mc.decoder is False and tc.max_minutes == pytest.approx(0.002)
        return orig(ds, out, mc, _tc(max_steps=2), **kw)

    monkeypatch.setattr(training, "train_model", spy)
    work = tmp_path / "work"
    # a fill at half resolution: its factor goes from turn to turn (each turn starts from the last one's file)
    out = pretrain.pretrain_fill([toy, other], tmp_path / "fill.pt", preset="hybrid-subpixel", size=SIZE,
                                 minutes_per_place=0.002, rounds=2, work=work)  # fmt: skip
    assert [s[0] for s in seen] == ["ds", "ds2", "ds", "ds2"]
    assert seen[0][1] == "none" and seen[1][1].endswith("fill-r0-p0.pt") and seen[3][1].endswith("fill-r1-p0.pt")
    ff = read_fill_file(out)
    assert (ff.channels, ff.levels, ff.space_to_depth) == (16, 2, 2) and ff.meta["places"] == 2
    assert ff.meta["steps"] == 8
    # a second call finds every turn done and trains nothing
    seen.clear()
    pretrain.pretrain_fill([toy, other], tmp_path / "fill2.pt", preset="hybrid-subpixel", size=SIZE,
                           minutes_per_place=0.002, rounds=2, work=work)  # fmt: skip
    assert seen == []
    np.testing.assert_array_equal(
        read_fill_file(tmp_path / "fill2.pt").state_dict["out.weight"], ff.state_dict["out.weight"]
    )
