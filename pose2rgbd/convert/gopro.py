"""GoPro MP4 telemetry (GPMF): GPS and IMU read from the file itself, so a GoPro clip needs no separate log.

GoPro cameras store a metadata track (GPMF, "gpmd") beside the video. It is parsed with ``py_gpmf_parser``,
the Python binding of GoPro's own C parser (github.com/gopro/gpmf-parser), so scaling (``SCAL``), the IMU axis
matrix (``MTRX``) and the sample timing are GoPro's, not a re-implementation.

GPS streams, first found wins:

* ``GPS5`` (HERO5 ... HERO10): latitude, longitude (deg), altitude (m, WGS84), 2D and 3D speed (m/s) per
  sample; per ~1 s payload the UTC time ``GPSU``, the fix ``GPSF`` (0 none, 2 2D, 3 3D) and the precision
  ``GPSP`` (dilution of precision x 100).
* ``GPS9`` (HERO11 and later): the same five values plus days since 2000, seconds since midnight, DOP and fix
  per sample.
* ``GPRI`` (the GoPro Karma drone's GPS, recorded by the camera on the drone): time, lat, lon, alt, eph, epv,
  speed, course, fix type, satellites.

IMU: ``ACCL`` (m/s^2) and ``GYRO`` (rad/s), with the axis matrix applied by the parser (``ORIO`` names the output
axes).

Timing: every sample gets a time in seconds on the video clock (0 = start of the video track) from the parser's
``GetGPMFSampleRate`` fitted against the shutter stream ``SHUT`` (the precise rate and the first sample's time
over the whole file); without it, samples are spread evenly over their payload's time span.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.convert.mp4 import truncation
from pose2rgbd.errors import SyncError

GPS_STREAMS = ("GPS5", "GPS9", "GPRI")
IMU_STREAMS = ("ACCL", "GYRO")
_GPS2000 = _dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc).timestamp()


@dataclass
class GpmfGps:
    """GPS samples from the GPMF track. ``t_s`` on the video clock; ``utc_s`` UNIX seconds (NaN where the
    stream carries no time); ``fix`` 0 none, 2 2D, 3 3D; ``dop`` dilution of precision (NaN when absent);
    speeds NaN when absent."""

    stream: str
    t_s: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    speed2d: np.ndarray
    speed3d: np.ndarray
    fix: np.ndarray
    dop: np.ndarray
    utc_s: np.ndarray
    timing: str = ""

    def __len__(self) -> int:
        return int(self.t_s.size)


@dataclass
class ImuSeries:
    """``data`` (N, 3) in ``units`` at ``t_s`` (video clock, seconds); ``axes`` the parser's output axis order
    (``ORIO``, e.g. 'ZXY'; empty when the file does not say)."""

    stream: str
    t_s: np.ndarray
    data: np.ndarray
    units: str
    axes: str = ""
    timing: str = ""


@dataclass
class GpmfTelemetry:
    """What :func:`read_gpmf` found: device name, GPS (None without a GPS stream), IMU streams by name."""

    path: str
    device: str
    duration_s: float
    gps: GpmfGps | None
    imu: dict[str, ImuSeries] = field(default_factory=dict)


def _lib() -> Any:
    try:
        import py_gpmf_parser
    except ImportError as e:  # pragma: no cover - a core dependency (setup.py)
        raise SyncError(f"reading GoPro telemetry needs py-gpmf-parser (pip install py-gpmf-parser): {e}") from e
    return py_gpmf_parser


def _open(path: Path) -> tuple[Any, int]:
    """``(library, handle)``; a clear error when the file is missing or has no GPMF track."""
    if not path.is_file():
        raise SyncError(f"{path}: video file not found")
    p = _lib()
    h = p.OpenMP4Source(str(path), p.MOV_GPMF_TRAK_TYPE, p.MOV_GPMF_TRAK_SUBTYPE, 0)
    if not h:
        cut = truncation(path)
        if cut is not None:  # not "no telemetry": the index that would say where it is is missing or cut
            raise SyncError(f"{path}: cannot read the GoPro telemetry: {cut}. Use a complete copy of the recording")
        raise SyncError(
            f"{path}: no GoPro telemetry (GPMF) track in this file, so there is no GPS inside it; give a GPS "
            "log with --gps (formats: docs/convert.md). A GoPro file that went through an editor or a re-encoder "
            "usually loses the track; use the file from the camera's card"
        )
    return p, h


def has_gpmf(path: str | Path) -> bool:
    """True when ``path`` is a file with a GPMF telemetry track."""
    pth = Path(path)
    if not pth.is_file():
        return False
    p = _lib()
    h = p.OpenMP4Source(str(pth), p.MOV_GPMF_TRAK_TYPE, p.MOV_GPMF_TRAK_SUBTYPE, 0)
    if not h:
        return False
    p.CloseSource(h)
    return True


def _gpsu_to_unix(raw: bytes) -> float:
    """``GPSU`` 'yymmddhhmmss.sss' (UTC) -> UNIX seconds; NaN when unreadable."""
    try:
        s = raw.decode("ascii", "replace").strip("\x00 ")
        t = _dt.datetime.strptime(s[:12], "%y%m%d%H%M%S").replace(tzinfo=_dt.timezone.utc)
        return t.timestamp() + float("0" + s[12:]) if len(s) > 12 else t.timestamp()
    except ValueError:
        return float("nan")


def _uint(raw: bytes) -> float:
    return float(int.from_bytes(raw[:4] if len(raw) >= 4 else raw, "big")) if raw else float("nan")


@dataclass
class _Chunk:
    payload: int
    t_in: float
    t_out: float
    values: np.ndarray  # (n, elements)
    fix: float = float("nan")
    dop: float = float("nan")
    utc: float = float("nan")
    axes: str = ""
    units: str = ""


def _collect(p: Any, h: int, keys: tuple[str, ...], devices: list[str]) -> dict[str, list[_Chunk]]:
    """Every sample block of the streams ``keys``, with the sticky GPS metadata of its stream; device names
    (``DVNM``) are appended to ``devices``."""
    want = {p.Str2FourCC(k): k for k in keys}
    out: dict[str, list[_Chunk]] = {k: [] for k in keys}
    res = 0
    for i in range(p.GetNumberPayloads(h)):
        size = p.GetPayloadSize(h, i)
        res = p.GetPayloadResource(h, res, size)  # one buffer, grown as needed (the parser's own pattern)
        payload = p.GetPayload(h, res, i, size)
        _, t_in, t_out = p.GetPayloadTime(h, i)
        ret, ms = p.GPMF_Init(payload, size)
        if ret != p.GPMF_ERROR.GPMF_OK:
            continue
        meta: dict[str, Any] = {}
        while p.GPMF_Next(ms, p.GPMF_RECURSE_LEVELS) == p.GPMF_ERROR.GPMF_OK:
            key = p.GPMF_Key(ms)
            name = p.fourCC_to_string(key)
            if name == "STRM":
                meta = {}  # sticky values belong to one stream
            elif name == "DVNM":
                dev = p.GPMF_RawData(ms).decode("latin-1").strip("\x00 ")
                if dev not in devices:
                    devices.append(dev)
            elif name in ("GPSF", "GPSP", "GPSU", "ORIO", "SIUN", "UNIT"):
                meta[name] = p.GPMF_RawData(ms)
            elif key in want:
                n, el = p.GPMF_Repeat(ms), p.GPMF_ElementsInStruct(ms)
                if n <= 0 or el <= 0:
                    continue
                ret, data = p.GPMF_ScaledData(ms, n * el * 8, 0, n, p.GPMF_SampleType.DOUBLE)
                if ret != p.GPMF_ERROR.GPMF_OK:
                    continue
                vals = np.asarray(data[: n * el], dtype=np.float64).reshape(n, el)
                c = _Chunk(i, float(t_in), float(t_out), vals)
                if "GPSF" in meta:
                    c.fix = _uint(meta["GPSF"])
                if "GPSP" in meta:
                    c.dop = int.from_bytes(meta["GPSP"][:2], "big") / 100.0
                if "GPSU" in meta:
                    c.utc = _gpsu_to_unix(meta["GPSU"])
                if "ORIO" in meta:
                    c.axes = meta["ORIO"].decode("ascii", "replace").strip("\x00 ")
                for u in ("SIUN", "UNIT"):
                    if u in meta:
                        c.units = meta[u].decode("latin-1").replace("\xb2", "^2").strip("\x00 ")
                out[want[key]].append(c)
    return out


def _times(p: Any, h: int, key: str, chunks: list[_Chunk]) -> tuple[np.ndarray, str]:
    """Sample times on the video clock: the parser's fitted rate against the shutter stream, else even
    spacing inside each payload."""
    counts = np.array([c.values.shape[0] for c in chunks])
    total = int(counts.sum())
    try:
        rate, start, end = p.GetGPMFSampleRate(h, p.Str2FourCC(key), p.Str2FourCC("SHUT"))
    except Exception:  # the binding raises plain errors for a stream it cannot time: use the payload times
        rate, start, end = 0.0, 0.0, 0.0
    if rate > 0 and np.isfinite(start) and abs((end - start) * rate - total) <= max(1.0, 0.02 * total):
        return start + np.arange(total) / rate, f"fitted rate {rate:.3f} Hz from the first sample at {start:+.3f} s"
    parts = [c.t_in + (c.t_out - c.t_in) * np.arange(n) / n for c, n in zip(chunks, counts)]
    return np.concatenate(parts), "evenly spaced inside each ~1 s payload"


def _gps(p: Any, h: int, key: str, chunks: list[_Chunk]) -> GpmfGps:
    t, timing = _times(p, h, key, chunks)
    v = np.concatenate([c.values for c in chunks])
    n = v.shape[0]
    nan = np.full(n, np.nan)

    def per_sample(attr: str) -> np.ndarray:
        return np.concatenate([np.full(c.values.shape[0], getattr(c, attr)) for c in chunks])

    if key == "GPS5":
        lat, lon, alt, s2, s3 = (v[:, k] for k in range(5))
        fix, dop = per_sample("fix"), per_sample("dop")
        # GPSU is the UTC time of the payload's first fix (GoPro: "UTC time and data from GPS"); samples are
        # spread from there at the stream rate.
        utc0 = per_sample("utc")
        first = np.concatenate([[0], np.cumsum([c.values.shape[0] for c in chunks])[:-1]])
        idx_in = np.arange(n) - np.repeat(first, [c.values.shape[0] for c in chunks])
        dt = np.median(np.diff(t)) if n > 1 else 0.0
        utc = utc0 + idx_in * dt
    elif key == "GPS9":
        if v.shape[1] < 9:
            raise SyncError(f"GPS9 with {v.shape[1]} fields per sample; expected 9")
        lat, lon, alt, s2, s3 = (v[:, k] for k in range(5))
        utc = _GPS2000 + v[:, 5] * 86400.0 + v[:, 6]
        dop, fix = v[:, 7], v[:, 8]
    else:  # GPRI: time, lat, lon, alt, eph, epv, speed, course, fix type, satellites
        if v.shape[1] < 9:
            raise SyncError(f"GPRI with {v.shape[1]} fields per sample; expected 10")
        lat, lon, alt, s2 = v[:, 1], v[:, 2], v[:, 3], v[:, 6]
        s3, utc, dop, fix = nan, nan, nan, v[:, 8]
        # The drone stamps each fix on its own boot clock (irregular spacing); keep those intervals and move
        # them onto the video clock by the median offset to the evenly spaced times.
        boot = v[:, 0]
        ok = np.isfinite(boot)
        if ok.sum() >= 2 and np.all(np.diff(boot[ok]) > 0):
            t = boot - float(np.median(boot[ok] - t[ok]))
            timing += (
                "; the drone's own sample stamps kept (boot clock moved onto the video clock by the median offset)"
            )
    return GpmfGps(key, t, lat, lon, alt, s2, s3, fix, dop, utc, timing)


def read_gpmf(path: str | Path, *, imu: bool = True) -> GpmfTelemetry:
    """GPS (the first of :data:`GPS_STREAMS` present) and, with ``imu``, ACCL / GYRO from a GoPro MP4.

    Raises :class:`~pose2rgbd.errors.SyncError` when the file has no GPMF track.
    """
    pth = Path(path)
    p, h = _open(pth)
    try:
        keys = GPS_STREAMS + (IMU_STREAMS if imu else ())
        devices: list[str] = []
        found = _collect(p, h, keys, devices)
        gps = None
        for k in GPS_STREAMS:
            if found[k]:
                gps = _gps(p, h, k, found[k])
                break
        series = {}
        for k in IMU_STREAMS if imu else ():
            ch = found[k]
            if ch:
                t, timing = _times(p, h, k, ch)
                data = np.concatenate([c.values[:, :3] for c in ch])
                series[k] = ImuSeries(k, t, data, ch[0].units, ch[0].axes, timing)
        device = ", ".join(devices)
        duration = float(p.GetDuration(h))
    finally:
        p.CloseSource(h)
    return GpmfTelemetry(str(pth), device, duration, gps, series)


def read_gpmf_gps(path: str | Path) -> GpmfGps:
    """The GPS inside a GoPro MP4 (no IMU); a clear error when the file has no GPMF track or no GPS stream."""
    g = read_gpmf(path, imu=False).gps
    if g is None or len(g) == 0:
        raise SyncError(
            f"{path}: the GoPro telemetry track has no GPS stream ({'/'.join(GPS_STREAMS)}); the camera's GPS was "
            "probably off. Give a GPS log with --gps"
        )
    return g
