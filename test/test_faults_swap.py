"""Interrupted inside the swap: a real SIGINT sent to the process between the renames that put a new output in
place (the simulator's outputs, the dataset writer, the map writer, training's run folder), with a worker thread
alive as in every real run (a thread the signal can be delivered to). Each case checks that the earlier output is
intact or back and the new one complete or absent, that nothing hidden is left, and that the next run does not
delete the recovered output; plus what the next run does with what a killed swap (SIGKILL) left (rows of the
fault table in docs/reliability.md)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pose2rgbd.atomic import signal_deferral, swap_in, sweep_stale_siblings
from pose2rgbd.atomic.signals import pending
from pose2rgbd.cli.main import main
from pose2rgbd.errors import OutputExistsError

SIM = ["--size", "16", "--duration", "2", "--route-duration", "1", "--no-progress", "--no-video"]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (or ``root`` itself) with its bytes."""
    if root.is_file():
        return {".": root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture(autouse=True)
def _ctrl_c_raises() -> Iterator[None]:
    """These tests send SIGINT to their own process (and to the processes they start) and expect Python's
    ``KeyboardInterrupt``. A process started in the background by a non-interactive shell (``pytest ... &`` in a
    script) inherits SIGINT ignored, Python leaves it so, and the kernel would drop every signal the tests send: each
    test gets Python's own handler then, and the inherited disposition back after it."""
    inherited = signal.getsignal(signal.SIGINT)
    if inherited is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if inherited is signal.SIG_IGN:
            signal.signal(signal.SIGINT, inherited)


@pytest.fixture
def worker_thread() -> Iterator[threading.Thread]:
    """A thread that is alive during the swap (renderers, loaders and writers have them): blocking a signal in
    the main thread only does not keep it out of the process."""
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="test-worker", daemon=True)
    t.start()
    yield t
    stop.set()
    t.join()


def send_sigint() -> None:
    """SIGINT to this process (the kernel picks the thread that takes it), and wait until Python has run its
    handler: taken by a worker thread, CPython lets the main thread notice it only at a later thread switch."""
    os.kill(os.getpid(), signal.SIGINT)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:  # bounded: a signal that is not held raises KeyboardInterrupt here instead
        if pending():
            return
        time.sleep(0.001)
    raise AssertionError(f"the SIGINT sent 10 s ago was neither held nor delivered: {signal_state()}")


def signal_state() -> str:
    """What keeps a signal from this process's Python handler: the main thread's mask, the process's ignored /
    caught / pending sets, the Python-level handler and the held blocks."""
    from pose2rgbd.atomic.signals import holders

    status = Path(f"/proc/{os.getpid()}/status")
    kernel = (
        [
            ln
            for ln in status.read_text().splitlines()
            if ln.startswith(("SigBlk", "SigIgn", "SigCgt", "SigPnd", "ShdPnd"))
        ]
        if status.exists()
        else []
    )
    return (
        f"main-thread mask {sorted(signal.pthread_sigmask(signal.SIG_BLOCK, []))}, {kernel}, "
        f"handler {signal.getsignal(signal.SIGINT)!r}, held blocks {holders()}, "
        f"threads {[t.name for t in threading.enumerate()]}"
    )


def interrupt_after_rename(monkeypatch: pytest.MonkeyPatch, when: Callable[[Path, Path], bool]) -> dict[str, int]:
    """SIGINT to this process right after the first rename ``src -> dst`` for which ``when(src, dst)`` holds
    (``os.replace`` and ``os.rename`` both watched); returns a counter of signals sent."""
    sent = {"n": 0}
    for name in ("replace", "rename"):
        real = getattr(os, name)

        def patched(src: Any, dst: Any, *a: Any, _real: Any = real, **k: Any) -> None:
            _real(src, dst, *a, **k)
            if not sent["n"] and when(Path(os.fsdecode(src)), Path(os.fsdecode(dst))):
                sent["n"] += 1
                send_sigint()

        monkeypatch.setattr(os, name, patched)
    return sent


def moved_aside(target: Path) -> Callable[[Path, Path], bool]:
    """The rename that moves the earlier ``target`` aside (the first of a replacement)."""
    return lambda src, dst: src == target


