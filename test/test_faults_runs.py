"""Interrupted runs and command-line slips: a killed training run resumed, a killed `train --overwrite`, an
interrupted `sim --overwrite` and `record --out-bag`, outputs that are dangling symlinks, unknown flags (rows of
the fault table in docs/reliability.md)."""

from __future__ import annotations

import csv
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pose2rgbd.cli.main import main
from pose2rgbd.experiments.toy import make_toy_dataset

torch = pytest.importorskip("torch")


# ------------------------------------------------------------------------------- train --resume after a kill
@dataclass
class NoisyConfig:
    size: int = 8


def _noisy_model_class() -> type:
    from toy_renderer import ToyRenderer

    class NoisyRenderer(ToyRenderer):
        """Draws from every global generator while training, as pose perturbations, dropout or augmentation do."""

        kind = "noisy-render"

        def get_outputs(self, batch: dict[str, Any]) -> dict[str, Any]:
            pose = batch["pose"]
            if self.training:
                jitter = torch.randn_like(pose) * 0.1 + float(np.random.normal()) * 0.01 + random.random() * 0.01  # noqa: NPY002
                pose = pose + jitter
            return self(pose)

    return NoisyRenderer


@pytest.fixture
def noisy() -> Any:
    from toy_renderer import toy_recipe

    from pose2rgbd.models import ModelFamily
    from pose2rgbd.models.registry import register_family, unregister_family

    cls = _noisy_model_class()
    family = ModelFamily(kind="noisy-render", config_cls=NoisyConfig, build=cls, data="pose_to_image",
                         engine="render", train=lambda: toy_recipe(cls, "noisy"))  # fmt: skip
    register_family(family)
    yield family
    unregister_family("noisy-render")


class _Killed(BaseException):
    """What SIGKILL does to a run, minus the process: it stops between two steps and nothing more runs."""


def _killer(at_step: int) -> Any:
    from pose2rgbd.training import Callback

    class Kill(Callback):
        def on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
            if trainer.step == at_step:
                raise _Killed()

    return Kill()


def _cfg(**kw: Any) -> Any:
    from pose2rgbd.training import TrainConfig

    base = dict(batch_size=4, max_steps=12, val_every=0, val_every_steps=0, checkpoint_every_steps=4,
                checkpoint_background=False, log_every=1, tensorboard=False, progress=False, seed=5,
                lr=0.05, val_fraction=0.2, prefetch_batches=2)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _log_steps(path: Path) -> list[int]:
    rows = list(csv.reader(path.read_text().splitlines()))[1:]
    return [int(r[1]) for r in rows if r[3] == "train" and r[4] == "loss"]


def test_resume_after_a_kill_equals_the_uninterrupted_run(noisy: Any, tmp_path: Path) -> None:
    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.training import train

    ds = make_toy_dataset(tmp_path / "ds", n_survey=12, n_route=4, size=8)
    ref = train("noisy-render", ds, tmp_path / "ref", NoisyConfig(), _cfg())
    assert ref.steps == 12
    out = tmp_path / "run"
    with pytest.raises(_Killed):  # killed at step 6: last.pt is of step 4, log.csv has rows of steps 5 and 6
        train("noisy-render", ds, out, NoisyConfig(), _cfg(), callbacks=[_killer(6)])
    assert load_checkpoint(out / "last.pt").step == 4 and _log_steps(out / "log.csv")[-1] == 6
    res = train("noisy-render", ds, out, NoisyConfig(), _cfg(), resume=True)
    assert res.steps == 12
    a, b = load_checkpoint(ref.last), load_checkpoint(res.last)
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[k], v, rtol=0, atol=0, msg=f"{k} differs")
    assert _log_steps(out / "log.csv") == list(range(1, 13))  # each step once: the killed run's 5, 6 dropped
    assert _log_steps(out / "log.csv") == _log_steps(tmp_path / "ref" / "log.csv")


