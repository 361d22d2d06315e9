"""Procedural surface colours (albedo) of the synthetic world, called per pixel by :mod:`pose2rgbd.sim.render`.

Noise helpers (hashed value noise, fractal noise, periodic bands) and the materials built on them: the
ground (roads with markings, sidewalks, grass, plazas, parking, field patchwork outside the city) and boxes
(facade window grids, roofs with parapets, cars, plain boxes and tree trunks). Every function takes the pixel
footprint ``fp`` (metres covered by the pixel on the surface) and fades textures to their mean colour when a
pixel covers more than about a texture period (cheap anti-aliasing, keeps window grids free of moire at
distance). numba-compiled like the renderer's kernels (``cache=True``, no ``fastmath``).
"""

from __future__ import annotations

import math

from numba import njit

_jit = njit(cache=True, error_model="numpy", nogil=True)


# ---------------------------------------------------------------- noise helpers


@_jit
def _hash2(ix: int, iy: int, seed: int) -> float:
    h = (ix * 374761393 + iy * 668265263 + seed * 982451653 + 1013904223) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return h / 4294967296.0


@_jit
def vnoise(x: float, y: float, seed: int) -> float:
    """Smooth value noise in [0, 1)."""
    fx = math.floor(x)
    fy = math.floor(y)
    ix = int(fx)
    iy = int(fy)
    tx = x - fx
    ty = y - fy
    tx = tx * tx * (3.0 - 2.0 * tx)
    ty = ty * ty * (3.0 - 2.0 * ty)
    a = _hash2(ix, iy, seed)
    b = _hash2(ix + 1, iy, seed)
    c = _hash2(ix, iy + 1, seed)
    d = _hash2(ix + 1, iy + 1, seed)
    return (a + (b - a) * tx) + ((c + (d - c) * tx) - (a + (b - a) * tx)) * ty


@_jit
def _fbm(x: float, y: float, seed: int, fp: float) -> float:
    """Three octaves of value noise; octaves finer than the pixel footprint ``fp`` fade to their mean."""
    s = 0.0
    amp = 0.5
    freq = 1.0
    for o in range(3):
        w = fade(fp * freq, 1.0)
        s += amp * ((1.0 - w) * vnoise(x * freq, y * freq, seed + o) + w * 0.5)
        amp *= 0.5
        freq *= 2.0
    return s / 0.875


@_jit
def fade(footprint: float, period: float) -> float:
    """0 where a texture of ``period`` is well resolved, 1 where a pixel covers about a period or more."""
    r = (footprint / period - 0.2) / 0.5
    if r < 0.0:
        return 0.0
    if r > 1.0:
        return 1.0
    return r


@_jit
def _band(x: float, period: float, width: float, fp: float) -> float:
    """Coverage in [0, 1] of a periodic line of ``width`` (footprint-filtered)."""
    f = x / period
    f -= math.floor(f)
    on = 1.0 if f * period < width else 0.0
    w = fade(fp, max(width, 0.05) * 2.0)
    return (1.0 - w) * on + w * (width / period)


# ---------------------------------------------------------------- materials


