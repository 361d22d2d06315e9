"""A rosbag (ROS 1, rosbag2 sqlite3 / mcap) as a conversion source; opened once for both passes.

Topics are found by message type (``BagReader.find_topic``) unless named in the config. Stamps: the message
``header.stamp`` when set, else the bag log time. Times inside the pipeline are seconds since the first image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from pose2rgbd.convert.config import DEFAULT_DEPTH_TOPIC, ConvertConfig
from pose2rgbd.convert.pipeline import DatasetPlan, convert
from pose2rgbd.convert.sources.bag_orientation import (
    ENU_ALIGNED_NOTE,
    IN_WORLD_NOTE,
    TRACK_IN_WORLD_NOTE,
    orientation_series,
    read_tf_tree,
    require_dynamic_tf,
    stamp_ns,
    tf_orientation_series,
    tf_topics,
    world_chain,
)
from pose2rgbd.convert.sources.clock_offset import ClockOffsetSource
from pose2rgbd.convert.stages.orientation import ODOM_ENU_NOTE, OrientationTrack
from pose2rgbd.convert.stages.time_offset import PosePlan, Streams
from pose2rgbd.convert.stages.world_frame import (
    AUTO_TF_WORLDS,
    ENU_NAME,
    ENU_OTHER_NAME,
    YAW_NOTICE_DEG,
    WorldFit,
    fit_world,
    poses_in_world,
    world_warning,
)
from pose2rgbd.errors import BagError, ConfigError, SyncError
from pose2rgbd.geometry import PinholeCamera
from pose2rgbd.geometry.tf_buffer import TFBuffer, TransformException
from pose2rgbd.messages import camera_from_info, header_stamp_ns, image_msg_to_depth, image_msg_to_rgb, read_navsatfix
from pose2rgbd.sync.flow import FlowMagnitude
from pose2rgbd.sync.gps import null_island
from pose2rgbd.sync.stamp_gaps import LOSS_ADVICE, LOST_WARN_SHARE, missing_frames

if TYPE_CHECKING:
    from pose2rgbd.bags.reader import BagReader

log = logging.getLogger(__name__)
MISSING_REASON = "missing from the bag (gaps in the camera's stamps)"

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def _camera_topics(bag: BagReader) -> list[str]:
    """The bag's camera topics: Image and CompressedImage topics that are not depth by name (``depth``,
    compressedDepth), nor, for an Image topic, by its first message's encoding (16UC1, 32FC1, 64FC1)."""
    return [
        t.name
        for t in bag.topics.values()
        if t.msgtype in IMAGE_TYPES
        and "depth" not in t.name.lower()
        and (t.msgtype != "sensor_msgs/msg/Image" or bag.first_encoding(t.name) not in _DEPTH_ONLY)
    ]


def find_image_topic(bag: BagReader, name: str = "") -> str:
    """The camera topic (Image or CompressedImage, not a depth image); a clear error lists the topics. A topic
    named whose first message is a depth image (16UC1, 32FC1) is refused before the image pass, which would find
    every frame of it unreadable."""
    if name:
        name = bag.topic_name(name)
        info = bag.topics.get(name)
        enc = bag.first_encoding(name) if info is not None and info.msgtype == "sensor_msgs/msg/Image" else None
        if info is None or info.msgtype not in IMAGE_TYPES or enc in _DEPTH_ONLY:
            if info is None:
                what = "not in the bag"
            elif enc in _DEPTH_ONLY:
                what = f"a depth image topic ({enc}), not a camera's colour images"
            else:
                what = f"of type {info.msgtype}"
            named = _camera_topics(bag)
            which = f"its camera topics: {', '.join(named)} (give one with --image-topic); " if named else ""
            depth = ""
            if enc in _DEPTH_ONLY:
                by_default = name == bag.topic_name(DEFAULT_DEPTH_TOPIC)
                depth = "a depth topic goes to --depth-topic" + (" (this one is read by default)" if by_default
                                                                  else f" {name}") + "; "  # fmt: skip
            raise BagError(
                f"{bag.path}: image topic {name!r} is {what}; {which}{depth}topics present:\n{bag.describe_topics()}"
            )
        return name
    cands = _camera_topics(bag)
    if not cands:
        types = {t.msgtype for t in bag.topics.values()}
        both = {"sensor_msgs/msg/NavSatFix", "nav_msgs/msg/Odometry"} <= types
        hint = (
            "\na dataset is made of camera frames; this bag has GPS and odometry without them: `pose2rgbd convert "
            f"gps-odom {bag.path} --report DIR` aligns the two in time (docs/convert.md); for a dataset, record the "
            "camera's image topic too (`ros2 bag record`), or record one live "
            "(`ros2 launch pose2rgbd record.launch.py`, docs/ros.md)"
            if both
            else "\na dataset is made of camera frames: record the camera's image topic into the bag (docs/ros.md)"
        )
        raise BagError(
            f"{bag.path}: no camera topic (sensor_msgs Image or CompressedImage); topics present:\n"
            f"{bag.describe_topics()}{hint}"
        )
    if len(cands) > 1:
        raise BagError(f"{bag.path}: several camera topics {cands}; choose one with --image-topic")
    return cands[0]


