"""Make the items of an iterator ahead in a background thread while the caller works on the previous ones.

One helper for every pipeline that overlaps producing with consuming: conversion decodes frames (OpenCV and
rosbags release the GIL) while the writer encodes, training makes batches from memory-mapped arrays while the
model steps. Written by hand: ``concurrent.futures`` maps a function over inputs, but here one iterator must be
advanced in order, in one thread, with bounded look-ahead and its exceptions handed to the consumer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def prefetch(it: Iterator[T], depth: int, name: str = "pose2rgbd-prefetch") -> Generator[T, None, None]:
    """Yield ``it``'s items in order, up to ``depth`` made ahead in a daemon thread. An exception raised by ``it``
    is raised here, at the item where it happened. Closing the generator (``break``, an error in the consumer)
    stops the thread: it takes no further item and is joined. ``depth`` <= 0: plain iteration, no thread."""
    if depth <= 0:
        yield from it
        return
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item: Any) -> bool:
        """Hand ``item`` over unless the consumer has stopped taking items."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for x in it:
                if not put(x):
                    return
            put(done)
        except BaseException as e:  # handed to the consumer
            put(e)

    th = threading.Thread(target=produce, name=name, daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        th.join()
