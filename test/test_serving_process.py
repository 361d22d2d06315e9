"""What a serving process sets for itself (:mod:`pose2rgbd.inference.serving_process`): with the heap setting
(``engine.keep_freed_memory``) a large block, of the main thread or another, comes from the heap and stays there
once freed; with ``engine.freeze_gc`` a full collection no longer walks the objects alive when the engine
started; a CPU engine sets the heap before its warm-up and freezes after it, each unless the config says not to; a
CUDA engine leaves the heap alone; the auto thread count; batch jobs keep the process as it is."""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from export_helpers import pose2rgbd_checkpoint

from pose2rgbd.inference import EngineConfig, backends
from pose2rgbd.models import load_checkpoint
from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint

REPO = Path(__file__).resolve().parents[1]

# a child process, so the setting (process-wide, for good) does not reach the test worker: where glibc puts a
# 64 MiB torch tensor (the serving path's allocator) before and after the setting, and whether the heap keeps it
# once freed (glibc's own accounting, mallinfo2: bytes in mmapped blocks, bytes of the heap). Page faults, the cost
# this avoids, are measured in the benchmark (docs/serving.md), not here: the kernel may page out idle memory of a
# process on its own (DAMON reclaim, swap), which makes a fault count depend on the machine.
HEAP = r"""
import ctypes
import threading
import torch
from pose2rgbd.inference import serving_process

FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

a = torch.empty(64 << 20, dtype=torch.uint8)
mmapped_before = libc.mallinfo2().hblkhd
del a
ok = serving_process.keep_freed_memory()
again = serving_process.keep_freed_memory()
a = torch.empty(64 << 20, dtype=torch.uint8)
mmapped_after, heap_with = libc.mallinfo2().hblkhd, libc.mallinfo2().arena
del a
heap_after_free = libc.mallinfo2().arena
seen = []  # the same from another thread (a live node renders on its executor's threads)

def worker():
    b = torch.empty(128 << 20, dtype=torch.uint8)
    seen.append(libc.mallinfo2().hblkhd)
    del b

t = threading.Thread(target=worker)
t.start()
t.join()
print(ok, again, serving_process.heap_in_force(), mmapped_before, mmapped_after, heap_with, heap_after_free, seen[0])
"""


def _has_mallinfo2() -> bool:
    return platform.libc_ver()[0] == "glibc" and hasattr(ctypes.CDLL(None), "mallinfo2")  # glibc >= 2.33


@pytest.mark.skipif(not _has_mallinfo2(), reason="the setting is glibc's (mallopt); mallinfo2 needs glibc >= 2.33")
def test_large_blocks_come_from_the_heap_and_stay_there_once_freed() -> None:
    # the child's allocator as glibc sets it up by default: no tunables, no preloaded allocator
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD") and "MALLOC" not in k}
    out = subprocess.run(
        [sys.executable, "-c", HEAP], capture_output=True, text=True, cwd=REPO, timeout=120, check=True, env=env
    ).stdout.split()
    assert out[:3] == ["True", "True", "True"]
    mmapped_before, mmapped_after, heap_with, heap_after_free, mmapped_in_thread = map(int, out[3:])
    block = 64 << 20
    assert mmapped_before >= block, "without the setting glibc maps a 64 MiB block on its own"
    assert mmapped_after < block and heap_with >= block, "with it the block comes from the heap"
    assert heap_after_free >= block, "and the heap keeps it once freed, for the next frame"
    assert mmapped_in_thread < block, "a 128 MiB block of another thread comes from the one heap too"


@pytest.mark.parametrize("keep", [True, False, "freeze only"])
def test_a_cpu_engine_sets_the_heap_before_its_warm_up_and_freezes_after_it_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool | str
) -> None:
    from pose2rgbd.inference import serving_process

    events: list[str] = []
    monkeypatch.setattr(serving_process, "keep_freed_memory", lambda: events.append("heap") or True)
    monkeypatch.setattr(serving_process, "freeze_gc", lambda: events.append("freeze") or 1)
    monkeypatch.setattr(serving_process, "note_free_page_reporting", lambda: events.append("note") or False)
    ck = pose2rgbd_checkpoint(tmp_path, "base")
    loaded = load_checkpoint(ck)
    loaded.model.register_forward_pre_hook(lambda *_: events.append("pass"))
    cfg = EngineConfig(
        checkpoint=str(ck), device="cpu", precision="fp32", warmup=2, transposed_channels_last="off",
        keep_freed_memory=keep is True, freeze_gc=bool(keep),
    )  # fmt: skip
    backend, _ = backends.make_backend(cfg, loaded)
    assert backend.device == torch.device("cpu")
    expected = {True: ["heap", "pass", "pass", "freeze", "note"], False: ["pass", "pass"]}
    assert events == expected.get(keep, ["pass", "pass", "freeze", "note"])  # a serving engine says it either way