def _find_optional(bag: BagReader, msgtype: str, name: str, key: str) -> str | None:
    if name:
        return bag.find_topic(msgtype, name, key)
    c = bag.topics_of_type(msgtype)
    return c[0] if len(c) == 1 else None


@dataclass
class BagTopics:
    """The topics a conversion reads from one bag (None: absent)."""

    image: str
    gps: str
    info: str | None
    odom: str | None
    imu: str | None
    depth: str | None

    @classmethod
    def choose(cls, bag: BagReader, cfg: ConvertConfig) -> BagTopics:
        tp = cfg.topics
        return cls(
            image=find_image_topic(bag, tp.image),
            gps=bag.find_topic("sensor_msgs/msg/NavSatFix", tp.gps or None, "topics.gps"),
            info=_find_optional(bag, "sensor_msgs/msg/CameraInfo", tp.camera_info, "topics.camera_info"),
            odom=_find_optional(bag, "nav_msgs/msg/Odometry", tp.odom, "topics.odom"),
            imu=_find_optional(bag, "sensor_msgs/msg/Imu", tp.imu, "topics.imu"),
            depth=find_depth_topic(bag, tp.depth),
        )

    def to_dict(self) -> dict[str, str | None]:
        return dict(vars(self))


# what image_msg_to_depth reads as depth (REP-118, and the aliases drivers write)
_DEPTH_READABLE = ("16UC1", "mono16", "32FC1", "64FC1")
# of those, what image_msg_to_rgb cannot read as a camera's image (mono16 is a grey camera's too)
_DEPTH_ONLY = ("16UC1", "32FC1", "64FC1")


def find_depth_topic(bag: BagReader, name: str) -> str | None:
    """The depth topic (a ``sensor_msgs/Image`` of depth), or None: an RGB-only dataset. The default topic
    (:data:`~pose2rgbd.convert.config.DEFAULT_DEPTH_TOPIC`, the simulator's) is taken where the bag has it as an
    Image; a topic the user named instead must be in the bag, an Image with a depth encoding, else a clear error
    lists the bag's image topics with their encodings (a depth topic named by mistake was once left out in silence,
    and the dataset came out without depth)."""
    if not name:
        return None
    topic = bag.topic_name(name)
    info = bag.topics.get(topic)
    if name == DEFAULT_DEPTH_TOPIC:
        return topic if info is not None and info.msgtype == "sensor_msgs/msg/Image" else None
    if info is None:
        what = "is not in the bag"
    elif info.msgtype != "sensor_msgs/msg/Image":
        what = f"has type {info.msgtype}, not sensor_msgs/msg/Image"
    else:
        enc = bag.first_encoding(topic)
        if enc is None or enc in _DEPTH_READABLE:
            return topic
        what = f"holds {enc} images, not depth"
    raise _depth_topic_error(bag, topic, what)


