"""The recorder's camera mount ``T_base_cam`` (:class:`MountLookup`): from the config (``mount.source`` 'config'),
from ``/tf_static`` (looked up from ``mount.base_frame``, or the first of the usual body frames, to the camera
frame; 'tf_static'), or from ``/tf_static`` when it is there by the first frame and the config otherwise
('auto'; a resumed dataset: the mount it was recorded with, :class:`RecordedMount`, kept in its manifest).
:class:`pose2rgbd.geometry.mount.CameraMount` is the same section as ``convert``'s."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pose2rgbd.geometry.rotations import matrix_to_quat_xyzw, rotation_angle_between
from pose2rgbd.geometry.tf_buffer import TransformException
from pose2rgbd.geometry.transforms import T_from_tq
from pose2rgbd.nodes.logic import NodeLogic
from pose2rgbd.nodes.recorder.config import RecorderConfig
from pose2rgbd.nodes.spec import Lookup

# two mounts closer than these are the same (a resumed dataset's against this recording's)
SAME_MOUNT_M = 1e-3
SAME_MOUNT_DEG = 0.01


@dataclass(frozen=True)
class RecordedMount:
    """The camera mount a dataset was recorded with: ``T_base_cam`` and where it came from. In the manifest under
    ``extra.recorder.mount``: ``xyz`` (metres) and ``quat_xyzw`` (x, y, z, w) of ``T_base_cam``, and ``source``."""

    T_base_cam: np.ndarray
    source: str

    def to_dict(self) -> dict[str, object]:
        q = matrix_to_quat_xyzw(self.T_base_cam[:3, :3])
        return {"xyz": [float(v) for v in self.T_base_cam[:3, 3]], "quat_xyzw": [float(v) for v in q],
                "source": self.source}  # fmt: skip

    @classmethod
    def from_dict(cls, d: object) -> RecordedMount | None:
        """The mount of a manifest's ``extra.recorder.mount``; None where there is none (a dataset recorded by an
        earlier pose2rgbd, or not by the recorder) or it is malformed."""
        if not isinstance(d, dict):
            return None
        try:
            xyz = np.asarray(d["xyz"], dtype=np.float64).reshape(3)
            q = np.asarray(d["quat_xyzw"], dtype=np.float64).reshape(4)
        except (KeyError, TypeError, ValueError):
            return None
        if not (np.isfinite(xyz).all() and np.isfinite(q).all()) or np.linalg.norm(q) < 0.5:
            return None
        return cls(T_from_tq(xyz, q / np.linalg.norm(q)), str(d.get("source", "")))

    def difference(self, T_base_cam: np.ndarray) -> tuple[float, float] | None:
        """Metres and degrees between this mount and ``T_base_cam``; None where they are the same."""
        dm = float(np.linalg.norm(self.T_base_cam[:3, 3] - T_base_cam[:3, 3]))
        ddeg = float(np.degrees(rotation_angle_between(self.T_base_cam[:3, :3], T_base_cam[:3, :3])))
        return None if dm <= SAME_MOUNT_M and ddeg <= SAME_MOUNT_DEG else (dm, ddeg)


class MountLookup(NodeLogic):
    """Part of the :class:`~pose2rgbd.nodes.recorder.Recorder`: where the camera sits on the vehicle."""

    cfg: RecorderConfig

    def _init_mount(self, cfg: RecorderConfig, tf_lookup: Lookup | None) -> None:
        self.tf_lookup = tf_lookup
        self._mount_warned = False
        self.T_base_cam: np.ndarray | None = None
        self.mount_source = ""  # where T_base_cam came from (for the log)
        self.recorded_mount: RecordedMount | None = None  # a resumed dataset's (set when the dataset is opened)
        # the camera optical frame: mount.camera_frame, else the frame_id of the first image
        self.camera_frame: str | None = cfg.mount.camera_frame or None
        if cfg.mount.source == "config":
            self.set_mount(cfg.mount.config_matrix())
            self.mount_source = cfg.mount.describe_config()

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
            recorded = self.recorded_mount
            differs = None if recorded is None else recorded.difference(np.asarray(T))
            if recorded is not None and differs is not None:
                self.log.warning(
                    f"the camera mount in {self.mount_source} is {differs[0]:.3f} m / {differs[1]:.2f} deg from the "
                    f"one the dataset being resumed was recorded with ({recorded.source}): the frames "
                    "appended now use /tf_static's (a camera mounted again); if it is not, stop and check /tf_static"
                )
            return True
        self.warning("mount_wait", now_ns, f"waiting for the camera mount {self._mount_text()}: {last}")
        return False

    def _resolve_mount(self, now_ns: int) -> bool:
        """At a frame without a mount: TF once more; with ``mount.source`` 'auto', else the configured mount."""
        if self.try_mount(now_ns):
            return True
        if self.cfg.mount.source == "auto" and self.recorded_mount is not None:
            # a resumed dataset: its own mount, not the configuration's (a bag played from its middle has no
            # /tf_static, and the configured mount need not be the one its frames were recorded with)
            self.set_mount(self.recorded_mount.T_base_cam)
            self.mount_source = f"the mount the dataset was recorded with ({self.recorded_mount.source})"
            self.log.info(
                f"no camera mount {self._mount_text()} in /tf_static at the first frame; mount.source is 'auto': "
                f"resuming with {self.mount_source}"
            )
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

    def _warn_no_mount(self) -> None:
        """At the end: say once why every frame was dropped when the mount never came."""
        if self.T_base_cam is None and self.counters["dropped_no_mount"] and not self._mount_warned:
            self._mount_warned = True
            self.log.warning(
                f"no camera mount {self._mount_text()} was found in /tf_static; every frame was dropped "
                "(mount.source is 'tf_static': set mount.source auto or config, or mount.base_frame / camera_frame)"
            )
