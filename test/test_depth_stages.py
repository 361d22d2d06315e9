"""Algorithm 2 as stages (pose2rgbd/convert/stages/depth_chain.py, work.py): the video-only frames go through the
conversion pipeline (repeated frames dropped, resized, a report), each stage is cached by its key in the work
folder, a stopped stage is made again or, training, resumed, and a stopped `convert video --depth selfsup`
continues from its finished stages."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pose2rgbd.evaluation.point_depth import estimated_depth_source


def _video(path: Path, n: int, frozen: tuple[int, ...] = (), wh: tuple[int, int] = (64, 64), blur: float = 1.0) -> Path:
    """An MJPEG video (every frame coded on its own, so a repeated frame decodes to the same pixels) of a random
    texture blurred by ``blur`` px sliding 2 px a frame; the frames in ``frozen`` repeat the one before them."""
    noise = np.random.default_rng(0).integers(0, 256, (wh[1], wh[0] + 4 * n, 3)).astype(np.uint8)
    tex = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), blur), None, 0, 255, cv2.NORM_MINMAX)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, wh)
    k = 0
    for i in range(n):
        if i not in frozen:
            k = i
        wr.write(np.ascontiguousarray(tex[:, 2 * k : 2 * k + wh[0]]))
    wr.release()
    return path


def test_video_frames_source_drops_frozen_frames_resizes_and_writes_the_report(tmp_path: Path) -> None:
    """The first stage of the video-only path writes through the pipeline: a frozen stretch of the video is
    dropped and counted, --size resizes with the pipeline's camera, report/summary.json is there."""
    from pose2rgbd.config import from_dict
    from pose2rgbd.convert import source_class
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.pipeline import convert
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.geometry import PinholeCamera

    video = _video(tmp_path / "clip.avi", 12, frozen=(4, 5, 6), wh=(64, 48))
    cfg = from_dict(ConvertConfig, {"size": "32x24", "hfov_deg": 70.0})
    out = convert(source_class("video-frames")(video, cfg), tmp_path / "frames", cfg.output, progress=False)
    ds = Dataset(out)
    assert len(ds) == 9  # 12 frames, 3 of them repeating the one before
    assert ds.manifest.depth_kind == "none" and ds.manifest.extra["poses"]["kind"] == "placeholder"
    assert (ds.camera.width, ds.camera.height) == (32, 24) and ds.read_rgb(0).shape == (24, 32, 3)
    cam = PinholeCamera.from_fov(64, 48, 70.0).scaled(32, 24)
    assert ds.camera.fx == pytest.approx(cam.fx) and ds.camera.cx == pytest.approx(cam.cx)
    np.testing.assert_allclose(ds.frames.T_world_cam, np.tile(np.eye(4), (9, 1, 1)))
    stamps = ds.frames.stamp_ns
    assert stamps[0] == 0 and np.all(np.diff(stamps) > 0) and 7 * 10**8 in stamps.tolist()  # frame 7 at 0.7 s
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["frames"]["total"] == 12 and summary["frames"]["written"] == 9
    assert summary["frames"]["repeats"]["repeats"] == 3
    assert ds.manifest.extra["conversion"]["frames"]["written"] == 9
    # --keep-repeats keeps them, as for every other source
    keep = from_dict(ConvertConfig, {"output": {"keep_repeats": True}})
    assert len(Dataset(convert(source_class("video-frames")(video, keep), tmp_path / "all", keep.output,
                               progress=False))) == 12  # fmt: skip


@dataclass
class _Toy:
    """A stage that writes ``value`` into a file, counting its runs; ``fail`` stops it half-way (a partial file
    left behind, as a killed process would)."""

    value: int
    resumable: bool = False
    fail: bool = False
    name: str = "toy.txt"
    runs: list[bool] = field(default_factory=list)  # per run: was a stopped run's output there when it started

    def key(self) -> dict[str, Any]:
        return {"value": self.value, "arr": np.arange(2), "path": Path("a")}  # NumPy / Path values compare too

    def run(self, dest: Path, *, progress: bool) -> None:
        self.runs.append(dest.exists())
        dest.write_text("partial")
        if self.fail:
            raise KeyboardInterrupt
        dest.write_text(str(self.value))