def _depth_topic_error(bag: BagReader, topic: str, what: str) -> BagError:
    images = [t.name for t in bag.topics.values() if t.msgtype in IMAGE_TYPES]
    named = []
    for t in images:
        enc = bag.first_encoding(t) if bag.topics[t].msgtype == "sensor_msgs/msg/Image" else "compressed"
        kind = ": depth" if enc in _DEPTH_READABLE else ""
        named.append(f"{t} ({enc or 'encoding unknown'}{kind})")
    has = f"the bag's image topics: {', '.join(named)}" if named else "the bag has no image topic"
    return BagError(
        f"{bag.path}: depth topic {topic!r} (--depth-topic, topics.depth) {what}; {has}. Name the depth image's "
        "topic (32FC1 metres or 16UC1 millimetres) with --depth-topic TOPIC, or convert without depth (an RGB-only "
        f"dataset) with --depth-topic ''; topics:\n{bag.describe_topics()}"
    )


@dataclass
class _ImagePass:
    stamps: list[int]
    flows: list[float]
    message_index: list[int]  # bag message number of each readable image
    unreadable: int
    camera_frame: str
    shape: tuple[int, ...] | None
    missing: int = 0  # the camera's frames not in the bag, from the gaps in the stamps (pose2rgbd.sync.stamp_gaps)


