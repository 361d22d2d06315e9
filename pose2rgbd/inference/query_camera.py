"""The camera of query images for the structure localizer: ``--camera`` / the node's ``camera`` parameter, and
what to say when it is not known.

A place map stores pinhole keyframes (a distorted source was undistorted once, when its dataset was imported:
:mod:`pose2rgbd.geometry.lens`). A query taken through a lens with distortion is localized by undistorting its
keypoints with the lens's model (``cv2.undistortPoints``); treated as a pinhole it is localized with errors that
grow towards the image border (several times the pinhole error for a wide-angle lens). So a query whose camera is
not given gets a warning, naming the lens the map's images came from when the map knows one.

:func:`query_geometry` is how the localizer takes a query of one size: the camera at the size SIFT runs on, its
lens, the scale to the map's pixel count (``fit_to_map``); the localizer keeps one per image size, not per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.lens import Distortion, QueryCamera, distortion_from_dict, parse_camera_spec

if TYPE_CHECKING:
    from pose2rgbd.inference.structure_match import StructureMap

MAP_CAMERA = "map"  # --camera map: the camera the map's images were taken with (its dataset's source camera)
EXIF_CAMERA = "exif"  # --camera exif: each photo's focal length from its EXIF (localize images only)


MIN_QUERY_SIDE = 16  # pixels: a smaller query has no room for SIFT's keypoints (their 16x16 descriptor window)


def source_cameras(place_map: StructureMap) -> list[QueryCamera]:
    """The cameras the map's dataset was imported from (``source_cameras`` of its manifest), with their lens (none
    for a map in memory, the build's view, which has no manifest yet)."""
    out = []
    for c in place_map.manifest.get("dataset", {}).get("source_cameras") or []:
        dist = None
        if c.get("model", "pinhole") != "pinhole" and c.get("distortion"):
            dist = distortion_from_dict({"model": c["model"], "coeffs": c["distortion"]}, f"{place_map.path}")
        out.append(QueryCamera(float(c["fx"]), float(c["fy"]), float(c["cx"]), float(c["cy"]), dist,
                               int(c["width"]), int(c["height"])))  # fmt: skip
    return out


def query_camera(text: str, place_map: StructureMap, what: str = "--camera") -> QueryCamera | None:
    """``text`` as a :class:`QueryCamera`: a spec (:func:`parse_camera_spec`), ``map`` (the map's source camera; for
    a map that records none, its images were not undistorted on import, so they are the source's: the map's own
    pinhole camera, at its size), or None when empty or ``exif`` (the map's pinhole camera scaled to each image, or
    each photo's EXIF focal: :func:`wants_exif`)."""
    if wants_exif(text):
        return None
    if text.strip().lower() != MAP_CAMERA:
        return parse_camera_spec(text, what)
    cams = source_cameras(place_map)
    if not cams:
        own = place_map.camera(0)
        return QueryCamera(own.fx, own.fy, own.cx, own.cy, None, own.width, own.height)
    if len(cams) > 1:
        raise ConfigError(
            f"{what} map: the map {place_map.path} was imported from {len(cams)} cameras; give the queries' camera "
            "as FX,FY,CX,CY[,K1,K2,P1,P2[,K3]]"
        )
    return cams[0]


def wants_exif(text: str) -> bool:
    """``--camera exif``: each photo's camera from its EXIF focal length (:mod:`pose2rgbd.geometry.exif`)."""
    return text.strip().lower() == EXIF_CAMERA


GIVE_CAMERA = "--camera FX,FY,CX,CY[,K1,K2,P1,P2[,K3]]"


