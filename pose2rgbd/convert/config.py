"""The configuration of a rosbag or video conversion (``pose2rgbd convert bag|video``): one schema for the CLI
flags, the ``--config`` YAML and the Python API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pose2rgbd.config import DATUM_HELP, SIZE_HELP, help_field, parse_size
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry import Datum
from pose2rgbd.geometry.geodesy import datum_from_text
from pose2rgbd.geometry.mount import CameraMount
from pose2rgbd.messages.topics import FIND_BY_TYPE, SensorTopics
from pose2rgbd.sync.estimator import SyncConfig
from pose2rgbd.sync.gps import GpsConfig, check_gate

LENSES = ("pinhole", "fisheye")  # a video's lens (pose2rgbd.convert.lens_calibration)
ORIENTATION_SOURCES = ("auto", "imu", "odom", "tf", "attitude", "course")
# the world frame a bag is written in (pose2rgbd.convert.stages.world_frame)
WORLD_FRAME_HELP = (
    "frame of the poses written (bags): auto (the bag's TF 'map', else 'world', where /tf links it to the robot: the "
    "GPS poses turned about up and shifted into it by a fit, so the render and localize nodes look poses up in the "
    "robot's own frame; else enu), enu (ENU about the datum, named 'map'), or a TF frame's name"
)


def check_world_frame(value: str) -> None:
    """A ``world_frame`` setting's own rule: not empty, no spaces or leading slash (tf2 frame ids)."""
    if not value or value != value.strip() or " " in value or value.startswith("/"):
        raise ConfigError(f"world_frame must be auto, enu or a TF frame id (no spaces or leading '/'), got {value!r}")
    if value == "earth":
        raise ConfigError(
            "world_frame 'earth' is ECEF (REP-105), not z-up: the fit (a turn about up and a shift) "
            "cannot place the GPS poses in it; use the robot's map (auto), another TF frame, or enu"
        )


RGB_ENCODINGS = ("png", "jpg")