class BagSource(ClockOffsetSource):
    """A rosbag: pass 1 reads images (stamps, optical flow), GPS, CameraInfo, /tf_static (the mount) and an
    orientation topic; pass 2 reads the kept images and their depth. The bag stays open in between."""

    kind = "rosbag"

    def __init__(self, path: str | Path, cfg: ConvertConfig | None = None) -> None:
        super().__init__(path, cfg)
        if self.cfg.lens != "pinhole":
            raise ConfigError(f"lens {self.cfg.lens!r} is for videos: a bag's camera comes from its CameraInfo; "
                              "leave lens at pinhole for a bag")  # fmt: skip
        self._bag: BagReader | None = None
        self.topics: BagTopics | None = None
        self._message_index: list[int] = []
        self._body_frames: list[str] = []
        self._gps_error: dict[str, object] | None = None  # the receiver's reported error of its fixes (pass 1)
        self._tf_tree: tuple[TFBuffer, int] | None = None  # the whole recording's TF, read once (orientation, world)
        self._world: WorldFit | None = None  # the fit into the robot's TF frame, when the poses were written in it

    def __enter__(self) -> BagSource:
        from pose2rgbd.bags import open_bag

        self._bag = open_bag(self.path)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bag is not None:
            self._bag.close()
            self._bag = None

    @property
    def bag(self) -> BagReader:
        """The open bag (between ``__enter__`` and ``__exit__``)."""
        if self._bag is None:
            raise BagError(f"{self.path}: the bag is not open; use the source in a `with` block")
        return self._bag

    # ---- pass 1

    def read(self, *, progress: bool) -> Streams:
        bag, cfg = self.bag, self.cfg
        tp = self.topics = BagTopics.choose(bag, cfg)
        if cfg.orientation == "tf":  # fail before the long image pass
            require_dynamic_tf(bag, cfg.mount.base_frames())
        if bag.topics[tp.image].count == 0:
            raise BagError(f"{bag.path}: camera topic {tp.image} has no messages")
        info_cam = None
        if tp.info:
            info = next(iter(bag.messages([tp.info])), None)
            info_cam = camera_from_info(info.msg) if info is not None else None
        im = self._image_pass(tp.image, info_cam, progress)
        self._message_index = im.message_index
        t0 = im.stamps[0]
        g = self._gps(tp.gps, t0)
        assumptions = []
        cam = info_cam
        if cam is None:
            assert im.shape is not None  # at least one image was decoded
            cam = PinholeCamera.from_fov(im.shape[1], im.shape[0], cfg.hfov_deg)
            assumptions.append(f"no CameraInfo: pinhole with an assumed horizontal FOV of {cfg.hfov_deg} deg")
        elif im.shape is not None and (cam.width, cam.height) != (im.shape[1], im.shape[0]):
            cam = cam.scaled(im.shape[1], im.shape[0])
        T_bc, mount_src, body_frames = self._mount(cfg.mount.camera_frame or im.camera_frame)
        self._body_frames = body_frames
        return Streams(
            t0_ns=t0, frame_t=(np.asarray(im.stamps) - t0) / 1e9, flow=np.asarray(im.flows), gps_t=g[:, 0],
            lat=g[:, 1], lon=g[:, 2], alt=g[:, 3], gps_speed=np.full(len(g), np.nan), gps_status=g[:, 4].astype(int),
            gps_source=f"{self.path}:{tp.gps}", camera=cam, T_body_cam=T_bc, mount_source=mount_src,
            orientation=self._orientation(tp, body_frames, t0, g), has_depth=tp.depth is not None,
            input_kind=self.kind, input_path=str(self.path), frames_unreadable=im.unreadable,
            frames_lost={MISSING_REASON: im.missing} if im.missing else {},
            extra_assumptions=assumptions, topics=tp.to_dict(), camera_frame=im.camera_frame or "",
            pose_error=self._gps_error or {},
        )  # fmt: skip

    def _image_pass(self, topic: str, camera: PinholeCamera | None, progress: bool) -> _ImagePass:
        """Stamps and optical-flow magnitude of every readable image (unreadable ones are counted)."""
        from pose2rgbd.progress import bar

        bag = self.bag
        fm = FlowMagnitude(self.cfg.sync.flow, camera)
        out = _ImagePass([], [], [], 0, "", None)
        headers: list[int] = []  # every image's header stamp, unreadable ones too (0: none; then no gap count)
        reasons: dict[str, int] = {}  # why images were unreadable: how many each
        msgs = bar(bag.messages([topic]), total=bag.topics[topic].count, desc="flow (pass 1)", unit="frame",
                   progress=progress)  # fmt: skip
        for k, m in enumerate(msgs):
            try:
                headers.append(header_stamp_ns(m.msg))
            except (AttributeError, BagError):
                headers.append(0)
            try:
                rgb = image_msg_to_rgb(m.msg)
            except BagError as e:
                out.unreadable += 1
                if str(e) not in reasons:  # said once per reason (a whole topic of one kind: once, not per frame)
                    log.warning("%s: frame %d unreadable: %s", topic, k, e)
                reasons[str(e)] = reasons.get(str(e), 0) + 1
                continue
            out.camera_frame = out.camera_frame or m.msg.header.frame_id
            out.shape = rgb.shape
            st = stamp_ns(m)
            if out.stamps and st <= out.stamps[-1]:
                raise SyncError(
                    f"{bag.path}: {topic} stamps are not increasing at message {k} ({out.stamps[-1]} -> {st} ns)"
                )
            out.stamps.append(st)
            out.message_index.append(k)
            out.flows.append(fm.add_image((st - out.stamps[0]) / 1e9, rgb))
        if out.unreadable > len(reasons):  # some reason repeated: the count, once
            said = "its reason is" if len(reasons) == 1 else f"each of their {len(reasons)} reasons is"
            log.warning("%s: %d of %d frames unreadable (%s said once above, at its first frame)", topic,
                        out.unreadable, len(headers), said)  # fmt: skip
        if not out.stamps:
            raise BagError(f"{bag.path}: no readable image on {topic}")
        # the camera's own stamps only: the bag's log times (zero header stamps) carry the recorder's delays
        out.missing = missing_frames(np.sort(headers)) if min(headers) > 0 else 0
        if out.missing > LOST_WARN_SHARE * (out.missing + len(headers)):
            log.warning(
                "%s: %d of the camera's frames are missing between the %d images of %s (gaps in their stamps): they "
                "never reached the bag's recorder (%s), or it fell behind", bag.path, out.missing, len(headers), topic,
                LOSS_ADVICE,
            )  # fmt: skip
        return out

    def _gps(self, topic: str, t0: int) -> np.ndarray:
        """``(N, 5)`` rows ``t_s, lat, lon, alt, status`` sorted by time; the receiver's reported error of them in
        ``_gps_error`` (:func:`~pose2rgbd.sync.gps.reported_pose_error`, None where it states none)."""
        from pose2rgbd.sync.gps import reported_pose_error

        rows, cov, kinds = [], [], []
        for m in self.bag.messages([topic]):
            fix = read_navsatfix(m.msg)
            rows.append(((stamp_ns(m) - t0) / 1e9, *fix.lla, fix.status))
            cov.append(fix.covariance)
            kinds.append(fix.covariance_type)
        if not rows:
            raise SyncError(f"{self.bag.path}: GPS topic {topic} has no messages")
        self._gps_error = reported_pose_error(np.asarray(cov), np.asarray(kinds))
        g = np.asarray(rows, dtype=np.float64)
        return g[np.argsort(g[:, 0], kind="stable")]

    def _mount(self, cam_frame: str) -> tuple[np.ndarray, str, list[str]]:
        """``(T_body_cam, description, body frames)``: /tf_static from the camera frame up to the nearest body frame
        (``mount.source`` auto / tf_static), else the configured mount."""
        mount, body_frames = self.cfg.mount, list(self.cfg.mount.base_frames())
        found = None if mount.source == "config" else self._static_mount(cam_frame, body_frames)
        if found is None and mount.source == "tf_static":
            raise BagError(
                f"{self.bag.path}: mount.source is 'tf_static' but /tf_static has no transform from a body frame "
                f"{body_frames} to the camera frame {cam_frame!r}; use mount.source auto or config, or set "
                "mount.base_frame / mount.camera_frame"
            )
        if found is None:
            return mount.config_matrix(), mount.describe_config(), body_frames
        T, what, body = found
        return T, what, [body]  # orientation of the body the mount hangs from

    def _static_mount(self, cam_frame: str, body_frames: list[str]) -> tuple[np.ndarray, str, str] | None:
        static = [t for t in self.bag.topics_of_type("tf2_msgs/msg/TFMessage") if "static" in t]
        if not static or not cam_frame:
            return None
        buf = TFBuffer()
        for m in self.bag.messages(static):
            buf.add_tf_message(m.msg, static=True, default_stamp_ns=m.stamp_ns)
        found = buf.lookup_up_to(cam_frame, body_frames)
        if found is None:
            return None
        T, body, chain = found
        return T, f"/tf_static {' <- '.join(reversed(chain))}", body

    def _orientation(self, tp: BagTopics, body_frames: list[str], t0: int, g: np.ndarray) -> OrientationTrack | None:
        """The orientation track of the configured source; auto order imu > odom > tf > (the GPS course, chosen
        by the time-offset stage): IMU and odometry are explicit orientation topics, a TF tree is used when a bag
        has neither (its world frame is only a convention, and /tf also carries frames of other purposes). An
        explicit request fails loudly; auto falls back to the course with a warning."""
        bag, src = self.bag, self.cfg.orientation
        if src in ("auto", "imu") and tp.imu:
            t, R, _ = orientation_series(bag, tp.imu, "imu", t0)
            return OrientationTrack(t, R, "imu", f"orientation from {tp.imu} (assumed ENU, REP-145)")
        if src in ("auto", "odom") and tp.odom:
            t, R, frame = orientation_series(bag, tp.odom, "odom", t0)
            return OrientationTrack(t, R, "odom", f"orientation from {tp.odom}", tf_frame=frame)
        if src == "tf" or (src == "auto" and tf_topics(bag)[0]):
            try:
                t, R, note, world = tf_orientation_series(bag, body_frames, t0, self._datum_latlon(g),
                                                          self._tf(require_dynamic_tf(bag, body_frames)))  # fmt: skip
            except BagError as e:
                if src == "tf":
                    raise
                log.warning("TF orientation unusable (%s); using the GPS course", e)
                return None
            return OrientationTrack(t, R, "tf", note, tf_frame=world)
        return None

    def _tf(self, topics: tuple[list[str], list[str]]) -> tuple[TFBuffer, int]:
        """The bag's TF tree from ``topics`` (dynamic, static), read once and kept (:func:`read_tf_tree`)."""
        if self._tf_tree is None:
            self._tf_tree = read_tf_tree(self.bag, *topics)
        return self._tf_tree

    def _datum_latlon(self, g: np.ndarray) -> tuple[float, float] | None:
        """For an ECEF 'earth' TF frame: the datum the time-offset stage will use, or the median of the valid
        fixes (robust to a bad first fix)."""
        datum = self.cfg.datum_obj()
        if datum is not None:
            return datum.lat_deg, datum.lon_deg
        ok = (g[:, 4] >= 0) & np.isfinite(g[:, 1:4]).all(1) & (np.abs(g[:, 1]) <= 90) & (np.abs(g[:, 2]) <= 180)
        ok &= ~null_island(g[:, 1], g[:, 2])
        return (float(np.median(g[ok, 1])), float(np.median(g[ok, 2]))) if ok.any() else None

    # ---- the world frame (pose2rgbd.convert.stages.world_frame)

    def plan(self, *, progress: bool) -> DatasetPlan:
        plan = super().plan(progress=progress)
        choice, summary = self.cfg.world_frame, plan.summary
        fit, why, in_tf = (None, "world_frame enu", False) if choice == "enu" else self._world_fit(plan, choice)
        if fit is None:
            if choice not in ("auto", "enu"):
                raise BagError(f"{self.path}: world_frame {choice!r}: {why}; convert with --world-frame enu (or auto)")
            name = ENU_NAME
            if in_tf:  # the robot has such a frame, and the dataset's is another: not named as the robot's
                name = ENU_OTHER_NAME
                plan.manifest.world_frame = name
                log.warning(
                    "%s: %s; the poses stay in the GPS's ENU frame about the datum, named '%s' (not '%s': the robot's "
                    "frame of that name is another), so a render node does not look them up in the robot's frame; "
                    "record longer, or convert with --datum at the robot's map origin and --world-frame enu where its "
                    "map is ENU about it", self.path, why, name, ENU_NAME,
                )  # fmt: skip
            summary["world_frame"] = {"frame": name, "kind": "enu", "why": why}
        else:
            self._world = fit
            pose: PosePlan = plan.detail
            assert self.streams is not None
            R_track = self._track_in_world(plan, pose.orientation_tf_frame, fit.frame)
            plan.T_world_cam = poses_in_world(plan.T_world_cam, self.streams.T_body_cam, fit.T_world_enu, R_track)
            if R_track is not None:  # the track's rotations are put in the world by TF, not taken as ENU
                track = pose.orientation_tf_frame
                now = (
                    IN_WORLD_NOTE.format(fit.frame)
                    if track == fit.frame
                    else TRACK_IN_WORLD_NOTE.format(track, fit.frame)
                )
                notes = (ENU_ALIGNED_NOTE.format(track), ODOM_ENU_NOTE.strip(" ()"))
                summary["assumptions"][:] = [_replaced(a, notes, now) for a in summary["assumptions"]]
            elif self.cfg.align_odom_yaw and summary.get("orientation_source") in ("odom", "tf"):
                log.warning(
                    "%s: align_odom_yaw turned the %s track onto the GPS course, and the fit then turned it into %r: "
                    "two estimates, each with its own error, where TF can place the track in %r directly; for a "
                    "dataset in the robot's frame leave align_odom_yaw off", self.path,
                    summary["orientation_source"], fit.frame, fit.frame,
                )  # fmt: skip
            elif pose.orientation_tf_frame and abs(fit.yaw_deg) > YAW_NOTICE_DEG:
                log.warning(
                    "%s: the orientation track's frame %r is not in the bag's TF, so its rotations were taken as "
                    "ENU-aligned and turned %+.1f deg into %r with the positions; if that frame is aligned with %r "
                    "instead (odometry under the robot's map), convert with --orientation tf", self.path,
                    pose.orientation_tf_frame, fit.yaw_deg, fit.frame, fit.frame,
                )  # fmt: skip
            plan.manifest.world_frame = fit.frame
            if plan.manifest.datum is not None:
                plan.manifest.datum = plan.manifest.datum.with_world(fit.T_world_enu)
            summary["world_frame"] = fit.to_dict()
            summary["assumptions"].append(fit.assumption())
            if (w := world_warning(fit)) is not None:
                log.warning("%s: %s", self.path, w)
        plan.manifest.extra["conversion"]["world_frame"] = summary["world_frame"]
        return plan

    def _track_in_world(self, plan: DatasetPlan, track: str, world: str) -> np.ndarray | None:
        """The rotation of the orientation track's frame ``track`` in the fitted ``world`` at each kept frame: the
        identity for a TF track of the world itself, the TF link for a frame TF places in the world (odometry whose
        frame hangs from the robot's map); None where the track is ENU or TF cannot place it at every frame (then
        its rotations are taken as ENU and turned with the positions)."""
        if not track:
            return None
        if track == world:
            return np.eye(3)
        buf, _ = self._tf(tf_topics(self.bag))
        out = []
        for st in plan.stamps_ns.tolist():
            try:
                T, _ = buf.lookup_transform(world, track, int(st))
            except TransformException:
                if track in buf.frames():
                    log.warning("%s: TF cannot place the orientation track's frame %r in %r at every frame; its "
                                "rotations are taken as ENU-aligned and turned with the positions", self.path, track,
                                world)  # fmt: skip
                return None
            out.append(T[:3, :3])
        return np.asarray(out)

    def report(self, plan: DatasetPlan, folder: Path) -> None:
        super().report(plan, folder)
        if self._world is not None:
            from pose2rgbd.convert.report import plot_world_fit

            plot_world_fit(folder / "world.png", self._world, title=f"World frame: {self.path.name}")

    def _world_fit(self, plan: DatasetPlan, choice: str) -> tuple[WorldFit | None, str, bool]:
        """The fit into the bag's TF world frame (``choice``: auto or a frame's name), or ``(None, why not, whether
        the bag's TF has the frame above the body)``."""
        dyn, static = tf_topics(self.bag)
        if not dyn:
            return None, "the bag has no dynamic TF topic (tf2_msgs/msg/TFMessage)", False
        buf, _ = self._tf((dyn, static))
        worlds = AUTO_TF_WORLDS if choice == "auto" else (choice,)
        found = world_chain(buf, self._body_frames, worlds)
        if found is None:
            return None, (f"none of the TF frames {list(worlds)} is above a body frame {self._body_frames} in "
                          f"{dyn + static} (frames: {sorted(buf.frames())})"), False  # fmt: skip
        body, world, chain = found
        path = " -> ".join(reversed(chain))
        assert self.streams is not None
        T_cam_body = np.linalg.inv(self.streams.T_body_cam)
        p_enu, p_world = [], []
        for k, st in enumerate(plan.stamps_ns.tolist()):
            try:
                T_wb, _ = buf.lookup_transform(world, body, int(st))
            except TransformException:
                continue
            p_world.append(T_wb[:3, 3])
            p_enu.append((plan.T_world_cam[k] @ T_cam_body)[:3, 3])
        fit, why = fit_world(world, f"{', '.join(dyn)}: {path}", np.asarray(p_enu).reshape(-1, 3),
                             np.asarray(p_world).reshape(-1, 3))  # fmt: skip
        return fit, why, True

    # ---- pass 2

    def kept_frames(self, keep: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        assert self.topics is not None
        bag, tp = self.bag, self.topics
        msg_to_frame = {k: i for i, k in enumerate(self._message_index)}
        depth_by_stamp: dict[int, Any] = {}
        k = -1
        for m in bag.messages([tp.image] + ([tp.depth] if tp.depth else [])):
            if m.topic == tp.depth:
                depth_by_stamp[stamp_ns(m)] = m.msg
                continue
            k += 1
            i = msg_to_frame.get(k)
            if i is None or not keep[i]:
                continue
            depth = None
            if tp.depth:
                st = stamp_ns(m)
                dm = depth_by_stamp.pop(st, None)
                if dm is None:  # depth may come right after the image in log order
                    for m2 in bag.messages([tp.depth], start_ns=m.stamp_ns, stop_ns=m.stamp_ns + 10**9):
                        if stamp_ns(m2) == st:
                            dm = m2.msg
                            break
                if dm is None:
                    raise SyncError(f"{self.path}: no {tp.depth} message with the stamp of image {k} ({st} ns)")
                depth = image_msg_to_depth(dm)
            yield i, image_msg_to_rgb(m.msg), depth


def _replaced(assumption: str, notes: tuple[str, ...], now: str) -> str:
    """``assumption`` with the first of ``notes`` it holds replaced by ``now``."""
    for n in notes:
        if n in assumption:
            return assumption.replace(n, now)
    return assumption


def load_bag_streams(path: str | Path, cfg: ConvertConfig, *, progress: bool = True) -> Streams:
    """Pass 1 over a bag alone (what ``convert bag`` plans from; for studies of the time-offset stage)."""
    with BagSource(path, cfg) as src:
        return src.read(progress=progress)


def convert_bag(
    path: str | Path, out: str | Path, cfg: ConvertConfig | None = None, *, overwrite: bool = False,
    progress: bool = True,
) -> Path:  # fmt: skip
    """Convert a bag into a dataset at ``out`` (atomic: nothing is left behind on error)."""
    src = BagSource(path, cfg)
    return convert(src, out, src.cfg.output, overwrite=overwrite, progress=progress)
