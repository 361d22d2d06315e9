"""Trainer: loss decreases, 2-step smoke train of every preset, logs, resume, parameter groups, callbacks,
best-checkpoint selection by the model's metric (GAN updates: test_training_gan.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pose2rgbd.dataset import Dataset, build_cache
from pose2rgbd.dataset.torch_dataset import PoseRGBDDataset
from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.experiments.toy import make_toy_dataset
from pose2rgbd.methods.pose2rgbd import build_model, preset_config
from pose2rgbd.models import DepthNormalizer, ModelBase, PoseNormalizer, load_checkpoint
from pose2rgbd.training import Callback, CheckpointCallback, TrainConfig, Trainer, train_model


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "ds", n_survey=40, n_route=10, size=32)


def test_loss_decreases_on_tiny_set(toy: Path) -> None:
    cache = build_cache(toy, 64, progress=False)
    idx = np.arange(8)
    pn = PoseNormalizer.fit(cache.T_world_cam, "6dof-quat")
    model = build_model(preset_config("base", size=64, outputs="rgbd"), DepthNormalizer.fit(cache.depth), pn)
    ds = PoseRGBDDataset(cache, idx, model)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.01, amp="off", progress=False, tensorboard=False)
    tr = Trainer(model, ds, cfg)
    batch = next(iter(tr._loader(ds, shuffle=False)))
    losses = [tr.train_step(batch)["loss"] for _ in range(12)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * losses[0]


@pytest.mark.parametrize("preset", ["base", "slice10", "slice32", "slice64"])
def test_two_step_smoke_train_every_preset(toy: Path, tmp_path: Path, preset: str) -> None:
    mc = preset_config(preset, size=64, outputs="rgbd")
    tc = TrainConfig(epochs=1, batch_size=2, max_steps=2, split="route", progress=False, tensorboard=preset == "base")
    res = train_model(toy, tmp_path / preset, mc, tc)
    assert res.steps == 2 and res.last.exists()
    ck = load_checkpoint(res.last, expect_fingerprint=Dataset(toy).fingerprint(), expect_size=64, expect_preset=preset)
    assert ck.train_config["split"] == "route" and ck.step == 2
    assert ck.model.depth_normalizer.max_m < 300
    log = (tmp_path / preset / "log.csv").read_text().splitlines()
    assert log[0] == "wall_s,step,epoch,phase,name,value" and any(",val,loss," in r for r in log)
    if preset == "base":
        assert list((tmp_path / preset / "tb").glob("events.out.tfevents.*"))


def test_resume_continues_and_rejects_other_model(toy: Path, tmp_path: Path) -> None:
    mc = preset_config("base", size=64, outputs="depth")
    out = tmp_path / "run"
    tc1 = TrainConfig(epochs=1, batch_size=16, split="random", progress=False, tensorboard=False)
    r1 = train_model(toy, out, mc, tc1)
    steps_per_epoch = r1.steps
    assert r1.epochs == 1
    tc2 = TrainConfig(epochs=2, batch_size=16, split="random", progress=False, tensorboard=False)
    r2 = train_model(toy, out, mc, tc2, resume=True)
    assert r2.epochs == 2 and r2.steps == 2 * steps_per_epoch
    assert load_checkpoint(r2.last).epoch == 2
    with pytest.raises(CheckpointError, match="outputs"):
        train_model(toy, out, preset_config("base", size=64, outputs="rgbd"), tc2, resume=True)
    with pytest.raises(CheckpointError, match="split"):
        train_model(toy, out, mc, TrainConfig(epochs=3, split="route", progress=False), resume=True)
    from pose2rgbd.experiments.toy import make_toy_dataset

    other = make_toy_dataset(tmp_path / "other", n_survey=8, n_route=2, size=16)
    with pytest.raises(
        CheckpointError, match=r"cannot resume, trained on dataset .*: if another dataset was given, leave"
    ):
        train_model(other, out, mc, tc2, resume=True)


class _TwoGroup(ModelBase):
    """Two parameter groups, one objective (the default train_step): each optimizer holds only its group."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(2, 3)
        self.dec = nn.Linear(3, 2)

    def get_outputs(self, batch: dict) -> dict:
        return {"y": self.dec(self.enc(batch["x"]))}

    def get_loss_dict(self, outputs: dict, batch: dict) -> dict:
        return {"mse": ((outputs["y"] - batch["x"]) ** 2).mean()}

    def get_param_groups(self) -> dict:
        return {"encoder": list(self.enc.parameters()), "decoder": list(self.dec.parameters())}


