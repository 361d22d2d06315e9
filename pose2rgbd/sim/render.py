"""Ray-casting renderer of a :class:`~pose2rgbd.sim.world.World`: RGB + exact metric z-depth.

One primary ray per pixel through the pixel centre (u, v) = (col, row) of a
:class:`~pose2rgbd.geometry.PinholeCamera`, REP-103 optical frame. The ray direction is
``R_world_cam @ ((u - cx) / fx, (v - cy) / fy, 1)``, unnormalised, so the hit parameter ``t`` *is* the
z-depth along the optical axis. Geometry is analytic (ground plane z = 0, axis-aligned boxes, ellipsoids), so
depth is exact up to float64 rounding: back-projecting it with ``camera.backproject`` gives points on the
surfaces. Rays that miss everything (above the horizon) get the sky colour and depth ``+inf``.

Why numba: pure NumPy over (pixels x objects) is far too slow for thousands of frames; the per-pixel work is
a 2-D DDA walk (Amanatides & Woo) through the world's uniform xy grid, testing only the objects listed in
the cells the ray crosses, which numba compiles to native code and runs over image rows in parallel. The
kernels are cached on disk (``cache=True``), so only the first import on a machine pays the compile time.
No ``fastmath``: the traversal relies on IEEE infinities.

Shading: procedural albedo (:mod:`pose2rgbd.sim.materials`: facade window grids, roofs, roads with markings,
sidewalks, grass, plazas, parking, field patchwork), leafy tree crowns, Lambert with a sun direction +
hemispheric ambient light (so faces of different orientation differ and depth edges show in RGB), hard
shadows (one shadow ray), and a little aerial haze. Textures fade to their mean colour when a pixel covers
more than about a texture period (cheap anti-aliasing, keeps window grids free of moire at distance).
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import njit, prange

from pose2rgbd.errors import GeometryError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.transforms import check_T
from pose2rgbd.sim.materials import box_albedo, fade, ground_albedo, vnoise
from pose2rgbd.sim.world import World

_EPS = 1e-7
# numba's default "workqueue" threading layer must not be entered from two Python threads at once
_KERNEL_LOCK = threading.Lock()
_jit = njit(cache=True, error_model="numpy", nogil=True)


# ---------------------------------------------------------------- ray traversal


@_jit
def _trace(ox, oy, oz, dx, dy, dz, tmax, any_hit, boxes, ells, gx0, gy0, gcell, nx, ny, cell_start, cell_items, zmax):
    """Nearest object hit in (eps, tmax): returns (t, item, nx, ny, nz); item -1 means none."""
    best = tmax
    item = -1
    hnx = 0.0
    hny = 0.0
    hnz = 0.0
    nb = boxes.shape[0]
    idx = 1.0 / dx
    idy = 1.0 / dy
    idz = 1.0 / dz
    # clip the ray to the grid's xy box and the z slab [0, zmax]
    t0 = 0.0
    t1 = tmax
    gx1 = gx0 + nx * gcell
    gy1 = gy0 + ny * gcell
    if dx != 0.0:
        ta = (gx0 - ox) * idx
        tb = (gx1 - ox) * idx
        t0 = max(t0, min(ta, tb))
        t1 = min(t1, max(ta, tb))
    elif ox < gx0 or ox > gx1:
        return best, item, hnx, hny, hnz
    if dy != 0.0:
        ta = (gy0 - oy) * idy
        tb = (gy1 - oy) * idy
        t0 = max(t0, min(ta, tb))
        t1 = min(t1, max(ta, tb))
    elif oy < gy0 or oy > gy1:
        return best, item, hnx, hny, hnz
    if dz != 0.0:
        ta = (0.0 - oz) * idz
        tb = (zmax - oz) * idz
        t0 = max(t0, min(ta, tb))
        t1 = min(t1, max(ta, tb))
    elif oz < 0.0 or oz > zmax:
        return best, item, hnx, hny, hnz
    if not t0 < t1:
        return best, item, hnx, hny, hnz
    px = ox + dx * t0
    py = oy + dy * t0
    ix = min(max(int((px - gx0) / gcell), 0), nx - 1)
    iy = min(max(int((py - gy0) / gcell), 0), ny - 1)
    inf = np.inf
    if dx > 0.0:
        sx = 1
        tnx = (gx0 + (ix + 1) * gcell - ox) * idx
        tdx = gcell * idx
    elif dx < 0.0:
        sx = -1
        tnx = (gx0 + ix * gcell - ox) * idx
        tdx = -gcell * idx
    else:
        sx = 0
        tnx = inf
        tdx = inf
    if dy > 0.0:
        sy = 1
        tny = (gy0 + (iy + 1) * gcell - oy) * idy
        tdy = gcell * idy
    elif dy < 0.0:
        sy = -1
        tny = (gy0 + iy * gcell - oy) * idy
        tdy = -gcell * idy
    else:
        sy = 0
        tny = inf
        tdy = inf
    while True:
        c = ix * ny + iy
        for k in range(cell_start[c], cell_start[c + 1]):
            it = cell_items[k]
            if it < nb:
                # slab test against an axis-aligned box
                ax0 = (boxes[it, 0] - ox) * idx
                ax1 = (boxes[it, 3] - ox) * idx
                ay0 = (boxes[it, 1] - oy) * idy
                ay1 = (boxes[it, 4] - oy) * idy
                az0 = (boxes[it, 2] - oz) * idz
                az1 = (boxes[it, 5] - oz) * idz
                txn = min(ax0, ax1)
                txf = max(ax0, ax1)
                tyn = min(ay0, ay1)
                tyf = max(ay0, ay1)
                tzn = min(az0, az1)
                tzf = max(az0, az1)
                tn = max(txn, max(tyn, tzn))
                tf = min(txf, min(tyf, tzf))
                if tn <= tf and tn > _EPS and tn < best:
                    best = tn
                    item = it
                    if tn == txn:
                        hnx = -1.0 if dx > 0.0 else 1.0
                        hny = 0.0
                        hnz = 0.0
                    elif tn == tyn:
                        hnx = 0.0
                        hny = -1.0 if dy > 0.0 else 1.0
                        hnz = 0.0
                    else:
                        hnx = 0.0
                        hny = 0.0
                        hnz = -1.0 if dz > 0.0 else 1.0
                    if any_hit:
                        return best, item, hnx, hny, hnz
            else:
                e = it - nb
                rx = ells[e, 3]
                ry = ells[e, 4]
                rz = ells[e, 5]
                qx = (ox - ells[e, 0]) / rx
                qy = (oy - ells[e, 1]) / ry
                qz = (oz - ells[e, 2]) / rz
                vx = dx / rx
                vy = dy / ry
                vz = dz / rz
                a = vx * vx + vy * vy + vz * vz
                b = qx * vx + qy * vy + qz * vz
                cc = qx * qx + qy * qy + qz * qz - 1.0
                disc = b * b - a * cc
                if disc >= 0.0:
                    th = (-b - math.sqrt(disc)) / a
                    if th > _EPS and th < best:
                        best = th
                        item = it
                        gx = (qx + vx * th) / rx
                        gy = (qy + vy * th) / ry
                        gz = (qz + vz * th) / rz
                        gn = math.sqrt(gx * gx + gy * gy + gz * gz)
                        hnx = gx / gn
                        hny = gy / gn
                        hnz = gz / gn
                        if any_hit:
                            return best, item, hnx, hny, hnz
        texit = min(tnx, tny)
        if best <= texit or texit >= t1:
            break
        if tnx < tny:
            ix += sx
            if ix < 0 or ix >= nx:
                break
            tnx += tdx
        else:
            iy += sy
            if iy < 0 or iy >= ny:
                break
            tny += tdy
    return best, item, hnx, hny, hnz


# ---------------------------------------------------------------- frame kernel


@njit(parallel=True, cache=True, error_model="numpy", nogil=True)
def _render_kernel(
    R,
    c,
    fx,
    fy,
    cx,
    cy,
    boxes,
    box_color,
    box_roof,
    box_kind,
    box_param,
    ells,
    ell_color,
    road_x,
    road_y,
    block_kind,
    half,
    seed,
    gx0,
    gy0,
    gcell,
    nx,
    ny,
    cell_start,
    cell_items,
    zmax,
    sun,
    shadows,
    rgb_out,
    depth_out,
):
    H = rgb_out.shape[0]
    W = rgb_out.shape[1]
    nb = boxes.shape[0]
    ox = c[0]
    oy = c[1]
    oz = c[2]
    inv_f = 1.0 / math.sqrt(fx * fy)
    for v in prange(H):
        yc = (v - cy) / fy
        for u in range(W):
            xc = (u - cx) / fx
            dx = R[0, 0] * xc + R[0, 1] * yc + R[0, 2]
            dy = R[1, 0] * xc + R[1, 1] * yc + R[1, 2]
            dz = R[2, 0] * xc + R[2, 1] * yc + R[2, 2]
            dn = math.sqrt(dx * dx + dy * dy + dz * dz)
            tg = np.inf
            if dz < 0.0 and oz > 0.0:
                tg = -oz / dz
            t, it, hx, hy, hz = _trace(
                ox, oy, oz, dx, dy, dz, tg, False, boxes, ells, gx0, gy0, gcell, nx, ny, cell_start, cell_items, zmax
            )
            if t == np.inf:
                # sky: gradient from a hazy horizon to a deeper zenith
                el = max(dz / dn, 0.0)
                s = math.sqrt(el)
                rgb_out[v, u, 0] = np.uint8(255.0 * (0.80 + (0.36 - 0.80) * s))
                rgb_out[v, u, 1] = np.uint8(255.0 * (0.86 + (0.55 - 0.86) * s))
                rgb_out[v, u, 2] = np.uint8(255.0 * (0.93 + (0.86 - 0.93) * s))
                depth_out[v, u] = np.inf
                continue
            depth_out[v, u] = t
            px = ox + dx * t
            py = oy + dy * t
            pz = oz + dz * t
            if it < 0:
                hx = 0.0
                hy = 0.0
                hz = 1.0
                pz = 0.0
            cosi = abs(hx * dx + hy * dy + hz * dz) / dn
            fp = t * inv_f * dn / max(cosi, 0.12)  # metres covered by this pixel on the surface
            if it < 0:
                ar, ag, ab = ground_albedo(px, py, fp, road_x, road_y, block_kind, half, seed)
            elif it < nb:
                ar, ag, ab = box_albedo(it, px, py, pz, hx, hy, hz, fp, boxes, box_color, box_roof, box_kind, box_param)
            else:
                e = it - nb
                n = vnoise(px * 1.4 + pz * 0.9, py * 1.4 - pz * 0.7, seed + e)
                wn = fade(fp, 0.7)
                m = 0.7 + 0.55 * ((1.0 - wn) * n + wn * 0.5)
                ar = ell_color[e, 0] * m
                ag = ell_color[e, 1] * m
                ab = ell_color[e, 2] * m
            ndl = hx * sun[0] + hy * sun[1] + hz * sun[2]
            light = 0.0
            if ndl > 0.0:
                light = ndl
                if shadows:
                    _ts, its, _a, _b, _c = _trace(
                        px + hx * 1e-3,
                        py + hy * 1e-3,
                        pz + hz * 1e-3,
                        sun[0],
                        sun[1],
                        sun[2],
                        np.inf,
                        True,
                        boxes,
                        ells,
                        gx0,
                        gy0,
                        gcell,
                        nx,
                        ny,
                        cell_start,
                        cell_items,
                        zmax,
                    )
                    if its >= 0:
                        light = 0.0
            amb = 0.34 + 0.14 * hz
            kr = amb * 0.95 + 0.80 * light * 1.05
            kg = amb * 1.00 + 0.80 * light * 1.00
            kb = amb * 1.10 + 0.80 * light * 0.90
            dist = t * dn
            f = 1.0 - math.exp(-dist / 2200.0)
            r = ar * kr * (1.0 - f) + 0.80 * f
            g = ag * kg * (1.0 - f) + 0.86 * f
            b = ab * kb * (1.0 - f) + 0.93 * f
            rgb_out[v, u, 0] = np.uint8(min(max(r, 0.0), 1.0) * 255.0 + 0.5)
            rgb_out[v, u, 1] = np.uint8(min(max(g, 0.0), 1.0) * 255.0 + 0.5)
            rgb_out[v, u, 2] = np.uint8(min(max(b, 0.0), 1.0) * 255.0 + 0.5)


class Renderer:
    """Render RGB + metric z-depth of ``world`` seen by ``camera`` (REP-103 optical frame).

    ``render(T_world_cam)`` -> ``(rgb uint8 (H, W, 3), depth float32 (H, W))``; depth is z along the optical
    axis in metres, ``+inf`` for sky. ``render_batch`` does ``(N, 4, 4)`` poses. Deterministic: the same
    inputs give byte-identical outputs (each pixel is computed independently of the thread schedule).
    """

    def __init__(self, world: World, camera: PinholeCamera, *, shadows: bool = True) -> None:
        self.world = world
        self.camera = camera
        self.shadows = bool(shadows)

    def render(self, T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        T = check_T(np.asarray(T_world_cam, dtype=np.float64))
        if T.shape != (4, 4):
            raise GeometryError(f"render: expected one (4, 4) pose, got {T.shape}")
        if T[2, 3] <= 0.0:
            raise GeometryError(f"render: camera must be above the ground (z = {T[2, 3]:.3f} m)")
        cam = self.camera
        rgb = np.empty((cam.height, cam.width, 3), dtype=np.uint8)
        depth = np.empty((cam.height, cam.width), dtype=np.float32)
        with _KERNEL_LOCK:
            self._run(T, rgb, depth)
        return rgb, depth

    def _run(self, T: np.ndarray, rgb: np.ndarray, depth: np.ndarray) -> None:
        cam = self.camera
        w = self.world
        _render_kernel(
            np.ascontiguousarray(T[:3, :3]),
            np.ascontiguousarray(T[:3, 3]),
            float(cam.fx),
            float(cam.fy),
            float(cam.cx),
            float(cam.cy),
            w.boxes,
            w.box_color,
            w.box_roof,
            w.box_kind,
            w.box_param,
            w.ells,
            w.ell_color,
            w.road_x,
            w.road_y,
            w.block_kind,
            float(w.half),
            int(w.seed % 100003),
            float(w.grid_origin[0]),
            float(w.grid_origin[1]),
            float(w.grid_cell),
            int(w.grid_shape[0]),
            int(w.grid_shape[1]),
            w.cell_start,
            w.cell_items,
            float(w.zmax),
            np.ascontiguousarray(w.sun_dir, dtype=np.float64),
            self.shadows,
            rgb,
            depth,
        )

    def render_batch(self, T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 4, 4)`` poses -> ``(N, H, W, 3)`` uint8 and ``(N, H, W)`` float32."""
        T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
        cam = self.camera
        rgb = np.empty((len(T), cam.height, cam.width, 3), dtype=np.uint8)
        depth = np.empty((len(T), cam.height, cam.width), dtype=np.float32)
        for i in range(len(T)):
            rgb[i], depth[i] = self.render(T[i])
        return rgb, depth

    def warmup(self) -> None:
        """Compile (or load from the on-disk cache) the kernels with a tiny frame."""
        small = PinholeCamera.from_fov(4, 4, 60.0)
        Renderer(self.world, small, shadows=self.shadows).render(_look_at([0.0, -100.0, 50.0], [0.0, 0.0, 0.0]))


def _look_at(eye: list[float] | np.ndarray, target: list[float] | np.ndarray) -> np.ndarray:
    """``T_world_cam`` of an optical camera at ``eye`` looking at ``target`` (world z up; image y down)."""
    e = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - e
    z /= np.linalg.norm(z)
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.999 else np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, e
    return T


look_at = _look_at
