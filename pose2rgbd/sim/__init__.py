"""The synthetic UAV world: a seeded procedural city, a fast ray-casting RGB-D renderer, realistic flight
plans, and deterministic exports (format-v1 dataset, rosbag2 recording, MP4 video + GPS CSV).

Python API::

    from pose2rgbd.sim import SimConfig, make_world, Renderer, plan_route, simulate
    world = make_world(seed=0, size_m=300)                  # World
    cam = PinholeCamera.from_fov(256, 256, 75)
    rgb, depth = Renderer(world, cam).render(T_world_cam)    # uint8 (H, W, 3), float32 z-depth (+inf sky)
    traj = plan_route("survey", world, rate_hz=30, duration_s=60, seed=0)   # Trajectory
    rgbs, depths = Renderer(world, cam).render_batch(traj.T_world_cam)
    simulate(SimConfig(frames=100), "out/sim", dataset=True, bag=True, video=True)

See docs/sim.md for the world, the routes, timing conventions (GPS offset) and file formats.
"""

from pose2rgbd.sim.config import SimConfig
from pose2rgbd.sim.export import (
    camera_trajectory,
    export_bag,
    export_dataset,
    export_video,
    flight_plan,
    gps_track,
    make_camera,
    make_datum,
    route_start_ns,
)
from pose2rgbd.sim.flight import ROUTES, FlightPlan, Trajectory, camera_mount, plan_route
from pose2rgbd.sim.outputs import simulate
from pose2rgbd.sim.render import Renderer, look_at
from pose2rgbd.sim.world import World, make_world

__all__ = [
    "ROUTES",
    "FlightPlan",
    "Renderer",
    "SimConfig",
    "Trajectory",
    "World",
    "camera_mount",
    "camera_trajectory",
    "export_bag",
    "export_dataset",
    "export_video",
    "flight_plan",
    "gps_track",
    "look_at",
    "make_camera",
    "make_datum",
    "make_world",
    "plan_route",
    "route_start_ns",
    "simulate",
]
