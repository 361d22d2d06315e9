"""Multi-process training (pose2rgbd.training.distributed): 2 CPU processes on gloo with batch B/2 each give
the parameters one process gets with batch B and the same seed (a one-objective model and a two-network model
with its own update order), resume across processes, and `torchrun --nproc_per_node 2 pose2rgbd train`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from pose2rgbd.models import ModelBase
from pose2rgbd.models.base import backward_and_step
from pose2rgbd.training import TrainConfig, Trainer
from pose2rgbd.training import distributed as dist_

REPO = Path(__file__).resolve().parents[1]


class _Lin(ModelBase):
    """One objective, no BatchNorm (BN would normalize with each process's half batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 4)

    def get_outputs(self, batch: dict) -> dict:
        return {"y": self.b(torch.tanh(self.a(batch["x"])))}

    def get_loss_dict(self, outputs: dict, batch: dict) -> dict:
        return {"mse": ((outputs["y"] - batch["x"].flip(-1)) ** 2).mean()}


class _TwoNets(ModelBase):
    """Two networks, two optimizers, its own update order (first the critic, then the generator on the updated
    critic), like a GAN: each optimizer's step averages only its own group's gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.gen = nn.Linear(4, 4)
        self.critic = nn.Linear(4, 1)

    def get_outputs(self, batch: dict) -> dict:
        return {"y": self.gen(batch["x"])}

    def get_loss_dict(self, outputs: dict, batch: dict) -> dict:
        return {"mse": ((outputs["y"] - batch["x"]) ** 2).mean()}

    def get_param_groups(self) -> dict:
        return {"generator": list(self.gen.parameters()), "critic": list(self.critic.parameters())}

    def train_step(self, batch: dict, optimizers: Any, *, autocast: Any, step: int) -> dict:
        x = batch["x"]
        c_loss = ((self.critic(x) - 1) ** 2).mean() + ((self.critic(self.gen(x).detach()) + 1) ** 2).mean()
        backward_and_step({"c": c_loss}, [optimizers["critic"]], step=step)
        y = self.gen(x)
        g_loss = ((self.critic(y) - 1) ** 2).mean() + ((y - x) ** 2).mean()
        backward_and_step({"g": g_loss}, [optimizers["generator"]], step=step)
        return {"critic/loss": c_loss.detach(), "generator/loss": g_loss.detach()}


MODELS = {"lin": _Lin, "two": _TwoNets}


def _data(n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [{"x": torch.randn(4, generator=g)} for _ in range(n)]


def _cfg(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "batch_size": 8, "seed": 5, "val_every": 0, "amp": "off", "device": "cpu", "progress": False,
        "tensorboard": False, "lr": 0.02,
    }  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _run(kind: str, steps: int, resume_at: int = 0) -> dict[str, torch.Tensor]:
    """Train ``steps`` steps (in two parts when ``resume_at``: state saved, new model and trainer, loaded)."""
    data = _data(32)  # 4 global batches of 8 per epoch

    def trainer(max_steps: int) -> Trainer:
        torch.manual_seed(0)
        return Trainer(MODELS[kind](), data, _cfg(max_steps=max_steps))

    tr = trainer(resume_at or steps)
    tr.fit()
    if resume_at:
        state = {
            "model": {k: v.clone() for k, v in tr.model.state_dict().items()},
            "opt": tr.optimizer_states(),
            "trainer": tr.trainer_state(),
        }
        tr = trainer(steps)
        with torch.no_grad():  # another start on every rank: the resume must restore it everywhere
            for p in tr.model.parameters():
                p.add_(float(dist_.current().rank + 1))
        tr.load_state(model_state=state["model"], optimizers=state["opt"], trainer_state=state["trainer"])
        tr.fit()
    return {k: v.detach().clone() for k, v in tr.model.state_dict().items()}


# (model kind, steps, resume_at): what the two processes train, one after the other in one process group
CASES = (("lin", 6, 0), ("two", 6, 0), ("lin", 7, 3))


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
         "MASTER_PORT": str(port)}
    )  # fmt: skip
    torch.set_num_threads(1)
    info, own = dist_.init_from_env("cpu", timeout_s=120)
    assert own and info.world_size == world and info.backend == "gloo"
    ended = False
    try:
        torch.save([_run(*case) for case in CASES], f"{out}.rank{rank}")
        ended = True
    finally:
        dist_.destroy(barrier=ended)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> list[list[dict[str, torch.Tensor]]]:
    """Each rank's final parameters for each of CASES (2 processes spawned once: starting them takes most of
    the time)."""
    out = str(tmp_path_factory.mktemp("ddp") / "params")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    return [torch.load(f"{out}.rank{r}", weights_only=True) for r in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("case", [0, 1], ids=["one-objective", "two-networks"])
def test_two_processes_equal_one_process_with_the_global_batch(case: int, two_processes: list) -> None:
    torch.set_num_threads(1)
    kind, steps, _ = CASES[case]
    single = _run(kind, steps)  # 1.5 epochs: crosses an epoch boundary (the sampler's set_epoch)
    for k, v in single.items():
        for r in range(2):
            torch.testing.assert_close(two_processes[r][case][k], v, rtol=1e-5, atol=1e-6, msg=f"rank {r} {k}")
    torch.manual_seed(0)
    init = MODELS[kind]().state_dict()
    assert any(not torch.allclose(init[k], single[k]) for k in single)  # it trained: the test can fail


@pytest.mark.slow
def test_resume_under_two_processes(two_processes: list) -> None:
    torch.set_num_threads(1)
    kind, steps, _ = CASES[2]
    single = _run(kind, steps)  # uninterrupted, one process; the two processes resumed inside the first epoch
    for k, v in single.items():
        for r in range(2):
            torch.testing.assert_close(two_processes[r][2][k], v, rtol=1e-5, atol=1e-6, msg=f"rank {r} {k}")


def test_a_run_that_ended_leaves_the_group_after_a_barrier_and_a_failed_one_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every rank waits for the others before tearing the group down (one that left early made another abort at
    exit), but not after an error, where another rank may never come."""
    import importlib

    import torch.distributed as dist

    train_mod = importlib.import_module("pose2rgbd.training.train")  # the module (the package exports its function)
    calls: list[str] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    dist_.destroy(barrier=True)
    dist_.destroy()
    assert calls == ["barrier", "destroy", "destroy"]

    seen: list[bool] = []
    monkeypatch.setattr(dist_, "init_from_env", lambda device: (dist_.SINGLE, True))
    monkeypatch.setattr(dist_, "destroy", lambda *, barrier=False: seen.append(barrier))
    monkeypatch.setattr(train_mod, "train_one_process", lambda *a, **k: "trained")
    assert train_mod.train("toy", "ds", "out") == "trained"

    def fail(*a: object, **k: object) -> None:
        raise ValueError("a rank failed")

    monkeypatch.setattr(train_mod, "train_one_process", fail)
    with pytest.raises(ValueError, match="a rank failed"):
        train_mod.train("toy", "ds", "out")
    assert seen == [True, False]


