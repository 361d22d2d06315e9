"""One view held twice by inputs that are joined: the rule ``dataset merge`` and ``map merge`` share.

Inputs of different origin can hold the same camera view: a flight converted twice (``convert bag`` and ``record
bag``), a dataset appended to after a first copy, a merged map or dataset merged again with one of its inputs. Kept
twice, a view and its twin sit on both sides of every split and self-calibration: a held-out view's twin is still
there, no error is seen, and whatever is fitted on it (a covariance scale, a validation score) is too optimistic.

A later input's view is the same as a kept view of an earlier input when its encoded image is the same bytes, or it
is of the same instant (within :data:`DUP_STAMP_NS`) and pose (within :data:`DUP_POSITION_M` and
:data:`DUP_TURN_DEG`). One input's own views are never compared with each other: a hovering camera's frames, or a
recording's repeated frames kept on purpose, are that input's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DUP_STAMP_NS = 1_000_000
DUP_POSITION_M = 0.05
DUP_TURN_DEG = 1.0


@dataclass
class SameViews:
    """The views kept so far, and whether a next one is one of them again (:meth:`offer`)."""

    _digests: dict[bytes, int] = field(default_factory=dict)  # image hash -> the input that holds it
    _by_stamp: dict[int, list[tuple[int, np.ndarray]]] = field(default_factory=dict)  # stamp bucket -> (input, T)

    def offer(self, source: int, digest: bytes, stamp_ns: int | None, T_world_cam: np.ndarray) -> bool:
        """Keep the view (True) unless another input's kept view is the same (False). ``source`` numbers the input;
        ``digest`` is a hash of its encoded image (empty: none); ``T_world_cam`` is in the joined world frame."""
        T = np.asarray(T_world_cam, np.float64)
        bucket = None if stamp_ns is None else int(stamp_ns) // DUP_STAMP_NS
        if self._seen(source, digest, bucket, T):
            return False
        if digest:
            self._digests.setdefault(digest, source)
        if bucket is not None:
            self._by_stamp.setdefault(bucket, []).append((source, T))
        return True

    def _seen(self, source: int, digest: bytes, bucket: int | None, T: np.ndarray) -> bool:
        if digest and self._digests.get(digest, source) != source:
            return True
        if bucket is None:
            return False
        cos_turn = np.cos(np.radians(DUP_TURN_DEG))
        for b in (bucket - 1, bucket, bucket + 1):
            for other, U in self._by_stamp.get(b, []):
                if other == source:
                    continue  # one input's own views are its own business
                near = np.linalg.norm(U[:3, 3] - T[:3, 3]) <= DUP_POSITION_M
                if near and (np.trace(U[:3, :3].T @ T[:3, :3]) - 1) / 2 >= cos_turn:
                    return True
        return False
