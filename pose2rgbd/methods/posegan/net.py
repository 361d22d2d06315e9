"""The PoseGAN networks (paper Sec. 3, Fig. 1) and the model that trains and serves them.

G (pose -> image): a spectrally normalized linear layer maps the normalized pose ``y`` (7 numbers) to a
``16 ch x b x b`` map (``b = size / 32``), then 5 GBlocks each double the resolution, then BN, ReLU, a 3x3
convolution to RGB and tanh. A GBlock (SN-GAN's residual up-block)::

    x -> BN -> ReLU -> upsample x2 -> conv3x3 -> BN -> ReLU -> conv3x3 -> (+) -> out
    x -> upsample x2 -> conv1x1 ----------------------------------------/

D (image -> score, pose): ``phi1`` is 5 DBlocks (SN-GAN's residual down-blocks; 10 3x3 convolutions), then
ReLU and a global sum over space; ``varphi`` is a linear real / fake head and ``phi3`` a linear pose head with
``3 + 4`` outputs. A DBlock::

    x -> [ReLU] -> conv3x3 -> ReLU -> conv3x3 -> avgpool 2 -> (+) -> out      (no leading ReLU in the first)
    x -> conv1x1 -> avgpool 2 (first block: avgpool 2 -> conv1x1) ---/

``D(x, y) = varphi(phi1(x)) + ||phi3(phi1(x)) - y||`` (eq. 3) is :meth:`PoseGAN.d_score`. Every convolution
and linear layer of G and D is spectrally normalized (``torch.nn.utils.parametrizations.spectral_norm``, one
power iteration per training forward); G keeps its BatchNorm, D has none.

:class:`PoseGAN` is both model interfaces: an :class:`~pose2rgbd.models.interfaces.ImageToPose` (D's pose head;
served by the localize engine) and a :class:`~pose2rgbd.models.interfaces.PoseToImage` (G; served by the render
engine, RGB only). ``forward`` dispatches on the input: poses ``(N, 7)`` -> G, images ``(N, 3, H, W)`` -> D.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pose2rgbd.errors import ConfigError
from pose2rgbd.methods.posegan import losses as L
from pose2rgbd.methods.posegan.config import ENCODING, N_BLOCKS, PoseGANConfig
from pose2rgbd.models.base import AutocastFactory, ModelBase, backward_and_step, group_logs
from pose2rgbd.models.interfaces import ImageToPose, PoseToImage
from pose2rgbd.models.normalization import PoseNormalizer


def _sn_conv(cin: int, cout: int, k: int) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, k, padding=k // 2))


def _sn_linear(cin: int, cout: int) -> nn.Module:
    return spectral_norm(nn.Linear(cin, cout))


class GBlock(nn.Module):
    """Residual up-block of G: BN, ReLU, upsampling, conv (twice), plus a 1x1 shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _sn_conv(cin, cout, 3)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _sn_conv(cout, cout, 3)
        self.shortcut = _sn_conv(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DBlock(nn.Module):
    """Residual down-block of D: (ReLU,) conv, ReLU, conv, average pooling, plus a 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, *, first: bool) -> None:
        super().__init__()
        self.first = first
        self.conv1 = _sn_conv(cin, cout, 3)
        self.conv2 = _sn_conv(cout, cout, 3)
        self.shortcut = _sn_conv(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(h))), 2)
        s = self.shortcut(F.avg_pool2d(x, 2)) if self.first else F.avg_pool2d(self.shortcut(x), 2)
        return h + s


class Generator(nn.Module):
    """G: normalized pose ``(N, 7)`` -> RGB ``(N, 3, size, size)`` in [-1, 1]."""

    def __init__(self, cfg: PoseGANConfig) -> None:
        super().__init__()
        w = cfg.g_widths
        self.base = cfg.base_size
        self.dense = _sn_linear(cfg.pose_dim, w[0] * self.base * self.base)
        self.blocks = nn.ModuleList([GBlock(w[i], w[i + 1]) for i in range(N_BLOCKS)])
        self.bn = nn.BatchNorm2d(w[-1])
        self.out = _sn_conv(w[-1], 3, 3)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h = self.dense(y).view(y.shape[0], -1, self.base, self.base)
        for b in self.blocks:
            h = b(h)
        return torch.tanh(self.out(F.relu(self.bn(h))))


class Discriminator(nn.Module):
    """D: image ``(N, 3, size, size)`` -> (real / fake score ``(N,)``, pose ``(N, 7)``)."""

    def __init__(self, cfg: PoseGANConfig) -> None:
        super().__init__()
        w = [3, *cfg.d_widths]
        self.phi1 = nn.ModuleList([DBlock(w[i], w[i + 1], first=i == 0) for i in range(N_BLOCKS)])
        self.varphi = _sn_linear(w[-1], 1)
        self.phi3 = _sn_linear(w[-1], cfg.pose_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi1(x): ``(N, 16 ch)`` (ReLU, then the sum over space, as SN-GAN)."""
        h = x
        for b in self.phi1:
            h = b(h)
        return F.relu(h).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.varphi(h).squeeze(1), self.phi3(h)


def center_crop(images: np.ndarray | torch.Tensor, size: int) -> Any:
    """The centred ``size x size`` window of ``(..., H, W, C)`` arrays / ``(..., C, H, W)`` tensors."""
    if isinstance(images, np.ndarray):
        h, w = images.shape[-3], images.shape[-2]
        t, left = (h - size) // 2, (w - size) // 2
        return images[..., t : t + size, left : left + size, :]
    h, w = images.shape[-2], images.shape[-1]
    t, left = (h - size) // 2, (w - size) // 2
    return images[..., t : t + size, left : left + size]


class PoseGAN(ImageToPose, PoseToImage, ModelBase):
    """G and D of a PoseGAN (see the module docstring); ``config`` is a :class:`PoseGANConfig`.

    ``forward(poses (N, 7))`` -> ``{"rgb": (N, 3, S, S)}`` (G); ``forward(images (N, 3, S, S))`` ->
    ``{"pose": (N, 7) normalized, "realness": (N,) varphi(phi1(x)), "confidence": (N,) in [0, 1]}`` (D).
    The confidence is D's real / fake score mapped linearly from the hinge margins [-1, 1] to [0, 1]
    (``clip((varphi + 1) / 2, 0, 1)``: 1 = as real as the training images, 0 = as fake as G's samples); for
    configA, whose real / fake head is never trained, it is 1.
    """

    kind = "posegan"

    def __init__(self, config: PoseGANConfig, pose_normalizer: PoseNormalizer | None = None) -> None:
        super().__init__()
        self.config = config
        self.init_pose_normalization(ENCODING, pose_normalizer)
        self.G = Generator(config)
        self.D = Discriminator(config)

    # The mean position error (m) of D's pose head on the validation frames selects best.pt (the trainer
    # averages per-batch values, so a median over the whole validation set cannot be formed there).
    best_metric = ("val/position_error_m", "min")

    # -- serving: PoseToImage (G) ----------------------------------------------------------------------
    @property
    def image_hw(self) -> tuple[int, int]:
        return (int(self.config.size), int(self.config.size))

    @property
    def has_rgb(self) -> bool:
        return True

    @property
    def has_depth(self) -> bool:
        return False

    # -- serving: ImageToPose (D) ----------------------------------------------------------------------
    @property
    def input_hw(self) -> tuple[int, int]:
        return (int(self.config.size), int(self.config.size))

    def prepare_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` frames of any size -> ``(N, S, S, 3)`` as evaluation sees them: squashed to
        ``load_size`` squared (area interpolation, as the training cache), then the centre ``S x S`` crop.
        Frames already ``S x S`` are taken as prepared and returned unchanged."""
        a = np.asarray(images)
        if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
            raise ConfigError(f"images: expected uint8 (N, H, W, 3), got {a.dtype} {a.shape}")
        s, r = int(self.config.size), self.config.load_size
        if tuple(a.shape[1:3]) == (s, s):
            return a
        if min(a.shape[1:3]) < 2:
            raise ConfigError(f"images of {a.shape[1]}x{a.shape[2]} pixels are too small to localize")
        out = np.stack([cv2.resize(np.ascontiguousarray(f), (r, r), interpolation=cv2.INTER_AREA) for f in a])
        return np.ascontiguousarray(center_crop(out, s))

    def images_to_input(self, images: np.ndarray) -> torch.Tensor:
        """As :meth:`ImageToPose.images_to_input`, but frames of another size are first prepared like the
        evaluation frames (:meth:`prepare_images`) instead of refused."""
        return super().images_to_input(self.prepare_images(images))

    # -- networks --------------------------------------------------------------------------------------
    def generate(self, y: torch.Tensor) -> torch.Tensor:
        return self.G(y)  # type: ignore[no-any-return]

    def discriminate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(varphi(phi1(x)) (N,), F(x) = phi3(phi1(x)) (N, 7))``."""
        return self.D(x)  # type: ignore[no-any-return]

    def d_score(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``D(x, y) = varphi(phi1(x)) + ||phi3(phi1(x)) - y||`` (eq. 3), ``(N,)``."""
        real, pose = self.D(x)
        return real + L.pose_distance(pose, y, self.config.orientation_weight)

    def confidence_from_score(self, realness: torch.Tensor) -> torch.Tensor:
        if not self.config.adversarial:
            return torch.ones_like(realness)
        return ((realness.float() + 1.0) * 0.5).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() == 2:
            return {"rgb": self.G(x)}
        if x.dim() == 4:
            realness, pose = self.D(x)
            return {"pose": pose, "realness": realness, "confidence": self.confidence_from_score(realness)}
        raise ConfigError(f"PoseGAN takes poses (N, 7) or images (N, 3, H, W), got a tensor of shape {tuple(x.shape)}")

    # -- model contract --------------------------------------------------------------------------------
    def get_param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"discriminator": [p for p in self.D.parameters() if p.requires_grad]}
        if self.config.adversarial:
            groups["generator"] = [p for p in self.G.parameters() if p.requires_grad]
        return groups

    def optimizer_defaults(self) -> dict[str, dict[str, Any]]:
        """The paper's (SN-GAN's) optimizer for every group: Adam, lr 2e-4, betas (0, 0.9), no weight decay."""
        adam = {"optimizer": "adam", "lr": 2e-4, "betas": (0.0, 0.9), "weight_decay": 0.0}
        return {g: dict(adam) for g in self.get_param_groups()}

    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """D on the real images (``realness``, ``pose``) and, for the GAN presets, G's samples at their poses."""
        realness, pose = self.D(batch["rgb"])
        out = {"realness": realness, "pose": pose}
        if self.config.adversarial:
            out["fake_rgb"] = self.G(batch["pose"])
        return out

    def get_loss_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """D's loss terms (weighted, their sum is L_D) for ``outputs`` of :meth:`get_outputs`."""
        fake = outputs.get("fake_rgb")
        fake_score = pose_fake = None
        if fake is not None:
            fake_score, pose_fake = self.D(fake.detach())
        return self._d_terms(outputs["realness"], outputs["pose"], fake_score, pose_fake, batch["pose"])[0]

    def _d_terms(
        self,
        real_score: torch.Tensor,
        pose_real: torch.Tensor,
        fake_score: torch.Tensor | None,
        pose_fake: torch.Tensor | None,
        y: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(weighted loss terms summing to L_D, extra values to log)."""
        c = self.config
        if not c.adversarial:  # configA: L_D = E ||F(x) - y||
            real = L.pose_distance(pose_real, y, c.orientation_weight).mean()
            return {"pose_real": real}, {}
        assert fake_score is not None and pose_fake is not None
        l2 = L.d_pose_loss(
            pose_real,
            y,
            pose_fake if c.fake_pose else None,
            adaptive=c.adaptive_gamma,
            k=c.gamma_k,
            constant=c.gamma_const,
            orientation_weight=c.orientation_weight,
        )
        terms = {"hinge": L.hinge_d(real_score, fake_score), "pose_real": c.alpha * l2["pose_real"]}
        logs: dict[str, torch.Tensor] = {"real_score": real_score.mean(), "fake_score": fake_score.mean()}
        if "fake_margin" in l2:
            terms["fake_margin"] = c.alpha * l2["fake_margin"]
            logs["gamma"] = l2["gamma"]
        return terms, logs

    def _g_target(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["rgb_center"] if self.config.center_target and "rgb_center" in batch else batch["rgb"]

    def recalibration_forward(self, batch: dict[str, Any]) -> None:
        """Only G has BatchNorm: run it on the batch's poses (configA never trains G: nothing to do)."""
        if self.config.adversarial:
            self.G(batch["pose"])

    def train_step(
        self,
        batch: dict[str, Any],
        optimizers: Mapping[str, torch.optim.Optimizer],
        *,
        autocast: AutocastFactory,
        step: int,
    ) -> dict[str, torch.Tensor | float]:
        """``n_critic`` D updates, then one G update (GAN presets); configA: one regression update of D."""
        c, x, y = self.config, batch["rgb"], batch["pose"]
        d_opt = [optimizers["discriminator"]]
        logs: dict[str, torch.Tensor | float] = {}
        for _ in range(int(c.n_critic) if c.adversarial else 1):
            with autocast():
                if c.adversarial:
                    with torch.no_grad():
                        fake = self.G(y)
                    scores, poses = self.D(torch.cat([x, fake], dim=0))
                    n = x.shape[0]
                    terms, extra = self._d_terms(scores[:n], poses[:n], scores[n:], poses[n:], y)
                else:
                    scores, poses = self.D(x)
                    n = x.shape[0]
                    terms, extra = self._d_terms(scores, poses, None, None, y)
            total = backward_and_step(terms, d_opt, step=step, what="discriminator loss")
            logs.update(group_logs("discriminator", {**terms, **extra, "loss": total}))
        logs.update(self._pose_errors(poses[:n].detach(), y))
        if c.adversarial:
            d_params = list(self.D.parameters())
            flags = [p.requires_grad for p in d_params]
            for p in d_params:  # G's update: gradients flow through D to G, D's own are not needed
                p.requires_grad_(False)
            try:
                with autocast():
                    fake = self.G(y)
                    fake_score, pose_fake = self.D(fake)
                    g_terms = L.g_losses(
                        fake_score,
                        pose_fake,
                        y,
                        fake,
                        self._g_target(batch),
                        beta1=c.beta1,
                        beta2=c.beta2,
                        orientation_weight=c.orientation_weight,
                    )
                total = backward_and_step(g_terms, [optimizers["generator"]], step=step, what="generator loss")
            finally:
                for p, f in zip(d_params, flags):
                    p.requires_grad_(f)
            logs.update(group_logs("generator", {**g_terms, "loss": total}))
        return logs

    def validation_step(self, batch: dict[str, Any], *, autocast: AutocastFactory) -> dict[str, torch.Tensor | float]:
        """Localization errors of D's pose head (``position_error_m``, ``orientation_error_deg``, means over
        the frames) and the D / G loss terms on the validation batch (G's at the batch's poses)."""
        c, x, y = self.config, batch["rgb"], batch["pose"]
        with autocast():
            real_score, pose_real = self.D(x)
            vals: dict[str, torch.Tensor | float] = dict(self._pose_errors(pose_real, y))
            if c.adversarial:
                fake = self.G(y)
                fake_score, pose_fake = self.D(fake)
                terms, extra = self._d_terms(real_score, pose_real, fake_score, pose_fake, y)
                g_terms = L.g_losses(
                    fake_score, pose_fake, y, fake, self._g_target(batch),
                    beta1=c.beta1, beta2=c.beta2, orientation_weight=c.orientation_weight,
                )  # fmt: skip
                vals.update(group_logs("generator", {**g_terms, "loss": sum(g_terms.values())}))
                vals["rgb_mae_px"] = float((fake.float() - self._g_target(batch).float()).abs().mean()) * 127.5
            else:
                terms, extra = self._d_terms(real_score, pose_real, None, None, y)
            vals.update(group_logs("discriminator", {**terms, **extra, "loss": sum(terms.values())}))
        return vals

    # -- metrics in data units -------------------------------------------------------------------------
    def denormalize_pose_tensor(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized ``(N, 7)`` -> (position ``(N, 3)`` in metres, unit quaternion ``(N, 4)`` xyzw), in torch."""
        lo = self.pose_min.to(device=x.device, dtype=torch.float32)
        span = self.pose_max.to(device=x.device, dtype=torch.float32) - lo
        enc = torch.where(span > 0, (x.float() + 1.0) * 0.5 * span + lo, lo.expand_as(x))
        q = enc[:, 3:7]
        q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True).clamp_min(1e-12)
        return enc[:, :3], q

    @torch.no_grad()
    def _pose_errors(self, pose: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean position error (m) and orientation error (deg) of predicted vs true normalized poses."""
        p_hat, q_hat = self.denormalize_pose_tensor(pose)
        p, q = self.denormalize_pose_tensor(y)
        pos = torch.linalg.vector_norm(p_hat - p, dim=1)
        dot = (q_hat * q).sum(dim=1).abs().clamp(max=1.0)
        ang = torch.rad2deg(2.0 * torch.acos(dot))
        return {"position_error_m": pos.mean(), "orientation_error_deg": ang.mean()}


def build_model(cfg: PoseGANConfig, pose_normalizer: PoseNormalizer | None = None) -> PoseGAN:
    """A fresh PoseGAN for ``cfg`` (the pose normalization is set later: training fits it on the training
    poses, a checkpoint load restores it)."""
    return PoseGAN(cfg, pose_normalizer)
