"""The camera axes a pose source may use, and how each maps to the REP-103 optical frame of pose2rgbd.

* ``optical``: x right, y down, z forward (REP-103, OpenCV, COLMAP, TUM RGB-D, KITTI);
* ``opengl``: x right, y up, z back (OpenGL, Blender, NeRF ``transforms.json``);
* ``flu``: x forward, y left, z up (a ROS body frame, REP-103).

A pose ``T_world_source`` in one of them is ``T_world_source @ axes_matrix(axes)`` in the optical frame.
"""

from __future__ import annotations

import numpy as np

CAMERA_AXES = ("optical", "opengl", "flu")

# OpenGL / Blender camera (x right, y up, z back) -> REP-103 optical (x right, y down, z forward): flip y and z.
# T_world_opt = T_world_gl @ GL_FROM_OPTICAL (a rotation of pi about the camera's x axis; its own inverse).
GL_FROM_OPTICAL = np.diag([1.0, -1.0, -1.0, 1.0])
# ROS body (x forward, y left, z up) -> optical: columns are the optical axes in the body frame.
FLU_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def axes_matrix(axes: str) -> np.ndarray:
    """``T_source_optical`` for the camera axes of a trajectory (one of :data:`CAMERA_AXES`)."""
    return {"optical": np.eye(4), "opengl": GL_FROM_OPTICAL, "flu": FLU_FROM_OPTICAL}[axes]


__all__ = ["CAMERA_AXES", "FLU_FROM_OPTICAL", "GL_FROM_OPTICAL", "axes_matrix"]