def test_a_cuda_engine_leaves_the_heap_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device check itself: a backend that reports CUDA (its network not run, warmup 0) sets nothing."""
    from pose2rgbd.inference import serving_process

    calls: list[int] = []
    monkeypatch.setattr(serving_process, "keep_freed_memory", lambda: calls.append(1) or True)

    class CudaBackend:
        name = "torch"
        device = torch.device("cuda")
        precision = "bf16"

        def warm(self, passes: int) -> None:
            assert passes == 0

    monkeypatch.setattr(backends, "_make_backend", lambda cfg, loaded: (CudaBackend(), object()))
    backend, _ = backends.make_backend(EngineConfig(checkpoint="x.pt", warmup=0, freeze_gc=False), object())  # type: ignore[arg-type]
    assert backend.device.type == "cuda" and calls == []


# a child process again (gc.freeze is for good): the objects a full collection walks, before and after
FREEZE = r"""
import gc
from pose2rgbd.inference import serving_process

engine_like = [[i] for i in range(200_000)]  # a loaded engine's many long-lived objects (lists: tracked)
gc.collect()
before = len(gc.get_objects(generation=2))  # what a full collection walks
frozen = serving_process.freeze_gc()
after = len(gc.get_objects(generation=2))
print(before, after, frozen, len(engine_like))
"""


def test_freeze_gc_takes_the_objects_alive_out_of_later_full_collections() -> None:
    walked_before, walked_after, frozen, n = map(
        int,
        subprocess.run(
            [sys.executable, "-c", FREEZE], capture_output=True, text=True, cwd=REPO, timeout=120, check=True
        ).stdout.split(),
    )
    assert walked_before > n and frozen > n
    assert walked_after < 0.01 * n, f"a full collection after the freeze still walks {walked_after} objects"


@pytest.mark.parametrize(
    ("torch_default", "cores", "asked", "pixels", "threads"),
    [
        (2, 2, 0, 0, 1),
        (2, 2, 0, 256 * 256, 1),
        (2, 2, 0, 512 * 512, 2),
        (16, 16, 0, 0, 15),
        (16, 16, 0, 1024 * 1024, 16),
        (8, 16, 0, 0, 7),
        (1, 16, 0, 512 * 512, 1),
        (4, 2, 0, 0, 1),
        (4, 2, 0, 512 * 512, 2),
        (1, 1, 0, 0, 1),
        (2, 2, 2, 0, 2),
        (8, 16, 3, 512 * 512, 3),
    ],
)
def test_threads_auto_leaves_one_core_to_the_rest_below_512(
    monkeypatch: pytest.MonkeyPatch, torch_default: int, cores: int, asked: int, pixels: int, threads: int
) -> None:
    """One fewer than torch's own default (physical cores: 8 on 8 cores / 16 hardware threads; 1 with
    OMP_NUM_THREADS=1) within the cores the process may use, all of them for frames of 512x512 and more; a number
    asked for is kept."""
    from pose2rgbd.inference import serving_process

    monkeypatch.setattr(serving_process, "_base_threads", torch_default)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert serving_process.serving_threads(asked, pixels) == threads


def test_an_engine_takes_its_threads_by_its_frame_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's automatic threads go by the size of the frames its model renders."""
    from pose2rgbd.inference import serving_process

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(serving_process, "_base_threads", 4)
    n = torch.get_num_threads()
    try:
        for size, threads in ((64, 3), (512, 4)):
            loaded = make_ground_plane_checkpoint(size)
            assert backends.frame_pixels(loaded.model) == size * size
            cfg = EngineConfig(device="cpu", warmup=0, transposed_channels_last="off", keep_freed_memory=False,
                               freeze_gc=False)  # fmt: skip
            backends.make_backend(cfg, loaded)
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(n)