def test_a_stage_is_cached_by_its_key_made_again_when_stopped_and_resumed_when_it_can(tmp_path: Path) -> None:
    from pose2rgbd.convert.stages.work import finished_stages, run_stage, stage_state

    work = tmp_path / "work"
    a = _Toy(1)
    p = run_stage(a, work, progress=False)
    assert p.path.read_text() == "1" and p.key["value"] == 1 and len(a.runs) == 1
    assert stage_state(a, work) == "cached" and finished_stages(work, [a]) == ["toy.txt"]
    assert run_stage(a, work, progress=False).path == p.path and len(a.runs) == 1  # cached: not run again
    b = _Toy(2)  # another key: made again
    assert run_stage(b, work, progress=False).path.read_text() == "2" and b.runs == [False]
    # stopped half-way: a stage that cannot resume starts from nothing, one that can finds its output
    c = _Toy(3, fail=True)
    with pytest.raises(KeyboardInterrupt):
        run_stage(c, work, progress=False)
    assert stage_state(c, work) == "run" and finished_stages(work, [b, c]) == []
    d = _Toy(3)
    run_stage(d, work, progress=False)
    assert d.runs == [False] and (work / "toy.txt").read_text() == "3"
    e = _Toy(4, resumable=True, fail=True)
    with pytest.raises(KeyboardInterrupt):
        run_stage(e, work, progress=False)
    assert finished_stages(work, [e]) == ["toy.txt"]  # a stopped run that can continue is worth keeping
    e.resumes_from = lambda dest: False  # type: ignore[attr-defined]  # e.g. training stopped before its first checkpoint
    assert finished_stages(work, [e]) == []  # it would start again: not named as kept
    f = _Toy(4, resumable=True)
    assert stage_state(f, work) == "resume"
    run_stage(f, work, progress=False)
    assert f.runs == [True] and stage_state(f, work) == "cached"


def _tiny_model() -> Any:
    from pose2rgbd.methods.selfsup_depth.config import PRESETS, SelfSupDepthConfig

    return SelfSupDepthConfig(**{**PRESETS["tiny"], "width": 64, "height": 64, "stride": 1})  # type: ignore[arg-type]


def test_each_stage_runs_on_its_own_and_a_stopped_training_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The frames and the training stage run one by one in a work folder; a training stopped after its checkpoint
    (its record still 'running') continues from last.pt instead of starting again; a finished one is reused."""
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.video import VideoFramesSource
    from pose2rgbd.convert.stages.depth_chain import FramesStage, TrainStage
    from pose2rgbd.convert.stages.work import RECORD_SUFFIX, run_stage
    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.training.config import TrainConfig

    work = tmp_path / "work"
    cfg = ConvertConfig()
    video = _video(tmp_path / "clip.avi", 8)
    frames = run_stage(FramesStage(VideoFramesSource(video, cfg), cfg.output, {"config": {}}), work, progress=False)
    assert (frames.path / "report" / "summary.json").is_file()
    tc = TrainConfig(epochs=1, max_steps=2, batch_size=2, val_every=0, progress=False, tensorboard=False)
    stage = TrainStage(frames, None, _tiny_model(), tc)
    run = run_stage(stage, work, progress=False)
    ck = TrainStage.checkpoint(run)
    assert load_checkpoint(ck).step == 2
    rec = work / f"run{RECORD_SUFFIX}"
    rec.write_text(rec.read_text().replace('"done"', '"running"'))  # as if stopped after its last checkpoint
    with caplog.at_level(logging.INFO):
        run_stage(stage, work, progress=False)
    assert "continuing the stopped run" in caplog.text and "resuming from" in caplog.text
    assert load_checkpoint(ck).step == 2  # continued at step 2 (max_steps): no step done again
    mtime = ck.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_stage(TrainStage(frames, None, _tiny_model(), tc), work, progress=False)
    assert "reusing" in caplog.text and ck.stat().st_mtime_ns == mtime
    # the frames changed (here: another video): the training is made again, from the start
    video2 = _video(tmp_path / "clip2.avi", 9)
    frames2 = run_stage(FramesStage(VideoFramesSource(video2, cfg), cfg.output, {"config": {}}), work,
                        progress=False)  # fmt: skip
    assert frames2.key != frames.key
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_stage(TrainStage(frames2, None, _tiny_model(), tc), work, progress=False)
    assert "resuming from" not in caplog.text and load_checkpoint(ck).step == 2


@pytest.mark.slow
def test_a_stopped_video_depth_run_continues_from_its_finished_stages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`convert video --depth selfsup` without GPS whose export fails (COLMAP finds too little texture) keeps the
    work folder; the same call with another trajectory back end reuses the frames and the training (not run
    again), writes the dataset and removes the work folder. The frames stage dropped the frozen frames."""
    import torch

    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.stages.depth_export import KEPT_NETWORK, export_depth
    from pose2rgbd.convert.video_depth import convert_video_with_depth, work_folder
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.errors import Pose2RGBDError
    from pose2rgbd.methods.selfsup_depth.trajectory import TrajectoryConfig
    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.training.config import TrainConfig

    video = _video(tmp_path / "clip.avi", 10, frozen=(3,), blur=6.0)  # too smooth for COLMAP's features
    out = tmp_path / "out"
    tc = TrainConfig(epochs=1, max_steps=2, batch_size=2, val_every=0, progress=False, tensorboard=False)
    kw: dict[str, Any] = {"model_cfg": _tiny_model(), "train_cfg": tc, "progress": False}
    with pytest.raises(Pose2RGBDError, match="run the same command again"):
        convert_video_with_depth(video, None, out, ConvertConfig(), **kw)
    work = work_folder(out)
    assert not out.exists() and (work / "run" / "last.pt").is_file()
    trained = load_checkpoint(work / "run" / "last.pt")  # reused by the second call below
    trained_size = (work / "run" / "last.pt").stat().st_size
    assert json.loads((work / "frames" / "report" / "summary.json").read_text())["frames"]["repeats"]["repeats"] == 1
    with caplog.at_level(logging.INFO):
        res = convert_video_with_depth(video, None, out, ConvertConfig(),
                                       trajectory_cfg=TrajectoryConfig(backend="pose-graph"), **kw)  # fmt: skip
    assert "frames: reusing" in caplog.text and "run: reusing" in caplog.text
    assert "resuming from" not in caplog.text
    ds = Dataset(res.path)
    assert len(ds) == 9 and ds.manifest.depth_kind == "unscaled"
    assert ds.manifest.extra["poses"]["kind"] == "pseudo-absolute"
    # the video's own poses without GPS: no metres (dataset info had shown "extent (m)" for them)
    assert ds.manifest.pose_units == "unscaled" and ds.manifest.resolved_pose_units == "unscaled"
    assert estimated_depth_source(ds) == "selfsup-depth"  # evaluate scores its depth at triangulated points too
    assert not work.exists()
    # the network is kept with its depth (the work folder is gone): the manifest names it inside the dataset
    assert ds.manifest.extra["depth"]["checkpoint"] == KEPT_NETWORK
    kept = load_checkpoint(res.path / KEPT_NETWORK)
    assert kept.step == trained.step and kept.train_config == trained.train_config
    # only what resuming the training needs is left out: the optimizers' state, most of the file
    assert trained.optimizers and not kept.optimizers
    assert "trainer_state" in trained.extra and "trainer_state" not in kept.extra
    # ... so the kept network is not resumed as if its moments were there: refused with the reason
    from pose2rgbd.config import from_dict
    from pose2rgbd.errors import CheckpointError
    from pose2rgbd.training.run_folder import check_resume

    def resume(ck: Any) -> None:
        check_resume(work / "last.pt", ck, ck.family, ck.model_config, from_dict(TrainConfig, ck.train_config),
                     ck.dataset_fingerprint)  # fmt: skip

    resume(trained)
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        resume(kept)
    assert (res.path / KEPT_NETWORK).stat().st_size < 0.6 * trained_size
    for name, t in trained.model.state_dict().items():
        assert torch.equal(t, kept.model.state_dict()[name]), name
    again = export_depth(res.path, res.path / KEPT_NETWORK, tmp_path / "again", gps="off", progress=False)
    assert again.frames == len(ds)
    np.testing.assert_allclose(Dataset(again.path).read_depth(4), ds.read_depth(4), rtol=1e-5, equal_nan=True)
    assert Dataset(again.path).manifest.extra["depth"]["checkpoint"] == str((res.path / KEPT_NETWORK).resolve())
    assert not (again.path / KEPT_NETWORK).exists()  # only where asked (the chain): a user's checkpoint stays theirs