@_jit
def ground_albedo(x, y, fp, road_x, road_y, block_kind, half, seed):
    n_large = _fbm(x * 0.05, y * 0.05, seed + 11, fp * 0.05)
    n_fine = vnoise(x * 1.7, y * 1.7, seed + 17)
    wf = fade(fp, 0.6)
    n_fine = (1.0 - wf) * n_fine + wf * 0.5
    on_x = -1  # index of the north-south road under the point
    on_y = -1
    near_road = False
    for i in range(road_x.shape[0]):
        d = abs(x - road_x[i, 0])
        if d < road_x[i, 1] * 0.5:
            on_x = i
        elif d < road_x[i, 1] * 0.5 + 3.0:
            near_road = True
    for j in range(road_y.shape[0]):
        d = abs(y - road_y[j, 0])
        if d < road_y[j, 1] * 0.5:
            on_y = j
        elif d < road_y[j, 1] * 0.5 + 3.0:
            near_road = True
    inside = abs(x) <= half and abs(y) <= half
    if on_x >= 0 or on_y >= 0:
        g = 0.25 + 0.05 * n_large + 0.04 * n_fine
        r = g
        gg = g
        b = g * 1.06
        if inside or (on_x >= 0 and abs(y) > half) or (on_y >= 0 and abs(x) > half):
            m = 0.0  # white markings
            yel = 0.0
            if on_x >= 0 and on_y < 0:
                dc = x - road_x[on_x, 0]
                hw = road_x[on_x, 1] * 0.5
                m = max(m, _band(abs(dc) - (hw - 0.7), 1e9, 0.15, fp) if abs(dc) > hw - 0.7 else 0.0)
                if abs(dc) < 0.12:
                    yel = _band(y, 6.0, 3.0, fp)
                # zebra crossing next to intersections
                for j in range(road_y.shape[0]):
                    e = abs(y - road_y[j, 0]) - road_y[j, 1] * 0.5
                    if 0.6 < e < 3.6 and abs(x) < half:
                        m = max(m, _band(dc + 50.0, 1.0, 0.5, fp))
            elif on_y >= 0 and on_x < 0:
                dc = y - road_y[on_y, 0]
                hw = road_y[on_y, 1] * 0.5
                m = max(m, _band(abs(dc) - (hw - 0.7), 1e9, 0.15, fp) if abs(dc) > hw - 0.7 else 0.0)
                if abs(dc) < 0.12:
                    yel = _band(x, 6.0, 3.0, fp)
                for i in range(road_x.shape[0]):
                    e = abs(x - road_x[i, 0]) - road_x[i, 1] * 0.5
                    if 0.6 < e < 3.6 and abs(y) < half:
                        m = max(m, _band(dc + 50.0, 1.0, 0.5, fp))
            r = r * (1 - m - yel) + 0.85 * m + 0.85 * yel
            gg = gg * (1 - m - yel) + 0.85 * m + 0.72 * yel
            b = b * (1 - m - yel) + 0.82 * m + 0.30 * yel
        return r, gg, b
    if inside:
        if near_road:  # sidewalk with paving joints
            jn = max(_band(x, 1.5, 0.06, fp), _band(y, 1.5, 0.06, fp))
            g = (0.64 + 0.06 * n_fine) * (1.0 - 0.35 * jn)
            return g, g * 0.98, g * 0.93
        bi = 0
        for i in range(road_x.shape[0] - 1):
            if x >= road_x[i, 0]:
                bi = i
        bj = 0
        for j in range(road_y.shape[0] - 1):
            if y >= road_y[j, 0]:
                bj = j
        k = block_kind[bi, bj]
        if k == 1:  # park: grass with gravel paths
            p1 = abs((x - road_x[bi, 0]) - (y - road_y[bj, 0]) * 0.8)
            if p1 < 1.3:
                return 0.62 + 0.05 * n_fine, 0.57 + 0.05 * n_fine, 0.47
            g = 0.75 + 0.45 * n_large + 0.12 * n_fine
            return 0.20 * g, 0.40 * g, 0.13 * g
        if k == 2:  # plaza: large stone tiles
            cx = math.floor(x / 2.0)
            cy = math.floor(y / 2.0)
            chk = 0.04 if (int(cx) + int(cy)) % 2 == 0 else -0.03
            wchk = fade(fp, 2.0)
            g = 0.70 + chk * (1.0 - wchk) + 0.05 * n_fine
            return g, g * 0.95, g * 0.86
        if k == 3:  # parking: asphalt with stall lines
            g = 0.30 + 0.04 * n_large + 0.03 * n_fine
            s = _band(x + 1.1, 2.6, 0.12, fp)
            return g + 0.5 * s, g + 0.5 * s, g * 1.05 + 0.45 * s
        # built block ground: concrete yards with patches of lawn
        if n_large > 0.58:
            g = 0.8 + 0.3 * n_fine
            return 0.25 * g, 0.42 * g, 0.16 * g
        g = 0.52 + 0.05 * n_large + 0.04 * n_fine
        return g, g * 0.98, g * 0.94
    # fields outside the city: patchwork with crop rows and hedges
    sx = 47.0
    sy = 39.0
    fx = math.floor((x + 10000.0) / sx)
    fy = math.floor((y + 10000.0) / sy)
    h = _hash2(int(fx), int(fy), seed + 101)
    ex = min(x + 10000.0 - fx * sx, (fx + 1) * sx - x - 10000.0)
    ey = min(y + 10000.0 - fy * sy, (fy + 1) * sy - y - 10000.0)
    if min(ex, ey) < 0.9:  # hedge / field boundary
        return 0.16, 0.26, 0.10
    crop = int(h * 6.0)
    if crop == 0:
        r, gg, b = 0.42, 0.55, 0.22
    elif crop == 1:
        r, gg, b = 0.70, 0.62, 0.34
    elif crop == 2:
        r, gg, b = 0.45, 0.36, 0.24
    elif crop == 3:
        r, gg, b = 0.30, 0.48, 0.18
    elif crop == 4:
        r, gg, b = 0.58, 0.58, 0.28
    else:
        r, gg, b = 0.36, 0.44, 0.20
    rows = _band(x if h * 97.0 % 1.0 < 0.5 else y, 2.2, 1.0, fp)
    m = (0.85 + 0.25 * n_large + 0.06 * n_fine) * (1.0 - 0.12 * rows)
    return r * m, gg * m, b * m


