"""Repeated frames: frames whose decoded pixels are identical, found by digest.

Conversion drops a frame that repeats the previous one (:class:`pose2rgbd.convert.repeats.RepeatFilter`);
evaluation leaves out a test frame that repeats a training frame (:func:`repeats_of`), where the nearest-pose
baseline would answer it exactly. The comparison is on the pixels (a BLAKE2b digest of the array bytes, shape and
dtype; hashlib, as a digest is all that is needed), so a PNG and its byte-different but pixel-identical
re-encoding count as one.
"""

from __future__ import annotations

import hashlib

import numpy as np


def pixel_digest(pixels: np.ndarray) -> bytes:
    """16 bytes that differ between any two arrays of different pixels (shape and dtype included)."""
    a = np.ascontiguousarray(pixels)
    h = hashlib.blake2b(a.data, digest_size=16)
    h.update(repr((a.shape, a.dtype.str)).encode())
    return h.digest()


def repeats_of(images: np.ndarray, reference: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The frames of ``query`` (indices into ``images``, e.g. a memory-mapped training cache) whose pixels equal
    those of a frame of ``reference``, in ``query``'s order."""
    seen = {pixel_digest(images[int(i)]) for i in reference}
    return np.asarray([i for i in query if pixel_digest(images[int(i)]) in seen], dtype=np.int64)
