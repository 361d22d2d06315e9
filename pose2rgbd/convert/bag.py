"""Rosbag (ROS 1, rosbag2 sqlite3 / mcap) -> dataset; and GPS-vs-odometry time alignment for camera-less bags.

Topics are found by message type (``BagReader.find_topic``) unless named in the config. Stamps: the
message ``header.stamp`` when set, else the bag log time. Times inside the pipeline are seconds since the
first image (or the bag start).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from pose2rgbd.convert.core import (
    ConvertConfig,
    OrientationTrack,
    Streams,
    dump_json,
    plan_poses,
)
from pose2rgbd.convert.output import write_dataset
from pose2rgbd.errors import BagError, SyncError
from pose2rgbd.geometry.mount import BODY_FRAMES  # noqa: F401  (re-exported: the frames an empty mount.base_frame means)
from pose2rgbd.geometry.tf_buffer import TFBuffer, TransformException
from pose2rgbd.messages import (
    camera_from_info,
    header_stamp_ns,
    image_msg_to_depth,
    image_msg_to_rgb,
    orientation_xyzw,
    read_navsatfix,
)
from pose2rgbd.output_guard import DATASET, check_output
from pose2rgbd.sync.estimator import SyncConfig, SyncResult, correlate_signals, speed_from_positions
from pose2rgbd.sync.flow import FlowMagnitude
from pose2rgbd.sync.gps import null_island

log = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def _stamp(m: Any) -> int:
    try:
        s = header_stamp_ns(m.msg)
    except AttributeError:
        s = 0
    return s if s > 0 else m.stamp_ns


def _find_optional(bag: Any, msgtype: str, name: str) -> str | None:
    if name:
        return bag.find_topic(msgtype, name)
    c = bag.topics_of_type(msgtype)
    return c[0] if len(c) == 1 else None


def find_image_topic(bag: Any, name: str = "") -> str:
    """The camera topic (Image or CompressedImage, not a depth image); a clear error lists the topics."""
    if name:
        info = bag.topics.get(name)
        if info is None or info.msgtype not in IMAGE_TYPES:
            what = "not in the bag" if info is None else f"of type {info.msgtype}"
            raise BagError(f"{bag.path}: image topic {name!r} is {what}; topics present:\n{bag.describe_topics()}")
        return name
    cands = [t.name for t in bag.topics.values() if t.msgtype in IMAGE_TYPES and "depth" not in t.name.lower()]
    if not cands:
        raise BagError(
            f"{bag.path}: no camera topic (sensor_msgs Image or CompressedImage); topics present:\n"
            f"{bag.describe_topics()}"
        )
    if len(cands) > 1:
        raise BagError(f"{bag.path}: several camera topics {cands}; choose one with --image-topic")
    return cands[0]


def _static_mount(bag: Any, cam_frame: str, body_frames: list[str]) -> tuple[np.ndarray, str, str] | None:
    """``(T_body_cam, description, body_frame)`` from /tf_static: the TF buffer walks from the camera frame up
    to the nearest body frame."""
    topics = [t for t in bag.topics_of_type("tf2_msgs/msg/TFMessage") if "static" in t]
    if not topics or not cam_frame:
        return None
    buf = TFBuffer()
    for m in bag.messages(topics):
        buf.add_tf_message(m.msg, static=True, default_stamp_ns=m.stamp_ns)
    found = buf.lookup_up_to(cam_frame, body_frames)
    if found is None:
        return None
    T, body, chain = found
    return T, f"/tf_static {' <- '.join(reversed(chain))}", body


def _orientation_series(bag: Any, topic: str, kind: str, t0_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """``(t_s, R_world_body)`` of an Imu or Odometry topic. Samples whose orientation breaks the message layer's
    rule (:func:`pose2rgbd.messages.orientation_xyzw`: NaN, zero, not unit; an Imu without orientation) are
    left out and counted in a warning, so a few bad samples do not stop a conversion."""
    ts, qs = [], []
    bad = 0
    for m in bag.messages([topic]):
        q = orientation_xyzw(m.msg)
        if q is None:
            bad += 1
            continue
        ts.append((_stamp(m) - t0_ns) / 1e9)
        qs.append(q)
    if bad:
        log.warning("%s: %d %s orientation samples left out (NaN, zero or non-unit quaternion)", topic, bad, kind)
    t = np.asarray(ts, dtype=np.float64)
    q = np.asarray(qs, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(t, kind="stable")
    t, q = t[order], q[order]
    keep = np.concatenate([[True], np.diff(t) > 0]) if t.size else np.zeros(0, bool)
    if keep.sum() < 1:
        raise BagError(f"{bag.path}: {topic} has no usable orientation ({bad} samples with an invalid quaternion)")
    return t[keep], Rotation.from_quat(q[keep]).as_matrix()


# World frames whose orientation the TF source accepts, in order of preference. map / world / odom are taken as
# ENU-aligned (REP-105 map and odom, REP-103 ENU); earth is ECEF (REP-105) and is rotated into ENU at the datum.
TF_WORLD_FRAMES = ("map", "world", "earth", "odom")
_WHOLE_RECORDING_S = 1e7  # TF history kept while reading a bag: all of it (115 days)
_TF_TODO = "record /tf, or choose another orientation source (--orientation auto, imu, odom or course)"


def _tf_topics(bag: Any) -> tuple[list[str], list[str]]:
    """``(dynamic, static)`` TFMessage topics (static: "static" in the name, as /tf_static)."""
    tf = bag.topics_of_type("tf2_msgs/msg/TFMessage")
    static = [t for t in tf if "static" in t]
    return [t for t in tf if t not in static], static


def _tf_need(body_frames: list[str] | tuple[str, ...]) -> str:
    return f"orientation from TF needs a /tf chain from one of {list(TF_WORLD_FRAMES)} to one of {list(body_frames)}"


def _require_dynamic_tf(bag: Any, body_frames: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The TF topics, or a BagError saying that there is no dynamic one."""
    dyn, static = _tf_topics(bag)
    if not dyn:
        raise BagError(
            f"{bag.path}: {_tf_need(body_frames)}, but the bag has no dynamic TF topic (tf2_msgs/msg/TFMessage)"
            f"{f', only {static}' if static else ''}; {_TF_TODO}"
        )
    return dyn, static