def test_ctrl_c_in_the_depth_training_keeps_its_step_and_stops_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C inside the depth training's first step: the training ends after the step with last.pt (before: nothing
    was kept before the first checkpoint interval, 5 minutes), the stage still stops the run (KeyboardInterrupt, as
    a command's Ctrl-C), the Ctrl-C handler before is back, and the stage run again continues from step 1."""
    import importlib
    import os
    import signal

    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.video import VideoFramesSource
    from pose2rgbd.convert.stages.depth_chain import FramesStage, TrainStage
    from pose2rgbd.convert.stages.work import run_stage
    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.training import Callback
    from pose2rgbd.training.config import TrainConfig

    class CtrlC(Callback):
        def on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
            if trainer.step == 1:
                os.kill(os.getpid(), signal.SIGINT)

    train_mod = importlib.import_module("pose2rgbd.training.train")  # the module (the package exports the function)
    real = train_mod.train
    monkeypatch.setattr(train_mod, "train", lambda *a, **kw: real(*a, callbacks=[CtrlC()], **kw))
    work = tmp_path / "work"
    cfg = ConvertConfig()
    video = _video(tmp_path / "clip.avi", 8)
    frames = run_stage(FramesStage(VideoFramesSource(video, cfg), cfg.output, {"config": {}}), work, progress=False)
    tc = TrainConfig(epochs=10, max_steps=3, batch_size=2, val_every=0, progress=False, tensorboard=False,
                     checkpoint_every_steps=0)  # fmt: skip
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_stage(TrainStage(frames, None, _tiny_model(), tc), work, progress=False)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert load_checkpoint(work / "run" / "last.pt").step == 1
    monkeypatch.setattr(train_mod, "train", real)
    run = run_stage(TrainStage(frames, None, _tiny_model(), tc), work, progress=False)
    assert load_checkpoint(TrainStage.checkpoint(run)).step == 3
