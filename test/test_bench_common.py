"""The benchmarks' wait for the guest kernel's hand-back of freed memory (bench/bench_common.py): a timed run must
not start while the counter still moves, and must not wait where there is no counter."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from bench_common import reported_free_kib, settle_free_page_reporting


def _write(counter: Path, kib: int) -> None:
    """As the kernel's counter reads: whole values only (a replaced file, never a half-written one)."""
    tmp = counter.with_suffix(".tmp")
    tmp.write_text(f"{kib}\n")
    os.replace(tmp, counter)


def test_no_counter_no_wait(tmp_path: Path) -> None:
    t0 = time.monotonic()
    assert reported_free_kib(tmp_path / "absent") is None
    assert settle_free_page_reporting(quiet_s=5.0, counter=tmp_path / "absent") is None
    assert time.monotonic() - t0 < 1.0


def test_waits_until_the_counter_has_been_still_for_the_quiet_time(tmp_path: Path) -> None:
    counter = tmp_path / "reported_kib"
    _write(counter, 100)
    assert reported_free_kib(counter) == 100
    moves_until = time.monotonic() + 0.8

    def report() -> None:  # the kernel reporting: the counter grows for 0.8 s
        k = 100
        while time.monotonic() < moves_until:
            k += 64 * 1024
            _write(counter, k)
            time.sleep(0.05)

    th = threading.Thread(target=report)
    th.start()
    waited = settle_free_page_reporting(quiet_s=0.4, counter=counter)
    th.join()
    assert waited is not None and waited >= 0.8 + 0.4 - 0.15  # not before the last change plus the quiet time
    assert waited < 3.0


def test_the_wait_is_bounded(tmp_path: Path) -> None:
    counter = tmp_path / "reported_kib"
    _write(counter, 0)
    stop = threading.Event()

    def report() -> None:  # never quiet
        k = 0
        while not stop.is_set():
            k += 1
            _write(counter, k)
            time.sleep(0.02)

    th = threading.Thread(target=report)
    th.start()
    try:
        waited = settle_free_page_reporting(quiet_s=10.0, max_s=0.5, counter=counter)
    finally:
        stop.set()
        th.join()
    assert waited is not None and 0.5 <= waited < 2.0
