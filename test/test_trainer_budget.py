"""Trainer length and cadence: a time budget alone sets the length, validation / checkpoints by steps and
seconds (a fake clock), background checkpoint writes (complete, atomic, errors surface), resume inside an
epoch, batches made ahead in a thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pose2rgbd.errors import ConfigError
from pose2rgbd.models import ModelBase
from pose2rgbd.training import Callback, CheckpointCallback, TrainConfig, Trainer
from pose2rgbd.training.callbacks import BackgroundWriter, atomic_copy


class _Lin(ModelBase):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def get_outputs(self, batch: dict) -> dict:
        return {"y": self.lin(batch["x"])}

    def get_loss_dict(self, outputs: dict, batch: dict) -> dict:
        return {"mse": ((outputs["y"] - batch["x"].flip(-1)) ** 2).mean()}


def _data(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(3, generator=g)} for _ in range(n)]


class _FakeClock(Callback):
    """Training time advances ``dt`` seconds per step (the trainer reads ``trainer.clock``)."""

    def __init__(self, dt: float) -> None:
        self.t, self.dt = 0.0, dt

    def __call__(self) -> float:
        return self.t

    def on_step_end(self, trainer: Trainer, logs: dict) -> None:
        self.t += self.dt


class _Record(Callback):
    def __init__(self) -> None:
        self.val_steps: list[int] = []
        self.ckpt_steps: list[tuple[int, bool]] = []

    def on_validation_end(self, trainer: Trainer, logs: dict) -> None:
        self.val_steps.append(trainer.step)

    def on_checkpoint(self, trainer: Trainer, *, last_due: bool) -> None:
        self.ckpt_steps.append((trainer.step, last_due))


def _trainer(cfg: TrainConfig, n: int = 8, dt: float = 1.0, val: bool = True) -> tuple[Trainer, _Record]:
    clock, rec = _FakeClock(dt), _Record()
    data = _data(n)
    torch.manual_seed(0)  # the same initial weights in every trainer
    tr = Trainer(_Lin(), data, cfg, val_set=data[:2] if val else None, callbacks=[clock, rec])
    tr.clock = clock
    return tr, rec


_BASE = {"progress": False, "tensorboard": False, "amp": "off", "device": "cpu"}


def test_time_budget_alone_sets_the_length() -> None:
    assert TrainConfig().max_epochs == 100  # no budget: the paper's 100 epochs
    assert TrainConfig(max_minutes=1).max_epochs is None and TrainConfig(max_steps=5).max_epochs is None
    assert TrainConfig(epochs=3, max_minutes=1).max_epochs == 3  # epochs given: the first limit wins
    # 1 batch per epoch, 1/4 s per step, 0.5 min: 120 steps = 120 epochs (more than the old 100-epoch cap)
    tr, _ = _trainer(TrainConfig(batch_size=8, max_minutes=0.5, val_every=0, **_BASE), dt=0.25)
    tr.fit()
    assert tr.step == 120 and tr.epoch == 120
    assert tr.stop_reason == "time budget 0.5 min reached"
    tr, _ = _trainer(TrainConfig(batch_size=8, epochs=7, max_minutes=0.5, val_every=0, **_BASE), dt=0.125)
    assert tr.fit().step == 7 and tr.stop_reason == "done"
    with pytest.raises(ConfigError, match=r"cosine schedule.*max_steps, train.epochs"):
        _trainer(TrainConfig(max_minutes=1, groups={"model": {"schedule": "cosine"}}, **_BASE))
    with pytest.raises(ConfigError, match="val_min_seconds"):
        TrainConfig(val_min_seconds=-1)


def test_validation_and_checkpoints_by_steps() -> None:
    cfg = TrainConfig(
        batch_size=2, max_steps=20, val_every=0, val_every_steps=5, val_min_seconds=0,
        checkpoint_every_seconds=0, checkpoint_every_steps=7, **_BASE,
    )  # fmt: skip
    tr, rec = _trainer(cfg, n=8)
    tr.fit()
    assert tr.step == 20 and tr.epoch == 5
    assert rec.val_steps == [5, 10, 15, 20]  # 20: the final validation (once)
    # offered after each validation (last.pt not due) and when last.pt is due (7, 14); the end is on_train_end
    assert rec.ckpt_steps == [(5, False), (7, True), (10, False), (14, True), (15, False)]


def test_validation_at_most_every_n_seconds_and_checkpoints_by_seconds() -> None:
    # 1 step per epoch, 1 s per step: validation is due every epoch but waits for val_min_seconds = 10 s
    cfg = TrainConfig(batch_size=8, max_steps=40, val_every=1, val_min_seconds=10, checkpoint_every_seconds=15, **_BASE)
    tr, rec = _trainer(cfg, n=8)
    tr.fit()
    assert rec.val_steps == [10, 20, 30, 40]
    assert [s for s, last in rec.ckpt_steps if last] == [15, 30]
    # by seconds alone
    cfg = TrainConfig(batch_size=8, max_steps=25, val_every=0, val_every_seconds=6, val_min_seconds=0, **_BASE)
    tr, rec = _trainer(cfg, n=8)
    tr.fit()
    assert rec.val_steps == [6, 12, 18, 24, 25]


def test_no_validation_when_every_cadence_is_off() -> None:
    tr, rec = _trainer(TrainConfig(batch_size=4, max_steps=6, val_every=0, **_BASE))
    tr.fit()
    assert rec.val_steps == [] and tr.last_val == {}


def test_resume_inside_an_epoch_continues_the_same_order() -> None:
    cfg = TrainConfig(batch_size=2, max_steps=11, val_every=0, seed=3, **_BASE)  # 5 batches per epoch
    ref, _ = _trainer(cfg, n=10)
    ref.fit()
    first, _ = _trainer(TrainConfig(**{**cfg.__dict__, "max_steps": 7}), n=10)
    first.fit()
    assert (first.epoch, first.epoch_step) == (1, 2)
    state = first.trainer_state()
    second, _ = _trainer(cfg, n=10)
    second.load_state(model_state=first.model.state_dict(), optimizers=first.optimizer_states(), trainer_state=state)
    second.fit()
    assert second.step == 11 and (second.epoch, second.epoch_step) == (2, 1)
    for a, b in zip(ref.model.parameters(), second.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    # without the skip (epoch_step dropped) the result differs: the test can fail
    third, _ = _trainer(cfg, n=10)
    third.load_state(
        model_state=first.model.state_dict(),
        optimizers=first.optimizer_states(),
        trainer_state={**state, "epoch_step": 0},
    )
    third.fit()
    assert not all(torch.equal(a, b) for a, b in zip(ref.model.parameters(), third.model.parameters()))


class _Bad(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        if i == 5:
            raise ValueError("frame 5 is unreadable")
        return {"x": torch.ones(3)}


@pytest.mark.parametrize("prefetch", [0, 2])
def test_batch_errors_reach_the_training_thread(prefetch: int) -> None:
    cfg = TrainConfig(batch_size=1, epochs=1, val_every=0, prefetch_batches=prefetch, **_BASE)
    tr = Trainer(_Lin(), _Bad(), cfg)
    with pytest.raises(ValueError, match="frame 5 is unreadable"):
        tr.fit()
    assert tr.step < 8


def test_prefetch_gives_the_same_result_as_the_loop() -> None:
    out = []
    for prefetch in (0, 3):
        tr, _ = _trainer(TrainConfig(batch_size=2, max_steps=9, val_every=0, prefetch_batches=prefetch, **_BASE))
        tr.fit()
        out.append([p.detach().clone() for p in tr.model.parameters()])
    for a, b in zip(*out):
        assert torch.equal(a, b)


def _snapshot_writer(delay: float, log: list[str], fail: bool = False) -> Any:
    def snapshot(trainer: Trainer) -> Any:
        state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        step = trainer.step

        def write(path: Path) -> None:
            log.append(f"start {path.name} {step} {threading.current_thread().name}")
            time.sleep(delay)  # training goes on meanwhile
            if fail:
                raise OSError(28, "No space left on device")
            tmp = path.with_name(f".{path.name}.tmp-1")
            torch.save({"state": state, "step": step}, tmp)
            tmp.replace(path)
            log.append(f"end {path.name} {step}")

        return write

    return snapshot


class _Weights(Callback):
    """The weights at each checkpoint offer (what a checkpoint of that moment must hold)."""

    def __init__(self) -> None:
        self.at: dict[int, dict[str, torch.Tensor]] = {}

    def on_checkpoint(self, trainer: Trainer, *, last_due: bool) -> None:
        self.at[trainer.step] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_background_checkpoint_is_complete_and_holds_the_weights_of_its_step(tmp_path: Path) -> None:
    log: list[str] = []
    weights = _Weights()
    cb = CheckpointCallback(tmp_path, snapshot=_snapshot_writer(0.3, log), background=True)
    cfg = TrainConfig(
        batch_size=2, max_steps=8, val_every=0, checkpoint_every_seconds=0, checkpoint_every_steps=4, **_BASE
    )
    steps_during_write: list[int] = []

    class _Watch(Callback):
        def on_step_end(self, trainer: Trainer, logs: dict) -> None:
            if cb.writer is not None and cb.writer.busy:
                steps_during_write.append(trainer.step)

    data = _data(8)
    tr = Trainer(_Lin(), data, cfg, callbacks=[weights, _Watch(), cb])
    tr.fit()
    # the write at step 4 ran in another thread while steps 5.. trained; the final one is joined at the end
    assert steps_during_write and min(steps_during_write) == 5
    assert any("pose2rgbd-checkpoint-writer" in e for e in log if e.startswith("start last.pt 4"))
    assert log[-1] == "end last.pt 8" and not cb.writer.busy  # type: ignore[union-attr]
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["step"] == 8
    for k, v in tr.model.state_dict().items():
        assert torch.equal(saved["state"][k], v)
    # a checkpoint holds the weights of its own step, not later ones (the snapshot copied them)
    assert 4 in weights.at and not torch.equal(weights.at[4]["lin.weight"], saved["state"]["lin.weight"])
    assert not list(tmp_path.glob(".*tmp*"))


def test_background_write_errors_stop_training(tmp_path: Path) -> None:
    cb = CheckpointCallback(tmp_path, snapshot=_snapshot_writer(0.05, [], fail=True), background=True)
    cfg = TrainConfig(
        batch_size=1, max_steps=200, val_every=0, checkpoint_every_seconds=0, checkpoint_every_steps=2, **_BASE
    )

    class _Slow(Callback):
        def on_step_end(self, trainer: Trainer, logs: dict) -> None:
            time.sleep(0.01)

    tr = Trainer(_Lin(), _data(8), cfg, callbacks=[_Slow(), cb])
    with pytest.raises(OSError, match=r"No space left on device") as err:
        tr.fit()
    assert err.value.errno == 28 and tr.step < 200  # surfaced during training, not only at the end
    # and at the end, when the failing write is the last one
    w = BackgroundWriter()
    w.submit(lambda: (_ for _ in ()).throw(OSError(30, "Read-only file system")), what="x/last.pt")
    with pytest.raises(OSError, match=r"Read-only"):
        w.join()


def test_best_and_last_due_together_write_once_and_copy(tmp_path: Path) -> None:
    log: list[str] = []
    cb = CheckpointCallback(tmp_path, snapshot=_snapshot_writer(0.0, log), background=True)
    cfg = TrainConfig(batch_size=8, max_steps=3, val_every=1, val_min_seconds=0, checkpoint_every_steps=1, **_BASE)
    data = _data(8)
    Trainer(_Lin(), data, cfg, val_set=data[:2], callbacks=[cb]).fit()
    starts = [e.split()[1] for e in log if e.startswith("start")]
    assert starts[0] == "best.pt"  # step 1: best and last due together, last.pt is a copy of best.pt
    assert (tmp_path / "best.pt").read_bytes() != b"" and (tmp_path / "last.pt").exists()
    assert cb.writes >= 2 and len(starts) < cb.writes  # some files were copies, not second serializations


def test_atomic_copy_replaces_whole_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.pt", tmp_path / "b.pt"
    src.write_bytes(b"new" * 1000)
    dst.write_bytes(b"old")
    atomic_copy(src, dst)
    assert dst.read_bytes() == src.read_bytes() and not list(tmp_path.glob(".b.pt.*"))
