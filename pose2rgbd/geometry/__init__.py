"""Geometry conventions of pose2rgbd, defined once here.

* Transforms are named ``T_target_source`` (4x4, float64): ``p_target = T_target_source @ p_source``.
* ``T_world_cam``: camera pose; the camera frame is REP-103 *optical* (x right, y down, z forward); the
  world is ENU (x east, y north, z up), the REP-105 ``map`` frame.
* Quaternions cross APIs as ``quat_xyzw`` with canonical sign (w >= 0). Euler ``rpy`` is extrinsic x-y-z
  (R = Rz(yaw) Ry(pitch) Rx(roll)), radians.
* Time is int64 nanoseconds.
"""

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.encoding import ENCODINGS, decode_poses, encode_poses, encoding_dim
from pose2rgbd.geometry.geodesy import Datum, ecef_to_geodetic, geodetic_to_ecef
from pose2rgbd.geometry.interpolation import interpolate_poses, interpolate_translations, slerp_quat_xyzw
from pose2rgbd.geometry.rotations import (
    canonical_quat_xyzw,
    matrix_to_quat_xyzw,
    matrix_to_rpy,
    quat_wxyz_to_xyzw,
    quat_xyzw_to_matrix,
    quat_xyzw_to_rpy,
    quat_xyzw_to_wxyz,
    rpy_to_matrix,
    rpy_to_quat_xyzw,
)
from pose2rgbd.geometry.tf_buffer import (
    ConnectivityException,
    ExtrapolationException,
    LookupException,
    TFBuffer,
    TransformException,
)
from pose2rgbd.geometry.transforms import (
    Pose,
    T_from_tq,
    inverse,
    make_T,
    pose_errors,
    relative,
    tq_from_T,
    transform_points,
)

# Rotation from REP-103 body axes (x forward, y left, z up) to optical axes (x right, y down, z forward):
# a camera "body" frame looking along +x has optical frame R_body_optical below.
R_BODY_OPTICAL = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
# The same rotation as a quaternion (x, y, z, w), canonical sign (test_geometry checks they agree).
Q_BODY_OPTICAL_XYZW = [-0.5, 0.5, -0.5, 0.5]

__all__ = [
    "ENCODINGS",
    "Q_BODY_OPTICAL_XYZW",
    "R_BODY_OPTICAL",
    "ConnectivityException",
    "Datum",
    "ExtrapolationException",
    "LookupException",
    "PinholeCamera",
    "Pose",
    "TFBuffer",
    "T_from_tq",
    "TransformException",
    "canonical_quat_xyzw",
    "decode_poses",
    "ecef_to_geodetic",
    "encode_poses",
    "encoding_dim",
    "geodetic_to_ecef",
    "interpolate_poses",
    "interpolate_translations",
    "inverse",
    "make_T",
    "matrix_to_quat_xyzw",
    "matrix_to_rpy",
    "pose_errors",
    "quat_wxyz_to_xyzw",
    "quat_xyzw_to_matrix",
    "quat_xyzw_to_rpy",
    "quat_xyzw_to_wxyz",
    "relative",
    "rpy_to_matrix",
    "rpy_to_quat_xyzw",
    "slerp_quat_xyzw",
    "tq_from_T",
    "transform_points",
]
