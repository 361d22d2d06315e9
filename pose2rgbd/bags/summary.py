"""What a recording holds: storage, time span and, per topic, type, message count and mean rate
(``pose2rgbd bag info`` prints it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pose2rgbd.bags.reader import BagReader, open_bag


@dataclass(frozen=True)
class TopicSummary:
    """One topic of a recording. ``first_ns`` / ``last_ns``: log times of its first and last message (``None``
    when the messages were not scanned or the topic has none); ``error``: why it cannot be decoded, if so."""

    name: str
    msgtype: str
    count: int
    first_ns: int | None = None
    last_ns: int | None = None
    error: str | None = None

    @property
    def rate_hz(self) -> float | None:
        """Mean message rate over the topic's own time span, ``(count - 1) / (last - first)``; ``None`` when it
        is not defined (not scanned, fewer than two messages, or all at one time)."""
        if self.first_ns is None or self.last_ns is None or self.count < 2 or self.last_ns <= self.first_ns:
            return None
        return (self.count - 1) / ((self.last_ns - self.first_ns) / 1e9)


@dataclass(frozen=True)
class BagSummary:
    """A recording at a glance; ``topics`` in the reader's order (by name)."""

    path: Path
    storage: str
    start_ns: int
    duration_ns: int
    message_count: int
    topics: tuple[TopicSummary, ...]
    scanned: bool

    @property
    def duration_s(self) -> float:
        return self.duration_ns / 1e9

    @property
    def start_utc(self) -> str | None:
        """Log time of the first message as ISO 8601 UTC with milliseconds (``None`` for an empty bag)."""
        if not self.message_count:
            return None
        return datetime.fromtimestamp(self.start_ns / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds")


def topic_spans(bag: BagReader, topics: Iterable[str] | None = None) -> dict[str, tuple[int, int]]:
    """``{topic: (first_ns, last_ns)}`` log times, read from the messages (without decoding them) of ``topics``
    (default: every topic that has messages). Topics without messages are absent."""
    wanted = [t.name for t in bag.topics.values() if t.count] if topics is None else list(topics)
    spans: dict[str, tuple[int, int]] = {}
    for topic, stamp, _msgtype, _data in bag.raw_messages(wanted):
        first = spans[topic][0] if topic in spans else stamp
        spans[topic] = (first, stamp)
    return spans


def summarize_bag(bag: BagReader | str | Path, *, scan: bool = True) -> BagSummary:
    """Summarize an opened recording, or open ``bag`` (a path) for it. ``scan=False`` skips reading the messages
    (fast; then no topic has a time span or rate)."""
    if not isinstance(bag, BagReader):
        with open_bag(bag) as opened:
            return summarize_bag(opened, scan=scan)
    spans = topic_spans(bag) if scan else {}
    topics = []
    for t in bag.topics.values():
        first, last = spans.get(t.name, (None, None))
        topics.append(TopicSummary(t.name, t.msgtype, t.count, first, last, t.error))
    return BagSummary(bag.path, bag.storage, bag.start_ns, bag.duration_ns, bag.message_count, tuple(topics), scan)