def test_global_batch_must_split_evenly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pose2rgbd.errors import ConfigError

    monkeypatch.setattr(dist_, "current", lambda: dist_.DistInfo(0, 3, 0, "gloo"))
    with pytest.raises(ConfigError, match=r"batch_size 8 is the global batch .* \(3\); use e.g. 6"):
        Trainer(_Lin(), _data(8), _cfg())


@pytest.mark.slow
def test_torchrun_trains_and_resumes_pose2rgbd(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 -m pose2rgbd train` on the toy set, then a resume under torchrun."""
    from pose2rgbd.experiments.toy import make_toy_dataset
    from pose2rgbd.models import load_checkpoint

    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torchrun is not installed next to this python")
    ds = make_toy_dataset(tmp_path / "ds", n_survey=24, n_route=8, size=32)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def run(steps: int, *extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [
            str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "--master_port",
            str(_free_port()), "-m", "pose2rgbd", "train", "--dataset", str(ds), "--out", str(out),
            "--preset", "base", "--size", "64", "--batch-size", "4", "--no-progress", "--no-tensorboard",
            "--device", "cpu", "--train.max_steps", str(steps), "--train.checkpoint_every_steps", "2", *extra,
        ]  # fmt: skip
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)

    r = run(3)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("trained base") == 2  # both ranks return; only rank 0 wrote
    ck = load_checkpoint(out / "last.pt")
    assert ck.step == 3 and ck.train_config["batch_size"] == 4
    assert "depth_uncertainty" in ck.extra  # rank 0 fitted it while rank 1 waited (then both returned)
    r = run(5, "--resume")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ck = load_checkpoint(out / "last.pt")
    assert ck.step == 5 and "depth_uncertainty" in ck.extra  # a resumed run's weights get their own
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("wall_s") and sum(r.startswith("wall_s") for r in rows) == 1  # appended once
