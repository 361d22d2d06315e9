"""Flight plans over the synthetic city: body pose ``T_world_base(t)`` + a static camera mount ``T_base_cam``.

Frames: world = ENU ``map`` (origin at the city centre); ``base_link`` = REP-103 body (x forward, y left,
z up); the camera is REP-103 optical, mounted looking forward and pitched down by ``camera_pitch_deg``.

Every route is a closed xy path flown at about 50-55 m with the speed profile of a real multirotor flight:
cruise segments at 3-10 m/s, short hovers, acceleration-limited speed changes and slow-downs in tight turns
(stops at sharp waypoints). The body yaw points at the city centre (+ smooth jitter); roll/pitch follow the
acceleration (a multirotor tilts its thrust into the acceleration) + smooth seeded jitter of a few degrees.

Routes (sizes scale with the world, numbers below for 300 m):

* ``survey`` (training): a rosette ring between r = 70 m and r = 190 m around and over the city, two turns.
* ``orbit``: a clockwise circle at r = 120 m.
* ``crossing``: a {7/2} star polygon (straight lines crossing over the city, r 112..180 m), stopping at each
  vertex.
* ``figure8``: a figure-eight on one side of the city (r 80..180 m).

The held-out routes use smaller jitter / acceleration limits and radii inside the survey's, so their poses
stay within the survey's pose extremes (a model trained on the survey interpolates).

* ``transect`` (not in the default routes): a mapping flight, lawnmower lines east-west over the city
  (|x| <= 120 m, lines 30 m apart after both passes) at a constant 52.5 m (+-0.5 m), yaw along the course.
  Each straight leg starts from a hover, cruises at 3-10 m/s with speed changes and occasional mid-line
  hovers, and brakes to a hover at its end; the drone turns in place (90 deg, peak 30 deg/s) between legs.
  It is a sync test flight, not a held-out route: its poses leave the survey's pose extremes.

``stabilized=True`` (a gimbal): the camera carrier keeps the body's position and yaw but not its tilt into
the acceleration; roll and pitch are only a small seeded jitter (+-0.3 deg). The published ``base_link`` is
then that gimbal-stabilized frame, so ``T_world_cam = T_world_base @ T_base_cam`` still holds with the static
mount (see docs/sim.md). Position and yaw are identical with and without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry import R_BODY_OPTICAL, make_T
from pose2rgbd.geometry.rotations import rpy_to_matrix

ROUTES = ("survey", "orbit", "crossing", "figure8", "transect")
DEFAULT_ROUTES = ("survey", "orbit", "crossing", "figure8")  # the survey + the held-out routes
GIMBAL_JITTER_DEG = 0.3  # residual roll/pitch of a stabilized camera (bound of a smooth jitter)
TRANSECT_YAW_RATE_DEG = 30.0  # peak yaw rate of the turns in place between transect legs
GRAVITY = 9.81
DEFAULT_START_NS = 1_700_000_000_000_000_000
_DT = 0.01  # internal integration step (s)


def camera_mount(pitch_down_deg: float = 40.0, offset: tuple[float, float, float] = (0.12, 0.0, -0.06)) -> np.ndarray:
    """``T_base_cam``: optical camera looking along body +x, pitched down by ``pitch_down_deg``."""
    p = np.deg2rad(pitch_down_deg)
    Ry = np.array([[np.cos(p), 0.0, np.sin(p)], [0.0, 1.0, 0.0], [-np.sin(p), 0.0, np.cos(p)]])
    return make_T(Ry @ np.asarray(R_BODY_OPTICAL), np.asarray(offset, dtype=np.float64))


@dataclass
class Trajectory:
    """Poses sampled at ``stamps_ns`` (int64): ``T_world_base`` ``(N, 4, 4)`` and the mount ``T_base_cam``."""

    name: str
    stamps_ns: np.ndarray
    T_world_base: np.ndarray
    T_base_cam: np.ndarray

    def __len__(self) -> int:
        return len(self.stamps_ns)

    @property
    def T_world_cam(self) -> np.ndarray:
        return self.T_world_base @ self.T_base_cam


@dataclass
class _Params:
    radius_scale: float
    jitter_rp_deg: float
    jitter_yaw_deg: float
    alt_jitter_m: float
    a_max: float
    a_lat: float
    v_min: float
    v_max: float


class FlightPlan:
    """A route evaluated at any time ``t`` in seconds since its start (``0 <= t <= duration_s``)."""

    def __init__(
        self,
        name: str,
        size_m: float,
        duration_s: float,
        seed: int = 0,
        *,
        camera_pitch_deg: float = 40.0,
        altitude_m: float = 52.5,
        stabilized: bool = False,
    ) -> None:
        if name not in ROUTES:
            raise ConfigError(f"unknown route {name!r}; choose from {list(ROUTES)}")
        if not duration_s > 0:
            raise ConfigError(f"route {name}: duration must be > 0 s, got {duration_s}")
        self.name = name
        self.size_m = float(size_m)
        self.duration_s = float(duration_s)
        self.altitude_m = float(altitude_m)
        self.stabilized = bool(stabilized)
        self.T_base_cam = camera_mount(camera_pitch_deg)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), ROUTES.index(name), 0xF11]))
        survey = name == "survey"
        transect = name == "transect"
        self._p = _Params(
            radius_scale=1.0,
            jitter_rp_deg=3.0 if survey else 1.8,
            jitter_yaw_deg=6.0 if survey else (1.5 if transect else 3.5),
            alt_jitter_m=2.0 if survey else (0.5 if transect else 1.2),
            a_max=1.5 if survey else (1.2 if transect else 1.0),
            a_lat=2.0 if survey else 0.9,
            v_min=3.0,
            v_max=10.0 if survey or transect else 8.5,
        )
        self._path = _path_xy(name, self.size_m / 2.0)
        seg = np.linalg.norm(np.diff(self._path, axis=0), axis=1)
        self._s = np.concatenate([[0.0], np.cumsum(seg)])
        self.length_m = float(self._s[-1])
        if transect:
            self._build_transect(rng)
        else:
            self._build(rng)
        if self.stabilized:  # own stream: position and yaw stay identical to the unstabilized flight
            g = np.random.default_rng(np.random.SeedSequence([int(seed), ROUTES.index(name), 0x61B]))
            jit = np.deg2rad(GIMBAL_JITTER_DEG)
            self._rpy[:, 0] = jit * _smooth_noise(g, self._t, 4, 0.02, 0.3)
            self._rpy[:, 1] = jit * _smooth_noise(g, self._t, 4, 0.02, 0.3)

    # -------------------------------------------------------------- construction
    def _build(self, rng: np.random.Generator) -> None:
        p = self._p
        n = int(np.ceil((self.duration_s + 5.0) / _DT)) + 1  # 5 s spare: no end effects
        t = np.arange(n) * _DT
        self._t = t
        # target speed: cruise segments and short hovers
        target = np.empty(n)
        k = 0
        first = True
        while k < n:
            if first:
                dur, vt = rng.uniform(1.0, 2.5), 0.0  # start from a hover
                first = False
            elif rng.random() < 0.3:
                dur, vt = rng.uniform(2.0, 5.0), 0.0
            else:
                dur, vt = rng.uniform(6.0, 22.0), rng.uniform(p.v_min, p.v_max)
            m = max(1, int(dur / _DT))
            target[k : k + m] = vt
            k += m
        # speed limit along the path: lateral acceleration in turns, and braking in time for them
        vc = self._curvature_speed()
        ds = np.diff(self._s)
        allow = vc.copy()
        for _ in range(2):  # closed path: two backward sweeps carry the limit across the seam
            allow[-1] = min(allow[-1], allow[0])
            for i in range(len(allow) - 2, -1, -1):
                allow[i] = min(allow[i], np.sqrt(allow[i + 1] ** 2 + 2 * p.a_max * ds[i]))
        # forward integration with the acceleration limit
        v = np.zeros(n)
        s = np.zeros(n)
        L = self.length_m
        s_grid = self._s
        for i in range(1, n):
            vi = v[i - 1]
            want = min(target[i], float(np.interp(s[i - 1] % L, s_grid, allow)))
            dv = min(max(want - vi, -p.a_max * _DT), p.a_max * _DT)
            v[i] = max(vi + dv, 0.0)
            s[i] = s[i - 1] + 0.5 * (vi + v[i]) * _DT
        # 0.6 s moving average: continuous accelerations (no tilt steps)
        w = int(0.6 / _DT)
        kern = np.ones(w) / w
        s = np.convolve(np.pad(s, (w, w), mode="reflect", reflect_type="odd"), kern, mode="same")[w:-w]
        self._sv = s
        xy = self._xy_at_s(s)
        # a further 1 s average of the positions rounds off polyline vertices (no acceleration spikes)
        w2 = int(1.0 / _DT) | 1
        k2 = np.ones(w2) / w2
        xy = np.column_stack(
            [
                np.convolve(np.pad(c, (w2, w2), mode="reflect", reflect_type="odd"), k2, mode="same")[w2:-w2]
                for c in xy.T
            ]
        )
        self._speed = np.gradient(s, _DT)
        # altitude with smooth jitter
        z = self.altitude_m + p.alt_jitter_m * _smooth_noise(rng, t, 4, 0.01, 0.05)
        pos = np.column_stack([xy, z])
        # yaw towards the city centre (+ jitter); tilt into the acceleration (+ jitter)
        yaw = np.unwrap(np.arctan2(-xy[:, 1], -xy[:, 0]))
        self._attitude(rng, t, pos, yaw)

    def _attitude(self, rng: np.random.Generator, t: np.ndarray, pos: np.ndarray, yaw: np.ndarray) -> None:
        """Body attitude: ``yaw`` + smooth jitter; roll/pitch tilt the thrust into the acceleration + jitter."""
        p = self._p
        vel = np.gradient(pos, _DT, axis=0)
        acc = np.gradient(vel, _DT, axis=0)
        yaw = yaw + np.deg2rad(p.jitter_yaw_deg) * _smooth_noise(rng, t, 4, 0.01, 0.06)
        cy, sy = np.cos(yaw), np.sin(yaw)
        a_fwd = cy * acc[:, 0] + sy * acc[:, 1]
        a_left = -sy * acc[:, 0] + cy * acc[:, 1]
        g = GRAVITY + acc[:, 2]
        pitch = np.arctan2(a_fwd, g) + np.deg2rad(p.jitter_rp_deg) * _smooth_noise(rng, t, 4, 0.02, 0.15)
        roll = np.arctan2(-a_left, g) + np.deg2rad(p.jitter_rp_deg) * _smooth_noise(rng, t, 4, 0.02, 0.15)
        self._pos = pos
        self._rpy = np.column_stack([roll, pitch, yaw])

    def _build_transect(self, rng: np.random.Generator) -> None:
        """Mapping flight: straight legs from hover to hover, turns in place between them, yaw along the leg."""
        p = self._p
        n = int(np.ceil((self.duration_s + 5.0) / _DT)) + 1
        t = np.arange(n) * _DT
        V = self._path  # closed polyline of leg vertices
        d = np.diff(V, axis=0)
        lengths = np.linalg.norm(d, axis=1)
        heading = np.arctan2(d[:, 1], d[:, 0])
        long_leg = 0.5 * lengths.max()
        w_turn = np.deg2rad(TRANSECT_YAW_RATE_DEG)
        s_out = np.empty(n)
        yaw_out = np.empty(n)
        k = 0
        s_base = 0.0
        yaw = float(heading[0])

        def hold(dur: float, s_at: float, yaw_at: np.ndarray | float) -> None:
            nonlocal k
            m = min(max(1, round(dur / _DT)), n - k)
            s_out[k : k + m] = s_at
            yaw_out[k : k + m] = yaw_at if np.ndim(yaw_at) == 0 else np.asarray(yaw_at)[:m]
            k += m

        hold(rng.uniform(1.0, 2.5), 0.0, yaw)  # start from a hover
        leg = 0
        while k < n:
            j = leg % len(lengths)
            # turn in place onto the leg heading (cosine profile: peak rate w_turn), then a short hover
            dy = float(np.angle(np.exp(1j * (heading[j] - yaw))))
            if abs(dy) > 1e-6:
                m = max(int(np.ceil(abs(dy) * np.pi / 2 / w_turn / _DT)), int(1.5 / _DT))
                u = np.arange(1, m + 1) / m
                hold(m * _DT, s_base, yaw + dy * (1 - np.cos(np.pi * u)) / 2)
                yaw += dy
                hold(rng.uniform(0.5, 1.5), s_base, yaw)
            # fly the leg: target speeds from a seeded schedule, acceleration-limited, braking for the end
            L = float(lengths[j])
            cross = long_leg > L
            sl, v = 0.0, 0.0
            target, until, hover_left, hovered = 0.0, -1.0, 0.0, False
            while k < n and sl < L:
                tk = k * _DT
                if hover_left > 0 and v == 0.0:  # a mid-line hover: count it down once stopped
                    hover_left -= _DT
                    if hover_left <= 0:
                        until = -1.0
                elif tk >= until and hover_left <= 0:
                    if not (cross or hovered) and 0.15 * L < sl < 0.6 * L and rng.random() < 0.25:
                        target, hover_left, until, hovered = 0.0, rng.uniform(1.5, 3.0), np.inf, True
                    else:
                        vmax = min(p.v_max, 5.0) if cross else p.v_max
                        target, until = rng.uniform(p.v_min, vmax), tk + rng.uniform(4.0, 12.0)
                brake = np.sqrt(2.0 * p.a_max * max(L - sl - v * _DT, 0.0))  # one step of look-ahead
                want = min(target, max(brake, 0.05))
                v_new = max(v + min(max(want - v, -p.a_max * _DT), p.a_max * _DT), 0.0)
                if target == 0.0 and v_new < p.a_max * _DT:
                    v_new = 0.0
                sl = min(sl + 0.5 * (v + v_new) * _DT, L)
                v = v_new
                if L - sl < 1e-3:
                    sl = L
                s_out[k] = s_base + sl
                yaw_out[k] = yaw
                k += 1
            s_base += L
            hold(rng.uniform(0.5, 1.5), s_base, yaw)  # hover at the line end before turning
            leg += 1
        # 0.6 s moving average: continuous accelerations (the hovers at the vertices are longer than that)
        w = int(0.6 / _DT)
        kern = np.ones(w) / w
        s = np.convolve(np.pad(s_out, (w, w), mode="edge"), kern, mode="same")[w:-w]
        self._t = t
        self._sv = s
        self._speed = np.gradient(s, _DT)
        xy = self._xy_at_s(s)
        z = self.altitude_m + p.alt_jitter_m * _smooth_noise(rng, t, 4, 0.01, 0.05)
        self._attitude(rng, t, np.column_stack([xy, z]), yaw_out)

    def _curvature_speed(self) -> np.ndarray:
        """Max speed along the path from the lateral acceleration limit (0 at sharp corners)."""
        P = self._path
        d1 = np.gradient(P, self._s, axis=0)
        d2 = np.gradient(d1, self._s, axis=0)
        kappa = np.abs(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / np.maximum(np.linalg.norm(d1, axis=1) ** 3, 1e-9)
        # sharp vertices of a polyline: direction change over a sample pair
        head = np.arctan2(d1[:, 1], d1[:, 0])
        turn = np.abs(np.angle(np.exp(1j * np.diff(head, append=head[-1]))))
        v = np.sqrt(self._p.a_lat / np.maximum(kappa, 1e-6))
        v[turn > np.deg2rad(20)] = 0.0
        return np.minimum(v, 50.0)

    def _xy_at_s(self, s: np.ndarray) -> np.ndarray:
        sm = np.mod(s, self.length_m)
        return np.column_stack([np.interp(sm, self._s, self._path[:, 0]), np.interp(sm, self._s, self._path[:, 1])])

    # -------------------------------------------------------------- evaluation
    def _check_t(self, t_s: np.ndarray) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        if np.any(t < -1e-9) or np.any(t > self.duration_s + 1e-6):
            raise ConfigError(f"route {self.name}: time outside [0, {self.duration_s}] s")
        return np.clip(t, 0.0, self._t[-1])

    def position_at(self, t_s: np.ndarray) -> np.ndarray:
        """``(N, 3)`` body origin in the world."""
        t = self._check_t(t_s)
        return np.column_stack([np.interp(t, self._t, self._pos[:, i]) for i in range(3)])

    def rpy_at(self, t_s: np.ndarray) -> np.ndarray:
        """``(N, 3)`` body roll, pitch, yaw (rad; yaw unwrapped)."""
        t = self._check_t(t_s)
        return np.column_stack([np.interp(t, self._t, self._rpy[:, i]) for i in range(3)])

    def speed_at(self, t_s: np.ndarray) -> np.ndarray:
        """``(N,)`` speed along the path, m/s."""
        return np.interp(self._check_t(t_s), self._t, self._speed)

    def pose_at(self, t_s: np.ndarray) -> np.ndarray:
        """``(N, 4, 4)`` ``T_world_base``."""
        return self._pose_raw(self._check_t(t_s))

    def _pose_raw(self, t: np.ndarray) -> np.ndarray:
        pos = np.column_stack([np.interp(t, self._t, self._pos[:, i]) for i in range(3)])
        rpy = np.column_stack([np.interp(t, self._t, self._rpy[:, i]) for i in range(3)])
        return make_T(rpy_to_matrix(rpy), pos)

    def twist_at(self, t_s: np.ndarray, h: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
        """(linear, angular) velocity ``(N, 3)`` each, in the body frame (as in ``nav_msgs/Odometry``)."""
        t = self._check_t(t_s)
        ta = np.clip(t - h, 0.0, self._t[-1])
        tb = t + h  # the internal tables run 5 s past the duration
        dt = np.maximum(tb - ta, 1e-9)[:, None]
        Ta, Tb, T = self._pose_raw(ta), self._pose_raw(tb), self._pose_raw(t)
        v_world = (Tb[:, :3, 3] - Ta[:, :3, 3]) / dt
        lin = np.einsum("nji,nj->ni", T[:, :3, :3], v_world)
        dR = np.einsum("nji,njk->nik", Ta[:, :3, :3], Tb[:, :3, :3])
        ang = Rotation.from_matrix(dR).as_rotvec() / dt
        return lin, ang

    def sample(self, rate_hz: float, n: int | None = None, t0_ns: int = DEFAULT_START_NS) -> Trajectory:
        """Poses at ``t0_ns + k * 1e9 / rate_hz`` (integer ns), ``k < n`` (default: whole duration)."""
        stamps = sample_stamps(rate_hz, self.duration_s, n, t0_ns)
        return Trajectory(self.name, stamps, self.pose_at((stamps - t0_ns) / 1e9), self.T_base_cam.copy())


def sample_stamps(rate_hz: float, duration_s: float, n: int | None = None, t0_ns: int = DEFAULT_START_NS) -> np.ndarray:
    """int64 stamps ``t0_ns + round(k * 1e9 / rate_hz)`` covering ``[0, duration_s]`` (or ``n`` of them)."""
    if not rate_hz > 0:
        raise ConfigError(f"rate must be > 0 Hz, got {rate_hz}")
    if n is None:
        n = int(np.floor(duration_s * rate_hz + 1e-9)) + 1
    k = np.arange(int(n), dtype=np.int64)
    off = np.round(k * (1e9 / float(rate_hz))).astype(np.int64)
    off = off[off <= round(duration_s * 1e9)]
    return int(t0_ns) + off


def plan_route(
    name: str,
    world_or_size: object,
    rate_hz: float = 30.0,
    n_frames: int | None = None,
    duration_s: float | None = None,
    seed: int = 0,
    *,
    camera_pitch_deg: float = 40.0,
    t0_ns: int = DEFAULT_START_NS,
    stabilized: bool = False,
) -> Trajectory:
    """Plan route ``name`` over a world (a :class:`~pose2rgbd.sim.world.World` or its size in metres) and
    sample it at ``rate_hz``: give ``n_frames`` or ``duration_s``."""
    size = float(getattr(world_or_size, "size_m", world_or_size))  # type: ignore[arg-type]
    if duration_s is None:
        if not n_frames or n_frames < 1:
            raise ConfigError("plan_route: give n_frames >= 1 or duration_s > 0")
        duration_s = max((n_frames - 1) / rate_hz, 1.0 / rate_hz)
    plan = FlightPlan(name, size, duration_s, seed, camera_pitch_deg=camera_pitch_deg, stabilized=stabilized)
    return plan.sample(rate_hz, n_frames, t0_ns)


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, k: int, f_lo: float, f_hi: float) -> np.ndarray:
    """Sum of ``k`` random sinusoids (frequencies in [f_lo, f_hi] Hz), bounded in [-1, 1], RMS ~0.35-0.5."""
    f = rng.uniform(f_lo, f_hi, k)
    ph = rng.uniform(0, 2 * np.pi, k)
    a = rng.uniform(0.5, 1.0, k)
    a /= a.sum()
    return np.sum(a[:, None] * np.sin(2 * np.pi * f[:, None] * t[None, :] + ph[:, None]), axis=0)


def _path_xy(name: str, half: float) -> np.ndarray:
    """Dense closed xy polyline of a route (about 0.25 m spacing)."""
    if name == "survey":
        th = np.linspace(0.0, 4 * np.pi, 20000)
        r = half * (0.87 + 0.40 * np.sin(2.5 * th))
        P = np.column_stack([r * np.cos(th), r * np.sin(th)])
    elif name == "orbit":
        th = np.linspace(0.0, -2 * np.pi, 8000) + np.pi / 3
        rad = 0.8 * half
        P = np.column_stack([rad * np.cos(th), rad * np.sin(th)])
    elif name == "crossing":
        R = 1.2 * half
        ang = np.pi / 2 + 2 * np.pi * 2 * np.arange(8) / 7  # {7/2} star, closed
        V = np.column_stack([R * np.cos(ang), R * np.sin(ang)])
        P = np.concatenate([np.linspace(V[i], V[i + 1], 1400, endpoint=False) for i in range(7)] + [V[:1]])
    elif name == "transect":  # lawnmower vertices: 4 lines up, 4 interleaved lines back, closed
        x = 0.8 * half
        verts: list[tuple[float, float]] = []
        for i, y in enumerate((-0.6, -0.2, 0.2, 0.6, 0.4, 0.0, -0.4, -0.8)):
            a, b = (-x, x) if i % 2 == 0 else (x, -x)
            verts += [(a, y * half), (b, y * half)]
        P = np.array([*verts, verts[0]], dtype=np.float64)
    else:  # figure8 in (angle, radius) on the south-west side
        u = np.linspace(0.0, 2 * np.pi, 12000)
        th = -3 * np.pi / 4 + 0.9 * np.sin(u)
        r = half * (0.87 + 0.33 * np.sin(2 * u))
        P = np.column_stack([r * np.cos(th), r * np.sin(th)])
    return P
