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
"""

from __future__ import annotations

import ctypes
import gc
import logging
import platform
import threading

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


__all__ = ["ALL_CORES_PIXELS", "freeze_gc", "heap_in_force", "keep_freed_memory", "serving_threads"]
