"""The benchmarks' wait for the guest kernel's hand-back of freed memory (bench/bench_common.py): a timed run must
not start while the counter still moves, must not wait for ever, and without a counter waits a fixed time only
where the machine reports free pages at all."""

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


def _reporting(
    counter: Path, seconds: float, every_s: float, last: list[float], stop: threading.Event | None = None
) -> threading.Thread:
    """The kernel reporting for ``seconds`` (then it stops by itself) or until ``stop``: the counter grows every
    ``every_s``; the time of the last change is ``last[0]``, on the test's clock."""

    def report() -> None:
        k, end = 0, time.monotonic() + seconds
        while time.monotonic() < end and not (stop and stop.is_set()):
            k += 64 * 1024
            last[0] = time.monotonic()  # before the write: the bound below is never later than the change
            _write(counter, k)
            time.sleep(every_s)

    th = threading.Thread(target=report)
    th.start()
    return th


def _virtio_balloon(root: Path, reporting: bool) -> Path:
    (root / "virtio0").mkdir(parents=True)
    (root / "virtio0" / "device").write_text("0x0005\n")
    (root / "virtio0" / "features").write_text(("011001" if reporting else "011000") + "0" * 58 + "\n")
    return root


def test_waits_until_the_counter_has_been_still_for_the_quiet_time(tmp_path: Path) -> None:
    counter = tmp_path / "reported_kib"
    _write(counter, 100)
    assert reported_free_kib(counter) == 100
    last = [time.monotonic()]
    th = _reporting(counter, 0.8, 0.05, last)
    settled = settle_free_page_reporting(quiet_s=0.4, counter=counter)
    done = time.monotonic()
    th.join()
    assert settled.how == "quiet for 0.4 s"
    assert done >= last[0] + 0.4  # not before the last change plus the quiet time


def test_a_still_counter_costs_the_quiet_time(tmp_path: Path) -> None:
    counter = tmp_path / "reported_kib"
    _write(counter, 7)
    t0 = time.monotonic()
    settled = settle_free_page_reporting(quiet_s=0.3, counter=counter)
    assert settled.how == "quiet for 0.3 s" and time.monotonic() - t0 >= 0.3


def test_the_wait_is_bounded(tmp_path: Path) -> None:
    counter = tmp_path / "reported_kib"
    _write(counter, 0)
    stop = threading.Event()
    th = _reporting(counter, 6.0, 0.02, [0.0], stop)  # longer than the bound; stops by itself if the bound is ignored
    try:
        settled = settle_free_page_reporting(quiet_s=10.0, max_s=0.5, counter=counter)
    finally:
        stop.set()
        th.join()
    assert settled.how == "still reporting after 0.5 s"
    assert 0.5 <= settled.waited_s < 3.0


def test_without_a_counter_a_fixed_wait_only_where_the_machine_reports_free_pages(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    assert reported_free_kib(absent) is None
    t0 = time.monotonic()
    none = settle_free_page_reporting(
        counter=absent, devices=_virtio_balloon(tmp_path / "no", False), no_counter_wait_s=5.0
    )
    assert time.monotonic() - t0 < 1.0 and none.how == "no free page reporting"
    t0 = time.monotonic()
    fixed = settle_free_page_reporting(
        counter=absent, devices=_virtio_balloon(tmp_path / "yes", True), no_counter_wait_s=0.3
    )
    assert time.monotonic() - t0 >= 0.3 and fixed.how.startswith("a fixed wait")
