"""Repeated frames: a frame whose pixels are byte-identical to the previous frame's.

Real camera streams repeat frames (a driver re-sending its last buffer, a video encoded at a higher rate than
the sensor, an exporter writing the same image twice). A repeat carries no new view but gets a new pose; in a
split it can land in test beside its twin in training, where the nearest-pose baseline answers it exactly
(zero error, an unbounded PSNR); a camera that froze and re-sends one buffer gives a whole run of them. One
filter for every place that takes frames in: every conversion drops them by default and counts them in its
report (``frames.repeats``; ``output.keep_repeats``, ``--keep-repeats``, keeps them), the recorder (live and
offline) drops and counts them the same way (its ``output.keep_repeats``), and ``map build`` leaves repeated
keyframes out (refusing a selection that is nearly all repeats). Evaluation leaves out a test frame whose pixels
repeat a training frame's (:func:`repeats_of`), where the nearest-pose baseline would answer it exactly.

The comparison is on the array's bytes (a BLAKE2b digest of them and the array's shape; hashlib, as a digest
is all that is needed): decoded pixels, so a PNG and its byte-different but pixel-identical re-encoding count
as one -- or, where decoding would cost more than the check is worth (the recorder, before it synchronizes an
image), the message's image bytes, which a re-sent buffer repeats exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SHOWN = 10  # repeats listed by name in the report


def digest(a: np.ndarray) -> bytes:
    """The digest the filter compares: the array's bytes, shape and dtype (compute it where the array is)."""
    a = np.ascontiguousarray(a)
    h = hashlib.blake2b(a.data, digest_size=16)
    h.update(repr((a.shape, a.dtype.str)).encode())
    return h.digest()


@dataclass
class RepeatFilter:
    """Feed every frame in order to :meth:`drop` (or its :func:`digest` to :meth:`drop_digest`); it says whether
    to leave the frame out. ``earlier``: a repeat of any earlier frame, not only of the previous one (a map's
    keyframes, which are not consecutive frames)."""

    keep: bool = False
    earlier: bool = False
    repeats: int = 0
    frames: int = 0  # frames seen
    run: int = 0  # repeats in a row up to the last frame (a frozen camera: it grows)
    longest_run: int = 0
    examples: list[str] = field(default_factory=list)
    _prev: bytes | None = None
    _seen: set[bytes] = field(default_factory=set)

    def drop(self, rgb: np.ndarray, label: str) -> bool:
        """True when ``rgb`` repeats the previous frame's pixels and repeats are dropped (counted either way)."""
        return self.drop_digest(digest(rgb), label)

    def drop_digest(self, d: bytes, label: str) -> bool:
        """:meth:`drop` of a frame whose :func:`digest` is ``d``."""
        same = d in self._seen if self.earlier else d == self._prev
        self._prev = d
        if self.earlier:
            self._seen.add(d)
        self.frames += 1
        if not same:
            self.run = 0
            return False
        self.repeats += 1
        self.run += 1
        self.longest_run = max(self.longest_run, self.run)
        if len(self.examples) < SHOWN:
            self.examples.append(label)
        return not self.keep

    def to_dict(self) -> dict[str, Any]:
        return {
            "repeats": self.repeats,
            "dropped": 0 if self.keep else self.repeats,
            "policy": "kept (--keep-repeats)" if self.keep else "dropped (--keep-repeats keeps them)",
            "longest_run": self.longest_run,
            "examples": list(self.examples),
        }

    def line(self) -> str:
        """One line for the CLI, '' without repeats."""
        if not self.repeats:
            return ""
        what = "kept (--keep-repeats)" if self.keep else "dropped (--keep-repeats keeps them)"
        shown = ", ".join(self.examples[:3]) + (" ..." if self.repeats > 3 else "")
        return f"{self.repeats} repeated frame(s) (pixels identical to the previous frame's) {what}: {shown}"


def repeats_of(images: np.ndarray, reference: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The frames of ``query`` (indices into ``images``, e.g. a memory-mapped training cache) whose pixels equal
    those of a frame of ``reference``, in ``query``'s order."""
    seen = {digest(images[int(i)]) for i in reference}
    return np.asarray([i for i in query if digest(images[int(i)]) in seen], dtype=np.int64)