# ------------------------------------------------------------------------------------------------- sim
def test_sim_overwrite_interrupted_inside_the_swap_keeps_the_earlier_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], worker_thread: Any
) -> None:
    out = tmp_path / "sim"
    assert main(["sim", "--out", str(out), *SIM]) == 0
    before = snapshot(out)
    capsys.readouterr()
    with monkeypatch.context() as m:
        sent = interrupt_after_rename(m, moved_aside(out / "dataset"))
        rc = main(["sim", "--out", str(out), *SIM, "--size", "24", "--overwrite"])
    err = capsys.readouterr().err
    assert sent["n"] == 1 and rc == 130, err
    assert "interrupted; nothing half-written was kept" in err, err
    assert snapshot(out) == before  # config, dataset and bags as they were: the swap was undone
    assert not [p for p in out.rglob(".*")], list(out.rglob(".*"))
    # the next run finds the earlier outputs where they belong: refused without --overwrite, nothing deleted
    assert main(["sim", "--out", str(out), *SIM, "--size", "24"]) == 2
    assert "exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert snapshot(out) == before
    assert main(["sim", "--out", str(out), *SIM, "--size", "24", "--overwrite"]) == 0
    assert "width: 24" in (out / "sim_config.yaml").read_text()


def test_sim_killed_inside_the_swap_gets_its_earlier_dataset_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """What a SIGKILL between the two renames leaves (the earlier dataset moved aside, the new one not yet in
    place): the next run puts the earlier dataset back; it never deletes it as a leftover."""
    out = tmp_path / "sim"
    assert main(["sim", "--out", str(out), *SIM]) == 0
    before = snapshot(out / "dataset")
    aside = out / f".dataset.old-{_dead_pid()}-abcd1234"
    os.replace(out / "dataset", aside)
    (out / f"{aside.name}.swap").write_text(json.dumps({"output": "dataset", "state": "replacing"}))
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert main(["sim", "--out", str(out), *SIM]) == 2
    assert f"restored {out / 'dataset'} from {aside}" in caplog.text
    assert "exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert snapshot(out / "dataset") == before and hidden(out) == []


# ------------------------------------------------------------------------------------------------- dataset
def _write_dataset(path: Path, n: int, *, overwrite: bool = False, value: int = 0) -> None:
    from pose2rgbd.dataset import DatasetWriter, Manifest
    from pose2rgbd.geometry import PinholeCamera

    cam = PinholeCamera(8, 8, 10.0, 10.0, 4.0, 4.0)
    with DatasetWriter(path, Manifest("x", cam), overwrite=overwrite) as w:
        for i in range(n):
            w.add_frame(i, np.eye(4), np.full((8, 8, 3), value + i, np.uint8), np.full((8, 8), 1.0 + i, np.float32))


def test_dataset_writer_interrupted_inside_the_swap_keeps_the_earlier_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_thread: Any
) -> None:
    ds = tmp_path / "ds"
    _write_dataset(ds, 2)
    before = snapshot(ds)
    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        sent = interrupt_after_rename(m, moved_aside(ds))
        _write_dataset(ds, 3, overwrite=True, value=50)
    assert sent["n"] == 1
    assert snapshot(ds) == before and hidden(tmp_path) == []
    with pytest.raises(OutputExistsError, match="exists; pass --overwrite to replace it"):
        _write_dataset(ds, 3, value=50)
    assert snapshot(ds) == before


