"""The one cache of keyframe data in the map layer: a small, typed, thread-safe least-recently-used store.

Used for the place map's decoded images and depth (:mod:`pose2rgbd.placemap.place_map`), a sized view's resampled
keyframes (:mod:`pose2rgbd.placemap.keyframe_view`) and the localizer's RootSIFT blocks and their stacked
candidate sets (:class:`~pose2rgbd.placemap.features.CandidateMatcher`). ``functools.lru_cache`` would do for a
function, but these caches are per object, keyed by more than the arguments (``("rgb", i)``), and report their
hits and misses (``cache_stats``, read by the benchmarks and tests): one class serves all of them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most ``size`` values (0: nothing kept, every call makes its value). Thread-safe: the lookup and the
    insertion hold a lock, the value is made outside it (two threads missing the same key both make it; the
    values are equal, the last one is kept)."""

    def __init__(self, size: int) -> None:
        self.size = max(0, int(size))
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K, make: Callable[[], V]) -> V:
        """The value kept for ``key``, else ``make()``, kept as the most recently used."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
        v = make()
        if self.size:
            with self._lock:
                self._data[key] = v
                self._data.move_to_end(key)
                while len(self._data) > self.size:
                    self._data.popitem(last=False)
        return v

    def stats(self) -> dict[str, int]:
        """``cached`` (values kept), ``hits``, ``misses``."""
        with self._lock:
            return {"cached": len(self._data), "hits": self.hits, "misses": self.misses}