class _Stopper(Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, trainer: Trainer, logs: dict) -> None:
        self.steps += 1
        if self.steps == 3:
            trainer.should_stop = True


def test_param_groups_and_callbacks() -> None:
    data = [{"x": torch.randn(2)} for _ in range(40)]
    model = _TwoGroup()
    e0 = [p.detach().clone() for p in model.enc.parameters()]
    stopper = _Stopper()
    cfg = TrainConfig(epochs=5, batch_size=4, lr=0.05, progress=False, tensorboard=False, amp="off")
    tr = Trainer(model, data, cfg, callbacks=[stopper])
    assert set(tr.optimizers) == {"encoder", "decoder"}
    tr.fit()
    assert tr.step == 3 and tr.should_stop and tr.stop_reason == "callback asked to stop"
    assert all(not torch.equal(a, b) for a, b in zip(e0, model.enc.parameters()))
    for name, module in (("encoder", model.enc), ("decoder", model.dec)):
        state = tr.optimizers[name].state
        assert {id(p) for p in state} == {id(p) for p in module.parameters()}


def test_a_stop_asked_at_a_validation_trains_no_further_step() -> None:
    """Early stopping decides at an epoch-end validation: training ends there, and the final validation is not
    repeated on the weights just validated."""
    data = [{"x": torch.randn(2)} for _ in range(8)]  # 2 steps per epoch
    seen: list[int] = []

    class StopAtSecondValidation(Callback):
        def on_validation_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
            seen.append(trainer.step)
            if len(seen) == 2:
                trainer.should_stop = True

    cfg = TrainConfig(epochs=10, batch_size=4, progress=False, tensorboard=False, amp="off", val_min_seconds=0)
    tr = Trainer(_TwoGroup(), data, cfg, val_set=data, callbacks=[StopAtSecondValidation()])
    tr.fit()
    assert seen == [2, 4] and tr.step == 4 and tr.epoch == 2 and tr.stop_reason == "callback asked to stop"


def test_the_start_line_names_the_budgets_that_may_end_the_epochs_first(caplog: pytest.LogCaptureFixture) -> None:
    """A conversion trains "1000 epochs" within 5 minutes: the start line says which ends it, not 1000 epochs alone."""
    data = [{"x": torch.randn(2)} for _ in range(8)]
    either = "10 epochs or 3 steps / 5 min, whichever comes first"
    for extra, words in (({}, "10 epochs from epoch 0"), ({"max_steps": 3, "max_minutes": 5.0}, either)):
        cfg = TrainConfig(epochs=10, batch_size=4, progress=False, tensorboard=False, amp="off", **extra)  # type: ignore[arg-type]
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pose2rgbd.training.trainer"):
            Trainer(_TwoGroup(), data, cfg).fit()
        assert words in caplog.text, caplog.text


class _Scored(ModelBase):
    """Validation reports a scripted score per validation (one batch), for best-checkpoint selection."""

    def __init__(self, scores: list[float], metric: tuple[str, str]) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.scores = list(scores)
        self.best_metric = metric  # type: ignore[misc]

    def get_outputs(self, batch: dict) -> dict:
        return {"y": self.lin(batch["x"])}

    def get_loss_dict(self, outputs: dict, batch: dict) -> dict:
        return {"mse": ((outputs["y"] - batch["x"]) ** 2).mean()}

    def validation_step(self, batch: dict, *, autocast: Any) -> dict:
        return {"score": self.scores.pop(0), **super().validation_step(batch, autocast=autocast)}


def _best_epochs(scores: list[float], mode: str, tmp_path: Path, resume_from: dict | None = None) -> tuple:
    saved: list[tuple[int, str, float]] = []
    model = _Scored(scores, ("val/score", mode))
    cb = CheckpointCallback(tmp_path, lambda tr, p: saved.append((tr.epoch, p.name, tr.last_val["val/score"])))
    data = [{"x": torch.randn(2)} for _ in range(4)]
    cfg = TrainConfig(
        epochs=len(scores) + (resume_from or {}).get("epoch", 0), batch_size=4, progress=False, amp="off",
        val_min_seconds=0,
    )  # fmt: skip
    tr = Trainer(model, data, cfg, val_set=data, callbacks=[cb])
    if resume_from is not None:
        tr.load_state(model_state=model.state_dict(), optimizers={}, trainer_state=resume_from)
    tr.fit()
    return [(e, v) for e, name, v in saved if name == "best.pt"], tr, cb


