"""What the benchmarks share (not a test): the model names of their tables, the CPU's speed at the moment, the
process's resident memory (current and peak), the guest kernel's hand-back of free memory to its host (a virtual
machine's), and the tracer of the ``trace_*`` scripts (the places of the code a
command passes through, counted as stops, places and returns at module and room grain: :class:`Tracer`, :func:`way`,
:func:`count`).

Every benchmark script imports from here, none from another benchmark script, so no two scripts import each other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

NAMES = {
    "base": "Base",
    "slice10": "Slice-10",
    "slice32": "Slice-32",
    "slice64": "Slice-64",
    "hybrid": "Hybrid",
    "hybrid-lite": "Hybrid-lite",
    "hybrid-fast": "Hybrid-fast",
    "hybrid-subpixel": "Hybrid-subpixel",
}


def depth_uncertainty_extra() -> dict[str, Any]:
    """A depth uncertainty as ``train`` fits one (10 % of the depth at the 68 % level, growing 10 % per metre of
    coverage distance), as a checkpoint's ``extra`` entry, for the benchmarks' checkpoints: a trained checkpoint
    carries one, so serving computes each render's ``depth_sigma``, and the timed work includes it (without one the
    engine also warns, with advice for a trained model that does not apply here)."""
    import numpy as np

    from pose2rgbd.models.depth_uncertainty import EXTRA_KEY, DepthUncertainty

    du = DepthUncertainty(level=0.683, depth_edges=(20.0, 60.0), relative=np.full((2, 3), 0.1, np.float32),
                          pixels=np.full((2, 3), 10_000), wide=(2.5, 2.5), growth_per_m=0.1,
                          reference_m=1.0)  # fmt: skip
    return {EXTRA_KEY: du.to_dict()}


def matmul_gflops(seconds: float = 2.0, n: int = 2048) -> float:
    """fp32 ``n x n`` matmul GFLOP/s on torch's threads (best of repeated timings)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: /proc/self/clear_refs, 5); False elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def resident_mib(key: str = "VmRSS") -> float:
    """This process's current (``VmRSS``) or peak (``VmHWM``, since the start or :func:`reset_peak_rss`) resident
    memory in MiB, from /proc/self/status (NaN where there is none: not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # the kernel writes kB (KiB)
    except OSError:
        pass
    return float("nan")


REPORTED_KIB = Path("/sys/module/page_reporting/parameters/reported_kib")
NO_COUNTER_WAIT_S = 60.0  # where the machine reports free pages but does not count them: about two 5 GB hand-backs


def reported_free_kib(counter: Path = REPORTED_KIB) -> int | None:
    """KiB of free memory this virtual machine's kernel has reported to its host since boot, or None where there is
    no such counter. Free page reporting is virtio-balloon's (``serving_process.free_page_reporting`` tells whether a
    machine has it); mainline Linux does not count what it reported, and the counter read here is a ``page_reporting``
    module parameter that only some kernels add (the benchmark machine's does).

    Why a benchmark looks: with free page reporting the guest kernel hands memory that processes freed back to the
    host in passes, about every 2 s, up to about 128 MB each; while passes run, processes on the guest stall, the one
    that freed the memory and others (measured on the 2-core benchmark VM at 512x512: renders 40-200 ms late, in
    bursts of passes; docs/serving.md, "Stalls: the host taking back freed memory"). A benchmark that builds a
    checkpoint of gigabytes and frees it just before its timed renders measures those passes, not the renderer."""
    try:
        return int(counter.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Settled:
    """What :func:`settle_free_page_reporting` did: seconds waited, and how it ended."""

    waited_s: float
    how: str  # "quiet for Q s", "still reporting after M s" (gave up), "a fixed wait (...)", "no free page reporting"

    def __str__(self) -> str:
        return f"waited {self.waited_s:.0f} s: {self.how}"


def settle_free_page_reporting(
    quiet_s: float = 5.0,
    max_s: float = 180.0,
    counter: Path = REPORTED_KIB,
    *,
    no_counter_wait_s: float = NO_COUNTER_WAIT_S,
    devices: Path | None = None,
) -> Settled:
    """Wait until the guest kernel has reported no freed memory to its host for ``quiet_s`` seconds (at most
    ``max_s``; see :func:`reported_free_kib`), so that a timed run does not start inside the hand-back of memory the
    benchmark itself has just freed. Where the machine reports free pages but the kernel does not count them, wait a
    fixed ``no_counter_wait_s``; where it does not report them (bare metal, most containers' hosts), do not wait.
    ``devices``: the virtio devices' sysfs folder (tests)."""
    from pose2rgbd.inference.serving_process import VIRTIO_DEVICES, free_page_reporting

    last = reported_free_kib(counter)
    t0 = time.monotonic()
    if last is None:
        if not free_page_reporting(devices or VIRTIO_DEVICES):
            return Settled(0.0, "no free page reporting")
        time.sleep(min(no_counter_wait_s, max_s))
        return Settled(time.monotonic() - t0, "a fixed wait (the kernel does not count what it reports)")
    quiet_since = t0
    while (now := time.monotonic()) - quiet_since < quiet_s and now - t0 < max_s:
        time.sleep(0.1)
        cur = reported_free_kib(counter)
        if cur != last:
            last, quiet_since = cur, time.monotonic()
    quiet = time.monotonic() - quiet_since >= quiet_s
    return Settled(time.monotonic() - t0, f"quiet for {quiet_s:g} s" if quiet else f"still reporting after {max_s:g} s")


# ---------------------------------------------------------------------------------------------- the trace scripts
def _room(frame: FrameType) -> tuple[str, str] | None:
    """(module, room) of a pose2rgbd frame, else None: the room is the module's package (``pose2rgbd.inference``,
    ``pose2rgbd.placemap.fused``; a top-level module such as ``pose2rgbd.progress`` is a room of its own)."""
    g = frame.f_globals
    name = str(g.get("__name__", ""))
    if not name.startswith("pose2rgbd"):
        return None
    pkg = str(g.get("__package__") or "")
    if name == pkg:  # a package's __init__
        return name, name
    return name, (pkg if pkg and pkg != "pose2rgbd" else name)


class Tracer:
    """A :func:`sys.setprofile` hook: records the changes of (module, room) -- the innermost ``pose2rgbd`` frame
    after every Python call and return; frames of other packages (NumPy, torch, the standard library) are
    transparent -- in :attr:`seq`, and in :attr:`marks` the index at which each call of a function named
    ``marker`` starts (where a trace script cuts its piece).

    ``opaque``: module prefixes whose code is one place with all it calls (``("pose2rgbd.methods",)``: the model's
    own code -- building the network, its forward passes, opening its keyframes -- is where the outermost frame
    of those modules is, whatever it calls; the trace is then the way *to and from* the model)."""

    def __init__(self, marker: str = "", opaque: tuple[str, ...] = ()) -> None:
        self.marker = marker
        self.opaque = opaque
        self.seq: list[tuple[str, str]] = []
        self.marks: list[int] = []

    def _place(self, frame: FrameType | None) -> tuple[str, str] | None:
        """The place of the innermost pose2rgbd frame from ``frame`` outwards (or of the outermost opaque one)."""
        place: tuple[str, str] | None = None
        while frame is not None:
            p = _room(frame)
            if p is not None:
                if place is None:
                    place = p
                    if not self.opaque:
                        return place
                if p[0].startswith(self.opaque):
                    place = p
            frame = frame.f_back
        return place

    def _at(self, place: tuple[str, str] | None) -> None:
        if place is not None and (not self.seq or self.seq[-1] != place):
            self.seq.append(place)

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            if _room(frame) is not None:
                self._at(self._place(frame))
                if self.marker and frame.f_code.co_name == self.marker:
                    self.marks.append(len(self.seq) - 1)  # the piece starts in the marked function's own place
        elif event == "return" and _room(frame) is not None:
            self._at(self._place(frame.f_back))


def collapse(places: list[str]) -> list[str]:
    """Consecutive repeats as one."""
    return [p for k, p in enumerate(places) if k == 0 or places[k - 1] != p]


def way(places: list[str]) -> list[str]:
    """The piece with repeated excursions merged: a stretch that repeats at once (``A B A B A``, or ``A B A C A B A
    C A``: a loop over keyframes calling into the same places each time) is kept once (``A B A``, ``A B A C A``)."""
    s = collapse(places)
    changed = True
    while changed:
        changed = False
        for n in range(2, len(s) // 2 + 1):  # the shortest repeats first
            k = 0
            while k + 2 * n <= len(s):
                if s[k : k + n] == s[k + n : k + 2 * n]:
                    del s[k + n : k + 2 * n]
                    changed = True
                else:
                    k += 1
    return s


def count(places: list[str]) -> dict[str, int]:
    """``stops`` (entries into a place: the changes along the piece), ``places`` (distinct ones) and ``returns``
    (stops into a place already visited: stops - places)."""
    collapsed = collapse(places)
    return {"stops": len(collapsed), "places": len(set(collapsed)), "returns": len(collapsed) - len(set(collapsed))}


def print_trace(piece: list[tuple[str, str]], what: str, *, show: bool = False) -> None:
    """The counts of ``piece`` ((module, room) places) at both grains, trace and way, one line each; ``show``: the
    sequences too."""
    for grain, col in (("module", 0), ("room", 1)):
        for kind, places in (("trace", [p[col] for p in piece]), ("way", way([p[col] for p in piece]))):
            c = count(places)
            stops, n, back = c["stops"], c["places"], c["returns"]
            print(f"  {what}, {grain} grain, {kind}: {stops} stops in {n} {grain}s with {back} returns")
    if show:
        for grain, col in (("module", 0), ("room", 1)):
            places = [p[col] for p in piece]
            for kind, seq in (("trace", collapse(places)), ("way", way(places))):
                print(f"  {grain} {kind}: " + " -> ".join(r.removeprefix("pose2rgbd.") for r in seq))
