"""Preview figures of the synthetic world: a contact sheet of frames (RGB + depth) and a top-view flight plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pose2rgbd.sim.config import SimConfig
from pose2rgbd.sim.export import camera_trajectory, make_camera, world_of
from pose2rgbd.sim.render import Renderer
from pose2rgbd.viz import colorize_depth


def contact_sheet(cfg: SimConfig, path: str | Path, *, columns: int = 6, tile: int = 224, colors: int = 192) -> Path:
    """Frames spread over ``cfg.routes`` (RGB row above a depth row per frame), saved as a palette PNG."""
    import cv2
    from PIL import Image

    world = world_of(cfg)
    cam = make_camera(cfg).scaled(tile, tile) if cfg.width == cfg.height else make_camera(cfg)
    r = Renderer(world, cam, shadows=cfg.shadows)
    picks: list[tuple[str, np.ndarray]] = []
    survey_n = max(columns - (len(cfg.routes) - 1), 2)
    for route in cfg.routes:
        tr = camera_trajectory(cfg, route)
        n = survey_n if route == cfg.routes[0] else 1
        for k in np.linspace(0, len(tr) - 1, n + 2)[1:-1].astype(int) if n > 1 else [len(tr) // 2]:
            picks.append((f"{route} t={(tr.stamps_ns[k] - tr.stamps_ns[0]) / 1e9:.0f}s", tr.T_world_cam[k]))
    picks = picks[:columns]
    tiles = []
    for label, T in picks:
        rgb, depth = r.render(T)
        rgb = cv2.resize(rgb, (tile, tile), interpolation=cv2.INTER_AREA)
        dc = cv2.resize(colorize_depth(depth, 5.0, 400.0), (tile, tile), interpolation=cv2.INTER_NEAREST)
        col = np.concatenate([rgb, np.full((4, tile, 3), 255, np.uint8), dc], axis=0)
        col = np.ascontiguousarray(col)
        cv2.putText(col, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(col, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(col)
        tiles.append(np.full((col.shape[0], 4, 3), 255, np.uint8))
    sheet = np.concatenate(tiles[:-1], axis=1)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def flight_paths_plot(cfg: SimConfig, path: str | Path, *, rate_hz: float = 5.0) -> Path:
    """Top view: building footprints, roads, trees and every route of ``cfg.routes`` (survey highlighted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    from pose2rgbd.sim.export import flight_plan

    world = world_of(cfg)
    h = world.half
    fig, ax = plt.subplots(figsize=(7.2, 7.2), dpi=100)
    ax.add_patch(Rectangle((-h, -h), 2 * h, 2 * h, facecolor="#ece8df", edgecolor="#999", lw=0.8, zorder=0))
    for c, w in world.road_x:
        ax.add_patch(Rectangle((c - w / 2, -h - 60), w, 2 * h + 120, facecolor="#b9b9b9", lw=0, zorder=1))
    for c, w in world.road_y:
        ax.add_patch(Rectangle((-h - 60, c - w / 2), 2 * h + 120, w, facecolor="#b9b9b9", lw=0, zorder=1))
    fps = world.footprints()
    rects = [Rectangle((f[0], f[1]), f[2] - f[0], f[3] - f[1]) for f in fps]
    hts = world.boxes[world.box_kind == 0, 5]
    pc = PatchCollection(rects, cmap="copper_r", edgecolor="#333", lw=0.3, zorder=2)
    pc.set_array(hts)
    ax.add_collection(pc)
    fig.colorbar(pc, ax=ax, fraction=0.035, pad=0.02, label="building height (m)")
    ax.scatter(world.ells[:, 0], world.ells[:, 1], s=4, c="#3a7d2c", lw=0, zorder=3)
    colors = {"survey": "#d62728", "orbit": "#1f77b4", "crossing": "#9467bd", "figure8": "#2ca02c"}
    for route in cfg.routes:
        plan = flight_plan(cfg, route)
        t = np.arange(0.0, plan.duration_s, 1.0 / rate_hz)
        p = plan.position_at(t)
        main = route == "survey"
        ax.plot(p[:, 0], p[:, 1], color=colors.get(route, "k"), lw=2.2 if main else 1.0, alpha=0.95 if main else 0.8,
                zorder=5 if main else 4, label=f"{route} ({plan.duration_s:.0f} s)")  # fmt: skip
        if main:  # heading arrows: the camera looks at the city
            k = np.arange(0, len(t), int(12 * rate_hz))
            yaw = plan.rpy_at(t[k])[:, 2]
            ax.quiver(
                p[k, 0], p[k, 1], np.cos(yaw), np.sin(yaw), color=colors["survey"], scale=28, width=0.004, zorder=6
            )
    lim = h + 60
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_title(f"synthetic city (seed {cfg.seed}) and flight routes, altitude 50-55 m")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