def test_best_checkpoint_follows_the_models_metric_and_mode(tmp_path: Path) -> None:
    scores = [0.2, 0.5, 0.4, 0.7, 0.6]
    best_max, tr, cb = _best_epochs(scores, "max", tmp_path)
    assert best_max == [(1, 0.2), (2, 0.5), (4, 0.7)]
    assert (cb.monitor, cb.mode, tr.extra_state["best val/score"]) == ("val/score", "max", 0.7)
    best_min, _, _ = _best_epochs(scores, "min", tmp_path)
    assert best_min == [(1, 0.2)]
    # the best value survives a resume: 0.65 does not beat 0.7, 0.8 does
    (tmp_path / "best.pt").touch()
    resumed, _, cb2 = _best_epochs([0.65, 0.8], "max", tmp_path, resume_from=tr.trainer_state())
    assert cb2.best_path == tmp_path / "best.pt" and resumed == [(7, 0.8)]
    # an explicit monitor wins over the model's metric and is minimized unless told otherwise
    model = _Scored([0.1], ("val/score", "max"))
    cb3 = CheckpointCallback(tmp_path, lambda tr, p: None, monitor="val/mse")
    cb3.on_train_start(Trainer(model, [{"x": torch.randn(2)}], TrainConfig(progress=False)))
    assert (cb3.monitor, cb3.mode) == ("val/mse", "min")
    with pytest.raises(ConfigError, match="best_metric mode 'up'"):
        Trainer(_Scored([], ("val/score", "up")), [{"x": torch.randn(2)}], TrainConfig(progress=False))


@pytest.mark.gpu
def test_cuda_bf16_smoke(toy: Path, tmp_path: Path) -> None:
    tc = TrainConfig(epochs=1, batch_size=4, max_steps=2, device="cuda", progress=False, tensorboard=False)
    res = train_model(toy, tmp_path / "gpu", preset_config("slice10", size=64, outputs="rgbd"), tc)
    ck = load_checkpoint(res.last, map_location="cuda")
    with torch.no_grad():
        out = ck.model(torch.zeros(1, 7, device="cuda"))
    assert out["depth"].device.type == "cuda" and torch.isfinite(out["depth"]).all()


def test_batchnorm_recalibration_gives_exact_statistics_without_drawing_random_numbers(toy: Path) -> None:
    from pose2rgbd.training.batchnorm import recalibrate_batchnorm

    cache = build_cache(toy, 64, progress=False)
    idx = np.arange(len(cache))
    pn = PoseNormalizer.fit(cache.T_world_cam, "6dof-quat")
    model = build_model(preset_config("base", size=64, outputs="rgbd"), DepthNormalizer.fit(cache.depth), pn)
    ds = PoseRGBDDataset(cache, idx, model)
    model.eval()
    bn = model.dense_bn
    seen: list[torch.Tensor] = []
    hook = bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    # stale statistics, as after a few fast optimizer steps
    bn.running_mean.fill_(5.0)
    rng_before = torch.get_rng_state()
    assert len(ds) % 10 == 0  # equal batches: the cumulative average of batch means is the sample mean
    n = recalibrate_batchnorm(model, ds, batch_size=10, device=torch.device("cpu"))
    hook.remove()
    assert n == len(ds)
    assert torch.equal(torch.get_rng_state(), rng_before)  # training after it is not perturbed
    x = torch.cat(seen)  # (N, C, 4, 4) inputs of the first BatchNorm
    torch.testing.assert_close(bn.running_mean, x.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1 and not model.training  # restored (the model was in eval mode before)


def test_trainer_recalibrates_before_validation_and_at_the_end(toy: Path) -> None:
    cache = build_cache(toy, 64, progress=False)
    pn = PoseNormalizer.fit(cache.T_world_cam, "6dof-quat")
    model = build_model(preset_config("base", size=64, outputs="depth"), DepthNormalizer.fit(cache.depth), pn)
    ds = PoseRGBDDataset(cache, np.arange(len(cache)), model)
    calls: list[int] = []

    class Spy(Callback):
        def on_validation_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
            calls.append(trainer.step)

    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.01, max_steps=3, val_every=0, progress=False, tensorboard=False)
    tr = Trainer(model, ds, cfg, callbacks=[Spy()])
    tr.fit()
    assert tr.bn_fresh and calls == []  # no validation configured, but the end-of-training pass ran
    mean_after_fit = model.dense_bn.running_mean.clone()
    tr.recalibrate_batchnorm()
    torch.testing.assert_close(model.dense_bn.running_mean, mean_after_fit)  # already exact: idempotent


