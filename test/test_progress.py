"""Progress bars only on a terminal: a bar drawn to a redirected stream fails these tests."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest

from pose2rgbd import progress
from pose2rgbd.progress import bar, bar_enabled


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _drawn(text: str) -> bool:
    return "%|" in text or "it/s" in text or "frame/s" in text or "step/s" in text


@pytest.fixture(autouse=True)
def _not_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.FORCE_ENV, raising=False)
    monkeypatch.setattr(progress, "_forced", False)


def test_bar_only_on_a_terminal_or_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    tty, pipe = _Tty(), io.StringIO()
    for _ in bar(range(3), desc="x", file=tty, mininterval=0):
        pass
    assert _drawn(tty.getvalue())  # the check below can fail: a terminal does get a bar
    for _ in bar(range(3), desc="x", file=pipe, mininterval=0):
        pass
    assert pipe.getvalue() == ""
    assert not bar_enabled(False, tty)
    monkeypatch.setenv(progress.FORCE_ENV, "1")
    assert bar_enabled(True, pipe) and not bar_enabled(False, pipe)
    monkeypatch.delenv(progress.FORCE_ENV)
    progress.force_progress()
    assert bar_enabled(True, pipe)


def test_call_sites_draw_nothing_to_a_redirected_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """The long loops, called with progress=True (the default of every command), against a non-TTY stderr."""
    from pose2rgbd.convert.sources.video import flow_pass
    from pose2rgbd.sync.estimator import SyncConfig
    from pose2rgbd.training.callbacks import ProgressBar

    rng = np.random.default_rng(0)
    frames = ((i / 10, rng.integers(0, 255, (24, 32), np.uint8)) for i in range(6))
    flow_pass(frames, SyncConfig(), 6, True, "flow")
    pb = ProgressBar("t")
    trainer = SimpleNamespace(train_set=list(range(8)), cfg=SimpleNamespace(batch_size=2, epochs=1), epoch=0,
                              last_val={})  # fmt: skip
    pb.on_epoch_start(trainer)  # type: ignore[arg-type]
    for _ in range(4):
        pb.on_step_end(trainer, {"loss": 1.0})  # type: ignore[arg-type]
    pb.on_epoch_end(trainer)  # type: ignore[arg-type]
    cap = capsys.readouterr()
    assert not _drawn(cap.err) and not _drawn(cap.out), cap.err[:200]


def test_cli_progress_flag_forces_bars(capsys: pytest.CaptureFixture[str]) -> None:
    from pose2rgbd.cli.main import main

    assert main([]) == 0 and not bar_enabled(True, io.StringIO())
    assert main(["--progress"]) == 0  # no command: help, but the flag is applied first
    assert bar_enabled(True, io.StringIO())


def test_a_bar_not_drawn_logs_lines_in_a_log_file(caplog: pytest.LogCaptureFixture) -> None:
    """Where a bar is wanted but not drawn (stderr a file), a line at most every LOG_EVERY_S with the count, the time
    so far and the time left; iteration and update() alike, a bar without a total too; none with progress off, none
    after the last item, none where the bar is drawn."""
    import logging

    now = [0.0]

    def clock() -> float:
        return now[0]

    pipe = io.StringIO()
    with caplog.at_level(logging.INFO, logger="pose2rgbd.progress"):
        for _ in bar(range(5), desc="map keyframes", unit="frame", file=pipe, clock=clock):
            now[0] += 20.0  # a line after items 2 and 4 (40 s, 80 s), none after the 5th
        with bar(total=None, desc="train", unit="step", file=pipe, clock=clock, initial=100) as b:
            for _ in range(3):
                now[0] += 31.0
                b.update(10)
        for _ in bar(range(5), desc="quiet", file=pipe, clock=clock, progress=False):
            now[0] += 40.0
        for _ in bar(range(3), desc="drawn", file=_Tty(), clock=clock, mininterval=0):
            now[0] += 40.0
        with bar(total=1000, desc="resumed", unit="step", file=pipe, clock=clock, initial=900) as b:
            now[0] += 30.0
            b.update(10)  # 10 steps in 30 s since the resume: 90 left take 270 s (not 3 s from 910 in 30 s)
    assert [r.getMessage() for r in caplog.records] == [
        "map keyframes: 2 of 5 frames done (40 s so far, about 60 s left)",
        "map keyframes: 4 of 5 frames done (80 s so far, about 20 s left)",
        "train: 110 steps done (31 s so far)",
        "train: 120 steps done (62 s so far)",
        "train: 130 steps done (93 s so far)",
        "resumed: 910 of 1000 steps done (30 s so far, about 270 s left)",
    ]
    assert pipe.getvalue() == ""


def test_a_training_bar_counts_to_where_its_time_budget_ends() -> None:
    """`convert video`'s depth training plans 1000 epochs (16,000 steps) and 3 minutes end it: at 1 step a second the
    bar's total becomes the 180 steps the budget allows (before, its log said about 19,000 s left); without a time
    budget it keeps the planned steps; a resumed run counts the budget already spent."""
    from pose2rgbd.training.callbacks import ProgressBar

    def run(max_minutes: float, step0: int = 0, spent: float = 0.0) -> int:
        pb = ProgressBar("depth")
        tr = SimpleNamespace(planned_steps=16000, step=step0, elapsed_s=spent, epoch=0,
                             cfg=SimpleNamespace(max_minutes=max_minutes))  # fmt: skip
        pb.on_train_start(tr)  # type: ignore[arg-type]
        for _ in range(30):
            tr.step += 1
            tr.elapsed_s += 1.0
            pb.on_step_end(tr, {"loss": 1.0})  # type: ignore[arg-type]
        total = int(pb._bar.total)
        pb.on_train_end(tr)  # type: ignore[arg-type]
        return total

    assert run(3.0) == 180
    assert run(0.0) == 16000
    assert run(3.0, step0=100, spent=100.0) == 180  # 100 steps in 100 s before, 50 s of the budget left after 30 more
