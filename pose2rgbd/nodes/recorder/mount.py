"""The recorder's camera mount ``T_base_cam`` (:class:`MountLookup`): from the config (``mount.source`` 'config'),
from ``/tf_static`` (looked up from ``mount.base_frame``, or the first of the usual body frames, to the camera
frame; 'tf_static'), or from ``/tf_static`` when it is there by the first frame and the config otherwise
('auto'). :class:`pose2rgbd.geometry.mount.CameraMount` is the same section as ``convert``'s."""

from __future__ import annotations

import numpy as np

from pose2rgbd.geometry.tf_buffer import TransformException
from pose2rgbd.nodes.logic import NodeLogic
from pose2rgbd.nodes.recorder.config import RecorderConfig
from pose2rgbd.nodes.spec import Lookup


class MountLookup(NodeLogic):
    """Part of the :class:`~pose2rgbd.nodes.recorder.Recorder`: where the camera sits on the vehicle."""

    cfg: RecorderConfig

    def _init_mount(self, cfg: RecorderConfig, tf_lookup: Lookup | None) -> None:
        self.tf_lookup = tf_lookup
        self._mount_warned = False
        self.T_base_cam: np.ndarray | None = None
        self.mount_source = ""  # where T_base_cam came from (for the log)
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
            return True
        self.warning("mount_wait", now_ns, f"waiting for the camera mount {self._mount_text()}: {last}")
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

    def _warn_no_mount(self) -> None:
        """At the end: say once why every frame was dropped when the mount never came."""
        if self.T_base_cam is None and self.counters["dropped_no_mount"] and not self._mount_warned:
            self._mount_warned = True
            self.log.warning(
                f"no camera mount {self._mount_text()} was found in /tf_static; every frame was dropped "
                "(mount.source is 'tf_static': set mount.source auto or config, or mount.base_frame / camera_frame)"
            )
