"""Image bytes -> array with the checks OpenCV leaves out, and 16-bit images -> 8 bits by their real bit depth.

* :func:`decode_image_bytes`: ``cv2.imdecode`` that refuses a damaged file instead of returning its pixels. libjpeg
  decodes a truncated or garbled JPEG into an image (the missing part grey, the damaged part garbage) and reports
  the damage only as a warning printed on the process's stderr ("Corrupt JPEG data: ...", "Premature end of JPEG
  file"), naming no file, and OpenCV offers no way to ask for it. So the decoder's stderr is captured for the
  call and its libjpeg warnings become the reason of a :class:`BagError` that names the image; anything else
  written to stderr meanwhile (another thread) is passed on. A JPEG is also walked marker by marker (a few
  header reads, written here because no installed library checks the structure without decoding) so that a cut
  file is named "truncated" whatever the OpenCV version does with it.
* :func:`to_uint8`: a 16-bit image (``mono16``, ``rgb16``, a 16-bit PNG) as 8 bits. Cameras store 10-, 12- or
  14-bit values in 16-bit containers: taking the high byte turns 10-bit data into values 0..3 (a black image
  that still gets a pose), so the image is scaled by its significant bits -- given, or inferred from its
  largest value (the smallest of 10, 12, 14, 16 bits that holds it).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np

from pose2rgbd.errors import BagError, ConfigError

CONTAINER_BITS = (10, 12, 14, 16)  # what cameras put in 16-bit containers
# what libjpeg (through OpenCV) prints for data it decoded anyway; OpenCV's own "[ WARN...] ... imgcodecs" lines too
# OpenCV's own log prefix on a decoder's line (``[ WARN:0@0.515] global grfmt_png.cpp:793 readFromStreamOrBuffer``):
# where and when, which tells a user nothing; the message after it is what is kept
_OPENCV_LOG_PREFIX = re.compile(r"^\[\s*[A-Z]+:[^\]]*\]\s*(global\s+)?\S+\.(cpp|hpp|c|h):\d+\s+\w+\s+")
_DECODER_LINE = re.compile(
    r"^(Corrupt JPEG data|Premature end of JPEG file|Invalid JPEG file structure|Bogus |Inconsistent progression"
    r"|Unsupported marker|Warning: |JPEG datastream)|imgcodecs|grfmt",
)
_CAPTURE_LOCK = threading.Lock()


@contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 during the block (one block at a time)."""
    out: list[str] = []
    with _CAPTURE_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no usable stderr (a daemon): decode without the capture
            yield out
            return
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield out
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                out.append(tmp.read().decode("utf-8", errors="replace"))


def jpeg_problem(data: bytes) -> str | None:
    """Why a JPEG byte string is structurally damaged (None: its structure is whole). Only the headers are walked
    up to the first scan, then the end-of-image marker is looked for after it; the entropy-coded data is left
    to the decoder."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        return "not a JPEG file (no start-of-image marker)"
    k = 2
    while True:
        while k < len(data) and data[k] == 0xFF:  # fill bytes before a marker
            k += 1
        if k >= len(data):
            return f"truncated (the file ends in its headers, after {len(data)} bytes)"
        marker = data[k]
        k += 1
        if marker == 0xD9:
            return "no image data (end-of-image marker before any scan)"
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length field
            continue
        if k + 2 > len(data):
            return f"truncated (the file ends in its headers, after {len(data)} bytes)"
        length = int.from_bytes(data[k : k + 2], "big")
        if length < 2:
            return f"damaged header (segment 0xFF{marker:02X} of length {length})"
        if k + length > len(data):
            return f"truncated (the file ends in its headers, after {len(data)} bytes)"
        k += length
        if marker == 0xDA:  # start of scan: the compressed data follows; it must end in an end-of-image marker
            break
    if data.rfind(b"\xff\xd9", k) < 0:
        return f"truncated (no end-of-image marker; the file ends after {len(data)} bytes)"
    return None


def decode_image_bytes(data: bytes | np.ndarray, *, what: str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """``cv2.imdecode`` of ``data`` that raises :class:`BagError` naming ``what`` (a file name, a topic) for an
    empty, undecodable, truncated or corrupt image, rather than returning what the decoder made of it."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data, np.uint8)
    buf = buf.reshape(-1)
    if buf.size == 0:
        raise BagError(f"{what}: empty image (0 bytes)")
    head = bytes(buf[:2])
    if head == b"\xff\xd8":
        problem = jpeg_problem(buf.tobytes())
        if problem is not None:
            raise BagError(f"{what}: damaged JPEG: {problem}")
    with _stderr_captured() as captured:
        img = cv2.imdecode(buf, flags)
    lines = [ln for ln in "".join(captured).splitlines() if ln.strip()]
    ours = [_OPENCV_LOG_PREFIX.sub("", ln.strip()) for ln in lines if _DECODER_LINE.search(ln.strip())]
    others = [ln for ln in lines if not _DECODER_LINE.search(ln.strip())]
    if others:  # not the decoder's: written by another thread meanwhile
        sys.stderr.write("\n".join(others) + "\n")
    if img is None:
        why = f" ({'; '.join(ours)})" if ours else ""
        raise BagError(f"{what}: not a decodable image{why} (not a PNG / JPEG / TIFF / BMP / WebP file, or damaged)")
    if ours and head == b"\xff\xd8":
        raise BagError(f"{what}: damaged JPEG (the decoder reported: {'; '.join(ours)})")
    if min(img.shape[:2]) < 1:
        raise BagError(f"{what}: the image is empty ({img.shape[1]}x{img.shape[0]})")
    return img


def significant_bits(img: np.ndarray) -> int:
    """The bit depth of a 16-bit image's values: the smallest of 10, 12, 14, 16 bits that holds its largest."""
    top = int(np.max(img)) if img.size else 0
    return next(b for b in CONTAINER_BITS if top < (1 << b))


def to_uint8(img: np.ndarray, bit_depth: int = 0, *, what: str = "image") -> np.ndarray:
    """An 8- or 16-bit image as uint8. ``bit_depth`` of 16-bit data: 8-16 (values above it are clipped), or 0:
    inferred per image (:func:`significant_bits`). Other types raise :class:`BagError` naming ``what``."""
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    if a.dtype != np.uint16:
        raise BagError(
            f"{what}: a {a.dtype} image; an image -> pose model takes 8-bit images (or 16-bit ones, scaled by their "
            "bit depth): convert it to 8 bits"
        )
    bits = int(bit_depth)
    if bits == 0:
        bits = significant_bits(a)
    elif not 8 <= bits <= 16:
        raise ConfigError(f"bit depth {bit_depth}: expected 0 (infer it per image) or 8 to 16")
    return (np.minimum(a, (1 << bits) - 1) >> (bits - 8)).astype(np.uint8)  # the top 8 of its bits
