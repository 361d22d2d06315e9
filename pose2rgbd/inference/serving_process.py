"""What a serving process sets for itself once its engine is loaded, so that a frame's latency is the frame's
work and not the process's housekeeping, and how many CPU threads its network gets (:func:`serving_threads`).
The two settings are process-wide and for good; an engine applies them when it starts unless its config says not
to (``engine.keep_freed_memory``, ``engine.freeze_gc``), and the batch jobs (``evaluate``, the fly-through video:
:meth:`~pose2rgbd.inference.common.EngineConfig.as_batch_job`) turn them off.

**The heap keeps freed memory** (:func:`keep_freed_memory`, CPU). A hybrid render at 512x512 allocates and frees
about 130 MB of intermediate tensors (warped keyframes, masks, feature maps). glibc's malloc serves blocks above its
mmap threshold (128 kB, adapting up to 32 MB) with fresh ``mmap`` calls and unmaps them again on ``free``, so every
frame touched its memory for the first time again: about 32,000 minor page faults per 512x512 frame and a third of
the process's CPU time in the kernel, which set the p99 (docs/serving.md, "What a serving process sets for
itself"). Three of glibc's ``mallopt`` parameters change that: ``M_MMAP_MAX`` 0 (large blocks come from the heap
too; glibc still falls back to ``mmap`` when the heap cannot grow), ``M_TRIM_THRESHOLD`` at its maximum (the heap's
free top is not given back) and ``M_ARENA_MAX`` 1 (every thread allocates from the one heap: a live node renders on
its executor's and look-ahead's threads, and a thread's own arena maps blocks over 64 MiB anew whatever the other
settings say). The memory a frame frees then serves the next frame, whose shapes are the same. The
cost: the process keeps its largest working set after it is freed (bounded, since the renders repeat).

Written with ``ctypes`` on libc's ``mallopt`` because the other ways to the same behaviour, another allocator
(jemalloc, tcmalloc) or the ``GLIBC_TUNABLES`` environment variable, must be in place before the process starts,
which neither ``pip install`` nor a ROS launch file arranges for the user. With a C library other than glibc
(macOS, musl) it does nothing and says so in the log.

**The loaded engine leaves the cyclic garbage collector's scans** (:func:`freeze_gc`). A loaded hybrid is some
300,000 objects that Python's collector tracks (the keyframe store's index, the module tree); a full collection,
which the interpreter starts on its own after enough allocations, walks all of them: up to 116 ms measured
(docs/serving.md), and one that starts during a render lands in that frame. ``gc.collect()`` then ``gc.freeze()``
once the engine is warm moves everything alive into the permanent generation, so later collections walk only what
was made since. Objects frozen then are still freed by reference counting when dropped; only a reference cycle
among them would never be collected.

**What the process cannot set, it says** (:func:`note_free_page_reporting`). On a virtual machine whose memory balloon
reports free pages to its host (virtio-balloon's ``REPORTING`` feature), the guest kernel hands memory that any
process freed back to the host in passes about every 2 s, and processes on the guest stall while passes run, not
only the one whose memory goes back:
measured on a 2-core VM at 512x512, renders 40-200 ms late in bursts about every 2 s while gigabytes freed by the
process itself or by another went back, p99 170-224 ms against 77-84 ms once the hand-back was over (docs/serving.md,
"Stalls: the host taking back freed memory"). Nothing in the process changes that, so a serving process (an engine
that serves, the localize node's structure localizer) says once, in the log, that the machine does it: a user who
sees such a tail then knows where to look.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import platform
import threading
from pathlib import Path

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD_MAX = 2**31 - 1  # mallopt takes an int

_lock = threading.Lock()
_heap: bool | None = None  # None: not tried yet; then whether the heap setting is in force
_base_threads: int | None = None  # torch's thread count when the first engine of the process asked


def keep_freed_memory() -> bool:
    """Keep freed memory in this process's heap for reuse (see the module docstring). Returns whether the setting
    is in force: ``False`` where the C library is not glibc or refused it (logged, the process unchanged). Calling it
    again does nothing more."""
    global _heap
    with _lock:
        if _heap is None:
            _heap = _apply_heap()
        return _heap


def _apply_heap() -> bool:
    libc_name, _ = platform.libc_ver()
    if libc_name != "glibc":
        log.info("serving process: the C library is %s, not glibc; the heap is left as it is", libc_name or "unknown")
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError) as e:  # a static or unusual build
        log.info("serving process: mallopt not found (%s); the heap is left as it is", e)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # one arena: a live node renders on executor and look-ahead threads, and a thread's own arena serves blocks
    # over 64 MiB with mmap whatever M_MMAP_MAX says (and keeps its own freed memory beside the others'); renders
    # are serialised by the engine, so the one arena's lock costs nothing there. Then the trim threshold, so that
    # turning mmap off cannot make glibc trim more
    ok = bool(
        mallopt(M_ARENA_MAX, 1) == 1
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_MAX) == 1
        and mallopt(M_MMAP_MAX, 0) == 1
    )
    if ok:
        log.debug("serving process: freed memory is kept for the next frame (one arena, no mmap, no trim)")
    else:
        log.info("serving process: glibc refused a mallopt setting; the heap may be partly as it was")
    return ok


def freeze_gc() -> int:
    """Collect, then move every object alive into the collector's permanent generation (``gc.freeze``), so later
    collections do not walk the loaded engine. Returns the number of objects now frozen. Each engine that starts
    calls it again: what an earlier freeze kept is unfrozen and collected first, so an engine dropped since (a node
    that loaded another) is not kept alive by the freeze. No lock: a finaliser that the collection runs may call
    into this module."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


