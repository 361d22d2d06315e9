"""Repeated frames: a frame whose pixels are byte-identical to the previous frame's.

Real camera streams repeat frames (a driver re-sending its last buffer, a video encoded at a higher rate than
the sensor, an exporter writing the same image twice). A repeat carries no new view but gets a new pose; in a
split it can land in test beside its twin in training, where the nearest-pose baseline answers it exactly
(zero error, an unbounded PSNR). Every conversion drops them by default and counts them in its report
(``frames.repeats``); ``output.keep_repeats`` (``--keep-repeats``) keeps them.

The comparison is on the decoded pixels (:func:`pose2rgbd.dataset.repeats.pixel_digest`), so a PNG and its
byte-different but pixel-identical re-encoding count as one; evaluation uses the same digest for a test frame that
repeats a training frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pose2rgbd.dataset.repeats import pixel_digest

SHOWN = 10  # repeats listed by name in the report


@dataclass
class RepeatFilter:
    """Feed every frame in order to :meth:`drop`; it says whether to leave the frame out."""

    keep: bool = False
    repeats: int = 0
    examples: list[str] = field(default_factory=list)
    _prev: bytes | None = None

    def drop(self, rgb: np.ndarray, label: str) -> bool:
        """True when ``rgb`` repeats the previous frame's pixels and repeats are dropped (counted either way)."""
        digest = pixel_digest(rgb)
        same = digest == self._prev
        self._prev = digest
        if not same:
            return False
        self.repeats += 1
        if len(self.examples) < SHOWN:
            self.examples.append(label)
        return not self.keep

    def to_dict(self) -> dict[str, Any]:
        return {
            "repeats": self.repeats,
            "dropped": 0 if self.keep else self.repeats,
            "policy": "kept (--keep-repeats)" if self.keep else "dropped (--keep-repeats keeps them)",
            "examples": list(self.examples),
        }

    def line(self) -> str:
        """One line for the CLI, '' without repeats."""
        if not self.repeats:
            return ""
        what = "kept (--keep-repeats)" if self.keep else "dropped (--keep-repeats keeps them)"
        shown = ", ".join(self.examples[:3]) + (" ..." if self.repeats > 3 else "")
        return f"{self.repeats} repeated frame(s) (pixels identical to the previous frame's) {what}: {shown}"
