"""Depth maps of posed-image sources: sensor "no return" codes, the depth scale, and what the report says.

A 16-bit depth image (Kinect-class sensors, TUM RGB-D, nerfstudio) stores ``units per metre`` integers. Two
values are not distances: 0 (no measurement: too near, a hole, glass) and the type's maximum (65535 for
16-bit: saturated / out of range on many drivers). Read as numbers they become 0 m and 65.535 m (at mm
scale), which train and score as real depth. Both are invalid (NaN, REP-118) by default; which codes count is
``ImagesConfig.depth_invalid_codes`` (``zero``, ``max``, plain integers, or ``none``), and every import counts
the pixels each code turned invalid (``report/summary.json`` -> ``depth_import``, the manifest's
``extra.conversion.depth_import``, ``dataset info``).

The scale (integer units per metre): ``--depth-scale`` when given; else the source's own (nerfstudio's
``depth_unit_scale_factor`` in transforms.json: metres per unit, so the scale is its inverse); else 1000
(millimetres). The report names which one was used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pose2rgbd.convert.posed_images.errors import PoseImportError

DEFAULT_DEPTH_SCALE = 1000.0  # units per metre: millimetres


def code_values(codes: tuple[str, ...], dtype: np.dtype[Any]) -> dict[str, int]:
    """``{"0": 0, "65535": 65535}`` for the codes of an integer depth image of ``dtype``."""
    top = int(np.iinfo(dtype).max)
    vals: dict[str, int] = {}
    for c in codes:
        v = 0 if c == "zero" else top if c == "max" else int(c)
        if v <= top:
            vals[str(v)] = v
    return vals


@dataclass
class DepthScale:
    """Integer depth units per metre and where that number came from (for the report)."""

    units_per_m: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"units_per_m": self.units_per_m, "metres_per_unit": 1.0 / self.units_per_m, "from": self.source}


def resolve_depth_scale(flag: float, source_scale: float | None, source_note: str) -> DepthScale:
    """``flag`` (> 0: given on the command line) wins; else the source's own scale; else millimetres."""
    if flag > 0:
        note = "--depth-scale"
        if source_scale is not None and abs(source_scale - flag) > 1e-9 * flag:
            note += f" (overrides {source_note}: {source_scale:g} units per metre)"
        return DepthScale(float(flag), note)
    if source_scale is not None:
        return DepthScale(float(source_scale), source_note)
    return DepthScale(DEFAULT_DEPTH_SCALE, "default (millimetres; give --depth-scale for other units)")


@dataclass
class DepthReadStats:
    """What reading the depth maps of one import found: pixels turned invalid per code, files with any."""

    files: int = 0
    pixels: int = 0
    code_pixels: dict[str, int] = field(default_factory=dict)
    files_with_codes: int = 0
    integer_files: int = 0

    @property
    def invalid_pixels(self) -> int:
        return sum(self.code_pixels.values())

    def to_dict(self, scale: DepthScale, codes: tuple[str, ...]) -> dict[str, Any]:
        return {
            "scale": scale.to_dict(),
            "invalid_codes": list(codes),
            "files": self.files,
            "integer_files": self.integer_files,
            "pixels": self.pixels,
            "invalid_code_pixels": dict(self.code_pixels),
            "invalid_code_fraction": self.invalid_pixels / self.pixels if self.pixels else 0.0,
            "files_with_codes": self.files_with_codes,
        }


def read_depth_map(
    path: Path,
    shape_hw: tuple[int, int],
    scale: DepthScale,
    codes: tuple[str, ...],
    stats: DepthReadStats,
    *,
    npy_scale: float | None = None,
) -> np.ndarray:
    """float32 metres ``(H, W)``, NaN invalid. ``.npy``: float metres (divided by ``npy_scale`` when the source
    says its .npy files are in units too, as nerfstudio's ``depth_unit_scale_factor`` does); an integer image
    (16-bit PNG / TIFF): the codes are NaN (counted in ``stats``), the rest divided by ``scale``."""
    if path.suffix == ".npy":
        try:
            d = np.load(path, allow_pickle=False).astype(np.float32)
        except Exception as e:
            raise PoseImportError(f"{path}: cannot read depth: {e}") from e
        if npy_scale is not None:
            d /= np.float32(npy_scale)
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
        if raw is None:
            raise PoseImportError(f"{path}: cannot decode depth image")
        if raw.dtype == np.uint8:
            raise PoseImportError(
                f"{path}: 8-bit depth image; expected 16-bit (units per metre: --depth-scale) or .npy"
            )
        d = raw.astype(np.float32)
        if np.issubdtype(raw.dtype, np.integer):
            stats.integer_files += 1
            hit = False
            for name, v in code_values(codes, raw.dtype).items():
                m = raw == v
                n = int(np.count_nonzero(m))
                if n:
                    d[m] = np.nan
                    stats.code_pixels[name] = stats.code_pixels.get(name, 0) + n
                    hit = True
            stats.files_with_codes += int(hit)
        d /= np.float32(scale.units_per_m)
    if d.shape != shape_hw:
        raise PoseImportError(f"{path}: depth is {d.shape}, the image is {shape_hw[0]}x{shape_hw[1]}")
    stats.files += 1
    stats.pixels += int(d.size)
    return np.asarray(d, np.float32)


def depth_import_lines(di: dict[str, Any] | None) -> list[str]:
    """What an import's ``depth_import`` record says, for the CLI and ``dataset info``: the scale used and where
    it came from, and the sensor codes read as invalid."""
    if not di:
        return []
    sc = di["scale"]
    lines = [f"depth scale: {sc['units_per_m']:g} units per metre ({sc['from']})"]
    cp = di.get("invalid_code_pixels") or {}
    if cp:
        per = ", ".join(f"{n} pixel(s) = {code}" for code, n in cp.items())
        lines.append(
            f"depth codes read as invalid (NaN): {per}, {100 * di['invalid_code_fraction']:.2f} % of the depth "
            f"pixels, in {di['files_with_codes']} of {di['files']} file(s) (depth_invalid_codes: "
            f"{','.join(di['invalid_codes']) or 'none'})"
        )
    elif di.get("integer_files"):
        lines.append(f"depth codes read as invalid: none found ({','.join(di['invalid_codes']) or 'none'} checked)")
    return lines
