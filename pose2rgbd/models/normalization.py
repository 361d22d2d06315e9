"""The input / output normalizations a model owns (paper Sec. 2: min-max over the training set).

* :class:`PoseNormalizer`: encoded poses (:mod:`pose2rgbd.geometry.encoding`) -> [-1, 1] from the per-dimension
  extremes of the training poses (a dimension that is constant in training maps to 0), and the one out-of-bounds
  rule (:meth:`PoseNormalizer.margins`: the training box widened by the same metres on every side for the position,
  by at least :data:`ROTATION_MARGIN_DEG` of turn for the rotation).
* :class:`DepthNormalizer`: depth in metres <-> the network's [-1, 1] output range.

A model stores them as buffers (saved in its ``state_dict``, hence in checkpoints), so inference uses exactly
the training scaling. Depth: sky (+inf) is clipped to the range maximum -- "as far as the model can say" --
and -inf to the minimum; NaN (invalid) stays NaN so that losses and metrics can mask it out (numpy arrays and
torch tensors alike).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pose2rgbd.errors import ConfigError, GeometryError
from pose2rgbd.geometry.encoding import decode_poses, encode_poses, encoding_dim, encoding_jumps

log = logging.getLogger(__name__)
JUMPS_WARN = 0.05  # share of nearby orientation pairs far apart in the encoding above which training warns
ENCODING_FIX = (
    'train with --encoding 6dof-rot6d (the camera\'s axes: no jump anywhere; docs/models.md, "Pose encodings")'
)
# The turn a pose may make beyond the training orientations before its rotation is out of bounds, whatever their range.
# A platform's attitude wanders a few degrees about its course (wind, a gimbal's lag, a walker's gait), so a flight
# that always faces one way spans a sliver of each rotation component, which the same route flown again leaves by a
# degree or two; 5 deg is under a tenth of a usual camera's field of view (50-90 deg), so a view turned that
# far still sees 90 % or more of what the nearest training view saw, and a turn that matters (30 deg, a
# heading never flown) lies far beyond it.
ROTATION_MARGIN_DEG = 5.0


def rotation_margin(kind: str, deg: float = ROTATION_MARGIN_DEG) -> float:
    """The most a turn by ``deg`` moves one rotation component of the pose encoding ``kind``, in its units: a pose
    within ``deg`` of an orientation inside the training box stays within the box widened by this.

    * ``6dof-quat``: ``2 sin(deg / 4)``, the distance of two unit quaternions (of one sign) a turn of ``deg`` apart,
      which bounds each component's change (0.044 for 5 deg).
    * ``6dof-rot6d``: ``2 sin(deg / 2)``, the distance a turn of ``deg`` moves a unit axis (0.087).
    * ``6dof-euler``: ``deg`` in radians (0.087): a turn about one of the angles' axes changes that angle by as much
      (more near pitch +-90 deg, where the Euler angles are singular; their wrap at +-180 deg is a jump of the
      encoding, flagged as any far pose, :func:`warn_encoding_jumps`).
    """
    a = math.radians(deg)
    if kind == "6dof-quat":
        return 2.0 * math.sin(a / 4.0)
    if kind == "6dof-rot6d":
        return 2.0 * math.sin(a / 2.0)
    encoding_dim(kind)  # an unknown kind: its error
    return a


def warn_encoding_jumps(T_world_cam: np.ndarray, kind: str, fix: str) -> float:
    """Warn (naming ``fix``, what to do) where the training poses ``T_world_cam`` sit on a jump of the pose encoding
    ``kind`` (:func:`~pose2rgbd.geometry.encoding.encoding_jumps` above :data:`JUMPS_WARN`); returns the share."""
    share = encoding_jumps(T_world_cam, kind)
    if share > JUMPS_WARN:
        log.warning(
            "pose input %s: for %.0f %% of the training cameras the nearest in orientation (within 5 deg) is far "
            "apart in this encoding -- the cameras sit on its jump (a camera looking straight down does at every "
            "heading: the quaternion's sign flips, the Euler angles wrap), so the network sees nearly equal poses as "
            "far apart (on held-out routes of a simulated nadir flight, Slice-10's depth error was 12-41 %% lower "
            "without the jump); %s", kind, 100.0 * share, fix,
        )  # fmt: skip
    return share


@dataclass
class PoseNormalizer:
    """Min-max normalization of encoded poses to [-1, 1] from stored training extremes."""

    kind: str
    minimum: np.ndarray
    maximum: np.ndarray

    def __post_init__(self) -> None:
        d = encoding_dim(self.kind)
        self.minimum = np.asarray(self.minimum, dtype=np.float64).reshape(d)
        self.maximum = np.asarray(self.maximum, dtype=np.float64).reshape(d)
        if not (np.all(np.isfinite(self.minimum)) and np.all(np.isfinite(self.maximum))):
            raise GeometryError("PoseNormalizer: the pose extremes are not finite")
        if np.any(self.maximum < self.minimum):
            raise GeometryError("PoseNormalizer: maximum < minimum")

    @classmethod
    def fit(cls, T_world_cam: np.ndarray, kind: str) -> PoseNormalizer:
        enc = encode_poses(T_world_cam, kind)
        return cls(kind, enc.min(axis=0), enc.max(axis=0))

    @property
    def span(self) -> np.ndarray:
        return self.maximum - self.minimum

    def normalize_encoded(self, enc: np.ndarray) -> np.ndarray:
        span = self.span
        safe = np.where(span > 0, span, 1.0)
        out = 2.0 * (np.asarray(enc, dtype=np.float64) - self.minimum) / safe - 1.0
        return np.where(span > 0, out, 0.0)

    def denormalize_encoded(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.where(self.span > 0, (x + 1.0) / 2.0 * self.span + self.minimum, self.minimum)

    def normalize(self, T_world_cam: np.ndarray) -> np.ndarray:
        """``(N, 4, 4)`` -> ``(N, D)`` float32 in [-1, 1] for poses within the training extremes."""
        return self.normalize_encoded(encode_poses(T_world_cam, self.kind)).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return decode_poses(self.denormalize_encoded(x), self.kind)

    def margins(self, margin: float = 0.1) -> np.ndarray:
        """``(D,)`` how far beyond [-1, 1] each normalized dimension may go before a pose is out of bounds (the one
        rule; a dimension constant in training normalizes to 0 and is never out):

        * position (tx, ty, tz): the box of the training positions widened by the same metres on every side,
          ``margin`` x half its widest side, not a share of each side's own length -- a walk spans a few decimetres
          in height, where a share of it flags a camera 2 cm lower while one metres away along the street is not;
        * rotation components: ``margin`` x half the component's own training range, but never less than
          :func:`rotation_margin` (:data:`ROTATION_MARGIN_DEG` of turn, also at ``margin`` 0): a flight that always
          faces one way spans a sliver of a quaternion component, which a share of it turns into a trap that a
          half-degree turn leaves.
        """
        half = self.span / 2.0
        widest = float(half[:3].max())
        metres = np.full(3, margin * widest)
        turn = np.maximum(margin * half[3:], rotation_margin(self.kind))
        units = np.concatenate([metres, turn])
        return np.where(half > 0, units / np.where(half > 0, half, 1.0), margin)

    def out_of_bounds(self, T_world_cam: np.ndarray, margin: float = 0.1, *, dims: slice = slice(None)) -> np.ndarray:
        """``(N,)`` bool: some normalized dimension of ``dims`` lies beyond [-1, 1] by more than its
        :meth:`margins`."""
        enc = encode_poses(T_world_cam, self.kind)
        return self.out_of_bounds_normalized(self.normalize_encoded(enc), margin, dims=dims)

    def out_of_bounds_normalized(self, x: np.ndarray, margin: float = 0.1, *, dims: slice = slice(None)) -> np.ndarray:
        """``(N,)`` bool from already normalized poses ``(N, D)``, judged on the dimensions ``dims`` (all: a network
        that takes the whole pose; ``slice(0, 3)``: the position alone) by :meth:`margins`."""
        x = np.asarray(x, dtype=np.float64)
        d = encoding_dim(self.kind)
        if x.ndim != 2 or x.shape[1] != d:
            raise GeometryError(f"out of bounds: expected normalized {self.kind} poses (N, {d}), got {x.shape}")
        return np.asarray(np.any(np.abs(x[:, dims]) > 1.0 + self.margins(margin)[dims], axis=-1), dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "minimum": self.minimum.tolist(), "maximum": self.maximum.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoseNormalizer:
        try:
            return cls(d["kind"], np.asarray(d["minimum"]), np.asarray(d["maximum"]))
        except KeyError as e:
            raise ConfigError(f"pose normalizer: missing key {e}") from e


@dataclass(frozen=True)
class DepthNormalizer:
    """Maps depth ``[min_m, max_m]`` (metres, or dataset units for unscaled depth) to ``[-1, 1]``."""

    min_m: float
    max_m: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_m) and math.isfinite(self.max_m)) or self.max_m <= self.min_m:
            raise ConfigError(f"DepthNormalizer: need finite min < max, got [{self.min_m}, {self.max_m}]")

    @classmethod
    def fit(
        cls,
        depth: np.ndarray,
        *,
        indices: np.ndarray | None = None,
        max_m: float | None = None,
        max_percentile: float = 100.0,
        max_frames: int = 400,
        chunk: int = 64,
    ) -> DepthNormalizer:
        """Range of the finite values of ``depth[indices]`` (``(N, H, W)``, may be a memmap; read in chunks).

        The minimum is the finite minimum. The maximum is ``max_m`` when given, else the ``max_percentile``
        percentile of the finite values (100 = the plain maximum, the paper's min-max; a lower percentile keeps
        a few grazing rays at kilometres from squashing the useful range), estimated on at most ``max_frames``
        evenly spread frames.
        """
        idx = np.arange(len(depth)) if indices is None else np.sort(np.asarray(indices, dtype=np.int64))
        lo, hi = math.inf, -math.inf
        for s in range(0, len(idx), chunk):
            d = np.asarray(depth[idx[s : s + chunk]], dtype=np.float32)
            f = d[np.isfinite(d)]
            if f.size:
                lo, hi = min(lo, float(f.min())), max(hi, float(f.max()))
        if max_m is None and max_percentile < 100.0 and len(idx) and math.isfinite(lo):
            sub = np.unique(idx[np.linspace(0, len(idx) - 1, min(max_frames, len(idx))).astype(np.int64)])
            vals = []
            for s in range(0, len(sub), chunk):
                d = np.asarray(depth[sub[s : s + chunk]], dtype=np.float32)
                vals.append(d[np.isfinite(d)])
            max_m = float(np.percentile(np.concatenate(vals), max_percentile))
        if not math.isfinite(lo):
            raise ConfigError("DepthNormalizer.fit: no finite depth in the training frames")
        if max_m is not None:
            hi = float(max_m)
        if hi <= lo:
            hi = lo + 1.0
        return cls(lo, hi)

    @property
    def span(self) -> float:
        return self.max_m - self.min_m

    def normalize(self, depth: Any) -> Any:
        """metres -> [-1, 1]; +inf -> 1, values outside the range clipped, NaN kept."""
        if isinstance(depth, np.ndarray) or np.isscalar(depth):
            d = np.asarray(depth, dtype=np.float32)
            d = np.clip(d, self.min_m, self.max_m)  # clip maps +inf -> max, -inf -> min, keeps NaN
            return (2.0 * (d - self.min_m) / self.span - 1.0).astype(np.float32)
        d = depth.clamp(self.min_m, self.max_m)  # torch: same semantics (inf clamped, NaN propagated)
        return 2.0 * (d - self.min_m) / self.span - 1.0

    def denormalize(self, x: Any) -> Any:
        """[-1, 1] -> metres (inputs outside [-1, 1] are clipped first)."""
        if isinstance(x, np.ndarray) or np.isscalar(x):
            x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
            return ((x + 1.0) * 0.5 * self.span + self.min_m).astype(np.float32)
        return (x.clamp(-1.0, 1.0) + 1.0) * 0.5 * self.span + self.min_m

    def to_dict(self) -> dict[str, float]:
        return {"min_m": float(self.min_m), "max_m": float(self.max_m)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DepthNormalizer:
        try:
            return cls(float(d["min_m"]), float(d["max_m"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"depth normalizer: bad mapping {d!r} ({e})") from e
