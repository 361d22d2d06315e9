"""A failed `convert video --depth selfsup | mvs | selfsup+mvs` names the stages of this run that are kept in the work
folder, and only those: not a stage that failed and cannot continue, not the records an earlier run with other
settings or another --depth left there (pose2rgbd/convert/video_depth.py, stages/work.py `finished_stages`).

Each stage's `run` is replaced by one that writes a stand-in output or raises, so the chain's bookkeeping is what
is tested, in milliseconds; the stages themselves are tested in test_depth_stages.py and test_mvs.py."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from pose2rgbd.convert.mvs_depth import MvsStage
from pose2rgbd.convert.stages.depth_chain import ExportStage, FramesStage, MetricPosesStage, TrainStage
from pose2rgbd.errors import Pose2RGBDError
from pose2rgbd.methods.selfsup_depth.metric import MetricPosesConfig

STAGES = {"frames": FramesStage, "sfm": MetricPosesStage, "train": TrainStage, "export": ExportStage,
          "stereo": MvsStage}  # fmt: skip


class _GpsSource:
    """Stands in for a video source: what the frames stage's key reads (its kind, its input files)."""

    kind = "video"

    def __init__(self, video: Path, *args: Any, **kw: Any) -> None:
        self.video = video

    def inputs(self) -> list[Path]:
        return [self.video]


class _FramesOnly(_GpsSource):
    kind = "video-frames"


