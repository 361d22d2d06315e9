"""WGS-84 geodetic <-> ECEF <-> local ENU about a datum, vectorized (pymap3d does the numerics).

Latitude/longitude in degrees, altitude in metres above the WGS-84 ellipsoid (as in NavSatFix).
ENU: x east, y north, z up, metres: the REP-105 ``map`` frame when the datum is the map origin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymap3d

from pose2rgbd.errors import GeometryError


def _arr(x: object, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise GeometryError(f"{name}: contains NaN or inf")
    return a


def _check_latlon(lat: np.ndarray, lon: np.ndarray) -> None:
    if np.any(np.abs(lat) > 90.0) or np.any(np.abs(lon) > 180.0):
        raise GeometryError("latitude must be within [-90, 90] and longitude within [-180, 180] degrees")


def geodetic_to_ecef(lat_deg: np.ndarray, lon_deg: np.ndarray, alt_m: np.ndarray) -> np.ndarray:
    lat, lon, alt = _arr(lat_deg, "lat"), _arr(lon_deg, "lon"), _arr(alt_m, "alt")
    _check_latlon(lat, lon)
    x, y, z = pymap3d.geodetic2ecef(lat, lon, alt)
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1)


def ecef_to_geodetic(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = _arr(xyz, "ecef")
    lat, lon, alt = pymap3d.ecef2geodetic(p[..., 0], p[..., 1], p[..., 2])
    return np.asarray(lat), np.asarray(lon), np.asarray(alt)


@dataclass(frozen=True)
class Datum:
    """Origin of a local ENU frame (degrees, degrees, metres above the ellipsoid)."""

    lat_deg: float
    lon_deg: float
    alt_m: float

    def __post_init__(self) -> None:
        _check_latlon(np.array(self.lat_deg), np.array(self.lon_deg))
        if not np.isfinite([self.lat_deg, self.lon_deg, self.alt_m]).all():
            raise GeometryError("datum: NaN or inf")

    def to_enu(self, lat_deg: np.ndarray, lon_deg: np.ndarray, alt_m: np.ndarray) -> np.ndarray:
        """Geodetic -> ``(..., 3)`` ENU metres about this datum."""
        lat, lon, alt = _arr(lat_deg, "lat"), _arr(lon_deg, "lon"), _arr(alt_m, "alt")
        _check_latlon(lat, lon)
        e, n, u = pymap3d.geodetic2enu(lat, lon, alt, self.lat_deg, self.lon_deg, self.alt_m)
        return np.stack(np.broadcast_arrays(e, n, u), axis=-1)

    def from_enu(self, enu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(..., 3)`` ENU metres -> (lat_deg, lon_deg, alt_m)."""
        p = _arr(enu, "enu")
        lat, lon, alt = pymap3d.enu2geodetic(p[..., 0], p[..., 1], p[..., 2], self.lat_deg, self.lon_deg, self.alt_m)
        return np.asarray(lat), np.asarray(lon), np.asarray(alt)


def datum_from_text(text: str, key: str = "datum") -> Datum | None:
    """``"lat,lon,alt"`` -> :class:`Datum`; empty -> None (the first valid fix). The one parser of the ``datum``
    setting of ``record`` and ``convert``; a malformed or impossible datum is a ConfigError naming ``key``."""
    from pose2rgbd.config import parse_datum_text
    from pose2rgbd.errors import ConfigError

    lla = parse_datum_text(text, key)
    if lla is None:
        return None
    try:
        return Datum(*lla)
    except GeometryError as e:
        raise ConfigError(f"{key} {text!r}: {e}") from e
