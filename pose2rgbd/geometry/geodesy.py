"""WGS-84 geodetic <-> ECEF <-> local ENU about a datum, vectorized (pymap3d does the numerics).

Latitude/longitude in degrees, altitude in metres above the WGS-84 ellipsoid (as in NavSatFix).
ENU: x east, y north, z up, metres: the REP-105 ``map`` frame when the datum is the map origin.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """Origin of a local ENU frame (degrees, degrees, metres above the ellipsoid), and where that ENU frame lies in
    the dataset's world frame: ``world_from_enu`` is ``T_world_enu`` as ``(x, y, z, qx, qy, qz, qw)`` (quaternion
    x, y, z, w), None where the world *is* the ENU frame (every video, and a bag converted with ``world_frame enu``).
    A bag converted into its robot's own TF frame (``world_frame auto`` / a frame name) has the transform fitted by
    the conversion; :meth:`to_world` is what a GPS fix is in the world, :meth:`to_enu` in the ENU frame alone."""

    lat_deg: float
    lon_deg: float
    alt_m: float
    world_from_enu: tuple[float, float, float, float, float, float, float] | None = None

    def __post_init__(self) -> None:
        _check_latlon(np.array(self.lat_deg), np.array(self.lon_deg))
        if not np.isfinite([self.lat_deg, self.lon_deg, self.alt_m]).all():
            raise GeometryError("datum: NaN or inf")
        if self.world_from_enu is not None:
            v = np.asarray(self.world_from_enu, np.float64)
            if v.shape != (7,) or not np.isfinite(v).all() or abs(float(np.linalg.norm(v[3:])) - 1.0) > 1e-3:
                raise GeometryError(
                    "datum: world_from_enu must be 7 finite numbers x, y, z, qx, qy, qz, qw with a unit quaternion"
                )
            q = v[3:] / np.linalg.norm(v[3:])  # a quaternion written with a few decimals: unit again
            w = (float(v[0]), float(v[1]), float(v[2]), float(q[0]), float(q[1]), float(q[2]), float(q[3]))
            object.__setattr__(self, "world_from_enu", w)

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

    @property
    def T_world_enu(self) -> np.ndarray:
        """``(4, 4)`` pose of the ENU frame in the world frame (identity where the world is the ENU frame)."""
        from pose2rgbd.geometry.rotations import quat_xyzw_to_matrix

        T = np.eye(4)
        if self.world_from_enu is not None:
            v = np.asarray(self.world_from_enu, np.float64)
            T[:3, :3] = quat_xyzw_to_matrix(v[3:])
            T[:3, 3] = v[:3]
        return T

    def to_world(self, lat_deg: np.ndarray, lon_deg: np.ndarray, alt_m: np.ndarray) -> np.ndarray:
        """Geodetic -> ``(..., 3)`` metres in the dataset's world frame (:meth:`to_enu` moved by ``T_world_enu``)."""
        enu = self.to_enu(lat_deg, lon_deg, alt_m)
        if self.world_from_enu is None:
            return enu
        T = self.T_world_enu
        out: np.ndarray = enu @ T[:3, :3].T + T[:3, 3]
        return out

    def with_world(self, T_world_enu: np.ndarray | None) -> Datum:
        """This datum with the ENU frame at ``T_world_enu`` in the world (None: the world is the ENU frame)."""
        if T_world_enu is None:
            return Datum(self.lat_deg, self.lon_deg, self.alt_m)
        from pose2rgbd.geometry.rotations import matrix_to_quat_xyzw

        T = np.asarray(T_world_enu, np.float64)
        q = matrix_to_quat_xyzw(T[:3, :3])
        v = [float(x) for x in (*T[:3, 3], *(q / np.linalg.norm(q)))]
        return Datum(self.lat_deg, self.lon_deg, self.alt_m, (v[0], v[1], v[2], v[3], v[4], v[5], v[6]))

    def to_dict(self) -> dict[str, object]:
        """The manifest's and the place map's ``datum`` mapping (``world_from_enu_xyz_qxyzw`` only when set)."""
        d: dict[str, object] = {"lat_deg": self.lat_deg, "lon_deg": self.lon_deg, "alt_m": self.alt_m}
        if self.world_from_enu is not None:
            d["world_from_enu_xyz_qxyzw"] = list(self.world_from_enu)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Datum:
        """Inverse of :meth:`to_dict` (a mapping without the transform: the world is the ENU frame)."""
        v = d.get("world_from_enu_xyz_qxyzw")
        w = None
        if v is not None:
            if not isinstance(v, (list, tuple)) or len(v) != 7:
                raise GeometryError(f"datum: world_from_enu_xyz_qxyzw must be a list of 7 numbers, got {v!r}")
            f = [_number(x, "world_from_enu_xyz_qxyzw") for x in v]
            w = (f[0], f[1], f[2], f[3], f[4], f[5], f[6])
        return cls(_number(d.get("lat_deg"), "lat_deg"), _number(d.get("lon_deg"), "lon_deg"),
                   _number(d.get("alt_m"), "alt_m"), w)  # fmt: skip