def test_dataset_writer_swap_that_fails_puts_the_earlier_dataset_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = tmp_path / "ds"
    _write_dataset(ds, 2)
    before = snapshot(ds)
    real = os.replace
    failed: list[Any] = []

    def fail_second(src: Any, dst: Any) -> None:
        if Path(os.fsdecode(dst)) == ds and not failed:  # the new dataset cannot be moved in (once)
            failed.append(src)
            raise OSError(28, os.strerror(28), os.fsdecode(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", fail_second)
    with pytest.raises(OSError):
        _write_dataset(ds, 3, overwrite=True, value=50)
    monkeypatch.setattr(os, "replace", real)
    assert failed and snapshot(ds) == before and hidden(tmp_path) == []


# ------------------------------------------------------------------------------------------------- map
def _write_map(out: Path, value: int, *, overwrite: bool = False) -> None:
    from pose2rgbd.placemap.format import MapWriter

    with MapWriter(out, has_depth=False, image_codec="png", image_quality=95) as w:
        for k in range(2):
            xy, xyz = np.zeros((3, 2), np.float32), np.zeros((3, 3), np.float32)
            w.add_keyframe(np.full((8, 8, 3), value + k, np.uint8), None, xy, np.zeros((3, 128), np.uint8), xyz)
        w.close({"note": value, "scale": np.float32(1.5)}, overwrite=overwrite)


def test_map_writer_interrupted_inside_the_swap_keeps_the_earlier_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_thread: Any
) -> None:
    from pose2rgbd.placemap.format import read_manifest

    out = tmp_path / "map"
    _write_map(out, 1)
    before = snapshot(out)
    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        sent = interrupt_after_rename(m, moved_aside(out))
        _write_map(out, 2, overwrite=True)
    assert sent["n"] == 1
    assert snapshot(out) == before and hidden(tmp_path) == []
    assert read_manifest(out)["note"] == 1
    with pytest.raises(OutputExistsError, match="exists; pass --overwrite to replace it"):
        _write_map(out, 2)
    assert snapshot(out) == before
    _write_map(out, 3, overwrite=True)
    assert read_manifest(out)["note"] == 3 and read_manifest(out)["scale"] == 1.5 and hidden(tmp_path) == []


# ------------------------------------------------------------------------------------------------- training
def test_train_overwrite_interrupted_while_the_earlier_run_is_moved_aside_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_thread: Any
) -> None:
    pytest.importorskip("torch")
    import importlib

    from pose2rgbd.experiments.toy import make_toy_dataset

    train_mod = importlib.import_module("pose2rgbd.training.train")
    toy = make_toy_dataset(tmp_path / "toy", n_survey=12, n_route=4, size=16)
    from output_helpers import fake_run_files  # as a run writes them: recognised as an earlier run's

    run = fake_run_files(tmp_path / "run")
    before = snapshot(run)

    def fit(*a: object, **k: object) -> None:
        raise AssertionError("the new run must not start: its earlier run was not moved aside")

    monkeypatch.setattr(train_mod.Trainer, "fit", fit)
    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        sent = interrupt_after_rename(m, lambda src, dst: src.parent == run and dst.parent.name.startswith("previous"))
        train_mod.train("pose2rgbd", toy, run, overwrite=True)
    assert sent["n"] == 1
    assert snapshot(run) == before and sorted(p.name for p in run.iterdir()) == sorted(before)
    with pytest.raises(OutputExistsError, match="holds an earlier training run"):
        train_mod.train("pose2rgbd", toy, run)
    assert snapshot(run) == before


# ------------------------------------------------------------------------------------------------- threads
def test_a_swap_off_the_main_thread_is_held_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A swap in a worker thread: the main thread's handler (installed by the command line for the whole run)
    holds the signal until the swap is done or undone, then the main thread gets its KeyboardInterrupt."""
    old, new = tmp_path / "out", tmp_path / ".out.partial-x"
    for p, text in ((old, "old"), (new, "new")):
        p.mkdir()
        (p / "a.txt").write_text(text)
        (p / "b.txt").write_text(text)
    sent = interrupt_after_rename(monkeypatch, moved_aside(old))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            swap_in([(new, old)])
        except BaseException as e:  # a worker thread never sees KeyboardInterrupt
            errors.append(e)

    t = threading.Thread(target=work)
    with signal_deferral(), pytest.raises(KeyboardInterrupt):
        t.start()
        t.join()
        pending()  # the delivery from the worker thread runs the main thread's handler (at the latest here)
    t.join()
    monkeypatch.undo()
    assert sent["n"] == 1 and errors == []
    texts = {(old / n).read_text() for n in ("a.txt", "b.txt")}
    assert texts in ({"old"}, {"new"})  # whole: all old (undone) or all new, never a mix or nothing
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.old")] == []


# ------------------------------------------------------------------------------------------------- recovery
@pytest.mark.parametrize("state", ["replaced", "replacing", None])
def test_what_a_killed_swap_left_beside_a_new_output(
    state: str | None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Both the new output and the earlier one moved aside: the earlier one is removed only when its marker
    says the replacement was complete; otherwise both stay and a warning names them."""
    out = tmp_path / "ds"
    out.mkdir()
    (out / "new.txt").write_text("new")
    aside = tmp_path / f".ds.old-{_dead_pid()}-abcd1234"
    aside.mkdir()
    (aside / "old.txt").write_text("old")
    if state is not None:
        (tmp_path / f"{aside.name}.swap").write_text(json.dumps({"output": "ds", "state": state}))
    with caplog.at_level(logging.WARNING):
        removed = sweep_stale_siblings(out)
    assert (out / "new.txt").read_text() == "new"
    if state == "replaced":
        assert removed == [aside] and not aside.exists() and hidden(tmp_path) == []
        assert f"removed {aside}: the earlier ds, replaced by a run that was killed" in caplog.text
    else:
        assert removed == [] and (aside / "old.txt").read_text() == "old"
        assert f"kept {aside}: the earlier ds, moved aside by a run that was killed" in caplog.text


