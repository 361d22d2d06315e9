"""Relative poses -> trajectory (pseudo-absolute poses relative to a key frame) and its errors against a
reference: relative rotation / translation-direction errors, absolute trajectory error after Sim(3) alignment.
"""

from __future__ import annotations

import numpy as np


def compose_poses(T_rel: np.ndarray, T_world_key: np.ndarray | None = None) -> np.ndarray:
    """``T_world_cam`` (N, 4, 4) from ``T_rel[k] = T_{k+1}_k`` (N-1, 4, 4, the pose network's
    ``T_source_target`` with the next frame as source); frame 0 is the key frame at ``T_world_key`` (default
    identity)."""
    T_rel = np.asarray(T_rel, dtype=np.float64)
    out = np.empty((len(T_rel) + 1, 4, 4))
    out[0] = np.eye(4) if T_world_key is None else T_world_key
    for k in range(len(T_rel)):
        out[k + 1] = out[k] @ np.linalg.inv(T_rel[k])
    return out


def relative_from_absolute(T_world_cam: np.ndarray) -> np.ndarray:
    """``T_{k+1}_k`` (N-1, 4, 4) between consecutive poses."""
    T = np.asarray(T_world_cam, dtype=np.float64)
    return np.linalg.inv(T[1:]) @ T[:-1]


def relative_pose_errors(T_pred: np.ndarray, T_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: rotation error (deg) and angle between the translation directions (deg, scale-free)."""
    T_pred, T_true = np.asarray(T_pred), np.asarray(T_true)
    dR = np.swapaxes(T_true[:, :3, :3], 1, 2) @ T_pred[:, :3, :3]
    cos = np.clip((np.trace(dR, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    a, b = T_pred[:, :3, 3], T_true[:, :3, 3]
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_t = np.clip(np.sum(a * b, axis=1) / (na * nb), -1.0, 1.0)
    return np.degrees(np.arccos(cos)), np.degrees(np.arccos(cos_t))


def umeyama_sim3(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``(s, R, t)`` minimizing ``|dst - (s R src + t)|^2`` (Umeyama 1991). Written here because it is ten
    lines of SVD and the trajectory-evaluation packages that ship it are not dependencies."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var_s = (xs**2).sum() / len(src)
    s = float(np.trace(np.diag(D) @ S) / var_s) if var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def ate_sim3(positions: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Absolute trajectory error after Sim(3) alignment: ``(RMSE metres, RMSE / reference path length)``."""
    s, R, t = umeyama_sim3(positions, reference)
    aligned = (s * (R @ np.asarray(positions).T)).T + t
    rmse = float(np.sqrt(np.mean(np.sum((aligned - reference) ** 2, axis=1))))
    length = float(np.sum(np.linalg.norm(np.diff(reference, axis=0), axis=1)))
    return rmse, rmse / length if length > 0 else float("nan")


def _pose_params(T: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return np.concatenate([Rotation.from_matrix(T[:, :3, :3]).as_rotvec(), T[:, :3, 3]], axis=1).ravel()


def _params_pose(x: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    p = x.reshape(-1, 6)
    T = np.tile(np.eye(4), (len(p), 1, 1))
    T[:, :3, :3] = Rotation.from_rotvec(p[:, :3]).as_matrix()
    T[:, :3, 3] = p[:, 3:]
    return T


def pose_graph(
    T_init: np.ndarray,
    edges: list[tuple[int, int]],
    measurements: np.ndarray,
    *,
    rot_weight: float = 1.0,
    max_nfev: int = 20,
) -> np.ndarray:
    """Refine ``T_world_cam`` (N, 4, 4; frame 0 held fixed) against relative measurements ``T_j_i`` (E, 4, 4)
    on ``edges`` (i, j): consecutive frames plus skip edges (i, i + k), which tie the chain together and reduce
    the drift of plain composition. Least squares over all edges (SciPy ``least_squares`` with a sparse Jacobian,
    Huber loss); residuals are the rotation vector (times ``rot_weight``) and translation of
    ``measurement^-1 @ T_cam_j_world @ T_world_cam_i``."""
    from scipy.optimize import least_squares
    from scipy.sparse import lil_matrix
    from scipy.spatial.transform import Rotation

    n = len(T_init)
    e = np.asarray(edges, dtype=np.int64)
    M_inv = np.linalg.inv(np.asarray(measurements, dtype=np.float64))
    T0 = np.asarray(T_init[0], dtype=np.float64)

    def residuals(x: np.ndarray) -> np.ndarray:
        T = np.concatenate([T0[None], _params_pose(x)])
        E = M_inv @ np.linalg.inv(T[e[:, 1]]) @ T[e[:, 0]]
        r = Rotation.from_matrix(E[:, :3, :3]).as_rotvec() * rot_weight
        return np.concatenate([r, E[:, :3, 3]], axis=1).ravel()

    sparsity = lil_matrix((6 * len(e), 6 * (n - 1)), dtype=np.int8)
    for k, (i, j) in enumerate(e):
        for v in (i, j):
            if v > 0:
                sparsity[6 * k : 6 * k + 6, 6 * (v - 1) : 6 * v] = 1
    res = least_squares(residuals, _pose_params(np.asarray(T_init[1:], dtype=np.float64)), jac_sparsity=sparsity,
                        loss="huber", f_scale=0.05, max_nfev=max_nfev, method="trf")  # fmt: skip
    return np.concatenate([T0[None], _params_pose(res.x)])