def _tf_orientation_series(
    bag: Any, body_frames: list[str], t0_ns: int, datum_latlon: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """``(t_s, R_world_body, assumption)`` from the TF tree (/tf plus /tf_static).

    The body is the first of ``body_frames`` that has one of :data:`TF_WORLD_FRAMES` among its TF ancestors;
    the world is the first such frame in that order. ``R_world_body`` is sampled at the stamps of the dynamic
    transforms of that chain: the native rate of the source, so nothing is resampled here (the lookup
    interpolates the other links of the chain like tf2; samples a link cannot give without extrapolating are
    skipped) and :meth:`OrientationTrack.at` slerps between them at the frame times.
    """
    dyn, static = _require_dynamic_tf(bag, body_frames)
    what, todo = _tf_need(body_frames), _TF_TODO
    buf = TFBuffer(cache_time_s=_WHOLE_RECORDING_S)
    bad = 0
    for m in bag.messages(dyn + static):
        bad += buf.add_tf_message(m.msg, static=m.topic in static, default_stamp_ns=m.stamp_ns)
    frames = buf.frames()
    links = {f: ln for f in frames if (ln := buf.link(f)) is not None}
    dyn_frames = {f for c, (p, st, _) in links.items() if not st for f in (c, p)}
    present = f"frames in {dyn}: {sorted(dyn_frames)}" + (
        f"; in {static}: {sorted(set(frames) - dyn_frames)}" if set(frames) - dyn_frames else ""
    )
    chosen = None
    for body in [b for b in body_frames if b in frames]:
        chain = buf.ancestors(body)
        world = next((w for w in TF_WORLD_FRAMES if w in chain), None)
        if world is not None:
            chosen = body, world, chain[: chain.index(world) + 1]
            break
    if chosen is None:
        found = [f"{b}'s ancestors are {buf.ancestors(b)}" for b in body_frames if b in frames]
        why = "; ".join(found) if found else f"none of the body frames {body_frames} is in the TF tree"
        raise BagError(f"{bag.path}: {what}, but {why}; {present}; {todo}")
    body, world, chain = chosen
    dynamic = [c for c in chain[:-1] if not links[c][1]]
    if not dynamic:
        raise BagError(f"{bag.path}: {what}, but the chain {' -> '.join(reversed(chain))} is all static; {todo}")
    stamps = np.unique(np.asarray([st for c in dynamic for st in links[c][2]], dtype=np.int64))
    ts, Rs = [], []
    for st in stamps.tolist():
        try:
            T, _ = buf.lookup_transform(world, body, st)
        except TransformException:
            continue
        ts.append((st - t0_ns) / 1e9)
        Rs.append(T[:3, :3])
    if not ts:
        raise BagError(
            f"{bag.path}: {what}, but {world} -> {body} cannot be looked up at any stamp of its links "
            f"({' -> '.join(reversed(chain))}; {bad} bad transforms); {todo}"
        )
    R = np.asarray(Rs)
    path = " -> ".join(reversed(chain))
    if world == "earth":
        if datum_latlon is None:
            raise BagError(f"{bag.path}: TF world frame 'earth' (ECEF) needs a datum; no valid GPS fix")
        import pymap3d

        lat, lon = datum_latlon  # R_enu_body = R_enu_ecef @ R_ecef_body, column by column
        R = np.stack(pymap3d.ecef2enuv(R[:, 0, :], R[:, 1, :], R[:, 2, :], lat, lon), axis=1)
        frame_note = f"'earth' taken as ECEF (REP-105), rotated into ENU at the datum ({lat:.6f}, {lon:.6f})"
    else:
        frame_note = f"the '{world}' frame assumed ENU-aligned (REP-105 / REP-103)"
    skipped = stamps.size - len(ts)
    log.info("orientation from TF: %s, %d samples (%d skipped: a link of the chain not yet/no longer available)",
             path, len(ts), skipped)  # fmt: skip
    return np.asarray(ts), R, f"orientation from {', '.join(dyn)}: {path}; {frame_note}"


def load_bag_streams(path: str | Path, cfg: ConvertConfig, *, progress: bool = True) -> tuple[Streams, dict[str, Any]]:
    """Pass 1 over a bag. Returns the streams and the topic choice (for pass 2 and the report)."""
    from pose2rgbd.bags import open_bag
    from pose2rgbd.geometry import PinholeCamera
    from pose2rgbd.progress import bar

    bag = open_bag(path)
    try:
        tp = cfg.topics
        img_topic = find_image_topic(bag, tp.image)
        gps_topic = bag.find_topic("sensor_msgs/msg/NavSatFix", tp.gps or None)
        info_topic = _find_optional(bag, "sensor_msgs/msg/CameraInfo", tp.camera_info)
        odom_topic = _find_optional(bag, "nav_msgs/msg/Odometry", tp.odom)
        imu_topic = _find_optional(bag, "sensor_msgs/msg/Imu", tp.imu)
        depth_topic = tp.depth if tp.depth in bag.topics else None
        if depth_topic and bag.topics[depth_topic].msgtype != "sensor_msgs/msg/Image":
            depth_topic = None
        if cfg.orientation == "tf":  # fail before the long image pass
            _require_dynamic_tf(bag, cfg.mount.base_frames())
        n_img = bag.topics[img_topic].count
        if n_img == 0:
            raise BagError(f"{bag.path}: camera topic {img_topic} has no messages")
        info_cam = None
        if info_topic:
            info = next(iter(bag.messages([info_topic])), None)
            info_cam = camera_from_info(info.msg) if info is not None else None
        # images: stamps + flow
        fm = FlowMagnitude(cfg.sync.flow, info_cam)
        stamps: list[int] = []
        flows: list[float] = []
        idx_ok: list[int] = []
        unreadable = 0
        cam_frame = ""
        shape = None
        for k, m in enumerate(bar(bag.messages([img_topic]), total=n_img, desc="flow (pass 1)", unit="frame",
                                  progress=progress)):  # fmt: skip
            try:
                rgb = image_msg_to_rgb(m.msg)
            except BagError as e:
                unreadable += 1
                log.warning("%s: frame %d unreadable: %s", img_topic, k, e)
                continue
            cam_frame = cam_frame or m.msg.header.frame_id
            shape = rgb.shape
            st = _stamp(m)
            if stamps and st <= stamps[-1]:
                raise SyncError(
                    f"{bag.path}: {img_topic} stamps are not increasing at message {k} ({stamps[-1]} -> {st} ns)"
                )
            stamps.append(st)
            idx_ok.append(k)
            flows.append(fm.add_image((st - stamps[0]) / 1e9, rgb))
        if not stamps:
            raise BagError(f"{bag.path}: no readable image on {img_topic}")
        t0 = stamps[0]
        # GPS
        rows = []
        for m in bag.messages([gps_topic]):
            fix = read_navsatfix(m.msg)
            rows.append(((_stamp(m) - t0) / 1e9, *fix.lla, fix.status))
        if not rows:
            raise SyncError(f"{bag.path}: GPS topic {gps_topic} has no messages")
        g = np.asarray(rows, dtype=np.float64)
        order = np.argsort(g[:, 0], kind="stable")
        g = g[order]
        # camera
        cam = info_cam
        assumptions = []
        if cam is None:
            assert shape is not None  # at least one image was decoded above
            cam = PinholeCamera.from_fov(shape[1], shape[0], cfg.hfov_deg)
            assumptions.append(f"no CameraInfo: pinhole with an assumed horizontal FOV of {cfg.hfov_deg} deg")
        elif shape is not None and (cam.width, cam.height) != (shape[1], shape[0]):
            cam = cam.scaled(shape[1], shape[0])
        body_frames = list(cfg.mount.base_frames())
        cam_frame = cfg.mount.camera_frame or cam_frame
        mount = None if cfg.mount.source == "config" else _static_mount(bag, cam_frame, body_frames)
        if mount is None and cfg.mount.source == "tf_static":
            raise BagError(
                f"{bag.path}: mount.source is 'tf_static' but /tf_static has no transform from a body frame "
                f"{body_frames} to the camera frame {cam_frame!r}; use mount.source auto or config, or set "
                "mount.base_frame / mount.camera_frame"
            )
        if mount is None:
            T_bc, mount_src = cfg.mount.config_matrix(), cfg.mount.describe_config()
        else:
            T_bc, mount_src, mount_body = mount
            body_frames = [mount_body]  # orientation of the body the mount hangs from
        orient_fn = None
        src = cfg.orientation
        if src in ("auto", "imu") and imu_topic:
            ti, Ri = _orientation_series(bag, imu_topic, "imu", t0)
            orient_fn = lambda _t, _e, ti=ti, Ri=Ri: OrientationTrack(  # noqa: E731
                ti, Ri, "imu", f"orientation from {imu_topic} (assumed ENU, REP-145)"
            )
        elif src in ("auto", "odom") and odom_topic:
            to, Ro = _orientation_series(bag, odom_topic, "odom", t0)
            orient_fn = lambda _t, _e, to=to, Ro=Ro: OrientationTrack(  # noqa: E731
                to, Ro, "odom", f"orientation from {odom_topic}"
            )
        elif src == "tf" or (src == "auto" and _tf_topics(bag)[0]):
            # auto order imu > odom > tf > course: IMU and odometry are explicit orientation topics; a TF tree is
            # used when a bag has neither (its world frame is only a convention, and /tf also carries frames of
            # other purposes). An explicit request fails loudly; auto falls back to the course with a warning.
            datum = cfg.datum_obj()  # for an ECEF 'earth' frame: the datum plan_poses will use
            okf = (g[:, 4] >= 0) & np.isfinite(g[:, 1:4]).all(1) & (np.abs(g[:, 1]) <= 90) & (np.abs(g[:, 2]) <= 180)
            latlon = None
            if datum is not None:
                latlon = (datum.lat_deg, datum.lon_deg)
            elif (okf := okf & ~null_island(g[:, 1], g[:, 2])).any():  # robust to a bad first fix: the median
                latlon = (float(np.median(g[okf, 1])), float(np.median(g[okf, 2])))
            try:
                tt, Rt, tf_note = _tf_orientation_series(bag, body_frames, t0, latlon)
            except BagError as e:
                if src == "tf":
                    raise
                log.warning("TF orientation unusable (%s); using the GPS course", e)
            else:
                orient_fn = lambda _t, _e, tt=tt, Rt=Rt, n=tf_note: OrientationTrack(tt, Rt, "tf", n)  # noqa: E731
        s = Streams(
            t0_ns=t0, frame_t=(np.asarray(stamps) - t0) / 1e9, flow=np.asarray(flows), gps_t=g[:, 0], lat=g[:, 1],
            lon=g[:, 2], alt=g[:, 3], gps_speed=np.full(len(g), np.nan), gps_status=g[:, 4].astype(int),
            gps_source=f"{path}:{gps_topic}", camera=cam, T_body_cam=T_bc, mount_source=mount_src,
            orientation=orient_fn, has_depth=depth_topic is not None, input_kind="rosbag", input_path=str(path),
            frames_unreadable=unreadable, extra_assumptions=assumptions,
        )  # fmt: skip
        topics = {"image": img_topic, "gps": gps_topic, "info": info_topic, "odom": odom_topic, "imu": imu_topic,
                  "depth": depth_topic, "frame_index": idx_ok}  # fmt: skip
        return s, topics
    finally:
        bag.close()


def convert_bag(
    path: str | Path, out: str | Path, cfg: ConvertConfig | None = None, *, overwrite: bool = False,
    progress: bool = True,
) -> Path:  # fmt: skip
    """Convert a bag into a dataset at ``out`` (atomic: nothing is left behind on error)."""
    from pose2rgbd.bags import open_bag

    check_output(out, DATASET, inputs=[path], overwrite=overwrite)  # before the long first pass
    cfg = cfg or ConvertConfig()
    s, topics = load_bag_streams(path, cfg, progress=progress)
    plan = plan_poses(s, cfg)
    plan.summary["topics"] = {k: v for k, v in topics.items() if k != "frame_index"}
    msg_to_frame = {k: i for i, k in enumerate(topics["frame_index"])}

    def frames() -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        with open_bag(path) as bag:
            depth_by_stamp: dict[int, Any] = {}
            want = [topics["image"]] + ([topics["depth"]] if topics["depth"] else [])
            k = -1
            for m in bag.messages(want):
                if m.topic == topics["depth"]:
                    depth_by_stamp[_stamp(m)] = m.msg
                    continue
                k += 1
                i = msg_to_frame.get(k)
                if i is None or not plan.keep[i]:
                    continue
                depth = None
                if topics["depth"]:
                    st = _stamp(m)
                    dm = depth_by_stamp.pop(st, None)
                    if dm is None:  # depth may come right after the image in log order
                        for m2 in bag.messages([topics["depth"]], start_ns=m.stamp_ns, stop_ns=m.stamp_ns + 10**9):
                            if _stamp(m2) == st:
                                dm = m2.msg
                                break
                    if dm is None:
                        raise SyncError(f"{path}: no {topics['depth']} message with the stamp of image {k} ({st} ns)")
                    depth = image_msg_to_depth(dm)
                yield i, image_msg_to_rgb(m.msg), depth

    return write_dataset(Path(out), s, plan, cfg, frames(), overwrite=overwrite, inputs=[path], progress=progress)


# ----------------------------------------------------------------------------------------------------------
# GPS vs wheel odometry (camera-less bags such as the Husky test bag)


@dataclass
class GpsOdomAlignment:
    result: SyncResult
    odom_t: np.ndarray
    odom_speed: np.ndarray
    gps_t: np.ndarray
    gps_speed: np.ndarray
    enu: np.ndarray
    summary: dict[str, Any]


def align_gps_to_odometry(
    path: str | Path, cfg: ConvertConfig | None = None, *, report_dir: str | Path | None = None
) -> GpsOdomAlignment:
    """Estimate the GPS time offset against wheel-odometry speed (same core as the flow estimator).

    The odometry (``|twist.linear|``) is the reference clock. GPS speed comes from the ENU track. If
    ``report_dir`` is given, writes ``sync.png``, ``track.png`` and ``summary.json`` there.
    """
    from pose2rgbd.bags import open_bag
    from pose2rgbd.convert.logs import GpsTrack, describe_dropped, gate_fixes
    from pose2rgbd.convert.report import plot_sync, plot_track
    from pose2rgbd.geometry import Datum

    cfg = cfg or ConvertConfig()
    with open_bag(path) as bag:
        gps_topic = bag.find_topic("sensor_msgs/msg/NavSatFix", cfg.topics.gps or None)
        odom_topic = bag.find_topic("nav_msgs/msg/Odometry", cfg.topics.odom or None)
        od = [(_stamp(m), np.hypot(m.msg.twist.twist.linear.x, m.msg.twist.twist.linear.y))
              for m in bag.messages([odom_topic])]  # fmt: skip
        gp = [(_stamp(m), *(fix := read_navsatfix(m.msg)).lla, fix.status) for m in bag.messages([gps_topic])]
    if len(od) < 3 or len(gp) < 3:
        raise SyncError(f"{path}: too few messages ({len(od)} odometry, {len(gp)} GPS)")
    o = np.asarray(od, dtype=np.float64)
    g = np.asarray(gp, dtype=np.float64)
    t0 = min(o[0, 0], g[0, 0])
    o = o[np.argsort(o[:, 0], kind="stable")]
    g = g[np.argsort(g[:, 0], kind="stable")]
    ot, ov = (o[:, 0] - t0) / 1e9, o[:, 1]
    keep = np.concatenate([[True], np.diff(ot) > 0])
    ot, ov = ot[keep], ov[keep]
    tr = GpsTrack((g[:, 0] - t0) / 1e9, g[:, 1], g[:, 2], cfg.gps.altitudes(g[:, 3]), np.full(len(g), np.nan),
                  g[:, 4].astype(int), f"{path}:{gps_topic}")  # fmt: skip
    kept = gate_fixes(tr, max_speed_mps=cfg.max_speed_mps, tolerance_m=cfg.jump_tolerance_m)
    if line := describe_dropped(kept.dropped, len(tr)):
        log.warning("%s: %s", tr.source, line)
    datum = cfg.datum_obj() or Datum(float(kept.lat[0]), float(kept.lon[0]), float(kept.alt[0]))
    enu = datum.to_enu(kept.lat, kept.lon, kept.alt).reshape(-1, 3)
    gs = speed_from_positions(kept.t_s, enu, cfg.speed_window_s)
    res = correlate_signals(ot, ov, kept.t_s, gs, cfg.sync, fallback_offset_s=cfg.time_offset_s)
    summary = {
        "input": str(path), "gps_topic": gps_topic, "odom_topic": odom_topic,
        "offset_definition": "a GPS fix stamped t was measured at odometry time t - offset_s",
        "estimator": res.to_dict(), "fixes": {"total": len(tr), "kept": len(kept), "dropped": kept.dropped},
        "datum": {"lat_deg": datum.lat_deg, "lon_deg": datum.lon_deg, "alt_m": datum.alt_m},
        "track_extent_m": (enu.max(0) - enu.min(0)).tolist(),
    }  # fmt: skip
    if report_dir is not None:
        rd = Path(report_dir)
        rd.mkdir(parents=True, exist_ok=True)
        name = Path(path).name
        plot_sync(rd / "sync.png", ot, ov, kept.t_s, gs, res, res.offset_s, ref_label="wheel-odometry speed",
                  other_label="GPS speed (from positions)", title=f"GPS vs wheel odometry: {name}")  # fmt: skip
        plot_track(rd / "track.png", enu, kept.t_s, None, np.zeros((0, 3)), title=f"GPS track: {name} (ENU)")
        dump_json(rd / "summary.json", summary)
    return GpsOdomAlignment(res, ot, ov, kept.t_s, gs, enu, summary)


__all__ = ["GpsOdomAlignment", "SyncConfig", "align_gps_to_odometry", "convert_bag", "find_image_topic",
           "load_bag_streams"]  # fmt: skip
