"""Recorder node logic (no rclpy): camera + NavSatFix + Odometry -> dataset v1 frames and SyncedFrame msgs.

Camera-driven synchronization (policy ``interpolate``, the default): every image waits until GPS and
odometry both have a sample after its stamp; the two samples bracketing the stamp are interpolated (GPS
linearly in lat/lon/alt, odometry position linearly and orientation by slerp) if they are at most
``sync.max_gap_s`` apart, otherwise the image is dropped and counted. Policy ``approximate`` matches the
three streams with message_filters' ApproximateTimeSynchronizer semantics (``queue_size``, ``slop_s``).

Pose of each frame: position = GPS -> ENU about the datum (the first valid fix, or ``datum`` =
``"lat,lon,alt"`` when set; a resumed dataset keeps its datum); orientation = odometry orientation
(its frame assumed aligned with ENU, REP-105); then the camera mount ``T_base_cam`` (from /tf_static or
``mount.translation`` / ``mount.rpy_deg``, :class:`pose2rgbd.geometry.mount.CameraMount`, the same section as
``convert``'s): ``T_world_cam = T_world_base @ T_base_cam``.

Outputs: frames appended to a dataset (``DatasetWriter(mode="append")``: flushed per frame, readable after
a crash; re-running on the same output resumes after its last stamp) and/or ``pose2rgbd/msg/SyncedFrame``
messages for ``ros2 bag record``. Recording starts/stops with :meth:`Recorder.set_recording` (the node spec
:data:`RECORDER` exposes it as a ``std_srvs/SetBool`` service ``~/set_recording`` and a ``std_msgs/Bool``
topic).
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pose2rgbd import messages as M
from pose2rgbd.atomic import os_error_message
from pose2rgbd.config import (
    DATUM_HELP,
    SIZE_HELP,
    help_field,
    parse_size,
    ranged_field,
)
from pose2rgbd.errors import BagError, ConfigError, DatasetError, GeometryError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.geodesy import Datum, datum_from_text
from pose2rgbd.geometry.interpolation import slerp_quat_xyzw
from pose2rgbd.geometry.mount import CameraMount
from pose2rgbd.geometry.rotations import quat_xyzw_to_matrix
from pose2rgbd.geometry.tf_buffer import TransformException
from pose2rgbd.geometry.transforms import T_from_tq
from pose2rgbd.nodes.common import Throttle, get_logger
from pose2rgbd.nodes.spec import Input, Lookup, NodeSpec, Output, Service, TFNeed, Timer, parameter_change
from pose2rgbd.nodes.sync import ApproximateTimeSync, InterpolatingStream, lerp
from pose2rgbd.sync.gps import REASON_JUMP, REASON_NULL_ISLAND, FixGate, GpsConfig, horizontal_distance_m

Outgoing = tuple[str, Any]


@dataclass
class RecorderTopics:
    """Input and output topics."""

    image: str = help_field("/camera/image_raw", "camera images (sensor_msgs/Image, or CompressedImage)")
    compressed: bool = help_field(False, "the image topic carries sensor_msgs/CompressedImage")
    camera_info: str = help_field("/camera/camera_info", "camera intrinsics (sensor_msgs/CameraInfo)")
    gps: str = help_field("/gps/fix", "GPS fixes (sensor_msgs/NavSatFix)")
    odom: str = help_field("/odom", "odometry whose orientation is used (nav_msgs/Odometry)")
    synced: str = help_field("synced_frame", "output: synchronized frames (pose2rgbd/msg/SyncedFrame)")
    recording: str = help_field("~/recording", "input: std_msgs/Bool, true starts and false stops recording")
    diagnostics: str = help_field("/diagnostics", "counters (diagnostic_msgs/DiagnosticArray)")


@dataclass
class RecorderSync:
    """How camera, GPS and odometry are matched."""

    policy: str = help_field("interpolate", "'interpolate' (camera-driven) or 'approximate' (message_filters)")
    max_gap_s: float = ranged_field(
        0.5, "interpolate: the two samples around an image may be at most this apart", 0.001, 60.0
    )
    queue_size: int = ranged_field(
        30, "images waiting for GPS/odometry (interpolate) or per-input queue (approximate)", 1, 100000
    )
    slop_s: float = ranged_field(0.05, "approximate: largest stamp spread of a matched triple", 0.0, 10.0)
    buffer_s: float = ranged_field(10.0, "seconds of GPS/odometry history kept", 0.1, 3600.0)


@dataclass
class RecorderOutput:
    """Where frames go."""

    dataset: str = help_field("", "dataset directory to append to (empty: do not write a dataset)")
    name: str = help_field("recording", "dataset name in its manifest")
    rgb_encoding: str = help_field("png", "png or jpg")
    publish_synced: bool = help_field(True, "publish pose2rgbd/msg/SyncedFrame")
    source_name: str = help_field("recording", "name of this recording in the manifest's sources")
    resume_gap_s: float = ranged_field(
        600.0, "resuming an existing dataset: a recording whose first image is more than this before its first "
        "or after its last frame is refused as a different flight", 0.0, 1e9,
    )  # fmt: skip
    resume_distance_m: float = ranged_field(
        2000.0, "resuming: a recording whose first kept fix is farther than this from the dataset's last frame "
        "is refused as a different flight", 0.0, 1e9,
    )  # fmt: skip


@dataclass
class RecorderConfig:
    """The record node."""

    topics: RecorderTopics = field(default_factory=RecorderTopics, metadata={"help": "topics"})
    sync: RecorderSync = field(default_factory=RecorderSync, metadata={"help": "synchronization"})
    mount: CameraMount = field(default_factory=CameraMount, metadata={"help": "camera mount (as convert's)"})
    output: RecorderOutput = field(default_factory=RecorderOutput, metadata={"help": "outputs"})
    datum: str = help_field("", DATUM_HELP)
    size: str = help_field("", SIZE_HELP)
    world_frame: str = help_field("map", "frame id of the recorded poses (ENU)")
    start_recording: bool = help_field(True, "record from the start (else wait for set_recording)")
    gps: GpsConfig = field(default_factory=GpsConfig, metadata={"help": "GPS altitude (as convert's)"})
    max_speed_mps: float = ranged_field(
        60.0, "fixes implying a faster jump from the last kept fix are dropped (judged from a consensus anchor)",
        0.1, 100000.0,
    )  # fmt: skip
    jump_tolerance_m: float = ranged_field(
        10.0, "GPS noise allowance (m) subtracted from a jump before the speed test", 0.0, 1e6
    )
    min_fix_status: int = ranged_field(
        0, "ignore fixes with status below this (-1 NO_FIX, 0 FIX, 1 SBAS, 2 GBAS)", -1, 2
    )
    warn_throttle_s: float = ranged_field(5.0, "repeat the same warning at most this often", 0.0, 3600.0)

    def __post_init__(self) -> None:
        if self.sync.policy not in ("interpolate", "approximate"):
            raise ConfigError(f"sync.policy: {self.sync.policy!r} is not 'interpolate' or 'approximate'")
        if self.output.rgb_encoding not in ("png", "jpg"):
            raise ConfigError("output.rgb_encoding must be png or jpg")
        parse_size(self.size, "size")
        self.datum_obj()
        if self.sync.queue_size < 1 or self.sync.max_gap_s <= 0:
            raise ConfigError("sync.queue_size must be >= 1 and sync.max_gap_s > 0")

    def datum_obj(self) -> Datum | None:
        """The fixed ENU origin, or None for the first valid fix."""
        return datum_from_text(self.datum)


def _same_datum(a: Datum, b: Datum) -> bool:
    return abs(a.lat_deg - b.lat_deg) < 1e-9 and abs(a.lon_deg - b.lon_deg) < 1e-9 and abs(a.alt_m - b.alt_m) < 1e-3


def _datum_text(d: Datum) -> str:
    return f"{d.lat_deg:.9g},{d.lon_deg:.9g},{d.alt_m:.6g}"


@dataclass
class _Fix:
    lla: np.ndarray
    msg: Any
    reading: M.FixReading


@dataclass
class _Odom:
    t: np.ndarray
    q: np.ndarray
    msg: Any


class Recorder:
    """Message-level recorder (see module docstring). Call :meth:`close` at the end."""

    def __init__(
        self, cfg: RecorderConfig, factory: M.MessageFactory, *, logger: Any = None, tf_lookup: Lookup | None = None
    ) -> None:
        self.cfg = cfg
        self.f = factory
        self.log = get_logger(logger, "pose2rgbd.recorder")
        self.tf_lookup = tf_lookup
        self._mount_warned = False
        self._warn = Throttle(cfg.warn_throttle_s)
        horizon = int(cfg.sync.buffer_s * 1e9)
        self.gps = InterpolatingStream(horizon)
        self.odom = InterpolatingStream(horizon)
        self._pending: collections.deque[tuple[int, Any]] = collections.deque()
        self._approx = ApproximateTimeSync(3, cfg.sync.queue_size, int(cfg.sync.slop_s * 1e9), self._on_triple)
        self._approx_out: list[Outgoing] = []
        self.recording = cfg.start_recording
        self.camera_info: Any = None
        self.camera: PinholeCamera | None = None
        self.T_base_cam: np.ndarray | None = None
        self.mount_source = ""  # where T_base_cam came from (for the log)
        # the camera optical frame: mount.camera_frame, else the frame_id of the first image
        self.camera_frame: str | None = cfg.mount.camera_frame or None
        if cfg.mount.source == "config":
            self.set_mount(cfg.mount.config_matrix())
            self.mount_source = cfg.mount.describe_config()
        self.datum: Datum | None = cfg.datum_obj()
        self.writer: Any = None
        self.resume_after_ns: int | None = None
        self._resume_first_ns: int | None = None
        self._resume_last_lla: np.ndarray | None = None
        self._resume_checked = False
        self.gate = FixGate(cfg.max_speed_mps, cfg.jump_tolerance_m)
        self._zero_stamp_warned: set[str] = set()
        self._last_image_ns: int | None = None
        self._reanchors = 0
        self._datum_from_gate = False
        self.refused = ""  # why this recording was refused (a different flight than the dataset's); stops it
        self.counters = {
            "frames": 0,
            "images": 0,
            "dropped_no_support": 0,
            "dropped_queue": 0,
            "dropped_no_mount": 0,
            "dropped_no_camera_info": 0,
            "dropped_not_recording": 0,
            "skipped_already_recorded": 0,
            "bad_fixes": 0,
            "fixes_dropped_jump": 0,
            "fixes_dropped_cold_start": 0,
            "fixes_dropped_stamp": 0,
            "stamps_from_receive_time": 0,
            "dropped_stamp_not_increasing": 0,
            "bad_odometry": 0,
            "bad_images": 0,
        }
        if cfg.output.dataset:
            self._load_existing(Path(cfg.output.dataset))

    # ------------------------------------------------------------------ setup
    def _load_existing(self, path: Path) -> None:
        """Resume: keep an existing dataset's datum and skip frames up to its last stamp."""
        from pose2rgbd.dataset import Dataset
        from pose2rgbd.output_guard import DATASET, check_not_foreign_dir

        if not (path / "manifest.yaml").is_file():  # a new dataset: refuse a folder of other files at configure
            check_not_foreign_dir(path, DATASET, what_to_do="record into a new or empty folder, or an existing dataset")
            return
        try:
            ds = Dataset(path, check_files=False)
        except DatasetError as e:
            if "no frames" not in str(e):
                raise
            return
        mine = self.cfg.datum_obj()
        theirs = ds.manifest.datum
        if mine is not None and theirs is not None and not _same_datum(mine, theirs):
            raise ConfigError(
                f"datum {_datum_text(mine)} (--datum) differs from the datum of the existing dataset {path}: "
                f"{_datum_text(theirs)}; its frames are relative to that one. Leave --datum out to resume with it, "
                "or record into a new dataset"
            )
        if theirs is not None:
            self.datum = theirs
        self.resume_after_ns = int(ds.frames.stamp_ns.max())
        self._resume_first_ns = int(ds.frames.stamp_ns.min())
        last = int(np.argmax(ds.frames.stamp_ns))
        lla = np.asarray(ds.frames.latlonalt[last, :2], dtype=np.float64)
        self._resume_last_lla = lla if np.isfinite(lla).all() else None
        self.log.info(f"resuming {path}: {len(ds)} frames, continuing after stamp {self.resume_after_ns}")

    def set_mount(self, T_base_cam: np.ndarray) -> None:
        self.T_base_cam = np.asarray(T_base_cam, dtype=np.float64)

    def set_tf_lookup(self, lookup: Lookup | None) -> None:
        """The runtime's TF (the camera mount comes from it when ``mount.source`` is 'tf_static')."""
        self.tf_lookup = lookup

    def _mount_text(self) -> str:
        bases = self.cfg.mount.base_frames()
        base = bases[0] if len(bases) == 1 else "one of " + "/".join(bases)
        return f"{base} -> {self.camera_frame or '<the images frame_id>'}"

    def try_mount(self, now_ns: int) -> bool:
        """Look the camera mount up in TF (once), from ``mount.base_frame`` (or the first of the usual body
        frames) to the camera frame. True when the mount is known."""
        if self.T_base_cam is not None:
            return True
        if self.tf_lookup is None or self.camera_frame is None or self.cfg.mount.source == "config":
            return False
        last: Exception | None = None
        for base in self.cfg.mount.base_frames():
            try:
                T, _ = self.tf_lookup(base, self.camera_frame, 0)
            except TransformException as e:
                last = e
                continue
            self.set_mount(T)
            self.mount_source = f"/tf_static {base} -> {self.camera_frame}"
            self.log.info(f"camera mount {base} -> {self.camera_frame} found")
            return True
        self._warning("mount_wait", now_ns, f"waiting for the camera mount {self._mount_text()}: {last}")
        return False

    def _resolve_mount(self, now_ns: int) -> bool:
        """At a frame without a mount: TF once more; with ``mount.source`` 'auto', else the configured mount."""
        if self.try_mount(now_ns):
            return True
        if self.cfg.mount.source == "auto":
            self.set_mount(self.cfg.mount.config_matrix())
            self.mount_source = self.cfg.mount.describe_config()
            self.log.warning(
                f"no camera mount {self._mount_text()} in /tf_static at the first frame; mount.source is 'auto': "
                f"using the {self.mount_source}"
            )
            return True
        return False

    def on_parameter_change(self, name: str, value: Any) -> tuple[bool, str]:
        """Apply a parameter change at once (``(True, "")``) or refuse it with the reason."""
        new, reason = parameter_change(self.cfg, name, value, RECORDER_LIVE)
        if new is None:
            return False, reason
        self.cfg = new
        self._warn.period_ns = int(new.warn_throttle_s * 1e9)
        self._approx.slop_ns = int(new.sync.slop_s * 1e9)
        self.log.info(f"parameter {name} = {value!r} applied")
        return True, ""

    def on_set_recording(self, request: Any, response: Any, now_ns: int) -> Any:
        """``std_srvs/SetBool`` service."""
        response.success, response.message = self.set_recording(request.data)
        return response

    def set_recording(self, enable: bool) -> tuple[bool, str]:
        """Start / stop recording (std_srvs/SetBool semantics: returns (success, message))."""
        enable = bool(enable)
        if enable and self.refused:
            return False, self.refused
        if enable == self.recording:
            return True, f"already {'recording' if enable else 'stopped'}"
        self.recording = enable
        if not enable:
            self.counters["dropped_not_recording"] += len(self._pending)
            self._pending.clear()
            self._approx.queues = [{} for _ in self._approx.queues]
        self.log.info("recording started" if enable else "recording stopped")
        return True, "recording" if enable else "stopped"

    def on_recording_msg(self, msg: Any, now_ns: int = 0) -> list[Outgoing]:
        self.set_recording(bool(msg.data))
        return []

    # ------------------------------------------------------------------ inputs
    def _warning(self, key: str, now_ns: int, text: str) -> None:
        if self._warn(key, now_ns):
            n = self._warn.suppressed.pop(key, 0)
            self.log.warning(text + (f" ({n} similar suppressed)" if n else ""))

    def on_camera_info(self, msg: Any, now_ns: int = 0) -> list[Outgoing]:
        try:
            cam = M.camera_from_info(msg)
        except (GeometryError, BagError) as e:
            self._warning("info", now_ns, f"ignoring bad CameraInfo: {e}")
            return []
        self.camera_info = msg
        self.camera = cam
        return []

    def _stamp(self, msg: Any, now_ns: int, what: str) -> int:
        """The header stamp, or the receive time ``now_ns`` (the bag log time offline, the node clock live) for a
        zero stamp, with one warning per input (the same policy as ``convert``)."""
        stamp = M.stamp_to_ns(msg.header.stamp)
        if stamp > 0:
            return stamp
        self.counters["stamps_from_receive_time"] += 1
        if what not in self._zero_stamp_warned:
            self._zero_stamp_warned.add(what)
            self.log.warning(
                f"{what} messages have a zero header stamp; using the receive time instead (the bag log time "
                "offline, the node clock live)"
            )
        return int(now_ns)

    def on_gps(self, msg: Any, now_ns: int) -> list[Outgoing]:
        fix = M.read_navsatfix(msg)
        if self.cfg.gps.altitude == "fixed":
            fix = dataclasses.replace(fix, lla=np.array([fix.lla[0], fix.lla[1], self.cfg.gps.fixed_altitude_m]))
        problem = fix.problem(self.cfg.min_fix_status)
        if problem is not None:
            if np.isfinite(fix.lla[:2]).all() and not np.isfinite(fix.lla[2]):
                problem = "NaN altitude (a 2-D receiver? set gps.altitude: fixed and gps.fixed_altitude_m)"
            self.counters["bad_fixes"] += 1
            self._warning("fix", now_ns, f"ignoring GPS fix: {problem} (lat/lon/alt {fix.lla.tolist()})")
            return []
        stamp = self._stamp(msg, now_ns, "GPS")
        released, dropped = self.gate.add(
            stamp / 1e9, float(fix.lla[0]), float(fix.lla[1]), (stamp, _Fix(fix.lla, msg, fix))
        )
        for why in dropped:
            key = {REASON_JUMP: "fixes_dropped_jump", REASON_NULL_ISLAND: "fixes_dropped_cold_start"}.get(
                why, "fixes_dropped_stamp"
            )
            self.counters[key] += 1
            self._warning("fix_" + key, now_ns, f"ignoring GPS fix at {fix.lla[:2].tolist()}: {why}")
        if self.gate.reanchors != self._reanchors:  # the fixes kept so far were the outliers
            self._reanchors = self.gate.reanchors
            self.log.warning(
                f"GPS re-anchored at {fix.lla[:2].tolist()}: the fixes kept before disagree with the last "
                f"{self.gate.min_consensus}, which agree with each other; frames until now may be off"
            )
            self.gps = InterpolatingStream(self.gps.horizon_ns)  # never interpolate across the jump
            if self._datum_from_gate and self.writer is None:
                self.datum = None  # nothing written about it yet: take the new anchor
        out: list[Outgoing] = []
        for _, (st, item) in released:
            out += self._add_fix(st, item, now_ns)
        return out

    def _add_fix(self, stamp: int, item: _Fix, now_ns: int) -> list[Outgoing]:
        if self.refused:
            return []
        lla = item.lla
        if not self._resume_checked and self._resume_last_lla is not None:
            self._resume_checked = True
            d = float(horizontal_distance_m(lla[0], lla[1], self._resume_last_lla[0], self._resume_last_lla[1]))
            if d > self.cfg.output.resume_distance_m:
                return self._refuse(
                    f"this recording starts {d / 1000:.1f} km from the last frame of the dataset "
                    f"{self.cfg.output.dataset} (more than output.resume_distance_m "
                    f"{self.cfg.output.resume_distance_m:g} m): it looks like a different flight. "
                    "Record it into a new dataset (another --out)"
                )
        if self.datum is None:
            self.datum = Datum(float(lla[0]), float(lla[1]), float(lla[2]))
            self._datum_from_gate = True
            self.log.info(f"ENU datum at the first fix the GPS gate kept: {self.datum}")
        if self.cfg.sync.policy == "approximate":
            return self._approx_add(1, stamp, item)
        self.gps.add(stamp, item)
        return self._process(now_ns)

    def on_odom(self, msg: Any, now_ns: int) -> list[Outgoing]:
        try:
            t, q = M.pose_tq(msg)
        except GeometryError as e:
            self.counters["bad_odometry"] += 1
            self._warning("odom", now_ns, f"ignoring odometry: {e}")
            return []
        stamp = self._stamp(msg, now_ns, "odometry")
        if self.cfg.sync.policy == "approximate":
            return self._approx_add(2, stamp, _Odom(t, q, msg))
        self.odom.add(stamp, _Odom(t, q, msg))
        return self._process(now_ns)

    def on_image(self, msg: Any, now_ns: int) -> list[Outgoing]:
        self.counters["images"] += 1
        if not self.recording:
            self.counters["dropped_not_recording"] += 1
            return []
        if self.camera_frame is None:
            self.camera_frame = str(msg.header.frame_id).lstrip("/") or "camera_optical_frame"
        stamp = self._stamp(msg, now_ns, "image")
        if self._resume_first_ns is not None and self._last_image_ns is None and not self._check_resume_time(stamp):
            return []  # the first image of this run is far from the dataset's frames
        if self._last_image_ns is not None and stamp <= self._last_image_ns:
            self.counters["dropped_stamp_not_increasing"] += 1
            self._warning("img_order", now_ns, f"image dropped: its stamp {stamp} is not after the previous image's")
            return []
        self._last_image_ns = stamp
        if self.resume_after_ns is not None and stamp <= self.resume_after_ns:
            self.counters["skipped_already_recorded"] += 1
            return []
        if self.cfg.sync.policy == "approximate":
            return self._approx_add(0, stamp, (stamp, msg))
        self._pending.append((stamp, msg))
        while len(self._pending) > self.cfg.sync.queue_size:
            self._pending.popleft()
            self.counters["dropped_queue"] += 1
            self._warning("queue", now_ns, "image queue full while waiting for GPS/odometry; dropping the oldest")
        return self._process(now_ns)

    def _refuse(self, text: str, *, kept: str = "the dataset is untouched") -> list[Outgoing]:
        """Stop for good (logged now, raised by :meth:`finish`): the recording is not the dataset's flight, or the
        dataset cannot be written (disk full, read-only, permission)."""
        self.refused = text
        self.log.error(f"{text}; recording stopped, {kept}")
        self.recording = False
        self.counters["dropped_not_recording"] += len(self._pending)
        self._pending.clear()
        self._approx.queues = [{} for _ in self._approx.queues]
        return []

    def _check_resume_time(self, stamp: int) -> bool:
        first, last = self._resume_first_ns, self.resume_after_ns
        assert first is not None and last is not None
        gap = int(self.cfg.output.resume_gap_s * 1e9)
        if first - gap <= stamp <= last + gap:
            return True
        where = (
            f"{(first - stamp) / 1e9:.0f} s before the first"
            if stamp < first
            else f"{(stamp - last) / 1e9:.0f} s after the last"
        )
        self._refuse(
            f"this recording starts {where} frame of the dataset {self.cfg.output.dataset} (more than "
            f"output.resume_gap_s {self.cfg.output.resume_gap_s:g} s): it looks like a different flight, and "
            "resuming would skip or mix its frames. Record it into a new dataset (another --out)"
        )
        return False

    # ------------------------------------------------------------------ synchronization
    def _process(self, now_ns: int) -> list[Outgoing]:
        out: list[Outgoing] = []
        gap = int(self.cfg.sync.max_gap_s * 1e9)
        while self._pending:
            stamp, img = self._pending[0]
            sg, g = self.gps.status(stamp, gap)
            so, o = self.odom.status(stamp, gap)
            if "drop" in (sg, so):
                self._pending.popleft()
                self.counters["dropped_no_support"] += 1
                why = g if sg == "drop" else o
                self._warning(
                    "support", now_ns, f"image at {stamp} dropped: {'GPS' if sg == 'drop' else 'odometry'} {why}"
                )
                continue
            if "wait" in (sg, so):
                break
            self._pending.popleft()
            f0, f1, a = g
            o0, o1, b = o
            lla = lerp(f0.lla, f1.lla, a)
            t = lerp(o0.t, o1.t, b)
            q = slerp_quat_xyzw(o0.q, o1.q, b)
            near_fix: _Fix = f0 if a < 0.5 else f1
            near_odom = o0 if b < 0.5 else o1
            out += self._emit(stamp, img, lla, t, q, near_fix, near_odom.msg, now_ns)
        return out

    def _approx_add(self, index: int, stamp: int, item: Any) -> list[Outgoing]:
        self._approx_out = []
        self._approx_now = stamp
        self._approx.add(index, stamp, item)
        out, self._approx_out = self._approx_out, []
        return out

    def _on_triple(self, img_item: tuple[int, Any], fix: _Fix, odom: _Odom) -> None:
        stamp, img = img_item
        self._approx_out += self._emit(stamp, img, fix.lla, odom.t, odom.q, fix, odom.msg, self._approx_now)

    def finish(self) -> None:
        """End of input: images still waiting for GPS/odometry are dropped (counted). Raises the
        :class:`DatasetError` of a recording refused as a different flight (the dataset was left untouched)."""
        self._end()
        if self.refused:
            raise DatasetError(self.refused)

    def _end(self) -> None:
        self.counters["dropped_no_support"] += len(self._pending)
        self._pending.clear()
        if self.T_base_cam is None and self.counters["dropped_no_mount"] and not self._mount_warned:
            self._mount_warned = True
            self.log.warning(
                f"no camera mount {self._mount_text()} was found in /tf_static; every frame was dropped "
                "(mount.source is 'tf_static': set mount.source auto or config, or mount.base_frame / camera_frame)"
            )

    def close(self) -> None:
        self._end()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ------------------------------------------------------------------ outputs
    def pose_at(self, lla: np.ndarray, q_odom: np.ndarray) -> np.ndarray:
        """T_world_cam from an interpolated fix and odometry orientation (needs datum and mount)."""
        assert self.datum is not None and self.T_base_cam is not None
        T_world_base = np.eye(4)
        T_world_base[:3, :3] = quat_xyzw_to_matrix(q_odom)
        T_world_base[:3, 3] = self.datum.to_enu(lla[0], lla[1], lla[2])
        return T_world_base @ self.T_base_cam

    def _emit(
        self,
        stamp: int,
        img: Any,
        lla: np.ndarray,
        t_odom: np.ndarray,
        q_odom: np.ndarray,
        fix: _Fix,
        odom: Any,
        now_ns: int,
    ) -> list[Outgoing]:
        if self.T_base_cam is None and not self._resolve_mount(now_ns):
            self.counters["dropped_no_mount"] += 1
            self._warning(
                "mount", now_ns, f"no camera mount yet ({self._mount_text()} not in /tf_static); frame dropped"
            )
            return []
        if self.cfg.output.dataset and self.camera is None:
            self.counters["dropped_no_camera_info"] += 1
            self._warning("noinfo", now_ns, f"no CameraInfo on {self.cfg.topics.camera_info} yet; frame dropped")
            return []
        try:
            T = self.pose_at(lla, q_odom)
        except GeometryError as e:
            self.counters["bad_fixes"] += 1
            self._warning("pose", now_ns, f"frame dropped: {e}")
            return []
        out: list[Outgoing] = []
        if self.cfg.output.dataset:
            try:
                rgb = M.image_msg_to_rgb(img)
            except (GeometryError, BagError) as e:
                self.counters["bad_images"] += 1
                self._warning("img", now_ns, f"frame dropped: {e}")
                return []
            try:
                self._write(stamp, T, rgb, lla)
            except OSError as e:  # disk full, read-only, permission: stop, keep what was written, say why
                why = os_error_message(e) or f"{e.filename or self.cfg.output.dataset}: {e.strerror or e}"
                self._refuse(
                    f"cannot write to the dataset: {why}",
                    kept=f"the {len(self.writer) if self.writer else 0} frames written so far are kept",
                )
                return []
        self.counters["frames"] += 1
        if self.cfg.output.publish_synced:
            out.append((self.cfg.topics.synced, self._synced_msg(stamp, img, lla, t_odom, q_odom, fix, odom, T)))
        return out

    def _open_writer(self) -> None:
        from pose2rgbd.dataset import DatasetWriter, Manifest

        assert self.camera is not None
        out = self.cfg.output
        wh = parse_size(self.cfg.size, "size")
        cam = self.camera if wh is None else self.camera.scaled(*wh)
        manifest = Manifest(
            name=out.name,
            camera=cam,
            depth_kind="none",
            rgb_encoding=out.rgb_encoding,
            world_frame=self.cfg.world_frame,
            camera_frame=self.camera_frame or "camera_optical_frame",
            datum=self.datum,
            sources=[{"id": 0, "kind": "recording", "name": out.source_name}],
            extra={"recorder": {"sync": self.cfg.sync.policy, "max_gap_s": self.cfg.sync.max_gap_s}},
        )
        self.writer = DatasetWriter(out.dataset, manifest, mode="append")

    def _write(self, stamp: int, T: np.ndarray, rgb: np.ndarray, lla: np.ndarray) -> None:
        if self.writer is None:
            self._open_writer()
        cam = self.writer.manifest.camera
        if rgb.shape[:2] != (cam.height, cam.width):
            rgb = cv2.resize(rgb, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
        self.writer.add_frame(stamp, T, rgb, None, latlonalt=(float(lla[0]), float(lla[1]), float(lla[2])))

    def _synced_msg(
        self,
        stamp: int,
        img: Any,
        lla: np.ndarray,
        t_odom: np.ndarray,
        q_odom: np.ndarray,
        fix: _Fix,
        odom: Any,
        T: np.ndarray,
    ) -> Any:
        f = self.f
        hdr = M.header(f, stamp, self.camera_frame or "camera_optical_frame")
        compressed = hasattr(img, "format") and not hasattr(img, "encoding")
        r = fix.reading
        fix_msg = M.navsatfix(
            f,
            stamp,
            str(fix.msg.header.frame_id),
            float(lla[0]),
            float(lla[1]),
            float(lla[2]),
            status=r.status,
            service=r.service,
            covariance=r.covariance,
            covariance_type=r.covariance_type,
        )
        odom_msg = M.odometry(
            f,
            stamp,
            str(odom.header.frame_id),
            str(odom.child_frame_id),
            T_from_tq(t_odom, q_odom),
            pose_cov=np.asarray(odom.pose.covariance, dtype=np.float64),
            twist=odom.twist,
        )
        return f.new(
            "pose2rgbd/msg/SyncedFrame",
            header=hdr,
            image=img if not compressed else f.new("sensor_msgs/msg/Image", header=hdr),
            compressed_image=img if compressed else f.new("sensor_msgs/msg/CompressedImage", header=hdr),
            camera_info=self.camera_info if self.camera_info is not None else f.new("sensor_msgs/msg/CameraInfo"),
            fix=fix_msg,
            odom=odom_msg,
            pose=M.pose_stamped(f, stamp, self.cfg.world_frame, T),
        )

    def diagnostics_tick(self, now_ns: int) -> list[Outgoing]:
        """The diagnostics timer: one DiagnosticArray on ``topics.diagnostics``."""
        return [(self.cfg.topics.diagnostics, self.diagnostics(now_ns))]

    def diagnostics(self, now_ns: int) -> Any:
        c = self.counters
        level = 0 if c["frames"] > 0 or c["images"] == 0 else 1
        text = ("recording" if self.recording else "stopped") + f", {c['frames']} frames"
        if self.refused:
            level, text = 2, self.refused
        return M.diagnostic_array(self.f, now_ns, "pose2rgbd: recorder", level, text, dict(c))


# ---------------------------------------------------------------------------------------------- the node spec
# Live parameters only change per-message decisions. Not live (read at configure), each for a reason: world_frame,
# mount.camera_frame and sync.max_gap_s are written into the dataset manifest when it is created (a change would
# give the SyncedFrame messages other frame ids than the dataset, or frames synchronized otherwise than its
# manifest says), datum / mount.* / size fix the geometry of every frame, sync.policy / queue_size / buffer_s
# size the synchronizer, topics.* are subscriptions.
RECORDER_LIVE = (
    "min_fix_status",
    "warn_throttle_s",
    "sync.slop_s",
    "output.publish_synced",
)


def build_recorder(cfg: RecorderConfig, factory: M.MessageFactory, logger: Any = None, **_res: Any) -> Recorder:
    return Recorder(cfg, factory, logger=logger)


def _describe_recorder(cfg: RecorderConfig, _res: dict[str, Any]) -> str:
    t = cfg.topics
    return (
        f"recording {t.image} + {t.gps} + {t.odom} ({cfg.sync.policy}) into {cfg.output.dataset or '<no dataset>'}; "
        f"SyncedFrame on {t.synced}: {cfg.output.publish_synced}"
    )


_IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")

RECORDER = NodeSpec(
    name="pose2rgbd_recorder",
    config=RecorderConfig,
    build=build_recorder,
    inputs=(
        Input("topics.image", _IMAGE_TYPES, "on_image", choose_type=lambda c: _IMAGE_TYPES[int(c.topics.compressed)]),
        Input("topics.gps", ("sensor_msgs/msg/NavSatFix",), "on_gps"),
        Input("topics.odom", ("nav_msgs/msg/Odometry",), "on_odom"),
        Input(
            "topics.camera_info",
            ("sensor_msgs/msg/CameraInfo",),
            "on_camera_info",
            required=lambda c: bool(c.output.dataset),
        ),
        Input("topics.recording", ("std_msgs/msg/Bool",), "on_recording_msg", qos="reliable", required=lambda c: False),
    ),
    outputs=(
        Output("topics.synced", "pose2rgbd/msg/SyncedFrame"),
        Output("topics.diagnostics", "diagnostic_msgs/msg/DiagnosticArray"),
    ),
    timers=(Timer(lambda c: 1.0, "diagnostics_tick", "diagnostics"),),
    services=(Service("~/set_recording", "std_srvs/srv/SetBool", "on_set_recording"),),
    tf=TFNeed(
        when=lambda c: c.mount.source != "config",
        required=lambda c: c.mount.source == "tf_static",
        static_only=True,
        on_update="try_mount",
        why="mount.source is 'tf_static' or 'auto'",
    ),
    live=RECORDER_LIVE,
    description="camera + GPS + odometry -> dataset frames and SyncedFrame messages",
    extras={"describe": _describe_recorder},
)
