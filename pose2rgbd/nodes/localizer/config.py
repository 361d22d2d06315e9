"""The localize node's configuration, and which of its parameters apply while it runs (:data:`LOCALIZER_LIVE`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.lens import QueryCamera, parse_camera_spec
from pose2rgbd.inference import EngineConfig
from pose2rgbd.inference.refine import RefineConfig
from pose2rgbd.inference.structure import StructureConfig
from pose2rgbd.inference.structure_load import LOCALIZE_METHODS

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass
class LocalizerTopics:
    """Topic names (relative names resolve in the node's namespace)."""

    image: str = help_field("/camera/image_raw", "input camera images (sensor_msgs/Image or CompressedImage)")
    pose: str = help_field(
        "pose", "camera pose in the world frame (geometry_msgs/PoseWithCovarianceStamped, stamp of the image)"
    )
    refined_pose: str = help_field("pose_refined", "the refined pose, with refine (PoseWithCovarianceStamped)")
    ood: str = help_field("out_of_distribution", "std_msgs/Bool per pose: the image looks out of distribution")
    status: str = help_field(
        "localization_status",
        "per-image status stamped with the image (diagnostic_msgs/DiagnosticArray: confidence, OOD)",
    )
    diagnostics: str = help_field("/diagnostics", "latency, confidence, rejected images (DiagnosticArray)")
    tf: str = help_field("/tf", "where the debugging transform goes with publish_tf (tf2_msgs/TFMessage)")
    gps: str = help_field(
        "",
        "structure: sensor_msgs/NavSatFix whose position (in the map's world, through its datum) is a prior "
        "(empty: none)",
    )
    odometry: str = help_field(
        "",
        "structure: nav_msgs/Odometry whose position is a prior when its header.frame_id is the world frame "
        "(empty: none)",
    )
    camera_info: str = help_field(
        "", "structure: sensor_msgs/CameraInfo of the images (empty: the camera parameter, else the map's camera)"
    )


@dataclass
class LocalizerConfig:
    """The localize node: which images, which model, how the covariance and the OOD flag are made."""

    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"help": "model and inference settings"})
    method: str = help_field(
        "auto",
        "structure (match the image against the place map: a pose or no fix) | posegan (the checkpoint's image -> "
        "pose model) | structure+posegan (the model's estimate is the structure localizer's prior) | auto "
        "(structure when map is set, else posegan)",
    )
    map: str = help_field("", "place map folder (`pose2rgbd map build`) for the structure localizer")
    structure: StructureConfig = field(
        default_factory=StructureConfig, metadata={"help": "structure localizer settings"}
    )
    camera: str = help_field(
        "",
        "structure: the images' camera at their own size, 'fx,fy,cx,cy' with OpenCV distortion ',k1,k2,p1,p2[,k3]' "
        "when the lens has any, or 'fisheye:fx,fy,cx,cy,k1,k2,k3,k4' (empty: topics.camera_info, else the map's)",
    )
    posegan_prior_radius_m: float = ranged_field(
        150.0, "structure+posegan: keyframes within this of the model's estimate are candidates", 1.0, 1e6
    )
    prior_max_age_s: float = ranged_field(
        2.0, "a GPS / odometry message older than this (against the image stamp) is no prior", 0.0, 3600.0
    )
    image_type: str = help_field("raw", "type of topics.image: 'raw' (sensor_msgs/Image) or 'compressed'")
    world_frame: str = help_field(
        "",
        "frame_id of the published poses (empty: the frame of the map's dataset with a place map, else of the "
        "checkpoint's training poses)",
    )
    camera_frame: str = help_field(
        "", "the images' camera optical frame, for the status messages (empty: the images' header.frame_id)"
    )
    crop_scale: float = ranged_field(
        0.0,
        "0 (auto): the model's own preparation of a camera frame (PoseGAN: squash to its load size and centre-crop, "
        "as trained; others: as 1); 1-4: resize to cover crop_scale x the model input keeping the aspect ratio, "
        "then centre-crop",
        0.0,
        4.0,
    )
    input_bit_depth: int = ranged_field(
        0,
        "significant bits of 16-bit images (mono16, rgb16, 16-bit PNG): 10 for 10-bit data in a 16-bit container, "
        "16 for full-range data; 0: inferred per image from its largest value (10, 12, 14 or 16 bits). 8-bit "
        "images are used as they are",
        0,
        16,
    )
    min_image_side: int = ranged_field(
        8, "reject images whose shorter side is below this many pixels (cannot be fitted)", 1, 100000
    )
    max_aspect: float = ranged_field(
        8.0, "reject images whose long / short side ratio is above this (cannot be centre-cropped)", 1.0, 1000.0
    )
    covariance_source: str = help_field(
        "auto",
        "'file' (covariance_file, required), 'default' (a conservative 10 m / 30 deg covariance) or 'auto' "
        "(the file when covariance_file is set, else the default with a warning)",
    )
    covariance_file: str = help_field("", "calibration YAML from `pose2rgbd localize calibrate` (covariance, OOD)")
    scale_by_confidence: bool = help_field(True, "scale the calibrated covariance by the file's per-confidence factors")
    ood_threshold: float = ranged_field(
        -1.0,
        "flag an image out of distribution when its confidence is below this (-1: the calibration file's "
        "threshold; without a file nothing is flagged; 0: never)",
        -1.0,
        1.0,
    )
    ood_covariance_scale: float = ranged_field(
        100.0,
        "multiply the covariance of an out-of-distribution image by this (the model's poses; a structure "
        "fix flagged by the map's gate: structure.ood_covariance_scale)",
        1.0,
        1e12,
    )
    publish_tf: bool = help_field(False, "also broadcast world_frame -> tf_child_frame (debugging)")
    tf_child_frame: str = help_field(
        "camera_localized",
        "child frame of the debugging TF (not the camera's own frame, which has a parent in the robot's tree)",
    )
    refine: bool = help_field(
        False,
        "also refine each pose by render-and-compare and publish it on topics.refined_pose (costs seconds per "
        "image on a CPU: docs/results.md)",
    )
    refine_checkpoint: str = help_field(
        "",
        "pose -> image checkpoint to render with for refine (empty: the localizer's own checkpoint, e.g. PoseGAN's "
        "generator)",
    )
    refinement: RefineConfig = field(default_factory=RefineConfig, metadata={"help": "render-and-compare settings"})
    warn_throttle_s: float = ranged_field(5.0, "repeat the same warning at most this often", 0.0, 3600.0)
    diagnostics_period_s: float = ranged_field(1.0, "diagnostics publishing period (0: off)", 0.0, 3600.0)
    topics: LocalizerTopics = field(default_factory=LocalizerTopics, metadata={"help": "topic names"})

    def __post_init__(self) -> None:
        if self.image_type not in ("raw", "compressed"):
            raise ConfigError(f"image_type: {self.image_type!r} is not 'raw' or 'compressed'")
        if self.covariance_source not in ("auto", "file", "default"):
            raise ConfigError(f"covariance_source: {self.covariance_source!r} is not 'auto', 'file' or 'default'")
        if self.covariance_source == "file" and not self.covariance_file:
            raise ConfigError(
                "covariance_source is 'file' but covariance_file is empty; write one with `pose2rgbd localize "
                "calibrate` and set covariance_file"
            )
        if self.publish_tf and not self.tf_child_frame:
            raise ConfigError("publish_tf needs a tf_child_frame")
        if self.input_bit_depth and not 8 <= self.input_bit_depth <= 16:
            raise ConfigError(f"input_bit_depth: {self.input_bit_depth} is not 0 (inferred per image) or 8 to 16")
        if self.method not in LOCALIZE_METHODS:
            raise ConfigError(f"method {self.method!r} is not one of {', '.join(LOCALIZE_METHODS)}")
        self.query_camera()  # refuses a malformed camera

    def query_camera(self) -> QueryCamera | None:
        """``camera`` as a :class:`~pose2rgbd.geometry.lens.QueryCamera` (with its distortion), or None when empty."""
        return parse_camera_spec(self.camera, "camera")


# Not live: engine.* (the loaded model), image_type and topics.* (subscriptions / publishers), world_frame (the
# model's frame), covariance_* (read at configure), crop_scale and the image limits (tied to the model), refine.
LOCALIZER_LIVE = (
    "ood_threshold",
    "ood_covariance_scale",
    "scale_by_confidence",
    "publish_tf",
    "tf_child_frame",
    "camera_frame",
    "warn_throttle_s",
    "diagnostics_period_s",
)
