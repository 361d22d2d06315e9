"""A video file with its GPS log (csv, gpx, GoPro GPS5 csv, karma) and attitude log, or a GoPro MP4 whose GPS is in
its own telemetry track (GPMF, :mod:`pose2rgbd.convert.gopro`), as a conversion source.

A video has no random access worth trusting across codecs, so each pass decodes it from the start (pass 1 the
optical flow, pass 2 the kept frames); the logs are read once. :class:`VideoFramesSource`: a video without GPS,
every frame at a placeholder pose (the first stage of Algorithm 2's video-only path).
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from pose2rgbd.config import size_warning
from pose2rgbd.convert.config import ConvertConfig
from pose2rgbd.convert.gps_logs import GpsTrack, read_attitude_log, read_gps_log
from pose2rgbd.convert.lens_calibration import VideoLens
from pose2rgbd.convert.mp4 import truncation
from pose2rgbd.convert.pipeline import DatasetPlan, Frame, SourceBase, convert
from pose2rgbd.convert.sources.clock_offset import ClockOffsetSource
from pose2rgbd.convert.stages.orientation import attitude_orientation
from pose2rgbd.convert.stages.time_offset import Streams
from pose2rgbd.dataset import Manifest
from pose2rgbd.errors import ConfigError, SyncError
from pose2rgbd.geometry import PinholeCamera
from pose2rgbd.sync.estimator import SyncConfig
from pose2rgbd.sync.flow import FlowMagnitude

log = logging.getLogger(__name__)


def _open(path: Path) -> cv2.VideoCapture:
    if path.is_dir():
        raise SyncError(
            f"{path}: a folder, not a video file; a folder of photos or frames is converted with `pose2rgbd convert "
            "images`, a bag folder with `pose2rgbd convert bag`"
        )
    if not path.is_file():
        raise SyncError(f"{path}: video file not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cut = truncation(path)
        if cut is not None:
            raise SyncError(f"{path}: cannot open as a video: {cut}. Use a complete copy of the recording")
        raise SyncError(f"{path}: cannot open as a video (unknown container/codec or corrupt file)")
    return cap


def _account_for_a_cut(
    vp: Path, declared: int | None, ft: np.ndarray, flow: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, int], list[str]]:
    """A video file cut short but still readable (its index at the front): the frames after the cut are counted as
    lost, and the last decoded frame is dropped too (the decoder fills what is missing of it). Returns the frame
    times and flow to use, the lost frames by reason and a note for the report."""
    cut = truncation(vp)
    if cut is None or ft.size == 0:
        return ft, flow, {}, []
    missing = max(0, (declared or 0) - int(ft.size))
    lost = {"video truncated: the frame before the cut (may be incomplete)": 1}
    if missing:
        lost["video truncated: after the cut"] = missing
    total = declared or int(ft.size)
    log.warning(
        "%s: %s; converting the %d frames before the cut of %d the file lists (the last decoded frame is dropped: "
        "the decoder fills in what is missing of it)",
        vp, cut, ft.size - 1, total,
    )  # fmt: skip
    note = f"the video file is truncated ({cut}); {ft.size - 1} of {total} frames used"
    return ft[:-1], flow[:-1], lost, [note]


def read_video_frames(path: str | Path) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(index, t_s, bgr)``; ``t_s`` from the container timestamps (0 = first frame), or index / fps."""
    for i, t, frame in _walk(Path(path), decode=True):
        assert frame is not None
        yield i, t, frame


def video_frame_times(path: str | Path) -> np.ndarray:
    """The ``t_s`` of every frame :func:`read_video_frames` yields, without converting the frames' pixels."""
    return np.array([t for _, t, _ in _walk(Path(path), decode=False)], dtype=np.float64)


def _walk(p: Path, *, decode: bool) -> Iterator[tuple[int, float, np.ndarray | None]]:
    """The frames of ``p`` in order: ``(index, t_s, bgr or None when not decode)`` (one timing rule for both)."""
    cap = _open(p)
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    try:
        i = 0
        t_first = None
        last = -np.inf
        while True:
            frame = None
            if decode:
                ok, frame = cap.read()
            else:
                ok = cap.grab()
            if not ok:
                break
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1e3
            if t_first is None:
                t_first = t
            t -= t_first
            if not np.isfinite(t) or t <= last:  # container without usable timestamps
                if fps <= 0:
                    raise SyncError(f"{p}: frame {i} has no usable timestamp and the frame rate is unknown")
                t = i / fps
            last = t
            yield i, float(t), frame
            i += 1
    finally:
        cap.release()