VIRTIO_DEVICES = Path("/sys/bus/virtio/devices")
VIRTIO_ID_BALLOON = 5  # the virtio specification's device id of the memory balloon
VIRTIO_BALLOON_F_REPORTING = 5  # its feature bit: free page reporting
_noted = False


def free_page_reporting(devices: Path = VIRTIO_DEVICES) -> bool:
    """Whether this machine is a virtual machine whose memory balloon reports free pages to its host: a virtio device
    of the balloon's id whose negotiated features (sysfs ``features``, one ``0`` / ``1`` character per bit from bit 0)
    include ``REPORTING``. False where there is no such device or sysfs cannot be read (not Linux, a container
    without it)."""
    try:
        entries = sorted(devices.iterdir())
    except OSError:
        return False
    for dev in entries:
        try:
            device_id = int((dev / "device").read_text().strip(), 16)
            features = (dev / "features").read_text().strip()
        except (OSError, ValueError):
            continue
        if (
            device_id == VIRTIO_ID_BALLOON
            and features[VIRTIO_BALLOON_F_REPORTING : VIRTIO_BALLOON_F_REPORTING + 1] == "1"
        ):
            return True
    return False


def note_free_page_reporting(devices: Path = VIRTIO_DEVICES) -> bool:
    """Log once per process, as a warning (a node shows warnings of the core without any logging set up; INFO it
    drops), where this machine hands freed memory back to its host (:func:`free_page_reporting`; the module docstring
    says why). Returns whether it does."""
    global _noted
    found = free_page_reporting(devices)
    with _lock:
        if found and not _noted:
            _noted = True
            log.warning(
                "serving process: this virtual machine hands freed memory back to its host (virtio-balloon free page "
                "reporting): for about half a minute after gigabytes are freed on it (a map build, a conversion, "
                "another process), renders may be 40-200 ms late about every 2 s; docs/serving.md, "
                '"Stalls: the host taking back freed memory"'
            )
    return found


ALL_CORES_PIXELS = 512 * 512  # frames this large use every core by default (serving_threads)


def serving_threads(threads: int, pixels: int = 0) -> int:
    """The CPU threads an engine runs its network on: ``threads`` when set (> 0), else torch's own default (one per
    physical core, or ``OMP_NUM_THREADS``) within the cores this process may run on, one fewer for frames of fewer
    than :data:`ALL_CORES_PIXELS` ``pixels`` (0: not known), at least one. A render node is not alone on its CPU:
    its own threads (the ROS executor, the look-ahead thread, bag I/O) and the robot's other processes need a core,
    and a network spread over every core waits, at each of its parallel regions, for the thread that was preempted.
    A short frame loses more to that wait than it gains from the core; a long one gains more (measured on 2 cores,
    docs/serving.md: at 256x256 a p99 above 50 ms in five of nine runs with 2 threads, 27.8-30.1 ms in five with 1;
    at 512x512 97.8-100.8 ms with 2 threads, 101-139 ms with 1)."""
    if threads > 0:
        return int(threads)
    global _base_threads
    with _lock:
        if _base_threads is None:  # torch's own default (physical cores, or OMP_NUM_THREADS), read before any engine
            import torch  # sets it

            _base_threads = torch.get_num_threads()
        base = _base_threads
    from pose2rgbd.placemap.pool import usable_cores

    n = min(base, usable_cores())
    return n if pixels >= ALL_CORES_PIXELS else max(1, n - 1)


def heap_in_force() -> bool:
    """Whether :func:`keep_freed_memory` has put the heap setting in force in this process."""
    return bool(_heap)


__all__ = [
    "ALL_CORES_PIXELS",
    "free_page_reporting",
    "freeze_gc",
    "heap_in_force",
    "keep_freed_memory",
    "note_free_page_reporting",
    "serving_threads",
]