def test_resume_after_a_killed_overwrite_says_what_it_found(
    noisy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pose2rgbd.output_guard import OutputError
    from pose2rgbd.training import run_folder, train

    ds = make_toy_dataset(tmp_path / "ds", n_survey=12, n_route=4, size=8)
    out = tmp_path / "run"
    train("noisy-render", ds, out, NoisyConfig(), _cfg(max_steps=4))
    with monkeypatch.context() as m, pytest.raises(_Killed):
        m.setattr(run_folder, "restore", lambda *a: None)  # SIGKILL: the put-back of a stopped run never runs
        # the replacing run is killed before its first checkpoint (step 4)
        train("noisy-render", ds, out, NoisyConfig(), _cfg(), overwrite=True, callbacks=[_killer(2)])
    aside = next(out.glob("previous-run-*"))
    assert not (out / "last.pt").exists() and (aside / "last.pt").exists()
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(OutputError, match=r"--resume found no last.pt to continue from") as e:
        train("noisy-render", ds, out, NoisyConfig(), _cfg(), resume=True)
    msg = str(e.value)
    assert str(aside) in msg and "its last.pt is at step 4" in msg and "--overwrite instead of --resume" in msg
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing changed


def test_resume_of_a_run_killed_before_its_first_checkpoint_says_it_starts_over(
    noisy: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pose2rgbd.training import train

    ds = make_toy_dataset(tmp_path / "ds", n_survey=12, n_route=4, size=8)
    out = tmp_path / "run"
    with pytest.raises(_Killed):
        train("noisy-render", ds, out, NoisyConfig(), _cfg(), callbacks=[_killer(2)])
    with caplog.at_level(logging.WARNING):
        res = train("noisy-render", ds, out, NoisyConfig(), _cfg(max_steps=3), resume=True)
    assert "no last.pt to resume from" in caplog.text and "starting from step 0" in caplog.text
    assert res.steps == 3 and _log_steps(out / "log.csv") == [1, 2, 3]


def _ctrl_c(at_step: int, times: int = 1) -> Any:
    """Ctrl-C (SIGINT to this process) from inside the step ``at_step``, ``times`` times."""
    import os
    import signal

    from pose2rgbd.training import Callback

    class CtrlC(Callback):
        def on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
            if trainer.step == at_step:
                for _ in range(times):
                    os.kill(os.getpid(), signal.SIGINT)

    return CtrlC()


@pytest.fixture
def default_sigint() -> Any:
    """Ctrl-C raises KeyboardInterrupt here, as in a command (a test runner may have set another handler)."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_stops_training_after_the_step_and_writes_last_pt(
    noisy: Any, default_sigint: Any, tmp_path: Path
) -> None:
    """The first Ctrl-C ends the training after its step with last.pt written (it used to end it at once, keeping
    only the checkpoints written so far: nothing in the first 5 minutes); --resume continues from it."""
    import signal

    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.training import train

    ds = make_toy_dataset(tmp_path / "ds", n_survey=12, n_route=4, size=8)
    out = tmp_path / "run"
    cfg = _cfg(max_steps=40, checkpoint_every_steps=0)  # no checkpoint due before the end
    res = train("noisy-render", ds, out, NoisyConfig(), cfg, callbacks=[_ctrl_c(5)], stop_on_ctrl_c=True)
    assert res.stop_reason == "interrupted (Ctrl-C)" and res.steps == 5
    assert load_checkpoint(out / "last.pt").step == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler before is back
    res = train("noisy-render", ds, out, NoisyConfig(), _cfg(max_steps=8), resume=True)
    assert res.steps == 8 and res.stop_reason != "interrupted (Ctrl-C)"
    assert _log_steps(out / "log.csv") == list(range(1, 9))


def test_a_second_ctrl_c_or_a_library_caller_stops_training_at_once(
    noisy: Any, default_sigint: Any, tmp_path: Path
) -> None:
    from pose2rgbd.training import train

    ds = make_toy_dataset(tmp_path / "ds", n_survey=12, n_route=4, size=8)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train("noisy-render", ds, out, NoisyConfig(), _cfg(max_steps=40, checkpoint_every_steps=0),
              callbacks=[_ctrl_c(5, times=2)], stop_on_ctrl_c=True)  # fmt: skip
    assert not (out / "last.pt").exists()
    out = tmp_path / "library"
    with pytest.raises(KeyboardInterrupt):  # a caller that trains as a stage of its own work: stopped at once
        train("noisy-render", ds, out, NoisyConfig(), _cfg(max_steps=40, checkpoint_every_steps=0),
              callbacks=[_ctrl_c(5)])  # fmt: skip
    assert not (out / "last.pt").exists()


def test_resume_without_last_pt_continues_from_best_pt(
    noisy: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run stopped before its first last.pt but after a validation that wrote best.pt: --resume continues from
    best.pt's step (it started from step 0, and its first validation replaced the earlier, better best.pt)."""
    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.training import train

    ds = make_toy_dataset(tmp_path / "ds", n_survey=12, n_route=4, size=8)
    out = tmp_path / "run"
    cfg = _cfg(max_steps=12, checkpoint_every_steps=0, val_every_steps=3, val_min_seconds=0.0)
    with pytest.raises(_Killed):
        train("noisy-render", ds, out, NoisyConfig(), cfg, callbacks=[_killer(7)])
    assert not (out / "last.pt").exists()
    best_step = load_checkpoint(out / "best.pt").step
    assert best_step in (3, 6)
    with caplog.at_level(logging.INFO):
        res = train("noisy-render", ds, out, NoisyConfig(), cfg, resume=True)
    assert "resuming from best.pt" in caplog.text and f"(step {best_step}," in caplog.text
    assert res.steps == 12
    assert _log_steps(out / "log.csv") == list(range(1, 13))  # each step once: the stopped run's later ones dropped


@pytest.mark.parametrize("workers", [0, 1])
def test_train_command_ctrl_c_writes_last_pt_says_how_to_resume_and_exits_130(workers: int, tmp_path: Path) -> None:
    """`pose2rgbd train` in its own process, Ctrl-C (to its whole process group, as a terminal sends it: DataLoader
    workers get it too) once it has logged steps: exit 130 (a script's `train && evaluate` stops), last.pt
    written, and the way on named."""
    import os
    import signal
    import subprocess
    import time

    from pose2rgbd.models import load_checkpoint

    ds = make_toy_dataset(tmp_path / "ds", n_survey=12, n_route=4, size=8)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "pose2rgbd", "train", "--method", "pose2rgbd", "--dataset", str(ds), "--out",
            str(out), "--size", "64", "--max-minutes", "5", "--no-progress", "--set", "train.log_every=1",
            "--set", f"train.num_workers={workers}"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        end = time.monotonic() + 240
        while time.monotonic() < end and proc.poll() is None:
            log_csv = out / "log.csv"
            if log_csv.is_file() and len(log_csv.read_text().splitlines()) > 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[0]
        os.killpg(proc.pid, signal.SIGINT)
        text = proc.communicate(timeout=240)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, text
    assert text.count("training stops after this step") == 1, text  # the training process's, not a worker's too
    assert "stopped by Ctrl-C: continue it with --resume" in text, text
    assert load_checkpoint(out / "last.pt").step > 0


def test_posegan_crops_do_not_depend_on_when_a_batch_is_made(tmp_path: Path) -> None:
    from pose2rgbd.dataset import build_cache
    from pose2rgbd.methods.posegan.config import PoseGANConfig
    from pose2rgbd.methods.posegan.net import PoseGAN
    from pose2rgbd.methods.posegan.recipe import PoseImageDataset
    from pose2rgbd.models import PoseNormalizer

    ds = make_toy_dataset(tmp_path / "ds", n_survey=4, n_route=1, size=48)
    mc = PoseGANConfig(size=32)
    cache = build_cache(ds, mc.load_size, progress=False)
    model = PoseGAN(mc)
    model.set_pose_normalizer(PoseNormalizer.fit(cache.T_world_cam, "6dof-quat"))
    data = PoseImageDataset(cache, [0, 1, 2, 3], model, random_crop=True, seed=1)
    torch.manual_seed(0)
    first = [data[k]["rgb"] for k in range(4)]
    torch.manual_seed(123)  # another point of the global stream (a batch made ahead, a resumed run)
    torch.rand(7)
    again = [data[k]["rgb"] for k in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    data.set_epoch(1)
    assert not all(torch.equal(a, data[k]["rgb"]) for k, a in enumerate(first))  # still random over epochs


# ------------------------------------------------------------------------------ sim --overwrite interrupted
SIM = ["--size", "16", "--duration", "2", "--route-duration", "1", "--no-progress", "--no-video"]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("stop", ["ctrl-c", "disk-full"])
def test_sim_overwrite_stopped_keeps_the_config_that_describes_the_kept_data(
    stop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno
    import os

    import pose2rgbd.sim.export as export_mod

    out = tmp_path / "sim"
    assert main(["sim", "--out", str(out), *SIM]) == 0
    before = _snapshot(out)
    real = export_mod.export_bag

    def stopped(*a: Any, **k: Any) -> Any:  # the dataset (with the new settings) is done, the bag is not
        if stop == "ctrl-c":
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(a[1]))

    monkeypatch.setattr(export_mod, "export_bag", stopped)
    rc = main(["sim", "--out", str(out), *SIM, "--size", "24", "--overwrite"])
    err = capsys.readouterr().err
    assert rc == (130 if stop == "ctrl-c" else 2), err
    assert _snapshot(out) == before  # sim_config.yaml and the dataset and bags it describes: as they were
    assert not [p.name for p in out.rglob(".*")]  # no staging folder left
    if stop == "ctrl-c":
        assert "nothing half-written was kept" in err
    else:
        assert f"{out / 'bags' / 'survey'}: no space left on the device" in err, err
    monkeypatch.setattr(export_mod, "export_bag", real)
    assert main(["sim", "--out", str(out), *SIM, "--size", "24", "--overwrite"]) == 0
    assert "width: 24" in (out / "sim_config.yaml").read_text()
    from pose2rgbd.dataset import Dataset

    assert Dataset(out / "dataset").camera.width == 24


# ----------------------------------------------------------------- record bag --out-bag interrupted, run again
@pytest.mark.parametrize("again", ["same command", "--overwrite"])
def test_record_again_after_an_interrupt_says_what_to_do_with_the_output_bag(
    again: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pose2rgbd.dataset import Dataset, DatasetWriter
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path / "flight"
    write_flight_bag(bag, duration_s=1.0, size=32)
    add = DatasetWriter.add_frame
    calls = {"n": 0}

    def add_then_interrupt(self: Any, *a: Any, **k: Any) -> Any:
        if calls["n"] == 4:
            raise KeyboardInterrupt  # Ctrl-C while the fifth frame is written
        calls["n"] += 1
        return add(self, *a, **k)

    ds, ob = tmp_path / "rec", tmp_path / "synced"
    cmd = ["record", "bag", "--bag", str(bag), "--out", str(ds), "--out-bag", str(ob)]
    with monkeypatch.context() as m:
        m.setattr(DatasetWriter, "add_frame", add_then_interrupt)
        assert main(cmd) == 130
    err = capsys.readouterr().err
    assert "to resume, run the same command again with a new output bag" in err, err
    before = _snapshot(ob)
    rc = main(cmd + (["--overwrite"] if again == "--overwrite" else []))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"the output bag {ob} holds" in err and "will be resumed after its 4 frames" in err, err
    assert "give a new output bag" in err and "(nothing was written)" in err
    if again == "--overwrite":
        assert "lose the messages recorded so far" in err
    assert _snapshot(ob) == before and len(Dataset(ds)) == 4  # what was recorded is all there
    assert main([*cmd[:-1], str(tmp_path / "synced-2")]) == 0  # the way out it names: the rest, into a new bag
    assert len(Dataset(ds)) > 4


# ------------------------------------------------------------------------------ without the [train] extra
def test_train_without_the_train_extra_names_the_extra() -> None:
    """Running it names the extra; its --help answers (test_packaging_pip.py, every command)."""
    argv = ["train", "--dataset", "d", "--out", "o"]
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    code = (
        "import sys; sys.modules['kornia'] = None  # as if `pip install pose2rgbd` without [train]\n"
        "from pose2rgbd.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=repo, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "ModuleNotFoundError" not in r.stderr, r.stderr
    assert "needs 'kornia', which is in the [train] extra" in r.stderr
    assert "pip install 'pose2rgbd[train]'" in r.stderr
    ok = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, cwd=repo, timeout=300)
    assert ok.returncode == 0 and "train" in ok.stdout  # the other commands still work


# ----------------------------------------------------------------------- outputs that are dangling symlinks
@pytest.mark.parametrize("link", ["dangling", "loop", "under-dangling"])
@pytest.mark.parametrize("command", ["sim", "train", "convert"])
def test_a_symlink_to_nothing_as_output_is_refused_before_any_work(
    command: str, link: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    out = tmp_path / "out"
    if link == "dangling":
        os.symlink(tmp_path / "gone", out)
    elif link == "loop":
        os.symlink(tmp_path / "out2", out)
        os.symlink(out, tmp_path / "out2")
    else:
        os.symlink(tmp_path / "gone", tmp_path / "parent")
        out = tmp_path / "parent" / "out"
    ds = make_toy_dataset(tmp_path / "ds", n_survey=6, n_route=2, size=8)
    argv = {
        "sim": ["sim", "--out", str(out), *SIM],
        "train": ["train", "--dataset", str(ds), "--out", str(out), "--size", "64", "--no-progress"],
        "convert": ["convert", "images", str(tmp_path / "no-such-input"), "--out", str(out)],
    }[command]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    what = "a symbolic link loop" if link == "loop" else "a symbolic link to"
    assert what in err and "(nothing was written)" in err, err
    assert not (ds / "cache").exists()  # refused before the training cache was built
    assert not (tmp_path / "gone").exists()


def test_a_disk_full_error_without_a_file_name_names_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno
    import os

    import pose2rgbd.dataset.writer as fmt

    def full(*a: Any, **k: Any) -> None:  # what write() into an open file raises: no file name
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fmt, "_atomic_write_bytes", full)
    out = tmp_path / "sim"
    assert main(["sim", "--out", str(out), *SIM, "--no-bag"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"pose2rgbd sim: error: {out}: no space left on the device"), err


# ------------------------------------------------------------------------------ tracebacks and unclear messages
def test_render_bag_where_no_pose_resolves_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pose2rgbd.models.checkpoint import save_checkpoint
    from pose2rgbd.testing.flight_bag import write_flight_bag
    from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint

    ck = make_ground_plane_checkpoint(16)
    ckpt = save_checkpoint(tmp_path / "m.pt", ck.model, dataset_fingerprint="x", camera=ck.camera)
    bag = tmp_path / "flight"
    write_flight_bag(bag, duration_s=1.0, size=16)
    out = tmp_path / "rendered"
    # the bag positional, as convert bag takes it (or --bag)
    rc = main(["render", "bag", str(bag), "--out", str(out), "--checkpoint", str(ckpt), "--device", "cpu",
               "--camera-frame", "no_such_frame", "--no-progress"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 1
    assert "nan ms" not in text and "latency" not in text, text
    assert "no frame was rendered: no transform map -> no_such_frame could be looked up" in text, text
    assert f"The output bag {out} holds only the node's diagnostics" in text
    for given, why in (([], "no input bag: give it as BAG or --bag BAG"),
                       ([str(bag), "--bag", str(tmp_path / "other")], "two bags given")):  # fmt: skip
        assert main(["render", "bag", *given, "--out", str(tmp_path / "o2"), "--checkpoint", str(ckpt)]) == 2
        assert why in capsys.readouterr().err


def test_an_unknown_flag_gets_the_closest_known_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "d", "--out", "o", "--train.lrr", "0.1"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "unrecognized argument --train.lrr; did you mean --train.lr" in err, err


def test_ctrl_c_while_the_commands_load_prints_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pose2rgbd.cli.main as main_mod

    def interrupted(command: str | None = None) -> Any:  # Ctrl-C in the first second: the modules are being imported
        raise KeyboardInterrupt

    monkeypatch.setattr(main_mod, "build_parser", interrupted)
    assert main_mod.main(["sim", "--out", "x"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "pose2rgbd: interrupted; nothing was started"


def test_train_on_a_read_only_dataset_leaves_no_empty_out_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    import pose2rgbd.dataset.cache as cache_mod

    def read_only(path: Path, kind: str = "partial") -> Path:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(cache_mod, "make_temp_dir", read_only)
    ds = make_toy_dataset(tmp_path / "ds", n_survey=6, n_route=2, size=8)
    out = tmp_path / "runs" / "new"
    rc = main(["train", "--dataset", str(ds), "--out", str(out), "--size", "64", "--no-progress"])
    assert rc == 2
    assert "pass --cache-root DIR" in capsys.readouterr().err
    assert not out.exists()


def test_overwrite_names_what_it_leaves_beside_the_new_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`train --overwrite` moves the earlier run's own files aside; an evaluation or export made from its
    checkpoints stays in the folder, and the log says so (they describe the earlier run, not the new best.pt)."""
    from pose2rgbd.training.run_folder import move_aside

    out = tmp_path / "run"
    (out / "eval-route").mkdir(parents=True)
    for name in ("best.pt", "last.pt", "config.yaml", "model.onnx"):
        (out / name).write_text(name)
    with caplog.at_level(logging.INFO, logger="pose2rgbd.training.run_folder"):
        aside = move_aside(out, ["best.pt", "last.pt", "config.yaml"])
    assert sorted(p.name for p in aside.iterdir()) == ["best.pt", "config.yaml", "last.pt"]
    assert sorted(p.name for p in out.iterdir()) == sorted([aside.name, "eval-route", "model.onnx"])  # nothing else
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "left as they are: eval-route, model.onnx" in said[0] and "make them again" in said[0]
    caplog.clear()
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "best.pt").write_text("best.pt")
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.training.run_folder"):
        move_aside(tmp_path / "alone", ["best.pt"])
    assert not caplog.records  # a folder of the run's files alone: nothing to say
