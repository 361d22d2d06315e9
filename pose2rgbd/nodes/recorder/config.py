"""The record node's configuration: topics, synchronization, camera mount, outputs, GPS gate; and which of its
parameters apply while it runs (:data:`RECORDER_LIVE`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pose2rgbd.config import DATUM_HELP, SIZE_HELP, help_field, parse_size, ranged_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.geodesy import Datum, datum_from_text
from pose2rgbd.geometry.mount import CameraMount
from pose2rgbd.messages.topics import SensorTopics
from pose2rgbd.sync.gps import GpsConfig


@dataclass
class RecorderTopics(SensorTopics):
    """Input and output topics: the sensor topics (:class:`~pose2rgbd.messages.topics.SensorTopics`, shared with
    ``convert bag``) and the node's own."""

    compressed: bool = help_field(False, "the image topic carries sensor_msgs/CompressedImage")
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
    keep_repeats: bool = help_field(
        False, "keep images whose bytes repeat the previous image's (a camera re-sending its last buffer); default: "
        "dropped, counted (repeated_images) and warned about, as convert does",
    )  # fmt: skip
    max_rate_hz: float = ranged_field(
        0.0, "record at most this many images a second, evenly: one turn every 1 / max_rate_hz; an image before "
        "its turn is skipped before synchronization and encoding (counted skipped_rate); 0: every image. E.g. 15 "
        "with a 30 Hz camera: every other image", 0.0, 1000.0,
    )  # fmt: skip
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
    world_frame: str = help_field(
        "map", "frame id of the recorded poses (ENU about the datum); a resumed dataset keeps its own frame"
    )
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
    "output.keep_repeats",
)
