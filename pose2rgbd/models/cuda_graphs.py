"""A model's fixed-shape GPU work captured once as CUDA graphs and replayed (``engine.cuda_graphs``).

A render of one pose at a time on a GPU is mostly the host's work: the hybrid's batch-1 render at 512x512 launched
435 kernels, one by one from Python, while the GPU was busy for 2.5 of its 8.8 ms (docs/serving.md, "Measured
again"). A CUDA graph (``torch.cuda.CUDAGraph``) records those launches once and replays them as one: the host then
pays for one launch, not hundreds. A graph replays fixed work on fixed memory, so

* its inputs are copied into tensors the graph owns (:class:`CapturedCall`) and its outputs are tensors it
  overwrites at the next replay (a caller that keeps them clones them);
* one graph serves one set of shapes and settings: :class:`GraphCache` keeps one per key (the batch size, the
  settings the captured code reads as Python values), up to :attr:`GraphCache.MAX_GRAPHS`, and all of them share
  one memory pool;
* the captured code must not wait for the GPU (no ``.item()``, no boolean selection, no copy from the host):
  where a capture fails, the cache says why once (a warning) and the caller runs its eager path for that key.

``emulate``: the same buffers and calls without a graph, on any device (what the tests on a CPU exercise: the
staging of inputs and outputs, which a graph then replays).

Importing this module imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE as PoolHandle  # what torch.cuda.graph_pool_handle returns

log = logging.getLogger(__name__)

Outputs = dict[str, torch.Tensor]


class CapturedCall:
    """``fn(*inputs) -> dict of tensors`` captured as a CUDA graph on the inputs' shapes, dtypes and device.

    Calling it copies the new inputs into the graph's own (:attr:`inputs`), replays the graph and returns its
    outputs (:attr:`outputs`, the same tensors at every call: overwritten by the next). The code ``fn`` runs must
    wait for nothing on the host (see the module docstring); a failed capture raises. ``emulate``: no graph, ``fn``
    runs on the copied inputs at every call (any device)."""

    WARMUP_PASSES = 2  # eager passes on a side stream before the capture (lazy initialization of the libraries)

    def __init__(
        self,
        fn: Callable[..., Outputs],
        example_inputs: Sequence[torch.Tensor],
        *,
        pool: PoolHandle | None = None,
        emulate: bool = False,
    ) -> None:
        self.fn = fn
        self.emulate = emulate
        self.inputs = [t.detach().clone() for t in example_inputs]
        self.graph: torch.cuda.CUDAGraph | None = None
        if emulate:
            self.outputs = fn(*self.inputs)
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_PASSES):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # autocast's cache of cast weights would be filled inside the capture and freed outside it
        # thread_local: another thread's CUDA work (a node's other callbacks) does not break this capture
        with _autocast_without_cache(), torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            self.outputs = fn(*self.inputs)
        self.graph = graph

    def __call__(self, *inputs: torch.Tensor) -> Outputs:
        if len(inputs) != len(self.inputs):
            raise ValueError(f"the captured call takes {len(self.inputs)} inputs, got {len(inputs)}")
        for static, x in zip(self.inputs, inputs):
            if static.data_ptr() != x.data_ptr():
                static.copy_(x, non_blocking=True)
        if self.graph is None:
            self.outputs = self.fn(*self.inputs)
        else:
            self.graph.replay()
        return self.outputs


def _autocast_without_cache() -> torch.autocast:
    """The CUDA autocast state in force (enabled or not, its dtype), with the cast cache off."""
    return torch.autocast(
        "cuda",
        dtype=torch.get_autocast_dtype("cuda"),
        enabled=torch.is_autocast_enabled("cuda"),
        cache_enabled=False,
    )


def autocast_key(device: torch.device) -> tuple[bool, torch.dtype]:
    """The autocast state a capture on ``device`` bakes in (part of every graph's key)."""
    return torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type)


class GraphCache:
    """One :class:`CapturedCall` per key, at most :attr:`MAX_GRAPHS`, sharing one memory pool.

    :meth:`get` captures on a key's first use and returns None for a key that failed to capture (the warning
    names the key and the error once) or that came after the cache was full: the caller then runs eagerly.
    """

    MAX_GRAPHS = 8

    def __init__(self, *, emulate: bool = False) -> None:
        self.emulate = emulate
        self._calls: dict[Hashable, CapturedCall] = {}
        self._failed: dict[Hashable, str] = {}
        self._pool: PoolHandle | None = None
        self._full_said = False
        self.captures = 0  # graphs captured (emulated ones included)

    def __len__(self) -> int:
        return len(self._calls)

    @property
    def failures(self) -> dict[Hashable, str]:
        """Keys whose capture failed, with the error."""
        return dict(self._failed)

    def get(
        self, key: Hashable, fn: Callable[..., Outputs], example_inputs: Sequence[torch.Tensor]
    ) -> CapturedCall | None:
        call = self._calls.get(key)
        if call is not None:
            return call
        if key in self._failed:
            return None
        if len(self._calls) >= self.MAX_GRAPHS:
            if not self._full_said:
                self._full_said = True
                log.warning(
                    "%d CUDA graphs captured, the most kept; renders of other shapes or settings (%s) run without "
                    "a graph", self.MAX_GRAPHS, key,
                )  # fmt: skip
            return None
        if not self.emulate and self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        try:
            call = CapturedCall(fn, example_inputs, pool=self._pool, emulate=self.emulate)
        except Exception as e:  # any capture error: this key runs eagerly, said once
            self._failed[key] = f"{type(e).__name__}: {e}"
            # a capture that failed leaves its pool unusable for the next (torch: "use_count > 0" asserted)
            self._pool = None
            log.warning(
                "CUDA graph capture failed for %s (%s); these renders run without a graph (engine.cuda_graphs off "
                "hides this warning)",
                key,
                self._failed[key],
            )
            return None
        self._calls[key] = call
        self.captures += 1
        return call

    def __deepcopy__(self, memo: dict[int, object]) -> GraphCache:
        return GraphCache(emulate=self.emulate)  # a copy of a model captures its own graphs, on its own tensors

    def clear(self) -> None:
        """Drop every graph (the memory they hold goes back to torch's allocator when they are collected)."""
        self._calls.clear()
        self._failed.clear()
        self._pool = None
        self._full_said = False


__all__ = ["CapturedCall", "GraphCache", "autocast_key"]