def test_a_killed_swap_of_a_bag_gets_the_earlier_bag_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path / "flight"
    write_flight_bag(bag, duration_s=0.3, size=16)
    before = snapshot(bag)
    aside = tmp_path / f".flight.old-{_dead_pid()}-abcd1234"
    os.replace(bag, aside)  # no marker: killed before it was written, or an older version's
    with caplog.at_level(logging.WARNING), pytest.raises(OutputExistsError):
        write_flight_bag(bag, duration_s=0.3, size=16)
    assert snapshot(bag) == before and hidden(tmp_path) == []


def test_a_signal_after_every_output_is_in_place_keeps_the_new_one_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_thread: Any
) -> None:
    """Ctrl-C after the last rename (while the markers are finished): the swap is complete, the earlier output
    goes, and what the command line prints names the new output as complete instead of "nothing was kept"."""
    import pose2rgbd.atomic.swap as swap_mod
    from pose2rgbd.atomic import take_kept

    old, new = tmp_path / "out", tmp_path / ".out.partial-x"
    for p, text in ((old, "old"), (new, "new")):
        p.mkdir()
        (p / "a.txt").write_text(text)
    real = swap_mod.write_marker

    def marker_then_signal(aside: Path, output: Path, state: str) -> None:
        real(aside, output, state)
        if state == "replaced":
            send_sigint()

    monkeypatch.setattr(swap_mod, "write_marker", marker_then_signal)
    take_kept()
    with pytest.raises(KeyboardInterrupt):
        swap_in([(new, old)])
    assert (old / "a.txt").read_text() == "new" and hidden(tmp_path) == []
    assert take_kept() == [f"{old} (complete)"]


def test_signals_held_delivers_after_the_block_and_puts_the_handler_back() -> None:
    from pose2rgbd.atomic import signals_held

    before = signal.getsignal(signal.SIGINT)
    seen = []
    with pytest.raises(KeyboardInterrupt), signals_held() as held:
        send_sigint()
        seen.append(held.pending)
    assert seen == [True] and signal.getsignal(signal.SIGINT) is before


def test_a_block_off_the_main_thread_that_holds_nothing_does_not_delay_the_main_threads_signal() -> None:
    """A worker thread inside signals_held without signal_deferral() holds no signal; while it stays there, a
    signal in a held block of the main thread is still delivered when that block ends."""
    import threading

    from pose2rgbd.atomic import signals_held

    inside, leave = threading.Event(), threading.Event()

    def worker() -> None:
        with signals_held():
            inside.set()
            leave.wait(30)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        assert inside.wait(30)
        with pytest.raises(KeyboardInterrupt), signals_held():
            send_sigint()
    finally:
        leave.set()
        t.join(30)