def T_ecef_enu(datum: Datum) -> np.ndarray:
    """``(4, 4)`` pose of the datum's ENU frame in ECEF (WGS-84): the east, north and up axes at its geodetic latitude
    and longitude as the rotation's columns, its origin's ECEF position as the translation -- the frame
    :meth:`Datum.to_enu` (pymap3d's ``geodetic2enu``) measures in."""
    lat, lon = np.radians(datum.lat_deg), np.radians(datum.lon_deg)
    sl, cl, so, co = np.sin(lat), np.cos(lat), np.sin(lon), np.cos(lon)
    T = np.eye(4)
    T[:3, :3] = np.array([[-so, -sl * co, cl * co], [co, -sl * so, cl * so], [0.0, cl, sl]])
    T[:3, 3] = geodetic_to_ecef(np.array(datum.lat_deg), np.array(datum.lon_deg), np.array(datum.alt_m))
    return T


def T_world_world(to: Datum, source: Datum) -> np.ndarray:
    """``(4, 4)`` rigid transform ``T_to_source`` from the world frame of one dataset (its datum ``source``: its ENU
    frame and where that lies in its world) to another's (``to``), through the Earth: a point's position in the
    source world, moved by it, is the same place in the ``to`` world. Exact for any distance (both ENU frames are
    rigid in ECEF); it carries no GPS error of its own, but each dataset's poses are only as right as the GPS fit
    that placed its world frame."""
    T_a, T_b = to.T_world_enu, source.T_world_enu
    T_ea, T_eb = T_ecef_enu(to), T_ecef_enu(source)

    def inv(T: np.ndarray) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = T[:3, :3].T
        out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
        return out

    out: np.ndarray = T_a @ inv(T_ea) @ T_eb @ inv(T_b)
    return out


def fit_gap_m(positions: np.ndarray, a: Datum, b: Datum) -> float:
    """How far apart one place on the Earth lands through two datums' fits (their origins and ``T_world_enu``):
    the most, over ``positions`` ``(N, 3)`` in ``a``'s world, of how far :func:`T_world_world` moves each into
    ``b``'s (metres; a turn between the two moves far points more). 0 where no position is given. The same either
    way round: a rigid move displaces a point as far as its inverse displaces the point's image."""
    p = np.asarray(positions, np.float64).reshape(-1, 3)
    if not len(p):
        return 0.0
    T = T_world_world(b, a)
    return float(np.linalg.norm(p @ T[:3, :3].T + T[:3, 3] - p, axis=1).max())


def _number(x: object, key: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise GeometryError(f"datum: {key} must be a number, got {x!r}")
    try:
        return float(x)
    except ValueError as e:
        raise GeometryError(f"datum: {key} must be a number, got {x!r}") from e


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