def test_a_batch_job_engine_keeps_the_process_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``EngineConfig.as_batch_job`` (evaluate, the fly-through video): torch's threads as they were, no heap setting,
    no freeze; a serving engine built the same way sets its auto threads."""
    from pose2rgbd.inference import serving_process

    calls: list[str] = []
    monkeypatch.setattr(serving_process, "keep_freed_memory", lambda: calls.append("heap") or True)
    monkeypatch.setattr(serving_process, "freeze_gc", lambda: calls.append("freeze") or 1)
    monkeypatch.setattr(serving_process, "note_free_page_reporting", lambda: calls.append("note") or False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(serving_process, "_base_threads", 4)
    ck = pose2rgbd_checkpoint(tmp_path, "base")
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cfg = EngineConfig(checkpoint=str(ck), device="cpu", warmup=0, transposed_channels_last="off")
        backends.make_backend(cfg.as_batch_job(), load_checkpoint(ck))
        assert torch.get_num_threads() == 2 and calls == []
        backends.make_backend(replace(cfg, threads=1).as_batch_job(), load_checkpoint(ck))  # threads set: kept
        assert torch.get_num_threads() == 1 and calls == []
        backends.make_backend(cfg, load_checkpoint(ck))
        assert torch.get_num_threads() == 3 and calls == ["heap", "freeze", "note"]
    finally:
        torch.set_num_threads(n)


def _virtio(root: Path, name: str, device_id: int, features: str) -> None:
    """A virtio device as sysfs shows it: ``device`` in hex, ``features`` one character per bit from bit 0."""
    (root / name).mkdir(parents=True)
    (root / name / "device").write_text(f"0x{device_id:04x}\n")
    (root / name / "features").write_text(features + "0" * (64 - len(features)) + "\n")


def test_free_page_reporting_is_the_balloons_reporting_bit(tmp_path: Path) -> None:
    from pose2rgbd.inference import serving_process

    assert not serving_process.free_page_reporting(tmp_path / "absent")
    with_it, without, other = tmp_path / "with", tmp_path / "without", tmp_path / "other"
    _virtio(with_it, "virtio0", 2, "001000100110")  # a block device first
    _virtio(with_it, "virtio1", 5, "011001010")  # the balloon: stats, deflate on OOM, reporting (bit 5)
    _virtio(without, "virtio0", 5, "011000010")  # a balloon without reporting
    _virtio(other, "virtio0", 1, "000001")  # bit 5 of a network device is another feature
    (other / "virtio1").mkdir()  # a device whose files cannot be read is passed over
    assert serving_process.free_page_reporting(with_it)
    assert not serving_process.free_page_reporting(without)
    assert not serving_process.free_page_reporting(other)


def test_a_serving_process_says_once_that_its_machine_hands_freed_memory_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from pose2rgbd.inference import serving_process

    monkeypatch.setattr(serving_process, "_noted", False)
    _virtio(tmp_path / "no", "virtio0", 5, "0110")
    _virtio(tmp_path / "yes", "virtio0", 5, "011001")
    with caplog.at_level("INFO", logger="pose2rgbd.inference.serving_process"):
        assert not serving_process.note_free_page_reporting(tmp_path / "no")
        assert caplog.records == []
        assert serving_process.note_free_page_reporting(tmp_path / "yes")
        assert serving_process.note_free_page_reporting(tmp_path / "yes")
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.WARNING
    assert "hands freed memory back to its host" in caplog.records[0].getMessage()
    assert "Stalls: the host taking back freed memory" in caplog.records[0].getMessage()


def test_the_note_shows_without_any_logging_set_up(tmp_path: Path) -> None:
    """A ROS node sets up no Python logging: the root logger stays at WARNING with no handler, so the note must be
    a warning to reach the node's stderr at all (Python's last-resort handler)."""
    _virtio(tmp_path / "yes", "virtio0", 5, "011001")
    code = (
        "from pathlib import Path; from pose2rgbd.inference import serving_process; "
        f"serving_process.note_free_page_reporting(Path({str(tmp_path / 'yes')!r}))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "hands freed memory back to its host" in r.stderr


REFREEZE = r"""
import gc, weakref
from pose2rgbd.inference import serving_process

class Engine:
    pass

old = Engine()
old.self = old  # a cycle: only the collector frees it
gone = weakref.ref(old)
serving_process.freeze_gc()  # the first engine, frozen
del old
serving_process.freeze_gc()  # a second engine starts: the dropped first one must not stay frozen for good
print(gone() is None)
"""


def test_a_second_freeze_collects_what_the_first_froze_and_was_dropped() -> None:
    out = subprocess.run(
        [sys.executable, "-c", REFREEZE], capture_output=True, text=True, cwd=REPO, timeout=120, check=True
    ).stdout.split()
    assert out == ["True"]