def resolve_gps_log(video: str | Path, gps_log: str | Path | None, gps_format: str) -> tuple[Path, str]:
    """``(log path, format)``: without a GPS log, the video itself when it carries GoPro telemetry (GPMF),
    else a clear error; ``auto`` is detected from the file (:func:`~pose2rgbd.convert.gps_logs.detect_gps_format`)."""
    from pose2rgbd.convert.gps_logs import detect_gps_format

    vp = Path(video)
    if gps_log is None:
        if gps_format not in ("auto", "gopro-mp4"):
            raise ConfigError(f"--gps-format {gps_format} needs a GPS log file: give it with --gps")
        from pose2rgbd.convert.gopro import has_gpmf

        if not vp.is_file():
            raise SyncError(f"{vp}: video file not found")
        if (cut := truncation(vp)) is not None and not has_gpmf(vp):
            raise SyncError(
                f"{vp}: no GPS log given (--gps), and the GoPro telemetry in the video cannot be read: {cut}. Use a "
                "complete copy of the recording, or give the GPS log with --gps LOG"
            )
        if not has_gpmf(vp):
            raise SyncError(
                f"{vp}: no GPS log given (--gps) and the video has no GoPro telemetry (GPMF) track to read one from. "
                "Give the GPS log with --gps LOG (csv, gpx, GoPro GPS5 csv, karma csv; docs/convert.md). A GoPro "
                "file loses its telemetry track when an editor re-encodes it: use the file from the camera's card"
            )
        return vp, "gopro-mp4"
    gp = Path(gps_log)
    return gp, detect_gps_format(gp) if gps_format == "auto" else gps_format


