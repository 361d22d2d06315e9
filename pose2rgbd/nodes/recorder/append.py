"""The recorder's dataset output (:class:`DatasetAppend`): frames are appended to a dataset
(``DatasetWriter(mode="append")``: flushed per frame, readable after a crash); re-running on the same output
resumes after its last stamp, with its datum, and refuses a recording that looks like a different flight (its
first image too far in time from the dataset's frames, or its first kept fix too far from the last frame)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pose2rgbd.config import parse_size
from pose2rgbd.errors import BagError, ConfigError, DatasetError, GeometryError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.geodesy import Datum
from pose2rgbd.nodes.logic import NodeLogic
from pose2rgbd.nodes.recorder.config import RecorderConfig
from pose2rgbd.nodes.recorder.mount import RecordedMount
from pose2rgbd.sync.gps import horizontal_distance_m

Outgoing = tuple[str, Any]
# the mean absolute difference (of 255) above which an image is not the one a resumed dataset recorded at its stamp: a
# frame written again (resized the same way; a JPEG's loss is 1-3) is well below it, another flight's view far above
RESUME_IMAGE_DIFF = 12.0


def _same_datum(a: Datum, b: Datum) -> bool:
    return abs(a.lat_deg - b.lat_deg) < 1e-9 and abs(a.lon_deg - b.lon_deg) < 1e-9 and abs(a.alt_m - b.alt_m) < 1e-3


def datum_text(d: Datum) -> str:
    """A datum as ``--datum`` takes it: ``lat,lon,alt``."""
    return f"{d.lat_deg:.9g},{d.lon_deg:.9g},{d.alt_m:.6g}"


class DatasetAppend(NodeLogic):
    """Part of the :class:`~pose2rgbd.nodes.recorder.Recorder`: the dataset it appends to, and resuming it."""

    cfg: RecorderConfig
    camera: PinholeCamera | None  # from CameraInfo
    camera_frame: str | None
    T_base_cam: np.ndarray | None  # the camera mount (the recorder's MountLookup)
    mount_source: str
    recorded_mount: RecordedMount | None
    fix_covariances: list[tuple[np.ndarray, int]]  # the kept fixes' reported covariance (the recorder's GPS part)

    def _init_dataset(self, cfg: RecorderConfig) -> None:
        self.datum: Datum | None = cfg.datum_obj()
        self.world_frame = cfg.world_frame  # a resumed dataset's own (a bag converted into a robot's TF frame)
        self._resumed_extra: dict[str, object] = {}
        self._resumed_pose_error: dict[str, object] = {}
        self.writer: Any = None
        self.resume_after_ns: int | None = None
        self._resume_first_ns: int | None = None
        self._resume_last_lla: np.ndarray | None = None
        self._resume_checked = False
        self._resume_last_rgb: Path | None = None  # the resumed dataset's last frame's image (same_as_recorded)
        self._resume_image_checked = False
        self._resumed_name: str | None = None  # a resumed dataset's own name and sources (kept, not rewritten)
        self._resumed_sources: list[dict[str, object]] | None = None
        self._writer_start = 0  # the frames the dataset held when the writer opened (close() counts this run's)
        self._source_id = 0  # the manifest source this recording's frames belong to
        if cfg.output.dataset:
            self._load_existing(Path(cfg.output.dataset))

    def _refuse(self, text: str, *, kept: str = "the dataset is untouched") -> list[Outgoing]:
        """Stop recording for good, saying why (the recorder's)."""
        raise NotImplementedError

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
        if ds.manifest.depth_kind != "none":  # the recorder writes RGB frames: said before the bag is read
            raise ConfigError(
                f"cannot resume the existing dataset {path}: its frames have {ds.manifest.depth_kind} depth (a "
                "dataset made by `pose2rgbd convert` or the simulator, say), and the record node writes frames without "
                "depth (depth kind none); one dataset holds one depth kind. Record into a new dataset (another --out, "
                "output.dataset); a dataset without depth joins another without depth with `pose2rgbd dataset merge`, "
                "and the place maps of both join with `pose2rgbd map merge`"
            )
        mine = self.cfg.datum_obj()
        theirs = ds.manifest.datum
        if mine is not None and theirs is not None and not _same_datum(mine, theirs):
            raise ConfigError(
                f"datum {datum_text(mine)} (--datum) differs from the datum of the existing dataset {path}: "
                f"{datum_text(theirs)}; its frames are relative to that one. Leave --datum out to resume with it, "
                "or record into a new dataset"
            )
        if theirs is not None:
            self.datum = theirs
        self.world_frame = ds.manifest.world_frame  # its frames' frame: the poses appended are placed in it too
        self._resumed_extra = dict(ds.manifest.extra)
        self._resumed_pose_error = dict(ds.manifest.pose_error)  # the first recording's statement stays
        recorder = self._resumed_extra.get("recorder")
        self.recorded_mount = RecordedMount.from_dict(recorder.get("mount") if isinstance(recorder, dict) else None)
        if self.recorded_mount is not None and self.cfg.mount.source == "config":
            differs = self.recorded_mount.difference(self.cfg.mount.config_matrix())
            if differs is not None:
                raise ConfigError(
                    f"the configured camera mount ({self.cfg.mount.describe_config()}) is {differs[0]:.3f} m / "
                    f"{differs[1]:.2f} deg from the one the existing dataset {path} was recorded with "
                    f"({self.recorded_mount.source}); frames appended with it would not fit its frames. Set "
                    "mount.source auto to resume with the dataset's mount (or the mount in /tf_static), the "
                    "dataset's mount.rpy_deg / mount.translation, or record into a new dataset"
                )
        self.resume_after_ns = int(ds.frames.stamp_ns.max())
        self._resume_first_ns = int(ds.frames.stamp_ns.min())
        last = int(np.argmax(ds.frames.stamp_ns))
        lla = np.asarray(ds.frames.latlonalt[last, :2], dtype=np.float64)
        self._resume_last_lla = lla if np.isfinite(lla).all() else None
        self._resume_last_rgb = path / ds.frames.rgb[last]
        # its name and sources are kept; a recording resumed goes on as the source of its last frame, a recording
        # appended to a dataset the record node did not write (`convert`'s) is a source of its own: another flight
        sources = [dict(s) for s in ds.manifest.sources]
        if isinstance(recorder, dict):
            self._source_id = int(ds.frames.source_id[last])
            what = f"continuing after stamp {self.resume_after_ns}"
        else:
            self._source_id = max((int(str(s["id"])) for s in sources), default=-1) + 1
            sources.append({"id": self._source_id, "kind": "recording", "name": self.cfg.output.source_name})
            what = (
                f"appending after stamp {self.resume_after_ns} as source {self._source_id} (the dataset was not "
                "recorded by the record node: this recording is a flight of its own)"
            )
        self._resumed_name, self._resumed_sources = ds.manifest.name, sources
        self.log.info(f"resuming {path}: {len(ds)} frames, {what}")

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
            "resuming would skip or mix its frames. Record it into a new dataset (another --out), then join the "
            "flights into one with `pose2rgbd dataset merge`"
        )
        return False

    def _check_resume_image(self, msg: object, stamp: int) -> bool:
        """At the image stamped as the resumed dataset's last frame: is it the image recorded there? (else refuse:
        another flight with the same stamps -- a simulator's export of another seed, a bag re-stamped -- whose first
        part a resume would skip without a word)"""
        if self._resume_image_checked or stamp != self.resume_after_ns or self._resume_last_rgb is None:
            return True
        self._resume_image_checked = True
        from pose2rgbd.messages import image_msg_to_rgb

        stored = cv2.imread(str(self._resume_last_rgb), cv2.IMREAD_COLOR)
        try:
            rgb = image_msg_to_rgb(msg)
        except (GeometryError, BagError):  # an image it cannot read: counted where it would be recorded; no check
            return True
        if stored is None:
            return True
        h, w = stored.shape[:2]
        if rgb.shape[:2] != (h, w):
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        diff = float(np.abs(rgb.astype(np.int16) - stored[:, :, ::-1].astype(np.int16)).mean())
        if diff <= RESUME_IMAGE_DIFF:
            return True
        self._refuse(
            f"this recording's image stamped {stamp} is not the image the dataset {self.cfg.output.dataset} recorded "
            f"at that stamp, its last frame (they differ by {diff:.1f} of 255 on average): another flight with the "
            "same stamps (a simulator's export of another seed, a bag re-stamped), not the rest of this recording, "
            "whose first part resuming would skip. Record it into a new dataset (another --out), then join the "
            "flights into one with `pose2rgbd dataset merge`"
        )
        return False

    def _check_resume_place(self, lla: np.ndarray) -> bool:
        """At the first fix the gate keeps: is it near the last frame of the dataset being resumed? (else refuse)"""
        if self._resume_checked or self._resume_last_lla is None:
            return True
        self._resume_checked = True
        d = float(horizontal_distance_m(lla[0], lla[1], self._resume_last_lla[0], self._resume_last_lla[1]))
        if d <= self.cfg.output.resume_distance_m:
            return True
        self._refuse(
            f"this recording starts {d / 1000:.1f} km from the last frame of the dataset "
            f"{self.cfg.output.dataset} (more than output.resume_distance_m "
            f"{self.cfg.output.resume_distance_m:g} m): it looks like a different flight. "
            "Record it into a new dataset (another --out)"
        )
        return False

    def _open_writer(self) -> None:
        from pose2rgbd.dataset import DatasetWriter, Manifest
        from pose2rgbd.sync.gps import reported_pose_error

        assert self.camera is not None
        out = self.cfg.output
        wh = parse_size(self.cfg.size, "size")
        cam = self.camera if wh is None else self.camera.scaled(*wh)
        stated = reported_pose_error(
            np.asarray([c for c, _ in self.fix_covariances] or np.zeros((0, 9))),
            np.asarray([k for _, k in self.fix_covariances], dtype=np.int64),
        )
        manifest = Manifest(
            name=self._resumed_name or out.name,
            camera=cam,
            # the poses are the GPS's: off the true ones by its error, as the receiver states it (the fixes so far)
            pose_error=self._resumed_pose_error or stated or {},
            depth_kind="none",
            rgb_encoding=out.rgb_encoding,
            world_frame=self.world_frame,
            camera_frame=self.camera_frame or "camera_optical_frame",
            datum=self.datum,
            sources=self._resumed_sources or [{"id": 0, "kind": "recording", "name": out.source_name}],
            extra={
                **self._resumed_extra,  # a resumed dataset keeps what its manifest said (e.g. its conversion)
                "recorder": {
                    "sync": self.cfg.sync.policy,
                    "max_gap_s": self.cfg.sync.max_gap_s,
                    "mount": self._mount_entry(),
                },
            },
        )
        self.writer = DatasetWriter(out.dataset, manifest, mode="append")
        self._writer_start = len(self.writer)

    def _mount_entry(self) -> dict[str, object] | None:
        """The manifest's ``extra.recorder.mount``: the mount the dataset was first recorded with (a resumed dataset
        keeps its own), else this recording's."""
        if self.recorded_mount is not None:
            return self.recorded_mount.to_dict()
        if self.T_base_cam is None:
            return None
        return RecordedMount(np.asarray(self.T_base_cam), self.mount_source).to_dict()

    def _write(self, stamp: int, T: np.ndarray, rgb: np.ndarray, lla: np.ndarray) -> None:
        if self.writer is None:
            self._open_writer()
        cam = self.writer.manifest.camera
        if rgb.shape[:2] != (cam.height, cam.width):
            rgb = cv2.resize(rgb, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
        lla3 = (float(lla[0]), float(lla[1]), float(lla[2]))
        self.writer.add_frame(stamp, T, rgb, None, latlonalt=lla3, source_id=self._source_id)