def unknown_camera_warning(place_map: StructureMap, w: int, h: int, no_exif: str = "") -> str:
    """The warning of a query localized without its camera: the map's pinhole camera scaled to ``w x h``.
    ``no_exif``: the photo in which ``--camera exif`` found no usable EXIF focal length (the user asked for EXIF
    already: the warning names the photo and what else to give; :func:`no_exif_note` lists all of them)."""
    lens = [c for c in source_cameras(place_map) if c.distortion is not None]
    if no_exif:
        text = (
            f"--camera exif: {no_exif} has no usable EXIF focal length (none recorded, or the photo was cropped after "
            f"it was taken): it, and every other such photo, is taken as the map's pinhole camera scaled to its size "
            f"({w}x{h} here), without lens distortion, and may localize worse or wrongly. Give such photos' camera "
            f"with {GIVE_CAMERA}, localizing them apart from the photos that have a focal length"
        )
    else:
        text = (
            f"query camera not given: {w}x{h} images are taken as the map's pinhole camera scaled to their size, "
            "without lens distortion; a distorted photo localizes worse than it could (errors grow towards the "
            f"border). Give the images' camera: {GIVE_CAMERA} (a node: its camera parameter, or topics.camera_info "
            "naming the camera's CameraInfo topic; over a bag: localize bag --camera-info-topic T), or --camera exif "
            "for uncropped photos whose EXIF has the focal length"
        )
    if lens:
        d = lens[0].distortion
        assert d is not None
        coeffs = ", ".join(f"{v:.4g}" for v in d.coeffs)
        text += (
            f". The map's images were undistorted from a lens of the {d.model} model ({coeffs}): for photos from that "
            "camera pass --camera map"
        )
    return text


def no_exif_note(names: Sequence[str], images: int, shown: int = 10) -> str:
    """The summary line of ``--camera exif`` for the photos (``names``, of ``images``) without a usable EXIF focal
    length, the first ``shown`` of them named."""
    listed = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
    return (
        f"--camera exif: {len(names)} of {images} photos had no usable EXIF focal length and were taken as the map's "
        f"camera ({listed}); give their camera with {GIVE_CAMERA}, in a run of their own"
    )


@dataclass(frozen=True)
class QueryGeometry:
    """How a query image of one size is localized: ``camera`` at the size SIFT runs on (``wh``; ``K`` its matrix),
    the lens whose distortion its keypoints are undistorted by (None: pinhole), and ``scale``, the factor from the
    image to that size (``fit_to_map``; 1: as given)."""

    camera: PinholeCamera
    K: np.ndarray
    lens: Distortion | None
    scale: float
    wh: tuple[int, int]


def query_geometry(
    w: int,
    h: int,
    *,
    lens: QueryCamera | None,
    intrinsics: tuple[float, float, float, float] | None,
    camera: PinholeCamera | None,
    map_camera: PinholeCamera,
    map_hw: tuple[int, int],
    fit_to_map: bool,
) -> QueryGeometry:
    """A ``w x h`` query's geometry: its camera from ``lens`` (wins), else ``intrinsics`` at its size, else
    ``camera`` or the map's (``map_camera``) scaled to its size -- refused at another aspect ratio; then, with
    ``fit_to_map``, scaled down to the map's pixel count when it has more (SIFT at the map's resolution matches
    the map's features best and costs far less; the intrinsics scaled with it)."""
    if min(w, h) < MIN_QUERY_SIDE:
        raise ConfigError(f"the image is {w}x{h}: too small to localize (at least {MIN_QUERY_SIDE} pixels a side)")
    dist = None
    if lens is not None:
        cam, dist = lens.at(w, h)
    elif intrinsics is not None:
        cam = PinholeCamera(w, h, *intrinsics)
    else:
        cam = camera or map_camera
        if abs(cam.width / cam.height - w / h) > 0.01 * (w / h):
            whose = "the given camera" if camera else "the map's camera"
            raise ConfigError(
                f"the image is {w}x{h} and {whose} is {cam.width}x{cam.height}, another aspect ratio: give "
                "the images' own intrinsics (--camera FX,FY,CX,CY, the camera parameter or a CameraInfo topic)"
            )
        if (cam.width, cam.height) != (w, h):
            cam = cam.scaled(w, h)
    mh, mw = map_hw
    scale = math.sqrt(mh * mw / float(h * w)) if fit_to_map else 1.0
    if scale < 0.99:
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        cam = cam.scaled(nw, nh)
        w, h = nw, nh
    else:
        scale = 1.0
    return QueryGeometry(cam, cam.K, dist, scale, (w, h))