@dataclass
class ConvertOutput:
    """The dataset written (the same keys in every conversion, and as the record node's ``output``)."""

    name: str = help_field("", "dataset name in its manifest (default: the input file stem)")
    rgb_encoding: str = help_field("png", "image files: 'png' or 'jpg'")
    keep_repeats: bool = help_field(
        False, "keep frames whose pixels are identical to the previous frame's (a repeating camera stream); "
        "default: drop them, counted in the report"
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.rgb_encoding not in RGB_ENCODINGS:
            raise ConfigError(f"output.rgb_encoding must be 'png' or 'jpg', got {self.rgb_encoding!r}")


# the depth topic a conversion takes when the bag has it (the simulator's ground truth): without it, the dataset is
# RGB-only; a topic named instead of it must be in the bag (pose2rgbd.convert.sources.bag.BagTopics)
DEFAULT_DEPTH_TOPIC = "/ground_truth/depth"


@dataclass
class ConvertTopics(SensorTopics):
    """Bag topics: the sensor topics of the record node (:class:`~pose2rgbd.messages.topics.SensorTopics`) and the
    two only a conversion reads. In a :class:`ConvertConfig` the sensor topics start empty (found by message type);
    a ``ConvertTopics`` made by hand has the record node's names unless given."""

    imu: str = help_field("", "Imu; empty = by type (optional)")
    depth: str = help_field(
        DEFAULT_DEPTH_TOPIC, f"depth Image (32FC1 m, 16UC1 mm) included as metric depth; {DEFAULT_DEPTH_TOPIC} (the "
        "simulator's) when the bag has it, another topic named must be in the bag, empty: none"
    )  # fmt: skip


def _bag_topics() -> ConvertTopics:
    return ConvertTopics(**FIND_BY_TYPE)


# keys of older versions, refused with the key to write instead (pose2rgbd.config.from_dict reads this)
CONVERT_RENAMED_KEYS = {
    "image_topic": "topics.image",
    "info_topic": "topics.camera_info",
    "gps_topic": "topics.gps",
    "odom_topic": "topics.odom",
    "imu_topic": "topics.imu",
    "depth_topic": "topics.depth",
    "rgb_encoding": "output.rgb_encoding",
    "name": "output.name",
}


@dataclass
class GpsSettings:
    """The GPS settings every GPS comparison reads, under the same keys in :class:`ConvertConfig` (a camera against
    the GPS) and :class:`GpsOdomConfig` (wheel odometry against the GPS): the time offset's fallback, the datum, the
    fixes' gate, the altitude, the speed from positions and the offset estimator. The reference clock is the
    camera's in a conversion and the odometry's in ``convert gps-odom``."""

    time_offset_s: float | None = help_field(
        None, "GPS time offset d in s (a fix stamped t was measured at reference time t - d: the camera's, or the "
        "odometry's in convert gps-odom); used when the offset is not estimated (estimate_offset false) and "
        "as the fallback when the estimate is too weak (else 0)"
    )  # fmt: skip
    datum: str = help_field("", DATUM_HELP)
    max_speed_mps: float = help_field(
        60.0, "fixes implying a faster jump from the last kept fix are dropped (judged from a consensus anchor)"
    )
    gps: GpsConfig = field(default_factory=GpsConfig, metadata={"help": "GPS altitude (as the record node's)"})
    jump_tolerance_m: float = help_field(10.0, "GPS noise allowance (m) subtracted from a jump before the speed test")
    speed_window_s: float = help_field(
        2.0, "window of the local line fit giving GPS speed from positions (s); longer averages more GPS noise "
        "but blurs speed changes and dips the speed in turns (docs/convert.md)"
    )  # fmt: skip
    sync: SyncConfig = field(default_factory=SyncConfig, metadata={"help": "time-offset estimator"})

    def __post_init__(self) -> None:
        from pose2rgbd.config import from_dict

        if isinstance(self.sync, dict):
            self.sync = from_dict(SyncConfig, self.sync, where="sync")
        if isinstance(self.gps, dict):
            self.gps = from_dict(GpsConfig, self.gps, where="gps")
        check_gate(self.max_speed_mps, self.jump_tolerance_m)  # the GPS gate's own rule (pose2rgbd.sync.gps)
        if self.datum:
            self.datum_obj()

    def datum_obj(self) -> Datum | None:
        return datum_from_text(self.datum)


@dataclass
class ConvertConfig(GpsSettings):
    """Bag / video + GPS -> dataset conversion (the GPS settings: :class:`GpsSettings`)."""

    size: str = help_field("", SIZE_HELP)
    estimate_offset: bool = help_field(True, "estimate the offset from flow vs GPS speed (Algorithm 1)")
    world_frame: str = help_field("auto", WORLD_FRAME_HELP)
    speed_3d: bool = help_field(True, "GPS speed from positions includes the vertical component (climbs)")
    use_reported_speed: bool = help_field(True, "use the speed column of a GPS log when present")
    orientation: str = help_field(
        "auto", "orientation source: auto (the first present of: bags imu > odom > tf, videos attitude; else "
        "the GPS course), imu, odom, tf (the /tf tree from map/world/earth/odom to the body frame), attitude or course"
    )  # fmt: skip
    mount: CameraMount = field(default_factory=CameraMount, metadata={"help": "camera mount (as the record node's)"})
    align_odom_yaw: bool = help_field(
        False, "rotate the odometry or TF world frame about z so its heading matches the GPS course (for wheel "
        "odometry whose frame starts at yaw 0, or a SLAM map with arbitrary yaw; wrong for vehicles that do not "
        "face their direction of travel)"
    )  # fmt: skip
    min_course_speed_mps: float = help_field(0.7, "below this GPS speed the course (heading) is held")
    hfov_deg: float = help_field(118.0, "assumed horizontal field of view of a video (no CameraInfo)")
    check_gps_log: bool = help_field(
        True, "a video with its own GPS (a GoPro's telemetry) and a --gps log: refuse a log recorded at another "
        "place or time than the video's own GPS says (false: warn and take it)"
    )  # fmt: skip
    lens: str = help_field(
        "pinhole", "a video's lens: pinhole (--hfov, no distortion) or fisheye (calibrated from the video by COLMAP, "
        "started from --hfov; the frames undistorted onto a pinhole; docs/convert.md)"
    )  # fmt: skip
    topics: ConvertTopics = field(default_factory=_bag_topics, metadata={"help": "bag topics (empty: found by type)"})
    output: ConvertOutput = field(default_factory=ConvertOutput, metadata={"help": "the dataset written"})
    max_frame_gap_s: float = help_field(1.0, "GPS gaps longer than this drop the frames inside them")

    RENAMED_KEYS: ClassVar[dict[str, str]] = CONVERT_RENAMED_KEYS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lens not in LENSES:
            raise ConfigError(f"lens must be one of {LENSES}, got {self.lens!r}")
        if self.orientation not in ORIENTATION_SOURCES:
            raise ConfigError(f"orientation must be one of {ORIENTATION_SOURCES}, got {self.orientation!r}")
        if self.size:
            self.size_wh()
        check_world_frame(self.world_frame)

    def size_wh(self) -> tuple[int, int] | None:
        return parse_size(self.size, "size")


@dataclass
class GpsOdomTopics:
    """The two topics ``convert gps-odom`` reads (empty: the bag's one topic of the type)."""

    gps: str = help_field("", "GPS fixes (sensor_msgs/NavSatFix); empty = by type")
    odom: str = help_field("", "wheel odometry, its twist the reference speed (nav_msgs/Odometry); empty = by type")


@dataclass
class GpsOdomConfig(GpsSettings):
    """GPS against wheel odometry in a camera-less bag (``pose2rgbd convert gps-odom``): the GPS settings of
    :class:`ConvertConfig` (:class:`GpsSettings`, the same keys) and the two topics (no camera, no dataset: the
    image, lens, size, orientation and output keys would be ignored, so they are not offered)."""

    topics: GpsOdomTopics = field(default_factory=GpsOdomTopics, metadata={"help": "bag topics (empty: by type)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.topics, dict):
            from pose2rgbd.config import from_dict

            self.topics = from_dict(GpsOdomTopics, self.topics, where="topics")
