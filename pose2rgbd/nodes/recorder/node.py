"""The record node (:class:`Recorder`, :data:`RECORDER`): its message handlers, the frame output and the spec;
the parts are in the sibling modules (:mod:`~pose2rgbd.nodes.recorder.frame_sync`,
:mod:`~pose2rgbd.nodes.recorder.gps`, :mod:`~pose2rgbd.nodes.recorder.mount`,
:mod:`~pose2rgbd.nodes.recorder.append`, :mod:`~pose2rgbd.nodes.recorder.synced`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pose2rgbd import messages as M
from pose2rgbd.atomic import os_error_message
from pose2rgbd.dataset.repeats import RepeatFilter
from pose2rgbd.errors import BagError, DatasetError, GeometryError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.rotations import quat_xyzw_to_matrix
from pose2rgbd.nodes.recorder.config import RECORDER_LIVE, RecorderConfig
from pose2rgbd.nodes.recorder.frame_sync import FixSample, OdomSample
from pose2rgbd.nodes.recorder.gps import GpsInput
from pose2rgbd.nodes.recorder.mount import MountLookup
from pose2rgbd.nodes.recorder.synced import synced_frame_msg
from pose2rgbd.nodes.spec import Input, Lookup, NodeSpec, Output, Service, TFNeed, Timer
from pose2rgbd.sync.stamp_gaps import LOSS_ADVICE, LOST_WARN_SHARE, StampGaps

Outgoing = tuple[str, Any]
COUNTERS = (
    "frames",
    "images",
    "fixes",
    "odometry",
    "dropped_no_support",
    "dropped_queue",
    "dropped_no_mount",
    "dropped_no_camera_info",
    "dropped_not_recording",
    "skipped_already_recorded",
    "bad_fixes",
    "fixes_dropped_jump",
    "fixes_dropped_cold_start",
    "fixes_dropped_stamp",
    "stamps_from_receive_time",
    "dropped_stamp_not_increasing",
    "bad_odometry",
    "bad_images",
    "repeated_images",
    "images_lost_upstream",
    "skipped_rate",
)
FROZEN_RUN = 3  # repeats in a row from which the diagnostics say the camera is frozen
NO_CAMERA_S = 5.0  # GPS or odometry for this long and not one image: the diagnostics say the camera is missing
RATE_SLACK = 0.5  # output.max_rate_hz: an image this share of the camera's period before its turn is taken (a
# camera's jitter would otherwise skip one more image now and then: 30 -> 10 Hz takes every third exactly)


class Recorder(GpsInput, MountLookup):
    """Message-level recorder (see the package docstring). Call :meth:`close` at the end."""

    live = RECORDER_LIVE
    logger_name = "pose2rgbd.recorder"
    cfg: RecorderConfig

    def __init__(
        self, cfg: RecorderConfig, factory: M.MessageFactory, *, logger: Any = None, tf_lookup: Lookup | None = None
    ) -> None:
        super().__init__(cfg, factory, logger, dict.fromkeys(COUNTERS, 0))
        self._init_sync(cfg)
        self._init_mount(cfg, tf_lookup)
        self._init_gps(cfg)
        self.recording = cfg.start_recording
        self.camera_info: Any = None
        self.camera: PinholeCamera | None = None
        self._zero_stamp_warned: set[str] = set()
        self._first_other_ns: int | None = None  # the first GPS fix or odometry message (node clock)
        self._last_image_ns: int | None = None
        self.gaps = StampGaps()  # the camera's frames that never arrived, from its stamps
        self._rate_due_ns: float | None = None  # output.max_rate_hz: when the next image is due
        self.repeats = RepeatFilter(keep=cfg.output.keep_repeats)
        self.refused = ""  # why this recording was refused (a different flight than the dataset's); stops it
        self._init_dataset(cfg)  # last: resuming logs and may refuse the configuration

    def parameter_applied(self, name: str) -> None:
        self._approx.slop_ns = int(self.cfg.sync.slop_s * 1e9)
        self.repeats.keep = self.cfg.output.keep_repeats

    # ------------------------------------------------------------------ recording on / off
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
        self.gaps = StampGaps()  # a pause is not a loss, nor are the frames before it news while stopped
        if not enable:
            self._drop_pending("dropped_not_recording")
        self.log.info("recording started" if enable else "recording stopped")
        return True, "recording" if enable else "stopped"

    def on_recording_msg(self, msg: Any, now_ns: int = 0) -> list[Outgoing]:
        self.set_recording(bool(msg.data))
        return []

    # ------------------------------------------------------------------ inputs
    def on_camera_info(self, msg: Any, now_ns: int = 0) -> list[Outgoing]:
        try:
            cam = M.camera_from_info(msg)
        except (GeometryError, BagError) as e:
            self.warning("info", now_ns, f"ignoring bad CameraInfo: {e}")
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
        self.count("stamps_from_receive_time")
        if what not in self._zero_stamp_warned:
            self._zero_stamp_warned.add(what)
            self.log.warning(
                f"{what} messages have a zero header stamp; using the receive time instead (the bag log time "
                "offline, the node clock live)"
            )
        return int(now_ns)

    def on_odom(self, msg: Any, now_ns: int) -> list[Outgoing]:
        self._other_input(now_ns, "odometry")
        try:
            t, q = M.pose_tq(msg)
        except GeometryError as e:
            self.count("bad_odometry")
            self.warning("odom", now_ns, f"ignoring odometry: {e}")
            return []
        stamp = self._stamp(msg, now_ns, "odometry")
        return self._queue_odom(stamp, OdomSample(t, q, msg), now_ns)

    def on_image(self, msg: Any, now_ns: int) -> list[Outgoing]:
        self.count("images")
        if not self.recording:
            self.count("dropped_not_recording")
            return []
        if self.camera_frame is None:
            self.camera_frame = str(msg.header.frame_id).lstrip("/") or "camera_optical_frame"
        stamp = self._stamp(msg, now_ns, "image")
        if self._resume_first_ns is not None and self._last_image_ns is None and not self._check_resume_time(stamp):
            return []  # the first image of this run is far from the dataset's frames
        if self._last_image_ns is not None and stamp <= self._last_image_ns:
            self.count("dropped_stamp_not_increasing")
            self.warning("img_order", now_ns, f"image dropped: its stamp {stamp} is not after the previous image's")
            return []
        camera_dt = None if self._last_image_ns is None else stamp - self._last_image_ns
        self._last_image_ns = stamp
        # the camera's own stamps only (a receive time carries the transport's delays)
        if M.stamp_to_ns(msg.header.stamp) > 0 and (lost := self.gaps.add(stamp)):
            self.count("images_lost_upstream", lost)
            if (warn := self._lost_upstream()) is not None:
                self.warning("img_lost", now_ns, warn)
        if self.resume_after_ns is not None and stamp <= self.resume_after_ns:
            if not self._check_resume_image(msg, stamp):
                return []
            self.count("skipped_already_recorded")
            return []
        if self._repeated(msg, stamp, now_ns):
            return []
        if self._rate_skips(stamp, camera_dt):
            self.count("skipped_rate")
            return []
        return self._queue_image(stamp, msg, now_ns)

    def _rate_skips(self, stamp: int, camera_dt: int | None) -> bool:
        """``output.max_rate_hz``: whether this image comes before its turn. The turns are a schedule, one every
        ``1 / max_rate_hz`` from the first image taken (not from the last one taken, so a camera's jitter does not
        drift it and the long-run rate never exceeds the setting); an image up to :data:`RATE_SLACK` of the camera's
        period (from its stamps, else the last interval) before its turn takes it. A stream that falls a turn behind
        (a pause) starts a new schedule at the next image."""
        rate = self.cfg.output.max_rate_hz
        if rate <= 0:
            return False
        period = 1e9 / rate
        due = self._rate_due_ns
        if due is not None:
            camera = self.gaps.period_ns() or float(camera_dt or 0)
            if stamp < due - RATE_SLACK * camera:
                return True
        self._rate_due_ns = (stamp if due is None or stamp > due + period else due) + period
        return False

    def _repeated(self, msg: Any, stamp: int, now_ns: int) -> bool:
        """Whether this image repeats the previous one byte for byte (a camera re-sending its last buffer: it
        carries no new view) and is dropped; counted and warned about (throttled) either way, as ``convert``
        does with repeated frames (pose2rgbd.dataset.repeats)."""
        data = msg.data
        raw = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data, np.uint8)
        r = self.repeats
        drop = r.drop(raw, str(stamp))
        if r.run == 0:
            return False
        self.count("repeated_images")
        what = "dropped (output.keep_repeats keeps them)" if drop else "kept (output.keep_repeats)"
        self.warning(
            "repeat", now_ns, f"image repeats the previous one byte for byte ({r.run} in a row; {r.repeats} of "
            f"{r.frames} images so far): the camera re-sends a frame{' -- frozen?' if r.run >= FROZEN_RUN else ''}; "
            f"{what}",
        )  # fmt: skip
        return drop

    def _refuse(self, text: str, *, kept: str = "the dataset is untouched") -> list[Outgoing]:
        """Stop for good (logged now, raised by :meth:`finish`): the recording is not the dataset's flight, or the
        dataset cannot be written (disk full, read-only, permission)."""
        self.refused = text
        self.log.error(f"{text}; recording stopped, {kept}")
        self.recording = False
        self._drop_pending("dropped_not_recording")
        return []

    def finish(self) -> None:
        """End of input: images still waiting for GPS/odometry are dropped (counted). Raises the
        :class:`DatasetError` of a recording refused as a different flight (the dataset was left untouched)."""
        self._end()
        if self.refused:
            raise DatasetError(self.refused)

    def _end(self) -> None:
        self.count("dropped_no_support", len(self._pending))
        self._pending.clear()
        self._warn_no_mount()

    def close(self) -> None:
        """End of the recording (node shutdown, Ctrl-C, the bag's end): the pending images dropped, the dataset
        closed, and a line of what was recorded and dropped."""
        self._end()
        wrote = self.writer is not None
        if self.writer is not None:
            # the frames this run wrote: a Ctrl-C between a frame's write and its count leaves the count one short
            self.counters["frames"] = len(self.writer) - self._writer_start
            self.writer.close()
            self.writer = None
        self.log.info(self.summary(wrote))

    def summary(self, wrote: bool = True) -> str:
        """What the recording came to: frames written of the images seen, and every drop counted (non-zero)."""
        c = self.counters
        into = f" into {self.cfg.output.dataset}" if self.cfg.output.dataset and wrote else ""
        drops = [f"{k} {v}" for k, v in c.items() if v and k not in ("frames", "images", "fixes", "odometry")]
        text = f"recorded {c['frames']} frames of {c['images']} images{into}" + (
            f" ({', '.join(drops)})" if drops else ""
        )
        if not c["images"] and (c["fixes"] or c["odometry"]):
            text += (
                f"; {c['fixes']} GPS fixes and {c['odometry']} odometry messages came, no image on "
                f"'{self.cfg.topics.image}' (topics.image)"
            )
        return text

    # ------------------------------------------------------------------ outputs
    def pose_at(self, lla: np.ndarray, q_odom: np.ndarray) -> np.ndarray:
        """T_world_cam from an interpolated fix and odometry orientation (needs datum and mount)."""
        assert self.datum is not None and self.T_base_cam is not None
        T_world_base = np.eye(4)
        T_world_base[:3, :3] = quat_xyzw_to_matrix(q_odom)
        # the GPS position in the world: ENU about the datum, moved by the datum's transform when resuming a dataset
        # converted into a robot's TF frame; the odometry's rotation is then taken in that frame (a robot's odom
        # hangs from its map), not as ENU turned into it
        T_world_base[:3, 3] = self.datum.to_world(lla[0], lla[1], lla[2])
        return T_world_base @ self.T_base_cam

    def _emit(
        self,
        stamp: int,
        img: Any,
        lla: np.ndarray,
        t_odom: np.ndarray,
        q_odom: np.ndarray,
        fix: FixSample,
        odom: Any,
        now_ns: int,
    ) -> list[Outgoing]:
        if self.T_base_cam is None and not self._resolve_mount(now_ns):
            self.count("dropped_no_mount")
            self.warning(
                "mount", now_ns, f"no camera mount yet ({self._mount_text()} not in /tf_static); frame dropped"
            )
            return []
        if self.cfg.output.dataset and self.camera is None:
            self.count("dropped_no_camera_info")
            self.warning("noinfo", now_ns, f"no CameraInfo on {self.cfg.topics.camera_info} yet; frame dropped")
            return []
        try:
            T = self.pose_at(lla, q_odom)
        except GeometryError as e:
            self.count("bad_fixes")
            self.warning("pose", now_ns, f"frame dropped: {e}")
            return []
        out: list[Outgoing] = []
        if self.cfg.output.dataset:
            try:
                rgb = M.image_msg_to_rgb(img)
            except (GeometryError, BagError) as e:
                self.count("bad_images")
                self.warning("img", now_ns, f"frame dropped: {e}")
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
        self.count("frames")
        if self.cfg.output.publish_synced:
            camera = self.camera_frame or "camera_optical_frame"
            msg = synced_frame_msg(self.f, stamp, camera, self.world_frame, img, self.camera_info, lla, t_odom,
                                   q_odom, fix, odom, T)  # fmt: skip
            out.append((self.cfg.topics.synced, msg))
        return out

    def _lost_upstream(self) -> str | None:
        """What the diagnostics say where more than :data:`LOST_WARN_SHARE` of the camera's latest frames did not
        reach the node (gaps in its stamps; None otherwise)."""
        recent = self.gaps.recent()
        if not self.recording or recent is None or recent[1] <= LOST_WARN_SHARE:
            return None
        hz, share = recent
        return (
            f"{100 * share:.0f} % of the camera's latest frames (its stamps: {hz:.1f} Hz) never reached this node "
            f"({self.counters['images_lost_upstream']} so far): the transport lost them ({LOSS_ADVICE}), or this node "
            "fell behind (its queue dropped them: a busy CPU)"
        )

    def _other_input(self, now_ns: int, key: str) -> None:
        """A GPS fix or an odometry message arrived: counted, and the time of the first kept (:meth:`_no_camera`)."""
        self.count(key)
        if self._first_other_ns is None and now_ns > 0:  # the clock at 0 (sim time before /clock): not a start
            self._first_other_ns = now_ns

    def _no_camera(self, now_ns: int) -> str | None:
        """What the diagnostics say where GPS or odometry came for :data:`NO_CAMERA_S` and not one image did."""
        c, t0 = self.counters, self._first_other_ns
        if c["images"] or t0 is None or now_ns - t0 < NO_CAMERA_S * 1e9:
            return None
        kind = "CompressedImage" if self.cfg.topics.compressed else "Image"
        return (
            f"no image on '{self.cfg.topics.image}' ({kind}) in {(now_ns - t0) / 1e9:.0f} s, while {c['fixes']} GPS "
            f"fixes and {c['odometry']} odometry messages came: is topics.image the camera's topic (and "
            "topics.compressed its type)? No frame can be recorded without it"
        )

    def diagnostics(self, now_ns: int) -> Any:
        c = self.counters
        level = 0 if c["frames"] > 0 or c["images"] == 0 else 1
        text = ("recording" if self.recording else "stopped") + f", {c['frames']} frames"
        if (missing := self._no_camera(now_ns)) is not None:
            level, text = 1, f"{text}; {missing}"
        if self.repeats.run >= FROZEN_RUN:
            level = 1
            text += f"; camera frozen? the last {self.repeats.run + 1} images are one image"
        elif c["repeated_images"]:
            text += f"; {c['repeated_images']} repeated images"
        if (lost := self._lost_upstream()) is not None:
            level, text = max(level, 1), f"{text}; {lost}"
        if self.refused:
            level, text = 2, self.refused
        return M.diagnostic_array(self.f, now_ns, "pose2rgbd: recorder", level, text, dict(c))


# ---------------------------------------------------------------------------------------------- the node spec
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
        Input(
            "topics.image",
            _IMAGE_TYPES,
            Recorder.on_image,
            choose_type=lambda c: _IMAGE_TYPES[int(c.topics.compressed)],
        ),
        Input("topics.gps", ("sensor_msgs/msg/NavSatFix",), Recorder.on_gps),
        Input("topics.odom", ("nav_msgs/msg/Odometry",), Recorder.on_odom),
        Input(
            "topics.camera_info",
            ("sensor_msgs/msg/CameraInfo",),
            Recorder.on_camera_info,
            required=lambda c: bool(c.output.dataset),
        ),
        Input(
            "topics.recording",
            ("std_msgs/msg/Bool",),
            Recorder.on_recording_msg,
            qos="reliable",
            depth=10,
            required=lambda c: False,
        ),
    ),
    outputs=(
        Output("topics.synced", "pose2rgbd/msg/SyncedFrame"),
        Output("topics.diagnostics", "diagnostic_msgs/msg/DiagnosticArray"),
    ),
    timers=(Timer(lambda c: 1.0, Recorder.diagnostics_tick, "diagnostics"),),
    services=(Service("~/set_recording", "std_srvs/srv/SetBool", Recorder.on_set_recording),),
    tf=TFNeed(
        when=lambda c: c.mount.source != "config",
        required=lambda c: c.mount.source == "tf_static",
        static_only=True,
        on_update=Recorder.try_mount,
        why="mount.source is 'tf_static' or 'auto'",
        instead="or give the camera's mount on base_link with --mount config --mount-rpy R,P,Y --mount-xyz X,Y,Z "
        "(--set mount.source=config, mount.rpy_deg, mount.translation)",
    ),
    live=RECORDER_LIVE,
    dataset="output.dataset",
    description="camera + GPS + odometry -> dataset frames and SyncedFrame messages",
    extras={"describe": _describe_recorder},
)
