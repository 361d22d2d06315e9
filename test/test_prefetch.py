"""The one prefetch helper (pose2rgbd/prefetch.py) that conversion and training share."""

from __future__ import annotations

import threading
import time

import pytest

from pose2rgbd.prefetch import prefetch


def test_items_in_order_and_bounded_look_ahead() -> None:
    made: list[int] = []

    def source():  # type: ignore[no-untyped-def]
        for i in range(20):
            made.append(i)
            yield i

    g = prefetch(source(), 3)
    assert next(g) == 0
    time.sleep(0.2)  # the producer fills the queue, then waits
    assert len(made) <= 1 + 3 + 1  # the item taken, the queue, one in the producer's hand
    assert [0, *g] == list(range(20))
    assert list(prefetch(iter(range(5)), 0)) == [0, 1, 2, 3, 4]  # depth 0: no thread


def test_an_error_reaches_the_consumer_at_its_item() -> None:
    def source():  # type: ignore[no-untyped-def]
        yield 1
        yield 2
        raise ValueError("frame 3 is broken")

    got = []
    with pytest.raises(ValueError, match="frame 3"):
        for x in prefetch(source(), 4):
            got.append(x)
    assert got == [1, 2]


def test_closing_early_stops_the_thread() -> None:
    def endless():  # type: ignore[no-untyped-def]
        i = 0
        while True:
            i += 1
            yield i

    before = threading.active_count()
    g = prefetch(endless(), 2, name="test-prefetch")
    assert next(g) == 1
    g.close()  # a consumer that breaks out of its loop
    assert not any(t.name == "test-prefetch" for t in threading.enumerate())
    assert threading.active_count() == before
