"""A seeded procedural city: the synthetic UAV world (ENU metres, origin at the city centre, ground z = 0).

:func:`make_world` lays out, deterministically for a seed:

* a road grid (jittered block sizes, a ring road on the city border, roads continue into the fields),
* city blocks of four kinds: built (lots with buildings), park (grass + trees), plaza (paving + trees)
  and parking (asphalt with stall lines + parked cars),
* buildings as unions of axis-aligned boxes (plain blocks, podium + tower, L-shapes) with rooftop units,
  per-building facade colour and window grid parameters; taller towards the centre,
* trees (box trunk + ellipsoid crown) in parks, plazas, along streets and in the fields,
* an infinite ground plane: city ground inside ``|x|, |y| <= size/2``, a patchwork of fields outside.

Everything the renderer needs is a flat NumPy array (so the numba kernels in
:mod:`pose2rgbd.sim.render` can take them), plus a uniform 2-D grid over the xy footprint that lists the
objects overlapping each cell (CSR layout: ``cell_start``, ``cell_items``) for fast ray traversal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pose2rgbd.errors import ConfigError

# Block kinds (ground texture inside a block).
BLOCK_BUILT, BLOCK_PARK, BLOCK_PLAZA, BLOCK_PARKING = 0, 1, 2, 3
# Box kinds (surface texture).
BOX_BUILDING, BOX_PLAIN, BOX_TRUNK, BOX_CAR = 0, 1, 2, 3

_FACADE_PALETTE = np.array(
    [
        [0.80, 0.74, 0.62],  # beige
        [0.86, 0.83, 0.76],  # cream
        [0.70, 0.42, 0.32],  # terracotta / brick
        [0.62, 0.62, 0.64],  # concrete grey
        [0.58, 0.66, 0.74],  # pale blue glass-and-steel
        [0.90, 0.90, 0.88],  # white render
        [0.55, 0.35, 0.28],  # dark brick
        [0.78, 0.70, 0.50],  # sandstone
        [0.66, 0.72, 0.66],  # sage
    ]
)
_ROOF_PALETTE = np.array([[0.42, 0.42, 0.43], [0.55, 0.55, 0.53], [0.33, 0.33, 0.35], [0.62, 0.58, 0.52]])
_CAR_PALETTE = np.array(
    [[0.85, 0.85, 0.87], [0.12, 0.12, 0.14], [0.60, 0.10, 0.10], [0.15, 0.25, 0.55], [0.50, 0.52, 0.55]]
)


@dataclass
class World:
    """Geometry + material tables of a generated city (see module docstring). All arrays float64 / int32."""

    seed: int
    size_m: float
    boxes: np.ndarray  # (Nb, 6) xmin, ymin, zmin, xmax, ymax, zmax
    box_color: np.ndarray  # (Nb, 3) wall albedo
    box_roof: np.ndarray  # (Nb, 3) top-face albedo
    box_kind: np.ndarray  # (Nb,) int32 BOX_*
    box_param: np.ndarray  # (Nb, 4) floor height, window spacing, window width fraction, per-object seed
    ells: np.ndarray  # (Ne, 6) centre xyz, radii xyz (tree crowns)
    ell_color: np.ndarray  # (Ne, 3)
    road_x: np.ndarray  # (Rx, 2) x centre, width of north-south roads
    road_y: np.ndarray  # (Ry, 2) y centre, width of east-west roads
    block_kind: np.ndarray  # (Rx-1, Ry-1) int32 BLOCK_* of the block between consecutive roads
    grid_origin: np.ndarray  # (2,) xy of the grid corner
    grid_cell: float
    grid_shape: tuple[int, int]  # (nx, ny)
    cell_start: np.ndarray  # (nx*ny + 1,) int32, cell c = ix * ny + iy
    cell_items: np.ndarray  # (K,) int32, item < Nb: box, else ellipsoid item - Nb
    zmax: float
    sun_dir: np.ndarray = field(default_factory=lambda: _unit([0.45, -0.55, 0.70]))  # towards the sun

    @property
    def half(self) -> float:
        return self.size_m / 2.0

    @property
    def n_buildings(self) -> int:
        return int(np.sum(self.box_kind == BOX_BUILDING))

    def footprints(self) -> np.ndarray:
        """``(N, 4)`` xmin, ymin, xmax, ymax of building boxes (for plots)."""
        b = self.boxes[self.box_kind == BOX_BUILDING]
        return b[:, [0, 1, 3, 4]].copy()

    def height_at(self, x: float, y: float) -> float:
        """Top of the tallest object over (x, y) (0 on open ground); used to keep flights clear."""
        b = self.boxes
        m = (b[:, 0] <= x) & (x <= b[:, 3]) & (b[:, 1] <= y) & (y <= b[:, 4])
        h = float(b[m, 5].max()) if m.any() else 0.0
        e = self.ells
        if len(e):
            me = ((x - e[:, 0]) / e[:, 3]) ** 2 + ((y - e[:, 1]) / e[:, 4]) ** 2 <= 1.0
            if me.any():
                h = max(h, float((e[me, 2] + e[me, 5]).max()))
        return h


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


class _Builder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.boxes: list[list[float]] = []
        self.color: list[np.ndarray] = []
        self.roof: list[np.ndarray] = []
        self.kind: list[int] = []
        self.param: list[list[float]] = []
        self.ells: list[list[float]] = []
        self.ell_color: list[np.ndarray] = []

    def box(
        self,
        lo: tuple[float, float, float],
        hi: tuple[float, float, float],
        color: np.ndarray,
        roof: np.ndarray,
        kind: int,
        param: tuple[float, float, float] = (3.2, 3.0, 0.55),
    ) -> None:
        self.boxes.append([lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]])
        self.color.append(np.clip(color, 0, 1))
        self.roof.append(np.clip(roof, 0, 1))
        self.kind.append(kind)
        self.param.append([*param, float(self.rng.integers(0, 2**20))])

    def tree(self, x: float, y: float, scale: float = 1.0) -> None:
        rng = self.rng
        r = float(rng.uniform(2.2, 4.2)) * scale
        rz = r * float(rng.uniform(0.9, 1.35))
        trunk_h = float(rng.uniform(1.8, 3.5)) * scale
        bark = np.array([0.36, 0.27, 0.18]) * rng.uniform(0.8, 1.1)
        self.box((x - 0.25, y - 0.25, 0.0), (x + 0.25, y + 0.25, trunk_h + rz * 0.5), bark, bark, BOX_TRUNK)
        green = np.array([0.22, 0.42, 0.16]) * rng.uniform(0.75, 1.2) + rng.normal(0, 0.03, 3)
        self.ells.append([x, y, trunk_h + rz, r, r * float(rng.uniform(0.85, 1.15)), rz])
        self.ell_color.append(np.clip(green, 0.05, 0.9))

    def car(self, x: float, y: float, along_x: bool) -> None:
        rng = self.rng
        lx, ly = (4.4, 1.8) if along_x else (1.8, 4.4)
        c = _CAR_PALETTE[rng.integers(len(_CAR_PALETTE))] * rng.uniform(0.9, 1.05)
        self.box((x - lx / 2, y - ly / 2, 0.0), (x + lx / 2, y + ly / 2, 1.45), c, c * 0.9, BOX_CAR)


def _road_lines(rng: np.random.Generator, half: float) -> np.ndarray:
    """Road centre lines from -half to +half with jittered block sizes; (R, 2) centre, width."""
    span = 2 * half
    n_blocks = max(2, round(span / 56.0))
    gaps = rng.uniform(0.75, 1.25, n_blocks)
    pos = -half + np.concatenate([[0.0], np.cumsum(gaps) / gaps.sum() * span])
    width = np.full(len(pos), 10.0)
    width[0] = width[-1] = 12.0
    width[len(pos) // 2] = 14.0  # a main avenue through the middle
    return np.stack([pos, width], axis=1)


def _split(rng: np.random.Generator, a: float, b: float, target: float) -> np.ndarray:
    n = max(1, round((b - a) / target))
    w = rng.uniform(0.7, 1.3, n)
    return a + np.concatenate([[0.0], np.cumsum(w) / w.sum()]) * (b - a)


def _building(bld: _Builder, x0: float, y0: float, x1: float, y1: float, r_centre: float) -> None:
    rng = bld.rng
    floor_h = float(rng.uniform(3.0, 3.6))
    base = 9.0 + 24.0 * np.exp(-((r_centre / 105.0) ** 2))
    h = float(np.clip(base * rng.lognormal(0.0, 0.35), 6.0, 40.0))
    h = max(2, round(h / floor_h)) * floor_h
    color = _FACADE_PALETTE[rng.integers(len(_FACADE_PALETTE))] * rng.uniform(0.88, 1.08) + rng.normal(0, 0.02, 3)
    roof = _ROOF_PALETTE[rng.integers(len(_ROOF_PALETTE))] * rng.uniform(0.9, 1.1)
    param = (floor_h, float(rng.uniform(2.4, 4.0)), float(rng.uniform(0.4, 0.7)))
    shape = rng.choice(3, p=[0.5, 0.25, 0.25]) if min(x1 - x0, y1 - y0) > 14 else 0
    tops: list[tuple[float, float, float, float, float]] = []
    if shape == 0:  # plain block
        bld.box((x0, y0, 0.0), (x1, y1, h), color, roof, BOX_BUILDING, param)
        tops.append((x0, y0, x1, y1, h))
    elif shape == 1:  # podium + tower
        hp = floor_h * int(rng.integers(2, 4))
        h = max(h, hp + 3 * floor_h)
        bld.box((x0, y0, 0.0), (x1, y1, hp), color * 0.95, roof, BOX_BUILDING, param)
        fx, fy = rng.uniform(0.45, 0.75, 2)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        tx, ty = (x1 - x0) * fx / 2, (y1 - y0) * fy / 2
        c2 = _FACADE_PALETTE[rng.integers(len(_FACADE_PALETTE))] * rng.uniform(0.9, 1.05)
        bld.box((cx - tx, cy - ty, 0.0), (cx + tx, cy + ty, h), c2, roof, BOX_BUILDING, param)
        tops.append((cx - tx, cy - ty, cx + tx, cy + ty, h))
    else:  # L-shape: two wings of different heights
        fx, fy = rng.uniform(0.35, 0.6, 2)
        xm, ym = x0 + (x1 - x0) * fx, y0 + (y1 - y0) * fy
        h2 = max(2 * floor_h, round(h * rng.uniform(0.5, 0.9) / floor_h) * floor_h)
        bld.box((x0, y0, 0.0), (xm, y1, h), color, roof, BOX_BUILDING, param)
        bld.box((xm, y0, 0.0), (x1, ym, h2), color, roof, BOX_BUILDING, param)
        tops += [(x0, y0, xm, y1, h), (xm, y0, x1, ym, h2)]
    for tx0, ty0, tx1, ty1, th in tops:  # rooftop units (HVAC, stair houses)
        for _ in range(int(rng.integers(0, 3))):
            sx, sy = rng.uniform(1.5, 4.0, 2)
            if tx1 - tx0 < sx + 2 or ty1 - ty0 < sy + 2:
                continue
            ux = rng.uniform(tx0 + 1, tx1 - 1 - sx)
            uy = rng.uniform(ty0 + 1, ty1 - 1 - sy)
            g = np.full(3, rng.uniform(0.55, 0.8))
            bld.box((ux, uy, th), (ux + sx, uy + sy, th + rng.uniform(1.2, 3.0)), g, g * 1.05, BOX_PLAIN)


def make_world(seed: int = 0, size_m: float = 300.0, *, grid_cell_m: float = 6.0, margin_m: float = 70.0) -> World:
    """Generate the city for ``seed`` over ``size_m x size_m`` metres (deterministic: same seed, same world).

    ``margin_m`` of fields around the city also carry a few trees and farm sheds (inside the ray grid).
    """
    if not (40.0 <= size_m <= 5000.0):
        raise ConfigError(f"world size_m must be within [40, 5000] m, got {size_m}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    half = size_m / 2.0
    road_x = _road_lines(rng, half)
    road_y = _road_lines(rng, half)
    nbx, nby = len(road_x) - 1, len(road_y) - 1
    kinds = rng.choice(4, size=(nbx, nby), p=[0.74, 0.13, 0.06, 0.07]).astype(np.int32)
    if not (kinds == BLOCK_PARK).any():
        kinds[rng.integers(nbx), rng.integers(nby)] = BLOCK_PARK
    if kinds.size > 2 and (kinds == BLOCK_BUILT).sum() < kinds.size // 2:
        kinds[kinds == BLOCK_PLAZA] = BLOCK_BUILT
    bld = _Builder(rng)
    sidewalk = 3.0
    for i in range(nbx):
        for j in range(nby):
            x0 = road_x[i, 0] + road_x[i, 1] / 2 + sidewalk
            x1 = road_x[i + 1, 0] - road_x[i + 1, 1] / 2 - sidewalk
            y0 = road_y[j, 0] + road_y[j, 1] / 2 + sidewalk
            y1 = road_y[j + 1, 0] - road_y[j + 1, 1] / 2 - sidewalk
            k = kinds[i, j]
            if k == BLOCK_BUILT:
                xs = _split(rng, x0, x1, rng.uniform(18, 32))
                ys = _split(rng, y0, y1, rng.uniform(18, 32))
                for a in range(len(xs) - 1):
                    for b in range(len(ys) - 1):
                        if rng.random() < 0.08:  # an empty lot with a tree or two
                            bld.tree(float(rng.uniform(xs[a] + 3, xs[a + 1] - 3)), float((ys[b] + ys[b + 1]) / 2))
                            continue
                        sb = rng.uniform(1.0, 3.5, 4)
                        lx0, lx1 = xs[a] + sb[0], xs[a + 1] - sb[1]
                        ly0, ly1 = ys[b] + sb[2], ys[b + 1] - sb[3]
                        if lx1 - lx0 < 6 or ly1 - ly0 < 6:
                            continue
                        rc = float(np.hypot((lx0 + lx1) / 2, (ly0 + ly1) / 2))
                        _building(bld, lx0, ly0, lx1, ly1, rc)
            elif k == BLOCK_PARK:
                n = int((x1 - x0) * (y1 - y0) / 110.0)
                for _ in range(n):
                    bld.tree(float(rng.uniform(x0 + 3, x1 - 3)), float(rng.uniform(y0 + 3, y1 - 3)), 1.1)
            elif k == BLOCK_PLAZA:
                step = 9.0
                for x in np.arange(x0 + 4, x1 - 3, step):
                    bld.tree(float(x), y0 + 4, 0.8)
                    bld.tree(float(x), y1 - 4, 0.8)
                for y in np.arange(y0 + 4 + step, y1 - 3 - step, step):
                    bld.tree(x0 + 4, float(y), 0.8)
                    bld.tree(x1 - 4, float(y), 0.8)
                # a monument / pavilion in the middle
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                g = np.array([0.75, 0.72, 0.66])
                bld.box((cx - 4, cy - 4, 0.0), (cx + 4, cy + 4, 6.0), g, g * 0.9, BOX_PLAIN)
            else:  # parking: rows of cars along x
                for y in np.arange(y0 + 4, y1 - 3, 7.0):
                    for x in np.arange(x0 + 2, x1 - 2, 2.6):
                        if rng.random() < 0.55:
                            bld.car(float(x + 0.2), float(y), along_x=False)
    # street trees along some roads, on the sidewalk
    for axis, roads, cross in ((0, road_x, road_y), (1, road_y, road_x)):
        for c, w in roads[1:-1]:
            if rng.random() < 0.5:
                continue
            for side in (-1, 1):
                off = c + side * (w / 2 + 1.6)
                for s in np.arange(-half + 8, half - 8, rng.uniform(9, 13)):
                    if np.min(np.abs(cross[:, 0] - s) - cross[:, 1] / 2) < 4:
                        continue
                    xy = (off, s) if axis == 0 else (s, off)
                    bld.tree(float(xy[0]), float(xy[1]), 0.75)
    # cars on the roads
    for axis, roads in ((0, road_x), (1, road_y)):
        for c, w in roads:
            for s in rng.uniform(-half, half, int(size_m / 40)):
                lane = c + rng.choice([-1, 1]) * w / 4
                x, y = (lane, s) if axis == 0 else (s, lane)
                bld.car(float(x), float(y), along_x=(axis == 1))
    # fields just outside: tree clusters and farm sheds
    for _ in range(int(size_m / 15)):
        ang = rng.uniform(0, 2 * np.pi)
        rr = half + rng.uniform(12, margin_m - 8)
        x, y = float(np.clip(rr * np.cos(ang), -rr, rr)), float(np.clip(rr * np.sin(ang), -rr, rr))
        if abs(x) < half + 8 and abs(y) < half + 8:
            continue
        if rng.random() < 0.25:
            sx, sy = rng.uniform(6, 14, 2)
            c = np.array([0.62, 0.30, 0.22]) * rng.uniform(0.85, 1.1)
            bld.box((x, y, 0.0), (x + sx, y + sy, rng.uniform(3.5, 6.0)), c, c * 0.6, BOX_PLAIN)
        else:
            for _ in range(int(rng.integers(2, 7))):
                bld.tree(float(x + rng.normal(0, 4)), float(y + rng.normal(0, 4)), 1.15)

    boxes = np.asarray(bld.boxes, dtype=np.float64).reshape(-1, 6)
    ells = np.asarray(bld.ells, dtype=np.float64).reshape(-1, 6)
    gmin = -half - margin_m
    n = int(np.ceil((2 * (half + margin_m)) / grid_cell_m))
    cell_start, cell_items = _build_grid(boxes, ells, gmin, grid_cell_m, n)
    zmax = float(max(boxes[:, 5].max() if len(boxes) else 0.0, (ells[:, 2] + ells[:, 5]).max() if len(ells) else 0.0))
    return World(
        seed=int(seed),
        size_m=float(size_m),
        boxes=boxes,
        box_color=np.asarray(bld.color, dtype=np.float64).reshape(-1, 3),
        box_roof=np.asarray(bld.roof, dtype=np.float64).reshape(-1, 3),
        box_kind=np.asarray(bld.kind, dtype=np.int32),
        box_param=np.asarray(bld.param, dtype=np.float64).reshape(-1, 4),
        ells=ells,
        ell_color=np.asarray(bld.ell_color, dtype=np.float64).reshape(-1, 3),
        road_x=road_x,
        road_y=road_y,
        block_kind=kinds,
        grid_origin=np.array([gmin, gmin]),
        grid_cell=float(grid_cell_m),
        grid_shape=(n, n),
        cell_start=cell_start,
        cell_items=cell_items,
        zmax=zmax + 0.01,
    )


def _build_grid(boxes: np.ndarray, ells: np.ndarray, gmin: float, cell: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists of the objects whose xy bounding box overlaps each grid cell (cell id = ix * n + iy)."""
    lo = np.concatenate([boxes[:, 0:2], ells[:, 0:2] - ells[:, 3:5]])
    hi = np.concatenate([boxes[:, 3:5], ells[:, 0:2] + ells[:, 3:5]])
    i0 = np.clip(np.floor((lo - gmin) / cell).astype(np.int64), 0, n - 1)
    i1 = np.clip(np.floor((hi - gmin) / cell).astype(np.int64), 0, n - 1)
    cells: list[np.ndarray] = []
    items: list[np.ndarray] = []
    for k in range(len(lo)):
        ix, iy = np.meshgrid(np.arange(i0[k, 0], i1[k, 0] + 1), np.arange(i0[k, 1], i1[k, 1] + 1), indexing="ij")
        c = (ix * n + iy).ravel()
        cells.append(c)
        items.append(np.full(c.size, k))
    if cells:
        c_all = np.concatenate(cells)
        it_all = np.concatenate(items)
    else:
        c_all = np.zeros(0, np.int64)
        it_all = np.zeros(0, np.int64)
    order = np.lexsort((it_all, c_all))
    counts = np.bincount(c_all, minlength=n * n)
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return start, it_all[order].astype(np.int32)
