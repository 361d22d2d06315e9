"""Deterministic exports of the synthetic world: format-v1 dataset, rosbag2 recording, MP4 video + CSV logs.

Timing (shared by every export): route ``i`` of ``cfg.routes`` starts at :func:`route_start_ns` (the survey
at ``cfg.start_time_ns``, later routes after the previous one plus a 60 s gap), camera frame ``k`` is at
``t0 + round(k * 1e9 / camera_rate_hz)`` ns. A dataset frame and the bag image of the same route and index
carry the same stamp.

GPS clock offset (``cfg.gps_time_offset_s`` = d): a fix stamped ``t`` was measured at camera-clock time
``t - d``. Fixes are measured every ``1 / gps_rate_hz`` s from the route start; their header stamps (and bag
log times) are measurement time + d. In the video GPS CSV, ``time_s`` is the measurement time on the video
clock (0 = first video frame) + d.

Bag topics (frames: ``map``, ``odom`` (= map), ``base_link``, ``camera_optical_frame``, ``gps_link``)::

    /camera/image_raw            sensor_msgs/msg/Image rgb8           camera rate
    /camera/image_raw/compressed sensor_msgs/msg/CompressedImage jpeg (instead, with cfg.compressed)
    /camera/camera_info          sensor_msgs/msg/CameraInfo           camera rate, same stamps
    /gps/fix                     sensor_msgs/msg/NavSatFix            gps rate, stamps shifted by d
    /odom                        nav_msgs/msg/Odometry                odom rate, odom -> base_link, body twist
    /tf                          tf2_msgs/msg/TFMessage               odom rate, map -> odom (identity) -> base_link
    /tf_static                   tf2_msgs/msg/TFMessage               once, transient local: base_link ->
                                                                      camera_optical_frame, base_link -> gps_link
    /ground_truth/depth          sensor_msgs/msg/Image 32FC1          camera stamps, metres, +inf sky
    /ground_truth/pose           geometry_msgs/msg/PoseStamped        camera stamps, map -> camera_optical_frame

Every message is logged at its header stamp.

With ``cfg.stabilized`` (a gimbal), ``base_link`` in ``/odom``, ``/tf`` and ``/tf_static`` is the
gimbal-stabilized camera carrier (body position and yaw, small roll/pitch jitter, no tilt into the
acceleration), so the static mount still gives ``T_map_cam = T_map_base @ T_base_cam`` at every stamp.
"""

from __future__ import annotations

import csv
import datetime as _dt
import heapq
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.atomic import sibling_prefix, sweep_stale_siblings
from pose2rgbd.errors import ConfigError, DatasetError
from pose2rgbd.geometry import Datum, PinholeCamera, make_T, tq_from_T
from pose2rgbd.output_guard import FILE, VIDEO, check_output, refuse_existing
from pose2rgbd.progress import bar
from pose2rgbd.sim.config import SimConfig, sim_config_dict
from pose2rgbd.sim.flight import FlightPlan, Trajectory
from pose2rgbd.sim.realism import SensorRealism
from pose2rgbd.sim.render import Renderer
from pose2rgbd.sim.world import World, make_world

log = logging.getLogger(__name__)

MAP_FRAME = "map"
ODOM_FRAME = "odom"
BASE_FRAME = "base_link"
CAMERA_FRAME = "camera_optical_frame"
GPS_FRAME = "gps_link"
T_BASE_GPS = make_T(np.eye(3), np.array([0.0, 0.0, 0.12]))
ROUTE_GAP_NS = 60_000_000_000

TOPIC_IMAGE = "/camera/image_raw"
TOPIC_IMAGE_COMPRESSED = "/camera/image_raw/compressed"
TOPIC_INFO = "/camera/camera_info"
TOPIC_GPS = "/gps/fix"
TOPIC_ODOM = "/odom"
TOPIC_TF = "/tf"
TOPIC_TF_STATIC = "/tf_static"
TOPIC_GT_DEPTH = "/ground_truth/depth"
TOPIC_GT_POSE = "/ground_truth/pose"

GPS_CSV_HEADER = ("time_s", "lat", "lon", "alt", "speed_mps", "fix")
POSES_CSV_HEADER = ("frame", "time_s", "tx", "ty", "tz", "qx", "qy", "qz", "qw")


# ---------------------------------------------------------------- shared setup


def make_camera(cfg: SimConfig) -> PinholeCamera:
    return PinholeCamera.from_fov(cfg.width, cfg.height, cfg.hfov_deg)