@_jit
def box_albedo(it, px, py, pz, nx, ny, nz, fp, boxes, box_color, box_roof, box_kind, box_param):
    kind = box_kind[it]
    oseed = int(box_param[it, 3])
    if nz > 0.5:  # top face
        r = box_roof[it, 0]
        g = box_roof[it, 1]
        b = box_roof[it, 2]
        if kind == 0 or kind == 1:
            n = vnoise(px * 0.9, py * 0.9, oseed)
            wn = fade(fp, 1.0)
            m = 0.88 + 0.18 * ((1.0 - wn) * n + wn * 0.5)
            e = min(min(px - boxes[it, 0], boxes[it, 3] - px), min(py - boxes[it, 1], boxes[it, 4] - py))
            if kind == 0 and e < 0.45:  # parapet
                m = 1.25
            return r * m, g * m, b * m
        if kind == 3:  # car roof / windows
            return r, g, b
        return r, g, b
    r = box_color[it, 0]
    g = box_color[it, 1]
    b = box_color[it, 2]
    if kind == 3:  # car side: dark windows in the upper half
        if pz > 0.85:
            return 0.12, 0.13, 0.15
        return r, g, b
    if kind != 0:
        n = vnoise(px * 0.7 + pz, py * 0.7 - pz, oseed)
        m = 0.9 + 0.15 * n
        return r * m, g * m, b * m
    # building facade: window grid
    fh = box_param[it, 0]
    ws = box_param[it, 1]
    wfr = box_param[it, 2]
    if abs(nx) > 0.5:
        u = py - boxes[it, 1]
    else:
        u = px - boxes[it, 0]
    v = pz - boxes[it, 2]
    fu = u / ws
    iu = math.floor(fu)
    fu -= iu
    fv = v / fh
    iv = math.floor(fv)
    fv -= iv
    ground = iv < 1.0
    if ground:
        win = abs(fu - 0.5) < min(0.42, wfr * 0.5 + 0.15) and 0.08 < fv < 0.82
        area = min(0.84, wfr + 0.3) * 0.74
    else:
        win = abs(fu - 0.5) < wfr * 0.5 and 0.28 < fv < 0.82
        area = wfr * 0.54
    lit = _hash2(int(iu), int(iv), oseed)
    gr = 0.14 + 0.20 * lit
    gg = 0.17 + 0.20 * lit
    gb = 0.22 + 0.22 * lit
    if lit > 0.93:  # a few lit / sun-reflecting windows
        gr, gg, gb = 0.75, 0.70, 0.55
    slab = fv < 0.05 and not ground
    wr = r * (0.82 if slab else 1.0)
    wg = g * (0.82 if slab else 1.0)
    wb = b * (0.82 if slab else 1.0)
    cr = gr if win else wr
    cg = gg if win else wg
    cb = gb if win else wb
    w = fade(fp, min(ws, fh) * 0.6)
    mr = r * (1 - area) + 0.24 * area
    mg = g * (1 - area) + 0.27 * area
    mb = b * (1 - area) + 0.33 * area
    return cr * (1 - w) + mr * w, cg * (1 - w) + mg * w, cb * (1 - w) + mb * w
