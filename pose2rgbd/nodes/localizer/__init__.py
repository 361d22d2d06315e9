"""Localization node logic (no rclpy): camera image -> camera pose in the world frame, with a covariance.

:data:`LOCALIZER` is its :class:`~pose2rgbd.nodes.spec.NodeSpec`; the runtime (the rclpy host or the offline
bag runner) subscribes to the image topic (``sensor_msgs/Image`` or ``CompressedImage``, sensor-data QoS, queue
depth 1 live: the newest image wins) and calls:

* :meth:`LocalizerNode.on_image` per image: decode (any colour encoding; jpeg / png), fit to the model's
  input (:func:`pose2rgbd.inference.images.fit_to_input`: keep the aspect ratio, resize to cover, centre
  crop), localize with the engine (any checkpoint whose kind is served by the localize engine) and return:

  - ``topics.pose``: ``geometry_msgs/PoseWithCovarianceStamped``, the camera (REP-103 optical frame) in the
    world frame: ``header.stamp`` = the image's stamp, ``header.frame_id`` = the world frame, covariance from
    the calibration file (:mod:`pose2rgbd.inference.calibration`), scaled by the image's confidence, and by
    ``ood_covariance_scale`` when the image is out of distribution;
  - ``topics.ood``: ``std_msgs/Bool``, one per pose, true when the image is out of distribution: the model's
    confidence is below ``ood_threshold`` (-1: the calibration file's threshold, the 5 % quantile of the
    validation images' confidences);
  - ``topics.status``: ``diagnostic_msgs/DiagnosticArray`` per image, stamped with the image's stamp (level
    WARN when out of distribution; values: confidence, threshold, latency, covariance scale);
  - ``topics.tf`` (with ``publish_tf``): ``world_frame -> tf_child_frame`` for debugging;

* :meth:`LocalizerNode.diagnostics_tick` every ``diagnostics_period_s``: latency p50 / p99, confidence, images
  rejected and why, out-of-distribution count.

Bad images never raise out of :meth:`~LocalizerNode.on_image`: an unsupported encoding (depth, Bayer ...),
corrupt compressed data or a size that cannot be fitted are rejected, counted per reason and logged (throttled).

The node is one class, :class:`LocalizerNode` on :class:`~pose2rgbd.nodes.logic.NodeLogic`, with its spec
(:mod:`~pose2rgbd.nodes.localizer.node`); the parts it holds or calls, one module each: the configuration
(:mod:`~pose2rgbd.nodes.localizer.config`), what is loaded at configure (:mod:`~pose2rgbd.nodes.localizer.resources`),
the covariance, OOD rule and published messages (:mod:`~pose2rgbd.nodes.localizer.outputs`) and the structure
localizer's GPS / odometry priors (:mod:`~pose2rgbd.nodes.localizer.structure`).
"""

from pose2rgbd.nodes.localizer.config import IMAGE_TYPES, LOCALIZER_LIVE, LocalizerConfig, LocalizerTopics
from pose2rgbd.nodes.localizer.node import LOCALIZER, REJECT_REASONS, LocalizerNode, build_localizer
from pose2rgbd.nodes.localizer.resources import configure_localizer, load_node_calibration, load_refiner

__all__ = [
    "IMAGE_TYPES",
    "LOCALIZER",
    "LOCALIZER_LIVE",
    "REJECT_REASONS",
    "LocalizerConfig",
    "LocalizerNode",
    "LocalizerTopics",
    "build_localizer",
    "configure_localizer",
    "load_node_calibration",
    "load_refiner",
]