def make_datum(cfg: SimConfig) -> Datum:
    return Datum(cfg.datum_lat_deg, cfg.datum_lon_deg, cfg.datum_alt_m)


def world_of(cfg: SimConfig) -> World:
    return make_world(cfg.seed, cfg.world_size_m)


def flight_plan(cfg: SimConfig, route: str) -> FlightPlan:
    return FlightPlan(
        route,
        cfg.world_size_m,
        cfg.duration_of(route),
        cfg.seed,
        camera_pitch_deg=cfg.camera_pitch_deg,
        stabilized=cfg.stabilized,
    )


def route_start_ns(cfg: SimConfig, route: str) -> int:
    """Start stamp of ``route``: routes are flown one after the other (60 s apart) in ``cfg.routes`` order."""
    order = list(cfg.routes) + [r for r in (*cfg.bag_routes, *cfg.video_routes) if r not in cfg.routes]
    t = int(cfg.start_time_ns)
    for r in order:
        if r == route:
            return t
        t += round(cfg.duration_of(r) * 1e9) + ROUTE_GAP_NS
    raise ConfigError(f"route {route!r} is not configured")


def camera_trajectory(cfg: SimConfig, route: str, plan: FlightPlan | None = None) -> Trajectory:
    """Camera-rate poses of ``route`` (stamps from :func:`route_start_ns`)."""
    plan = plan or flight_plan(cfg, route)
    return plan.sample(cfg.camera_rate_hz, cfg.frames_of(route), route_start_ns(cfg, route))


@dataclass
class GpsTrack:
    """GPS fixes of one route. ``measured_s``: camera-clock seconds since the route start."""

    measured_s: np.ndarray
    stamp_ns: np.ndarray  # header stamps: measurement time + offset
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    speed_mps: np.ndarray
    valid: np.ndarray  # bool


def gps_track(cfg: SimConfig, route: str, plan: FlightPlan | None = None) -> GpsTrack:
    """Noisy fixes of the ``gps_link`` antenna (seeded), with the configured offset and outages."""
    plan = plan or flight_plan(cfg, route)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x6B5, _route_index(route)]))
    tau = np.arange(0.0, plan.duration_s + 1e-9, 1.0 / cfg.gps_rate_hz)
    T = plan.pose_at(tau) @ T_BASE_GPS
    p = T[:, :3, 3].copy()
    n = len(tau)
    if cfg.gps_noise_tau_s > 0:
        phi = np.exp(-1.0 / (cfg.gps_rate_hz * cfg.gps_noise_tau_s))
        e = rng.standard_normal((n, 3))
        noise = np.empty((n, 3))
        noise[0] = e[0]
        for k in range(1, n):
            noise[k] = phi * noise[k - 1] + np.sqrt(1 - phi * phi) * e[k]
    else:
        noise = rng.standard_normal((n, 3))
    p += noise * np.array([cfg.gps_noise_h_m, cfg.gps_noise_h_m, cfg.gps_noise_v_m])
    lat, lon, alt = make_datum(cfg).from_enu(p)
    valid = np.ones(n, dtype=bool)
    for start in rng.uniform(0.1, 0.9, cfg.gps_dropouts) * plan.duration_s:
        valid[(tau >= start) & (tau < start + cfg.gps_dropout_s)] = False
    v = np.gradient(plan.position_at(tau)[:, :2], tau, axis=0) if n > 1 else np.zeros((n, 2))
    speed = np.hypot(v[:, 0], v[:, 1])
    t0 = route_start_ns(cfg, route)
    stamps = t0 + np.round((tau + cfg.gps_time_offset_s) * 1e9).astype(np.int64)
    return GpsTrack(tau, stamps, np.asarray(lat), np.asarray(lon), np.asarray(alt), speed, valid)


def realism_of(cfg: SimConfig, camera: PinholeCamera, route: str) -> SensorRealism | None:
    """The sensor effects of ``route``'s frames when ``cfg.realism`` is on (seeded by the config and the route)."""
    if not cfg.realism.enabled:
        return None
    return SensorRealism(cfg.realism, camera, seed=cfg.seed * 1000 + _route_index(route))


def _route_index(route: str) -> int:
    from pose2rgbd.sim.flight import ROUTES

    return ROUTES.index(route)


def _bar(total: int, desc: str, progress: bool) -> Any:
    return bar(total=total, desc=desc, unit="frame", progress=progress, leave=False)


# ---------------------------------------------------------------- dataset


