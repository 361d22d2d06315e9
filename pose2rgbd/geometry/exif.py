"""A photo's pinhole intrinsics from its EXIF focal length (for photos whose camera is not given otherwise).

Two EXIF routes, the first that the file carries wins (Pillow reads the tags):

1. ``FocalLengthIn35mmFilm``: the focal length a 36 x 24 mm frame would need for the same field of view, over
   the diagonal (CIPA DC-008): ``f_px = f35 * diagonal_px / 43.27``. It holds at any image size as long as the
   image is the whole frame (resized, not cropped).
2. ``FocalLength`` (mm) with the sensor's pixel density, ``FocalPlaneXResolution`` / ``FocalPlaneYResolution``
   in pixels per ``FocalPlaneResolutionUnit`` at the ``PixelXDimension`` x ``PixelYDimension`` the camera
   wrote, scaled to the image's size.

The principal point is the image centre (EXIF does not record one); the lens is taken as distortion-free. A
photo cropped after it was taken carries the full frame's focal: its field of view is narrower than the EXIF
says; where the EXIF pixel dimensions keep the full frame's aspect ratio and the image has another, the crop is
detected and no camera is returned. Anything missing, unreadable or implausible gives ``None`` (the caller's
fallback applies: the map's camera with its warning, or the importer's --fx / --hfov).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import SupportsFloat

from pose2rgbd.geometry.camera import PinholeCamera

EXIF_IFD = 0x8769
FOCAL_LENGTH = 37386
FOCAL_35MM = 41989
FOCAL_PLANE_X_RES, FOCAL_PLANE_Y_RES, FOCAL_PLANE_UNIT = 41486, 41487, 41488
PIXEL_X_DIM, PIXEL_Y_DIM = 40962, 40963
DIAGONAL_35MM = math.hypot(36.0, 24.0)  # 43.27 mm
# FocalPlaneResolutionUnit -> millimetres per unit (EXIF: 2 inch, 3 centimetre; 4 mm and 5 um by some makers)
UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}


@dataclass(frozen=True)
class ExifCamera:
    """Intrinsics read from a photo's EXIF and how they were derived (for the logs and the importer's notes)."""

    camera: PinholeCamera
    source: str  # "FocalLengthIn35mmFilm 28 mm" | "FocalLength 4.3 mm, focal plane 1234 px/mm"


def _number(v: object) -> float:
    """An EXIF value (a number, Pillow's ``IFDRational``, or anything else) as a finite positive float, else NaN."""
    if not isinstance(v, (SupportsFloat, str)):
        return math.nan
    try:
        x = float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        return math.nan
    return x if math.isfinite(x) and x > 0 else math.nan


def exif_tags(path: str | Path) -> tuple[dict[int, object], tuple[int, int]]:
    """The EXIF sub-IFD tags of an image file and its size as stored (width, height; no EXIF rotation); empty
    and (0, 0) when the file cannot be read. Pillow reads the header only."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return dict(im.getexif().get_ifd(EXIF_IFD)), (int(im.size[0]), int(im.size[1]))
    except (OSError, ValueError, SyntaxError):  # Pillow raises these for corrupt or foreign files
        return {}, (0, 0)


def camera_from_exif(tags: dict[int, object], width: int, height: int) -> ExifCamera | None:
    """Pinhole intrinsics of a ``width`` x ``height`` image from its EXIF sub-IFD ``tags`` (see the module
    docstring), or ``None`` when the tags do not give them."""
    if width <= 0 or height <= 0:
        return None
    pw, ph = _number(tags.get(PIXEL_X_DIM)), _number(tags.get(PIXEL_Y_DIM))
    aspect = min(width, height) / max(width, height)
    if pw > 0 and ph > 0 and abs(min(pw, ph) / max(pw, ph) - aspect) > 0.02:
        return None  # the camera's own frame has another aspect ratio: the image was cropped
    f = math.nan
    source = ""
    f35 = _number(tags.get(FOCAL_35MM))
    if f35 > 0:
        f = f35 * math.hypot(width, height) / DIAGONAL_35MM
        source = f"FocalLengthIn35mmFilm {f35:g} mm"
    else:
        fmm = _number(tags.get(FOCAL_LENGTH))
        res = _number(tags.get(FOCAL_PLANE_X_RES))
        unit = _number(tags.get(FOCAL_PLANE_UNIT, 2))
        mm = UNIT_MM.get(int(unit)) if unit > 0 else None
        if fmm > 0 and res > 0 and pw > 0 and ph > 0 and mm is not None:
            px_per_mm = res / mm  # at the camera's pixel dimensions
            f = fmm * px_per_mm * max(width, height) / max(pw, ph)
            source = f"FocalLength {fmm:g} mm, focal plane {px_per_mm:.4g} px/mm at {pw:.0f}x{ph:.0f}"
    # a field of view between about 1 and 170 degrees: anything else is a broken tag, not a lens
    if not (math.isfinite(f) and 0.05 * max(width, height) < f < 60.0 * max(width, height)):
        return None
    cam = PinholeCamera(int(width), int(height), f, f, (width - 1) / 2.0, (height - 1) / 2.0)
    return ExifCamera(cam, source)


def exif_camera(path: str | Path, width: int = 0, height: int = 0) -> ExifCamera | None:
    """:func:`camera_from_exif` of the file at ``path``, its image ``width`` x ``height`` as decoded (0: as
    stored)."""
    tags, (w, h) = exif_tags(path)
    return camera_from_exif(tags, width or w, height or h) if tags else None