def flow_pass(
    stamps_and_images: Iterator[tuple[float, np.ndarray]],
    cfg: SyncConfig,
    total: int | None,
    progress: bool,
    desc: str,
    camera: PinholeCamera | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1 helper: flow magnitude per frame (NaN for the first). ``camera``: intrinsics of the full-size
    frames (needed by the ``derotated`` statistic)."""
    from pose2rgbd.progress import bar

    fm = FlowMagnitude(cfg.flow, camera)
    ts, vs = [], []
    for t, img in bar(stamps_and_images, total=total, desc=desc, unit="frame", progress=progress):
        ts.append(t)
        vs.append(fm.add_image(t, img))
    return np.asarray(ts, dtype=np.float64), np.asarray(vs, dtype=np.float64)


def video_lens(path: Path, cfg: ConvertConfig, n_frames: int | None, *, progress: bool) -> VideoLens | None:
    """``cfg.lens``: None for ``pinhole`` (the assumed ``--hfov``), else the lens calibrated from the video
    (:mod:`pose2rgbd.convert.lens_calibration`), from every ``stride``-th frame of the whole video."""
    if cfg.lens == "pinhole":
        return None
    from pose2rgbd.convert.lens_calibration import LENS_EVERY, LENS_MAX_FRAMES, calibrate_fisheye, calibration_stride

    n = n_frames if n_frames else video_frame_times(path).size
    stride = calibration_stride(n, LENS_EVERY, LENS_MAX_FRAMES)
    picked = (bgr for i, _, bgr in read_video_frames(path) if i % stride == 0)
    return calibrate_fisheye(picked, cfg.hfov_deg, progress=progress)


# what the conversion says of a lens it assumed (the pinhole of --hfov, the user having chosen no lens)
LENS_HINT = ("a wide action-camera lens (a GoPro's) is a fisheye: --lens fisheye calibrates it from the video and "
             "may fit better (docs/convert.md, \"A video's lens\")")  # fmt: skip


def _camera_words(cfg: ConvertConfig, lens: VideoLens | None, lens_given: bool = False) -> str:
    """The video's camera as the assumptions list states it; for a lens assumed (``lens_given`` False: no --lens
    given), with the hint towards ``--lens fisheye``."""
    if lens is None:
        words = (f"pinhole camera with an assumed horizontal FOV of {cfg.hfov_deg} deg, no distortion (no "
                 "calibration for a video)")  # fmt: skip
        return words if lens_given else f"{words}; {LENS_HINT}"
    return lens.words()


def _log_assumed_lens(cfg: ConvertConfig, lens: VideoLens | None, lens_given: bool) -> None:
    if lens is None and not lens_given:
        log.info("lens: %s", _camera_words(cfg, lens))


def _undistorted(frames: Iterator[tuple[int, float, np.ndarray]],
                 lens: VideoLens | None) -> Iterator[tuple[int, float, np.ndarray]]:  # fmt: skip
    if lens is None:
        yield from frames
        return
    undistort = lens.undistorter()
    for i, t, bgr in frames:
        yield i, t, undistort(bgr)


class VideoSource(ClockOffsetSource):
    """A video + GPS log (``gps_log`` None: the GPS inside a GoPro MP4; ``gps_format`` 'auto' detects the log's
    format) and an optional attitude log (``time_s,roll,pitch,yaw`` or the karma ATTITUDE csv). ``lens_given``: the
    user chose the lens (``--lens``), so the assumptions give no hint towards ``--lens fisheye``."""

    kind = "video"

    def __init__(
        self,
        video: str | Path,
        gps_log: str | Path | None,
        cfg: ConvertConfig | None = None,
        *,
        gps_format: str = "auto",
        attitude: str | Path | None = None,
        attitude_degrees: bool = False,
        video_start_utc: str | None = None,
        lens_given: bool = False,
    ) -> None:
        super().__init__(video, cfg)
        if self.cfg.world_frame not in ("auto", "enu"):
            raise ConfigError(f"world_frame {self.cfg.world_frame!r}: a video has no TF tree to take a frame from; its "
                              "poses are in ENU about the datum (leave world_frame at auto or enu)")  # fmt: skip
        self.lens_given = lens_given
        self.gps_log = None if gps_log is None else Path(gps_log)
        self.gps_format = gps_format
        self.attitude = None if attitude is None else Path(attitude)
        self.attitude_degrees = attitude_degrees
        self.video_start_utc = video_start_utc
        self._inputs = [p for p in (self.path, self.gps_log, self.attitude) if p is not None]
        self.lens: VideoLens | None = None

    def read(self, *, progress: bool) -> Streams:
        """Pass 1: frame times and flow; the GPS and attitude logs."""
        vp, cfg = self.path, self.cfg
        cap = _open(vp)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        cap.release()
        gps_path, gps_format = resolve_gps_log(vp, self.gps_log, self.gps_format)
        track = read_gps_log(gps_path, gps_format, video_start_utc=self.video_start_utc)
        log.info("GPS: %d fixes from %s (format %s)", len(track), track.source or gps_path, gps_format)
        track, placed = self._checked_against_own_gps(track, gps_path, gps_format)
        if gps_format == "gpx" and self.video_start_utc is None and not placed:
            placed = [self._gpx_first_point_note(track, n / fps if n and fps > 0 else None)]
        # The camera: a pinhole from the horizontal FOV (--hfov) and the frame size, or the one a calibrated lens's
        # frames are undistorted onto (--lens fisheye); used by the pose output and the flow statistic 'derotated'.
        self.lens = lens = video_lens(vp, cfg, n, progress=progress)
        _log_assumed_lens(cfg, lens, self.lens_given)
        cam = PinholeCamera.from_fov(w, h, cfg.hfov_deg) if lens is None else lens.target
        att = read_attitude_log(self.attitude, degrees=self.attitude_degrees) if self.attitude else None

        def gray() -> Iterator[tuple[float, np.ndarray]]:
            for _, t, bgr in _undistorted(read_video_frames(vp), lens):
                yield t, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)

        ft, flow = flow_pass(gray(), cfg.sync, n, progress, "flow (pass 1)", cam)
        ft, flow, lost, cut_note = _account_for_a_cut(vp, n, ft, flow)
        if ft.size == 0:
            why = truncation(vp)
            raise SyncError(f"{vp}: no frame could be decoded ({why or 'empty or corrupt video'})")
        orient = None
        if att is not None and cfg.orientation in ("auto", "attitude"):
            orient = attitude_orientation(att.t_s, att.rpy, att.frame)
        if cfg.mount.source == "tf_static":
            raise ConfigError(
                "mount.source is 'tf_static' but a video has no /tf_static; use auto or config (mount.rpy_deg)"
            )
        return Streams(
            t0_ns=0, frame_t=ft, flow=flow, gps_t=track.t_s, lat=track.lat, lon=track.lon, alt=track.alt,
            gps_speed=track.speed, gps_status=track.status, gps_source=track.source or str(gps_path), camera=cam,
            T_body_cam=cfg.mount.config_matrix(),
            mount_source=cfg.mount.describe_config(), orientation=orient,
            attitude_follows_gps=True, input_kind=self.kind, input_path=str(vp), frames_lost=lost,
            source_cameras=[] if lens is None else [lens.camera.to_dict()],
            lens=None if lens is None else lens.summary(),
            extra_assumptions=[
                *cut_note,
                *placed,
                _camera_words(cfg, lens, self.lens_given),
                "the attitude log (if any) shares the GPS clock and gets the same time offset",
            ],
        )  # fmt: skip

    def _gpx_first_point_note(self, track: GpsTrack, video_s: float | None) -> str:
        """The assumption of a GPX log placed by its first point (no --video-start-utc, no camera GPS time), warned
        where the log runs longer than the video by more than the offset search reaches: had it started before
        the camera, every frame would be posed that much early, and Algorithm 1 cannot find it."""
        note = ("the GPX log's first point taken as the first frame (no --video-start-utc); a log started before "
                "the camera would put every frame that much early")  # fmt: skip
        span = float(np.nanmax(track.t_s) - np.nanmin(track.t_s)) if len(track) else 0.0
        if video_s is not None and span > video_s + self.cfg.sync.max_lag_s:
            log.warning(
                "GPS: the GPX log %s spans %.0f s, the video %.0f s; its first point is taken as the first frame. If "
                "the log started before the video, give the first frame's UTC time with --video-start-utc (the time "
                "offset search reaches +-%.1f s only)", self.gps_log, span, video_s, self.cfg.sync.max_lag_s,
            )  # fmt: skip
        return note

    def _checked_against_own_gps(
        self, track: GpsTrack, gps_path: Path, gps_format: str = ""
    ) -> tuple[GpsTrack, list[str]]:
        """A --gps log beside a video with its own GPS (a GoPro's GPMF; :mod:`pose2rgbd.convert.gps_match`): a GPX
        log without ``--video-start-utc`` placed on the video clock by the camera's GPS time; a log of another place
        or time refused (warned with ``check_gps_log`` false). The track, and the assumption to list (if any)."""
        from pose2rgbd.convert.gopro import has_gpmf
        from pose2rgbd.convert.gps_match import apart_m, place_mismatch, time_mismatch

        vp = self.path
        if self.gps_log is None or gps_path.resolve() == vp.resolve() or not has_gpmf(vp):
            return track, []
        try:
            own = read_gps_log(vp, "gopro-mp4")
        except SyncError as e:  # telemetry without a GPS stream (the camera's GPS off)
            log.info("the video's telemetry carries no GPS to check the log against (%s)", e)
            return track, []
        placed = []
        names = {"log_name": str(gps_path), "video_name": str(vp)}
        apart_in_time = time_mismatch(track, own, **names)  # then placing it by the camera's time means nothing
        if (self.video_start_utc is None and apart_in_time is None and np.isfinite(track.utc0_s)
                and np.isfinite(own.utc0_s)):  # fmt: skip
            shift = track.utc0_s - own.utc0_s
            track = track.rebased(own.utc0_s)
            start = _dt.datetime.fromtimestamp(own.utc0_s, _dt.timezone.utc).isoformat(timespec="seconds")
            placed.append(
                f"the GPS log placed on the video clock by the camera's own GPS time: the first frame at {start} "
                f"(the log's first point {shift:+.1f} s from it; --video-start-utc sets it instead)"
            )
            log.info("GPS: %s", placed[-1])
        why = apart_in_time or place_mismatch(track, own, **names)
        if why is None:
            d = apart_m(track, own)
            if d is not None:
                log.info("GPS: the log's track passes %.0f m (median) from the video's own GPS fixes", d)
            return track, placed
        if self.cfg.check_gps_log:
            raise SyncError(
                f"{why}. Give the log of this recording, or leave out --gps to use the video's own GPS; where the "
                "video's own GPS is the wrong one, --no-gps-check takes the log anyway (nothing was written)"
            )
        log.warning("%s; taken anyway (--no-gps-check)", why)
        taken = f"the GPS log taken although {why} (--no-gps-check)"
        if apart_in_time is not None and gps_format == "gpx" and self.video_start_utc is None:
            placed.append(self._gpx_first_point_note(track, None))  # not placed by the camera's time: its first point
        return track, [*placed, taken]

    def kept_frames(self, keep: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        for i, _, bgr in _undistorted(read_video_frames(self.path), self.lens):
            if i < keep.size and keep[i]:
                yield i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None


class VideoFramesSource(SourceBase):
    """Every frame of a video without GPS (the input of Algorithm 2's video-only path): a pinhole camera of
    ``cfg.hfov_deg`` (no calibration for a video) at ``cfg.size``, placeholder identity poses (``extra.poses.kind:
    placeholder``), no depth. Pass 1 reads the frame times, pass 2 the frames; the pipeline drops repeated frames,
    resizes and writes ``report/summary.json``. ``lens_given``: as :class:`VideoSource`'s."""

    kind = "video"

    def __init__(self, video: str | Path, cfg: ConvertConfig | None = None, *, lens_given: bool = False) -> None:
        self.path = Path(video)
        self.cfg = cfg or ConvertConfig()
        self.lens_given = lens_given
        self._inputs = [self.path]
        self.lens: VideoLens | None = None

    def plan(self, *, progress: bool) -> DatasetPlan:
        cap = _open(self.path)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        cap.release()
        t = video_frame_times(self.path)
        if t.size == 0:
            raise SyncError(f"{self.path}: no frame could be decoded (empty or corrupt video)")
        wh = self.cfg.size_wh()
        self.lens = lens = video_lens(self.path, self.cfg, int(t.size), progress=progress)
        _log_assumed_lens(self.cfg, lens, self.lens_given)
        cam = PinholeCamera.from_fov(w, h, self.cfg.hfov_deg) if lens is None else lens.target
        doubt = size_warning(wh, cam.width, cam.height)
        if doubt:
            log.warning(doubt)
        frames: dict[str, int] = {"total": int(t.size)}
        poses = {"kind": "placeholder", "note": "video without GPS: identity poses"}
        summary = {"input": {"kind": self.kind, "path": str(self.path)}, "frames": frames, "poses": poses,
                   "assumptions": [_camera_words(self.cfg, lens, self.lens_given)],
                   **({} if lens is None else {"lens": lens.summary()})}  # fmt: skip
        man = Manifest(
            name=self.cfg.output.name or self.path.stem,
            camera=cam if wh is None else cam.scaled(*wh),
            depth_kind="none",
            rgb_encoding=self.cfg.output.rgb_encoding,
            sources=[{"id": 0, "kind": self.kind, "name": self.path.name}],
            source_cameras=[] if lens is None else [lens.camera.to_dict()],
            # the summary's own "frames" dict: what the write step adds to it (written, repeats) is in both
            extra={"poses": poses, "conversion": {"frames": frames}},
        )
        stamps = np.round(t * 1e9).astype(np.int64)
        return DatasetPlan(man, stamps, np.tile(np.eye(4), (t.size, 1, 1)), summary, resize=wh is not None)

    def frames(self, plan: DatasetPlan) -> Iterator[Frame]:
        for i, _, bgr in _undistorted(read_video_frames(self.path), self.lens):
            if i >= len(plan):
                raise SyncError(f"{self.path}: pass 2 decoded more frames than the {len(plan)} of pass 1")
            yield Frame(i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None, f"frame {i}")

    def report(self, plan: DatasetPlan, folder: Path) -> None:
        """No figures: the frames have neither GPS nor poses to draw; ``summary.json`` says what was written."""


def load_video_streams(video: str | Path, gps_log: str | Path | None, cfg: ConvertConfig, *,
                       progress: bool = True, **kw: object) -> Streams:  # fmt: skip
    """Pass 1 over a video alone (what ``convert video`` plans from); ``kw``: :class:`VideoSource`'s options."""
    with VideoSource(video, gps_log, cfg, **kw) as src:  # type: ignore[arg-type]
        return src.read(progress=progress)


def convert_video(
    video: str | Path,
    gps_log: str | Path | None,
    out: str | Path,
    cfg: ConvertConfig | None = None,
    *,
    gps_format: str = "auto",
    attitude: str | Path | None = None,
    attitude_degrees: bool = False,
    video_start_utc: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    lens_given: bool = False,
) -> Path:
    """Convert a video + GPS log into a dataset at ``out`` (atomic: nothing is left behind on error).

    ``gps_log`` None: the GPS inside a GoPro MP4 (GPMF); ``gps_format`` 'auto' detects the log's format;
    ``lens_given``: the caller chose the lens (no hint towards ``--lens fisheye``)."""
    src = VideoSource(video, gps_log, cfg, gps_format=gps_format, attitude=attitude,
                      attitude_degrees=attitude_degrees, video_start_utc=video_start_utc,
                      lens_given=lens_given)  # fmt: skip
    return convert(src, out, src.cfg.output, overwrite=overwrite, progress=progress)