def export_dataset(
    cfg: SimConfig,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    world: World | None = None,
) -> Path:
    """Render every route of ``cfg.routes`` into a format-v1 dataset at ``out_dir`` (atomic).

    One manifest source per route (``source_id`` = position in ``cfg.routes``; 0 = survey by default), metric
    depth (+inf sky), lat/lon/alt of the camera centre from the configured datum, every
    ``cfg.dataset_stride``-th camera frame.
    """
    from pose2rgbd.dataset import DatasetWriter, Manifest

    world = world or world_of(cfg)
    camera = make_camera(cfg)
    datum = make_datum(cfg)
    renderer = Renderer(world, camera, shadows=cfg.shadows)
    trajs = {r: camera_trajectory(cfg, r) for r in cfg.routes}
    counts = {r: len(range(0, len(trajs[r]), cfg.dataset_stride)) for r in cfg.routes}
    sources: list[dict[str, Any]] = [
        {
            "id": i,
            "kind": "sim",
            "name": r,
            "rate_hz": cfg.camera_rate_hz / cfg.dataset_stride,
            "duration_s": cfg.duration_of(r),
            "frames": counts[r],
        }
        for i, r in enumerate(cfg.routes)
    ]
    T_base_cam = next(iter(trajs.values())).T_base_cam
    manifest = Manifest(
        name=f"sim-seed{cfg.seed}",
        camera=camera,
        depth_kind="metric",
        rgb_encoding="png",
        world_frame=MAP_FRAME,
        camera_frame=CAMERA_FRAME,
        datum=datum,
        sources=sources,
        extra={
            "generator": "pose2rgbd.sim",
            "sim_config": sim_config_dict(cfg),
            "T_base_cam": T_base_cam.round(12).tolist(),
            "world": {"buildings": world.n_buildings, "boxes": len(world.boxes), "trees": len(world.ells)},
        },
        created_utc=_iso(cfg.start_time_ns),
    )
    total = sum(counts.values())
    if cfg.realism.enabled:
        manifest.extra["sensor_realism"] = {"repeated_frames": {}}
    with DatasetWriter(out_dir, manifest, overwrite=overwrite) as w, _bar(total, "dataset", progress) as bar:
        for i, r in enumerate(cfg.routes):
            tr = trajs[r]
            idx = np.arange(0, len(tr), cfg.dataset_stride)
            Twc = tr.T_world_cam[idx]
            lat, lon, alt = datum.from_enu(Twc[:, :3, 3])
            sensor = realism_of(cfg, camera, r)
            for j, k in enumerate(idx):
                rgb, depth = renderer.render(Twc[j])
                if sensor is not None:
                    f = sensor.frame(rgb, depth, Twc[j])
                    rgb, depth = f.rgb, f.depth
                    if f.repeated:
                        manifest.extra["sensor_realism"]["repeated_frames"].setdefault(r, []).append(len(w))
                w.add_frame(
                    int(tr.stamps_ns[k]),
                    Twc[j],
                    rgb,
                    depth,
                    latlonalt=(float(lat[j]), float(lon[j]), float(alt[j])),
                    source_id=i,
                )
                bar.update(1)
    log.info("dataset: %d frames of %s -> %s", total, list(cfg.routes), out_dir)
    return Path(out_dir)


