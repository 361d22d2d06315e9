"""PoseGAN losses (paper Sec. 4, eq. 4-9) as plain functions of tensors, each testable by hand.

Notation: ``F = phi3(phi1(.))`` is D's pose head, ``varphi(phi1(.))`` its real / fake score, ``y`` the
normalized pose. Every pose distance is :func:`pose_distance`, the Euclidean norm of the difference with the
quaternion part weighted (``orientation_weight``; 1 is the paper's plain norm). Batch expectations are means.

Where the paper is loose we choose (docs/models.md, PoseGAN):

* eq. 4 writes L1 with ``min(0, .)`` terms, the quantity D *maximizes*; D minimizes its negative, the hinge
  loss of SN-GAN / projection cGANs: ``mean(relu(1 - varphi(x))) + mean(relu(1 + varphi(G(y))))``.
* eq. 6-7: the margin ``gamma`` and the target ``F(x)`` of the fake-pose term are constants for the gradient
  (detached): the term teaches F where generated images lie, it must not pull ``F(x)`` away from ``y`` (a
  gradient through ``gamma = k ||F(x) - y||`` would reward a *larger* real error).
* eq. 9: ``||G(y) - x||`` is the mean absolute pixel error (images in [-1, 1]); a norm over all pixels would
  scale ``beta2`` with the image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POSITION_DIMS = 3  # the pose y is (position (3), quaternion (4)), normalized


def pose_distance(a: torch.Tensor, b: torch.Tensor, orientation_weight: float = 1.0) -> torch.Tensor:
    """``(N,)`` ``||(a_p - b_p, w (a_q - b_q))||_2`` of ``(N, 3 + d)`` normalized poses."""
    d = (a.float() - b.float()).clone()
    if orientation_weight != 1.0:
        d[:, POSITION_DIMS:] = d[:, POSITION_DIMS:] * orientation_weight
    return torch.linalg.vector_norm(d, dim=1)


def hinge_d(real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
    """D's hinge loss, the negative of eq. 4: ``mean(relu(1 - real)) + mean(relu(1 + fake))``."""
    return F.relu(1.0 - real_score.float()).mean() + F.relu(1.0 + fake_score.float()).mean()


def hinge_g(fake_score: torch.Tensor) -> torch.Tensor:
    """G's adversarial term (eq. 9, first term): ``-mean(varphi(phi1(G(y))))``."""
    return -fake_score.float().mean()


def margin_gamma(
    pose_real: torch.Tensor, y: torch.Tensor, *, adaptive: bool, k: float, constant: float, orientation_weight: float
) -> torch.Tensor:
    """``(N,)`` margin: ``k ||F(x) - y||`` (eq. 7, detached) when ``adaptive``, else ``constant``."""
    if adaptive:
        return k * pose_distance(pose_real.detach(), y, orientation_weight)
    return torch.full((pose_real.shape[0],), float(constant), device=pose_real.device)


def fake_pose_margin(
    pose_fake: torch.Tensor, pose_real: torch.Tensor, gamma: torch.Tensor, orientation_weight: float = 1.0
) -> torch.Tensor:
    """``(N,)`` second term of eq. 6: ``max(||F(G(y)) - F(x)|| - gamma, 0)``, ``F(x)`` as a fixed target."""
    return F.relu(pose_distance(pose_fake, pose_real.detach(), orientation_weight) - gamma)


def d_pose_loss(
    pose_real: torch.Tensor,
    y: torch.Tensor,
    pose_fake: torch.Tensor | None,
    *,
    adaptive: bool,
    k: float,
    constant: float,
    orientation_weight: float,
) -> dict[str, torch.Tensor]:
    """L2 of eq. 6 and its parts: ``{"pose_real", "fake_margin", "gamma", "l2"}`` (batch means);
    ``pose_fake`` ``None``: no pose estimation of generated samples (configB / configA), L2 = the first term."""
    real = pose_distance(pose_real, y, orientation_weight).mean()
    out = {"pose_real": real}
    if pose_fake is None:
        out["l2"] = real
        return out
    gamma = margin_gamma(pose_real, y, adaptive=adaptive, k=k, constant=constant, orientation_weight=orientation_weight)
    margin = fake_pose_margin(pose_fake, pose_real, gamma, orientation_weight).mean()
    out.update(fake_margin=margin, gamma=gamma.mean(), l2=real + margin)
    return out


def g_losses(
    fake_score: torch.Tensor,
    pose_fake: torch.Tensor,
    y: torch.Tensor,
    fake_rgb: torch.Tensor,
    target_rgb: torch.Tensor,
    *,
    beta1: float,
    beta2: float,
    orientation_weight: float,
) -> dict[str, torch.Tensor]:
    """The weighted terms of L_G (eq. 9): ``{"adv", "pose", "l1"}`` (their sum is L_G)."""
    return {
        "adv": hinge_g(fake_score),
        "pose": beta1 * pose_distance(pose_fake, y, orientation_weight).mean(),
        "l1": beta2 * (fake_rgb.float() - target_rgb.float()).abs().mean(),
    }
