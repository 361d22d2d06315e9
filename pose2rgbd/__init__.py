"""pose2rgbd: neural RGB-D rendering from 6-DoF poses, ROS-free core.

This package never imports rclpy (a test enforces it). ROS glue lives in ``pose2rgbd_ros``.

Conventions (defined once, in :mod:`pose2rgbd.geometry`):

* time is ``int`` nanoseconds;
* a transform ``T_target_source`` maps points from ``source`` into ``target``;
* camera frames are REP-103 optical (x right, y down, z forward); the world is ENU about a GPS datum (REP-105
  ``map``) or, for a bag converted with its TF, the robot's own ``map`` (the datum's ``T_world_enu`` places ENU in it);
* quaternions cross every API as ``quat_xyzw`` (ROS / SciPy order) with a canonical sign (w >= 0);
* depth is float32 metres along the optical Z axis, NaN invalid, +inf for sky (REP-117/118).
"""

__version__ = "0.1.0"