def _iso(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- bag


def _events(cfg: SimConfig, route: str, plan: FlightPlan) -> Iterator[tuple[int, int, str, int]]:
    """(stamp, priority, kind, index) of every message of a route bag, in time order."""
    tr = camera_trajectory(cfg, route, plan)
    gps = gps_track(cfg, route, plan)
    t0 = route_start_ns(cfg, route)
    odom = _odom_stamps(cfg, plan, t0)
    streams = [
        ((int(s), 0, "static", 0) for s in [min(int(tr.stamps_ns[0]), int(gps.stamp_ns.min()), t0)]),
        ((int(s), 1, "odom", k) for k, s in enumerate(odom)),
        ((int(s), 2, "gps", k) for k, s in enumerate(gps.stamp_ns)),
        ((int(s), 3, "camera", k) for k, s in enumerate(tr.stamps_ns)),
    ]
    yield from heapq.merge(*streams)


def _odom_stamps(cfg: SimConfig, plan: FlightPlan, t0: int) -> np.ndarray:
    n = int(np.floor(plan.duration_s * cfg.odom_rate_hz + 1e-9)) + 1
    return t0 + np.round(np.arange(n) * (1e9 / cfg.odom_rate_hz)).astype(np.int64)


def export_bag(
    cfg: SimConfig,
    out_path: str | Path,
    route: str | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    world: World | None = None,
) -> Path:
    """Write ``route`` (default: ``cfg.bag_routes[0]``) as a rosbag2 recording at ``out_path`` (a directory).

    Topics and timing: see the module docstring. Deterministic for a config.
    """
    from pose2rgbd.bags import BagWriter
    from pose2rgbd.messages import (
        camera_info,
        compressed_image,
        image,
        navsatfix,
        odometry,
        pose_stamped,
        tf_message,
        transform_stamped,
    )

    route = route or (cfg.bag_routes[0] if cfg.bag_routes else cfg.routes[0])
    world = world or world_of(cfg)
    camera = make_camera(cfg)
    renderer = Renderer(world, camera, shadows=cfg.shadows)
    plan = flight_plan(cfg, route)
    tr = camera_trajectory(cfg, route, plan)
    gps = gps_track(cfg, route, plan)
    t0 = route_start_ns(cfg, route)
    odom_ns = _odom_stamps(cfg, plan, t0)
    odom_t = (odom_ns - t0) / 1e9
    T_odom = plan.pose_at(odom_t)
    lin, ang = plan.twist_at(odom_t)
    Twc = tr.T_world_cam
    cov = np.array([cfg.gps_noise_h_m, cfg.gps_noise_h_m, cfg.gps_noise_v_m]) ** 2
    cov = np.maximum(cov, 1e-4)
    image_topic = TOPIC_IMAGE_COMPRESSED if cfg.compressed else TOPIC_IMAGE
    with BagWriter(out_path, storage=cfg.bag_storage, overwrite=overwrite) as w:
        mf = w.factory
        w.add_topic(image_topic, "sensor_msgs/msg/CompressedImage" if cfg.compressed else "sensor_msgs/msg/Image")
        w.add_topic(TOPIC_INFO, "sensor_msgs/msg/CameraInfo")
        w.add_topic(TOPIC_GPS, "sensor_msgs/msg/NavSatFix")
        w.add_topic(TOPIC_ODOM, "nav_msgs/msg/Odometry")
        w.add_topic(TOPIC_TF, "tf2_msgs/msg/TFMessage")
        w.add_topic(TOPIC_TF_STATIC, "tf2_msgs/msg/TFMessage", qos="transient_local")
        if cfg.ground_truth_topics:
            w.add_topic(TOPIC_GT_DEPTH, "sensor_msgs/msg/Image")
            w.add_topic(TOPIC_GT_POSE, "geometry_msgs/msg/PoseStamped")
        with _bar(len(tr), f"bag {route}", progress) as bar:
            for stamp, _, kind, k in _events(cfg, route, plan):
                if kind == "static":
                    w.write(
                        TOPIC_TF_STATIC,
                        stamp,
                        tf_message(
                            mf,
                            [
                                transform_stamped(mf, stamp, BASE_FRAME, CAMERA_FRAME, tr.T_base_cam),
                                transform_stamped(mf, stamp, BASE_FRAME, GPS_FRAME, T_BASE_GPS),
                            ],
                        ),
                    )
                elif kind == "odom":
                    # REP-105: map -> odom (the same frame here: the simulated odometry does not drift) -> base_link
                    map_odom = transform_stamped(mf, stamp, MAP_FRAME, ODOM_FRAME, np.eye(4))
                    w.write(
                        TOPIC_ODOM,
                        stamp,
                        odometry(mf, stamp, ODOM_FRAME, BASE_FRAME, T_odom[k], linear=lin[k], angular=ang[k]),
                    )
                    w.write(
                        TOPIC_TF,
                        stamp,
                        tf_message(mf, [map_odom, transform_stamped(mf, stamp, ODOM_FRAME, BASE_FRAME, T_odom[k])]),
                    )
                elif kind == "gps":
                    ok = bool(gps.valid[k])
                    w.write(
                        TOPIC_GPS,
                        stamp,
                        navsatfix(
                            mf,
                            stamp,
                            GPS_FRAME,
                            float(gps.lat[k]) if ok else float("nan"),
                            float(gps.lon[k]) if ok else float("nan"),
                            float(gps.alt[k]) if ok else float("nan"),
                            status=cfg.gps_status if ok else -1,
                            service=cfg.gps_service,
                            covariance=cov if cfg.gps_covariance else None,
                        ),
                    )
                else:
                    rgb, depth = renderer.render(Twc[k])
                    if cfg.compressed:
                        img = compressed_image(mf, stamp, CAMERA_FRAME, rgb, "jpeg", "rgb8", cfg.jpeg_quality)
                    else:
                        img = image(mf, stamp, CAMERA_FRAME, rgb, "rgb8")
                    w.write(image_topic, stamp, img)
                    w.write(TOPIC_INFO, stamp, camera_info(mf, stamp, CAMERA_FRAME, camera))
                    if cfg.ground_truth_topics:
                        w.write(TOPIC_GT_DEPTH, stamp, image(mf, stamp, CAMERA_FRAME, depth, "32FC1"))
                        w.write(TOPIC_GT_POSE, stamp, pose_stamped(mf, stamp, MAP_FRAME, Twc[k]))
                    bar.update(1)
    log.info("bag: route %s, %d frames -> %s", route, len(tr), out_path)
    return Path(out_path)


# ---------------------------------------------------------------- video


def export_video(
    cfg: SimConfig,
    out_dir: str | Path,
    route: str | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    world: World | None = None,
) -> tuple[Path, Path]:
    """``<route>.mp4`` (mp4v, camera rate) + ``<route>_gps.csv`` + ``<route>_poses.csv`` in ``out_dir``.

    GPS CSV columns ``time_s,lat,lon,alt,speed_mps,fix``: time_s = measurement time on the video clock
    (0 = first frame) + ``gps_time_offset_s``; fix 1 valid / 0 no fix (then lat/lon/alt are empty).
    Poses CSV ``frame,time_s,tx,ty,tz,qx,qy,qz,qw``: ground-truth ``T_map_camera_optical`` of each frame,
    time_s on the video clock. Returns (mp4, gps csv).
    """
    import cv2

    route = route or (cfg.video_routes[0] if cfg.video_routes else cfg.routes[0])
    out = Path(out_dir)
    mp4, gcsv, pcsv = out / f"{route}.mp4", out / f"{route}_gps.csv", out / f"{route}_poses.csv"
    for p, kind in ((mp4, VIDEO), (gcsv, FILE), (pcsv, FILE)):
        check_output(p, kind, overwrite=overwrite)
        refuse_existing(p, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    world = world or world_of(cfg)
    camera = make_camera(cfg)
    renderer = Renderer(world, camera, shadows=cfg.shadows)
    plan = flight_plan(cfg, route)
    tr = camera_trajectory(cfg, route, plan)
    gps = gps_track(cfg, route, plan)
    t0 = int(tr.stamps_ns[0])
    sweep_stale_siblings(mp4)
    tmp = mp4.with_name(f"{sibling_prefix(mp4, 'partial')}.mp4")  # OpenCV picks the container by suffix
    vw = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), float(cfg.camera_rate_hz), (cfg.width, cfg.height))
    if not vw.isOpened():
        raise DatasetError(f"{mp4}: OpenCV cannot open an mp4v video writer (no FFmpeg backend?)")
    try:
        with _bar(len(tr), f"video {route}", progress) as bar:
            for k in range(len(tr)):
                rgb, _ = renderer.render(tr.T_world_cam[k])
                vw.write(np.ascontiguousarray(rgb[..., ::-1]))
                bar.update(1)
    except BaseException:
        vw.release()
        tmp.unlink(missing_ok=True)
        raise
    vw.release()
    tmp.replace(mp4)
    with open(gcsv, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(GPS_CSV_HEADER)
        for k in range(len(gps.measured_s)):
            ok = bool(gps.valid[k])
            wr.writerow(
                [
                    f"{gps.measured_s[k] + cfg.gps_time_offset_s:.6f}",
                    f"{gps.lat[k]:.9f}" if ok else "",
                    f"{gps.lon[k]:.9f}" if ok else "",
                    f"{gps.alt[k]:.4f}" if ok else "",
                    f"{gps.speed_mps[k]:.3f}",
                    1 if ok else 0,
                ]
            )
    t, q = tq_from_T(tr.T_world_cam)
    with open(pcsv, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(POSES_CSV_HEADER)
        for k in range(len(tr)):
            wr.writerow(
                [
                    k,
                    f"{(tr.stamps_ns[k] - t0) / 1e9:.9f}",
                    *(repr(float(x)) for x in t[k]),
                    *(repr(float(x)) for x in q[k]),
                ]
            )
    log.info("video: route %s, %d frames -> %s", route, len(tr), mp4)
    return mp4, gcsv


# ---------------------------------------------------------------- everything