@pytest.fixture
def chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``run(depth, fail=STAGE, gps=True, **kw)``: the chain with every stage a stand-in, ``fail`` raising a
    Pose2RGBDError (or ``interrupt``: Ctrl-C) in that stage after it began its output; returns the error."""
    import pose2rgbd.convert.video_depth as vd

    monkeypatch.setattr(vd, "VideoSource", _GpsSource)
    monkeypatch.setattr(vd, "VideoFramesSource", _FramesOnly)
    # the check of the GPS track before the training reads the frames and metric poses the stand-ins do not write
    # (tested in test_selfsup_depth.py)
    monkeypatch.setattr(vd, "_check_gps_scale_before_training", lambda *a, **k: None)
    video, gps = tmp_path / "clip.mp4", tmp_path / "gps.csv"
    video.write_bytes(b"video")
    gps.write_text("gps")
    failing: dict[str, Any] = {"stage": None, "name": None}

    def stand_in(name: str) -> Any:
        def run(self: Any, dest: Path, *, progress: bool) -> None:
            dest.mkdir(parents=True, exist_ok=True)  # a begun output (a training's checkpoint folder)
            if name == "train" and failing.get("checkpoint", True):
                (dest / "last.pt").write_bytes(b"")  # a training stopped after its first checkpoint
            err = failing["stage"]
            if err is not None and failing.get("name") == name:
                if dest == tmp_path / "out":  # the dataset's writer is atomic: a failed export leaves no output
                    shutil.rmtree(dest)
                raise err

        return run

    for name, cls in STAGES.items():
        monkeypatch.setattr(cls, "run", stand_in(name))

    def run(
        depth: str, fail: str | None, gps_log: bool = True, interrupt: bool = False, checkpoint: bool = True, **kw: Any
    ) -> BaseException:
        failing["name"], failing["checkpoint"] = fail, checkpoint
        failing["stage"] = KeyboardInterrupt() if interrupt else Pose2RGBDError(f"{fail} failed")
        with pytest.raises(BaseException) as e:
            vd.convert_video_with_depth(video, gps if gps_log else None, tmp_path / "out", depth=depth,
                                        progress=False, **kw)  # fmt: skip
        return e.value

    return run


def _kept(e: BaseException) -> list[str]:
    m = re.search(r"The finished stages \(([^)]*)\) are kept", str(e))
    assert m is not None, str(e)
    return m.group(1).split(", ")


OTHER_SFM = {"metric_cfg": MetricPosesConfig(min_registered=20)}  # SfM settings other than the default


def test_selfsup_names_only_the_stages_this_run_finished(chain: Any) -> None:
    """--depth selfsup with GPS: an SfM failure after an earlier run (other SfM settings) that trained a model names
    the frames only (before: the earlier run's training too); a training stopped in its checkpoint folder is kept
    (it continues); without GPS the metric poses an earlier GPS run left are not named."""
    e = chain("selfsup", "export")  # an earlier run: frames, metric poses, training finished, export failed
    assert "The trained depth model and the frames are kept" in str(e)
    assert _kept(chain("selfsup", "sfm", **OTHER_SFM)) == ["frames"]
    assert _kept(chain("selfsup", "train", **OTHER_SFM)) == ["frames", "metric_poses.npz", "run"]
    assert _kept(chain("selfsup", "train", gps_log=False)) == ["frames", "run"]


def test_a_training_stopped_before_its_first_checkpoint_is_not_named_as_kept(chain: Any) -> None:
    """The same command starts such a training again (before: "the finished stages (frames, run) are kept")."""
    assert _kept(chain("selfsup", "train", gps_log=False, checkpoint=False)) == ["frames"]


def test_mvs_names_no_training(chain: Any, caplog: pytest.LogCaptureFixture) -> None:
    """--depth mvs has no training: its failed stereo stage names the frames and the metric poses, not the training
    an earlier --depth selfsup run left in the work folder; its failed SfM (other settings) the frames only, also
    when stopped by Ctrl-C (the warning)."""
    chain("selfsup", "export")
    assert _kept(chain("mvs", "stereo")) == ["frames", "metric_poses.npz"]
    assert _kept(chain("mvs", "sfm", **OTHER_SFM)) == ["frames"]
    with caplog.at_level(logging.WARNING):
        assert isinstance(chain("mvs", "sfm", interrupt=True, **OTHER_SFM), KeyboardInterrupt)
    assert "the finished stages (frames) are kept" in caplog.text


def test_selfsup_and_mvs_names_its_training(chain: Any) -> None:
    """--depth selfsup+mvs: a failed stereo stage names the frames, the metric poses and the training; a failed
    export says its command gives the network's depth without stereo; a failed SfM after both, the frames only."""
    assert _kept(chain("selfsup+mvs", "stereo")) == ["frames", "metric_poses.npz", "run"]
    assert "(the network's depth alone, without stereo)" in str(chain("selfsup+mvs", "export"))
    assert _kept(chain("selfsup+mvs", "sfm", **OTHER_SFM)) == ["frames"]


def test_a_failure_with_nothing_of_this_run_kept_removes_the_work_folder(chain: Any, tmp_path: Path) -> None:
    """A frames stage that fails leaves nothing this run can continue from: the error is raised as it is and the
    work folder (with an earlier run's records, whose inputs are gone) is removed."""
    from pose2rgbd.convert.video_depth import work_folder

    chain("selfsup", "export")
    e = chain("selfsup", "frames", gps_log=False)
    assert str(e) == "frames failed" and not work_folder(tmp_path / "out").exists()


def test_an_existing_output_is_refused_before_the_first_stage(chain: Any, tmp_path: Path) -> None:
    """`convert video --depth ...` into an existing dataset without --overwrite is refused at once: no stage runs and
    no work folder is made (before: frames, SfM and minutes of training ran, the export refused the output and left
    the work folder; the note's "run the same command again" met the same refusal)."""
    from pose2rgbd.convert.video_depth import work_folder
    from pose2rgbd.errors import OutputExistsError

    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.yaml").write_text("format: pose2rgbd-dataset\n")
    for depth in ("selfsup", "mvs", "selfsup+mvs"):
        e = chain(depth, "frames")  # the frames stage would fail: it must not be reached
        assert isinstance(e, OutputExistsError) and "pass --overwrite" in str(e), e
        assert not work_folder(out).exists()
    assert (out / "manifest.yaml").exists()