class _SignalInFinalizer:
    """An object whose finalizer is running when a signal arrives: Python runs signal handlers between any two
    bytecodes, a garbage-collection callback's included, and an exception a finalizer raises is printed
    ("Exception ignored in ...") and dropped."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        signal.raise_signal(self.signum)
        for _ in range(10_000):  # the handler runs at one of these bytecodes, inside the finalizer
            pass


def _spin() -> None:
    for _ in range(1_000_000):  # where the interrupt is raised again, out of the finalizer
        pass


def test_a_ctrl_c_raised_inside_a_finalizer_is_raised_again_after_it(capsys: pytest.CaptureFixture[str]) -> None:
    with signal_deferral():
        with pytest.raises(KeyboardInterrupt):
            _SignalInFinalizer(signal.SIGINT)  # its finalizer runs at once (no reference is kept)
            _spin()
            pytest.fail("the interrupt raised inside the finalizer was dropped")
        time.sleep(0.05)  # the cleanup after it: no second interrupt comes (the SIGINTs that raised it are not one)
        _spin()
    assert "Exception ignored" not in capsys.readouterr().err


def test_the_commands_sigterm_raised_inside_a_finalizer_is_raised_again_as_itself(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI's SIGTERM handler raises its own KeyboardInterrupt subclass (exit status 143), and sets SIGTERM to
    be ignored first: a swallowed one must come back as that same exception, not as Ctrl-C nor not at all."""
    from pose2rgbd.cli.main import _sigterm_as_interrupt, _Terminated

    before, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    t0 = time.monotonic()
    with pytest.raises(_Terminated), _sigterm_as_interrupt(), signal_deferral():
        _SignalInFinalizer(signal.SIGTERM)
        time.sleep(20)  # a blocking call after it: ended by the signal that raises it again, not waited for
        pytest.fail("the SIGTERM raised inside the finalizer was dropped")
    assert time.monotonic() - t0 < 10, signal_state()
    assert "Exception ignored" not in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before and sys.unraisablehook is hook


def test_the_kicker_sends_one_signal_at_a_time_and_none_after_the_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the main thread cannot run the handler (a long numpy call, GIL released) the kicker waits for its kick
    to be taken, and sends it again only at growing intervals (not every 2 ms): what it sent meanwhile arrives as one
    handler call, one interrupt, and nothing is sent after the raise."""
    sent: list[float] = []
    real = signal.pthread_kill

    def counted(thread: int, signum: int) -> None:
        sent.append(time.monotonic())
        real(thread, signum)

    monkeypatch.setattr(signal, "pthread_kill", counted)
    big = np.random.default_rng(0).random(4_000_000)
    with signal_deferral():
        with pytest.raises(KeyboardInterrupt):
            _SignalInFinalizer(signal.SIGINT)
            np.sort(big)  # no bytecode of the main thread for a while: the handler cannot take the kick yet
            _spin()
        raised_after = len(sent)
        time.sleep(0.05)
        _spin()
    assert raised_after == len(sent) and 1 <= len(sent) <= 8, np.diff(sent)


@pytest.fixture
def first_kick_lost(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The kicker's first SIGINT is lost (``signal.pthread_kill`` does nothing the first time); the times of its
    sends."""
    sent: list[float] = []
    real = signal.pthread_kill

    def first_lost(thread: int, signum: int) -> None:
        sent.append(time.monotonic())
        if len(sent) > 1:
            real(thread, signum)

    monkeypatch.setattr(signal, "pthread_kill", first_lost)
    return sent


def test_a_kick_that_does_not_end_a_blocking_call_is_sent_again(first_kick_lost: list[float]) -> None:
    """A kick that lands after the main thread last looked at its signals and just before it goes into a blocking
    call (``time.sleep``) does not end that call, and the handler runs only when it returns: a kick not taken in
    time is sent again. Here the first kick is lost outright."""
    from pose2rgbd.atomic.signals import RESEND_AFTER_S

    sent = first_kick_lost
    with signal_deferral():
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            _SignalInFinalizer(signal.SIGINT)
            time.sleep(20)
            pytest.fail("the dropped interrupt was not raised again")
        took = time.monotonic() - t0
    assert len(sent) >= 2 and sent[1] - sent[0] >= RESEND_AFTER_S and took < 5, (np.diff(sent), took)