def test_training_precision_never_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.models import device as dev

    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert dev.resolve_training_precision("auto", cuda) == "fp32"  # a GPU without bf16: fp32, not fp16
    assert dev.resolve_precision("auto", cuda) == "fp16"  # (serving may use fp16 there)
    with pytest.raises(ConfigError, match="does not support bf16"):
        dev.resolve_training_precision("bf16", cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert dev.resolve_training_precision("auto", cuda) == "bf16"
    assert dev.resolve_training_precision("off", cuda) == "fp32"
    with pytest.raises(ConfigError, match="fp16 is not supported for training"):
        dev.resolve_training_precision("fp16", cuda)
    with pytest.raises(ConfigError, match=r"train\.amp .fp16. is not supported for training"):
        TrainConfig(amp="fp16")
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    assert dev.resolve_training_precision("auto", torch.device("cpu")) == "fp32"


class _Lin(ModelBase):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 1)

    def get_outputs(self, batch: dict) -> dict:
        return {"y": self.lin(batch["x"])}

    def get_loss_dict(self, outputs: dict, batch: dict) -> dict:
        return {"l": outputs["y"].pow(2).mean()}


@pytest.mark.parametrize(("bf16", "want"), [(False, "fp32"), (True, "bf16")])
def test_trainer_auto_precision_on_a_gpu(monkeypatch: pytest.MonkeyPatch, bf16: bool, want: str) -> None:
    from pose2rgbd.training import trainer as trainer_mod

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(trainer_mod, "resolve_device", lambda name: torch.device("cuda"))
    model = _Lin()
    monkeypatch.setattr(model, "to", lambda *a, **k: model)  # no GPU needed: the weights stay where they are
    tr = Trainer(model, [{"x": torch.ones(1)}], TrainConfig(amp="auto", progress=False, tensorboard=False))
    assert tr.precision == want and tr.amp_dtype == (torch.bfloat16 if bf16 else None)


def test_resume_of_a_checkpoint_that_kept_the_depth_range_settings_in_train_config(toy: Path, tmp_path: Path) -> None:
    """Checkpoints written while depth_max / depth_max_percentile were train settings resume with those values
    as the model's (and refuse another value, like any model key)."""
    mc = preset_config("base", size=64, outputs="depth", depth_max_percentile=97.0)
    out = tmp_path / "run"
    tc1 = TrainConfig(epochs=1, batch_size=16, split="random", progress=False, tensorboard=False, device="cpu")
    r1 = train_model(toy, out, mc, tc1)
    data = torch.load(r1.last, weights_only=True)  # rewrite it in the layout of the older code
    data["train_config"].update(depth_max=0.0, depth_max_percentile=data["model_config"].pop("depth_max_percentile"))
    del data["model_config"]["depth_max"]
    data.pop("content_sha256")  # the older code recorded no digest
    torch.save(data, r1.last)
    ck = load_checkpoint(r1.last)
    assert ck.model_config.depth_max_percentile == 97.0 and "depth_max_percentile" not in ck.train_config
    tc2 = TrainConfig(epochs=2, batch_size=16, split="random", progress=False, tensorboard=False, device="cpu")
    with pytest.raises(CheckpointError, match=r"depth_max_percentile: checkpoint 97\.0 vs requested 99\.0"):
        train_model(toy, out, preset_config("base", size=64, outputs="depth"), tc2, resume=True)
    r2 = train_model(toy, out, mc, tc2, resume=True)
    assert r2.epochs == 2 and load_checkpoint(r2.last).model_config.depth_max_percentile == 97.0
