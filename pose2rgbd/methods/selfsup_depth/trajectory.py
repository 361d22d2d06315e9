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