def test_the_users_ctrl_c_after_an_interrupt_a_resent_kick_raised_is_delivered(first_kick_lost: list[float]) -> None:
    """The first kick is lost and the second raises the dropped interrupt; a Ctrl-C of the user's during the cleanup
    that follows is a Ctrl-C (no kick is taken for it: each kick's mark went with the handler call it reached)."""
    sent = first_kick_lost
    with signal_deferral():
        with pytest.raises(KeyboardInterrupt):
            _SignalInFinalizer(signal.SIGINT)
            time.sleep(20)
            pytest.fail("the dropped interrupt was not raised again")
        assert len(sent) >= 2
        time.sleep(0.1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the user's, 0.1 s after the raise
            time.sleep(20)
            pytest.fail("the user's Ctrl-C after the raise was taken for a kick")


def test_a_kicker_thread_that_cannot_start_is_not_counted_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook could not start its kicker (no threads left): the interrupt it kept is raised when the handler goes
    (the end of the command), and the next dropped interrupt gets a kicker of its own."""
    import pose2rgbd.atomic.signals as sigmod

    real_start = threading.Thread.start

    def no_thread(self: threading.Thread) -> None:
        if self.name == "pose2rgbd-signal":
            raise RuntimeError("can't start new thread")
        real_start(self)

    with monkeypatch.context() as m:
        m.setattr(threading.Thread, "start", no_thread)
        with pytest.raises(KeyboardInterrupt), signal_deferral():
            _SignalInFinalizer(signal.SIGINT)
            _spin()
    assert sigmod._kicking == [] and sigmod._dropped == []
    with signal_deferral(), pytest.raises(KeyboardInterrupt):
        _SignalInFinalizer(signal.SIGINT)
        time.sleep(20)
        pytest.fail("the next dropped interrupt had no kicker")


def test_a_dropped_interrupt_waits_for_another_threads_held_block(capsys: pytest.CaptureFixture[str]) -> None:
    """A worker thread inside signals_held (under signal_deferral): the interrupt a finalizer dropped is raised when
    the block ends, as a signal arriving then would be, and once."""
    from pose2rgbd.atomic import signals_held

    inside, leave = threading.Event(), threading.Event()
    ended: list[float] = []

    def worker() -> None:
        with signals_held():
            inside.set()
            leave.wait(30)
            ended.append(time.monotonic())

    with signal_deferral():
        t = threading.Thread(target=worker, daemon=True)
        t.start()
        try:
            assert inside.wait(30)
            with pytest.raises(KeyboardInterrupt):
                _SignalInFinalizer(signal.SIGINT)
                threading.Timer(0.3, leave.set).start()
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    time.sleep(0.01)
                pytest.fail("the dropped interrupt was not raised after the block")
            raised = time.monotonic()
        finally:
            leave.set()
            t.join(30)
        time.sleep(0.05)
        _spin()  # no second interrupt
    assert ended and raised >= ended[0]
    assert "Exception ignored" not in capsys.readouterr().err


def test_other_unraisable_exceptions_and_a_stale_hook_go_to_the_hook_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a KeyboardInterrupt while our handler is installed is kept: a finalizer's other error goes on to the hook
    that was there, and so does an interrupt given to our hook after the command (a library that wrapped it)."""
    import pose2rgbd.atomic.signals as sigmod

    seen: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(type(u.exc_value)))

    class Failing:
        def __del__(self) -> None:
            raise ValueError("a finalizer's own error")

    with signal_deferral():
        ours = sys.unraisablehook
        Failing()
    assert seen == [ValueError] and sys.unraisablehook is not ours
    from types import SimpleNamespace

    late = SimpleNamespace(exc_type=KeyboardInterrupt, exc_value=KeyboardInterrupt(), exc_traceback=None, err_msg=None,
                           object=None)  # fmt: skip
    ours(late)  # type: ignore[arg-type]
    assert seen == [ValueError, KeyboardInterrupt] and sigmod._dropped == []


def test_a_block_after_the_commands_sigterm_handler_ignored_sigterm_puts_every_handler_back() -> None:
    """The CLI's SIGTERM handler sets SIGTERM to be ignored before it raises; a swap during the cleanup that follows
    installs our handler for SIGTERM only (SIGINT is ours already) and, when it ends, puts SIGTERM back and leaves
    SIGINT ours (the outer install's), without waiting on it."""
    from pose2rgbd.atomic import signals_held
    from pose2rgbd.atomic.signals import _handler

    before = signal.getsignal(signal.SIGTERM)
    try:
        with signal_deferral():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            done = threading.Event()

            def block() -> None:
                with signals_held():
                    assert signal.getsignal(signal.SIGTERM) is _handler
                done.set()

            block()
            assert done.is_set()
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN and signal.getsignal(signal.SIGINT) is _handler
    finally:
        signal.signal(signal.SIGTERM, before)
