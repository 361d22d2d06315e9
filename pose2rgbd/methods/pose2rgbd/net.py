"""The Pose2RGBD networks (paper Sec. 2, Fig. 1): Base (a DCGAN-like generator) and Slice-S.

Base: ``Linear(pose) -> 4x4 x dense_channels -> BN -> ReLU``, then stride-2 transposed convolutions with
BN + ReLU doubling the resolution up to the output size; the last one outputs the image channels and a tanh.

Slice-S: the same trunk, but its last upsampling outputs ``bottleneck_channels`` features followed by a
bottleneck of 3x3 convolutions (BN + ReLU)::

    up -> b1 -> b2 (penultimate) ---------------------------> concat -> b3 -> out conv -> tanh (RGB / D / RGBD)
                 \\-> slice head (3x3 conv, sigmoid) -> S maps -/
                                                      \\-> confidence = sum of the S slice probabilities

The slice head is trained with a per-slice binary cross entropy against one-hot depth slices
(:func:`pose2rgbd.methods.pose2rgbd.slices.slice_targets`). Every output lies in [-1, 1].

The model owns its transforms as buffers (saved with the weights): the pose normalization (``pose_min`` /
``pose_max``, :class:`~pose2rgbd.models.interfaces.PoseToImage`) and the depth range (``depth_range``,
:class:`DepthNormalizer`, the one source of truth for depth scaling in training, evaluation and serving).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.methods.pose2rgbd.adversarial import PoseDiscriminator
from pose2rgbd.methods.pose2rgbd.config import Pose2RGBDConfig
from pose2rgbd.methods.pose2rgbd.geometry_losses import (
    backward_warp,
    forward_splat,
    masked_mean,
    perturb_poses,
    photometric_error,
)
from pose2rgbd.methods.pose2rgbd.slices import slice_targets
from pose2rgbd.methods.posegan import losses as gan_losses
from pose2rgbd.models.base import AutocastFactory, ModelBase, backward_and_step, group_logs
from pose2rgbd.models.interfaces import PoseToImage
from pose2rgbd.models.normalization import DepthNormalizer, PoseNormalizer

DISCRIMINATOR = "discriminator"  # optimizer group of the adversarial term's discriminator


def _up(cin: int, cout: int, k: int, *, bias: bool) -> nn.ConvTranspose2d:
    # Exact doubling: k=3 -> padding 1, output_padding 1; k=4 -> padding 1, output_padding 0.
    return nn.ConvTranspose2d(cin, cout, k, stride=2, padding=1, output_padding=1 if k == 3 else 0, bias=bias)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Pose2RGBDNet(PoseToImage, ModelBase):
    """Base / Slice network. ``forward(pose (B, D) in [-1, 1]) -> dict`` (see :func:`build_model`)."""

    kind = "pose2rgbd"

    def __init__(
        self,
        config: Pose2RGBDConfig,
        depth_normalizer: DepthNormalizer | None = None,
        pose_normalizer: PoseNormalizer | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.init_pose_normalization(config.encoding, pose_normalizer)
        c = config
        c0 = int(c.dense_channels)
        self.dense = nn.Linear(c.input_dim, 16 * c0)
        self.dense_bn = nn.BatchNorm2d(c0)
        n_up = c.n_upsamplings(c.size)
        widths = [int(w) for w in c.trunk_channels[: n_up - 1]]
        layers: list[nn.Module] = []
        cin = c0
        for w in widths:
            layers += [_up(cin, w, c.kernel_size, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        self.trunk = nn.Sequential(*layers)
        self.last_up: nn.Module
        if not c.is_slice:
            self.last_up = _up(cin, c.out_channels, c.kernel_size, bias=True)
        else:
            b = int(c.bottleneck_channels)
            self.last_up = nn.Sequential(_up(cin, b, c.kernel_size, bias=False), nn.BatchNorm2d(b), nn.ReLU(True))
            self.b1 = _conv_bn_relu(b, b)
            self.b2 = _conv_bn_relu(b, b)
            self.slice_head = nn.Conv2d(b, c.slices, 3, padding=1, bias=True)
            self.b3 = _conv_bn_relu(b + c.slices, b)
            self.out_conv = nn.Conv2d(b, c.out_channels, 3, padding=1, bias=True)
        if c.uses_adversarial:  # training-only; never built (no parameters, same state dict) when off
            self.discriminator = PoseDiscriminator(
                c.adversarial_in_channels, c.input_dim, int(c.size), int(c.adversarial_channels)
            )
        dn = depth_normalizer or DepthNormalizer(0.0, 1.0)
        self.depth_range: torch.Tensor
        self.register_buffer("depth_range", torch.tensor([dn.min_m, dn.max_m], dtype=torch.float64))

    # -- depth range -------------------------------------------------------------------------------------
    @property
    def depth_normalizer(self) -> DepthNormalizer:
        lo, hi = (float(v) for v in self.depth_range.tolist())
        return DepthNormalizer(lo, hi)

    def set_depth_normalizer(self, dn: DepthNormalizer) -> None:
        self.depth_range.copy_(torch.tensor([dn.min_m, dn.max_m], dtype=torch.float64))

    # -- serving transforms (PoseToImage) ----------------------------------------------------------------
    @property
    def image_hw(self) -> tuple[int, int]:
        return (int(self.config.size), int(self.config.size))

    @property
    def has_rgb(self) -> bool:
        return self.config.has_rgb

    @property
    def has_depth(self) -> bool:
        return self.config.has_depth

    @property
    def depth_range_m(self) -> tuple[float, float] | None:
        if not self.config.has_depth:
            return None
        dn = self.depth_normalizer
        return (dn.min_m, dn.max_m)

    def depth_to_metres(self, depth: torch.Tensor) -> torch.Tensor:
        return self.depth_normalizer.denormalize(depth)  # type: ignore[no-any-return]

    # -- forward -----------------------------------------------------------------------------------------
    def forward(self, pose: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        x = self.dense(pose).view(pose.shape[0], -1, 4, 4)
        x = F.relu(self.dense_bn(x))
        x = self.trunk(x)
        out: dict[str, torch.Tensor] = {}
        if not c.is_slice:
            y = torch.tanh(self.last_up(x))
        else:
            x = self.last_up(x)
            x = self.b2(self.b1(x))
            logits = self.slice_head(x)
            probs = torch.sigmoid(logits)
            x = self.b3(torch.cat([x, probs], dim=1))
            y = torch.tanh(self.out_conv(x))
            out["slice_logits"] = logits
            out["slices"] = probs
            out["confidence"] = probs.sum(dim=1, keepdim=True)
        if c.has_rgb:
            out["rgb"] = y[:, :3]
        if c.has_depth:
            out["depth"] = y[:, -1:]
        return out

    # -- model contract ----------------------------------------------------------------------------------
    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self(batch["pose"])

    # -- geometry-aware training (config switches, all off for the paper's presets) ----------------------
    def set_training_camera(self, camera: PinholeCamera) -> None:
        """The intrinsics of the training images (at the model's size), needed by the geometry-aware terms.
        Not saved with the weights: the recipe sets it for every run (a resumed one included)."""
        if (camera.width, camera.height) != self.image_hw[::-1]:
            raise ConfigError(
                f"training camera is {camera.width}x{camera.height}, the model renders {self.image_hw[1]}x"
                f"{self.image_hw[0]}: scale it first (PinholeCamera.scaled)"
            )
        self.__dict__["_training_camera"] = camera

    def _K(self, n: int, device: torch.device) -> torch.Tensor:
        cam = self.__dict__.get("_training_camera")
        if cam is None:
            raise ConfigError(
                "geometry-aware training terms need the training camera: train through the pose2rgbd recipe "
                "(it calls model.set_training_camera) or call it yourself"
            )
        return torch.as_tensor(cam.K, dtype=torch.float64, device=device)[None].expand(n, 3, 3)

    def _encode(self, T_world_cam: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        x, _ = self.poses_to_input(T_world_cam.detach().cpu().numpy())
        return x.to(device=like.device, dtype=like.dtype)

    def _metres(self, depth: torch.Tensor) -> torch.Tensor:
        return self.depth_normalizer.denormalize(depth.float())  # type: ignore[no-any-return]

    # -- optimizer groups (a second one only with the adversarial term) ----------------------------------
    def renderer_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of the renderer (everything but the discriminator)."""
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("discriminator.")]

    def get_param_groups(self) -> dict[str, list[nn.Parameter]]:
        if not self.config.uses_adversarial:
            return super().get_param_groups()
        return {
            "model": self.renderer_parameters(),
            DISCRIMINATOR: [p for p in self.discriminator.parameters() if p.requires_grad],
        }

    def optimizer_defaults(self) -> dict[str, dict[str, Any]]:
        """The discriminator's optimizer is PoseGAN's (SN-GAN's): Adam, lr 2e-4, betas (0, 0.9), no weight
        decay (``train.groups.discriminator.*`` overrides it); the renderer keeps the global settings."""
        if not self.config.uses_adversarial:
            return {}
        return {DISCRIMINATOR: {"optimizer": "adam", "lr": 2e-4, "betas": (0.0, 0.9), "weight_decay": 0.0}}

    def train_step(
        self,
        batch: dict[str, Any],
        optimizers: Mapping[str, torch.optim.Optimizer],
        *,
        autocast: AutocastFactory,
        step: int,
    ) -> dict[str, torch.Tensor | float]:
        """The single-objective step, plus the geometry-aware terms when a switch is on (one forward over the
        training poses and the perturbed ones together, so they share BatchNorm statistics). Validation keeps
        the plain losses, so validation values stay comparable with and without the switches.

        With the adversarial term (``adversarial_weight`` > 0) the renders of that one forward also train the
        discriminator: first a D update on the real frames vs the (detached) renders, then the renderer's
        update with ``adversarial_weight * hinge_g`` added, through the just-updated D held fixed (eval mode:
        no spectral-norm power iteration, no gradients into D). Each update steps only its own group."""
        c = self.config
        if not c.uses_geometry and not c.uses_adversarial:
            return super().train_step(batch, optimizers, autocast=autocast, step=step)
        outputs, losses = self._renderer_losses(batch, autocast)
        logs: dict[str, torch.Tensor | float] = {}
        g_opts: list[torch.optim.Optimizer] = list(optimizers.values())
        if c.uses_adversarial:
            logs.update(self.discriminator_update(batch, outputs, optimizers[DISCRIMINATOR], autocast, step=step))
            losses["adversarial"] = c.adversarial_weight * self.adversarial_term(outputs, batch, autocast)
            g_opts = [optimizers["model"]]
        total = backward_and_step(losses, g_opts, step=step)
        logs.update({k: v.detach() for k, v in losses.items()})
        logs["loss"] = total
        logs.update(self.get_metrics_dict(outputs, batch))
        return logs

    def _renderer_losses(
        self, batch: dict[str, Any], autocast: AutocastFactory
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(outputs at the batch's poses, the renderer's weighted losses: plain + geometry-aware terms)."""
        c = self.config
        if not c.uses_geometry:
            with autocast():
                outputs = self.get_outputs(batch)
                losses = self.get_loss_dict(outputs, batch)
            return outputs, losses
        if "T_world_cam" not in batch:
            raise ConfigError("geometry-aware training needs batch['T_world_cam']: train through the pose2rgbd recipe")
        T = batch["T_world_cam"].double()
        B = T.shape[0]
        poses = [batch["pose"]]
        T_c = T_a = d_c = d_a = None
        if c.uses_consistency:
            T_c, d_c = perturb_poses(T, c.consistency_radius_m, c.consistency_radius_deg)
            poses.append(self._encode(T_c, batch["pose"]))
        if c.pose_augment_weight > 0:
            T_a, d_a = perturb_poses(T, c.pose_augment_radius_m, c.pose_augment_radius_deg)
            poses.append(self._encode(T_a, batch["pose"]))
        with autocast():
            every = self(torch.cat(poses, dim=0))
            parts = [{k: v[i * B : (i + 1) * B] for k, v in every.items()} for i in range(len(poses))]
            outputs = parts[0]
            losses = self.get_loss_dict(outputs, batch)
        # the warps run in fp32 outside mixed precision: bf16 matmuls would move points by decimetres at 50 m
        k = 1
        if d_c is not None:
            losses.update(self.consistency_losses(outputs, parts[k], batch, d_c))
            k += 1
        if d_a is not None:
            losses.update(self.augment_losses(parts[k], batch, d_a))
        return outputs, losses

    # -- adversarial term (config switch, off for the paper's presets) ------------------------------------
    def discriminator_images(
        self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(real, rendered) ``(B, C, S, S)`` images as the discriminator sees them: RGB and/or normalized depth
        (``config.adversarial_in_channels``). Pixels without real depth (NaN) are 0 in both, so a missing
        depth does not tell real from rendered."""
        c = self.config
        real: list[torch.Tensor] = []
        fake: list[torch.Tensor] = []
        if c.has_rgb:
            real.append(batch["rgb"].float())
            fake.append(outputs["rgb"].float())
        if c.adversarial_in_channels > 3 * c.has_rgb:
            t, valid = self._depth_target(batch)
            v = valid.float()
            real.append(t * v)
            fake.append(outputs["depth"].float() * v)
        return torch.cat(real, dim=1), torch.cat(fake, dim=1)

    def discriminator_update(
        self,
        batch: dict[str, Any],
        outputs: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        autocast: AutocastFactory,
        *,
        step: int,
    ) -> dict[str, float]:
        """One D update (hinge loss, real frames vs the detached renders at their poses); only ``optimizer``
        (the discriminator's) steps and no gradient reaches the renderer. Returns ``discriminator/*`` logs."""
        real, fake = self.discriminator_images(outputs, batch)
        y = batch["pose"]
        n = real.shape[0]
        with autocast():
            scores = self.discriminator(torch.cat([real, fake.detach()], dim=0), torch.cat([y, y], dim=0))
            terms = {"hinge": gan_losses.hinge_d(scores[:n], scores[n:])}
        total = backward_and_step(terms, [optimizer], step=step, what="discriminator loss")
        extra = {"real_score": scores[:n].detach().float().mean(), "fake_score": scores[n:].detach().float().mean()}
        return group_logs(DISCRIMINATOR, {**extra, "loss": total})

    def adversarial_term(
        self, outputs: dict[str, torch.Tensor], batch: dict[str, Any], autocast: AutocastFactory
    ) -> torch.Tensor:
        """PoseGAN's generator hinge term ``-mean(D(render, pose))`` (unweighted), with D fixed: eval mode (its
        spectral-norm vectors are not advanced) and no gradients for its parameters, so D stays bit-identical."""
        disc = self.discriminator
        params = list(disc.parameters())
        flags = [p.requires_grad for p in params]
        was_training = disc.training
        disc.eval()
        for p in params:
            p.requires_grad_(False)
        try:
            _, fake = self.discriminator_images(outputs, batch)
            with autocast():
                score = disc(fake, batch["pose"])
            return gan_losses.hinge_g(score)
        finally:
            disc.train(was_training)
            for p, f in zip(params, flags):
                p.requires_grad_(f)

    def consistency_losses(
        self,
        out0: dict[str, torch.Tensor],
        out1: dict[str, torch.Tensor],
        batch: dict[str, Any],
        T_cam0_cam1: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Multi-view consistency between the render at the training pose (``out0``) and at a nearby pose
        (``out1``, ``T_cam0_cam1`` the relative pose), already weighted:

        * ``consistency``: render 1 warped into pose 0 through the predicted depth 0 vs render 0 (photometric,
          plus ``consistency_depth_weight`` x the depth disagreement in normalized units), where visible;
        * ``consistency_real``: the real training frame warped into pose 1 through the predicted depth 1 vs
          render 1 (photometric and depth against the real depth), where visible.
        Pixels at the depth cap (sky / beyond range) count photometrically but not in the depth terms.
        """
        c = self.config
        K = self._K(T_cam0_cam1.shape[0], T_cam0_cam1.device)
        half_span = 0.5 * self.depth_normalizer.span
        losses: dict[str, torch.Tensor] = {}
        D0, D1 = self._metres(out0["depth"]), self._metres(out1["depth"])
        near0 = (out0["depth"].detach() < 0.99).float()
        if c.consistency_weight > 0:
            src = out1["rgb"].float() if c.has_rgb else out1["depth"].float()
            warped, z1, d1_at, valid = backward_warp(
                src, D1, D0, torch.linalg.inv(T_cam0_cam1), K, occlusion_tol=c.consistency_occlusion_tol
            )
            term = torch.zeros((), device=D0.device)
            if c.has_rgb:
                photo = photometric_error(out0["rgb"].float(), warped, ssim_share=c.consistency_ssim)
                term = term + masked_mean(photo, valid)
            dz = (d1_at - z1).abs() / half_span
            term = term + c.consistency_depth_weight * masked_mean(dz, valid & (near0 > 0))
            losses["consistency"] = c.consistency_weight * term
        if c.consistency_real_weight > 0:
            gt = batch["depth"].float()
            gt_ok = ~torch.isnan(gt)
            gt_m = torch.where(gt_ok, gt.clamp(max=self.depth_normalizer.max_m), torch.zeros_like(gt))
            # the real frame's "has depth" mask travels with it: source pixels without depth (NaN) do not count
            src = torch.cat([batch["rgb"].float() if c.has_rgb else gt_m, gt_ok.float()], dim=1)
            warped, z0, d0_at, valid = backward_warp(
                src, gt_m, D1, T_cam0_cam1, K, occlusion_tol=c.consistency_occlusion_tol
            )
            valid = valid & (warped[:, -1:].detach() > 0.999)
            warped = warped[:, :-1]
            near1 = out1["depth"].detach() < 0.99
            term = torch.zeros((), device=D1.device)
            if c.has_rgb:
                photo = photometric_error(out1["rgb"].float(), warped, ssim_share=c.consistency_ssim)
                term = term + masked_mean(photo, valid)
            dz = (d0_at - z0).abs() / half_span
            term = term + c.consistency_depth_weight * masked_mean(dz, valid & near1)
            losses["consistency_real"] = c.consistency_real_weight * term
        return losses

    def augment_losses(
        self, out: dict[str, torch.Tensor], batch: dict[str, Any], T_cam_aug: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Pose-space augmentation: the render at the perturbed pose vs the training frame forward-splatted
        into it with its own depth (z-buffered; holes and pixels without depth left out), weighted
        ``pose_augment_weight`` (``augment`` = its RGB and depth mean squared errors)."""
        c = self.config
        K = self._K(T_cam_aug.shape[0], T_cam_aug.device)
        dn = self.depth_normalizer
        rgb_t, depth_t, valid = forward_splat(
            batch["rgb"].float(), batch["depth"].float(), torch.linalg.inv(T_cam_aug), K, far_m=dn.max_m
        )
        term = torch.zeros((), device=rgb_t.device)
        if c.has_rgb:
            term = term + masked_mean((out["rgb"].float() - rgb_t) ** 2, valid)
        if c.has_depth:
            t = dn.normalize(torch.where(valid, depth_t, torch.zeros_like(depth_t)))
            term = term + masked_mean((out["depth"].float() - t) ** 2, valid)
        return {"augment": c.pose_augment_weight * term}

    def _depth_target(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized depth target (sky/+inf -> 1, i.e. the range maximum) and the valid mask (not NaN)."""
        d = batch["depth"].float()
        valid = ~torch.isnan(d)
        dn = self.depth_normalizer
        t = dn.normalize(torch.where(valid, d, torch.zeros_like(d)))
        return t, valid

    def get_loss_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.config
        losses: dict[str, torch.Tensor] = {}
        if c.has_rgb:
            losses["rgb_mse"] = F.mse_loss(outputs["rgb"].float(), batch["rgb"].float())
        if c.has_depth:
            t, valid = self._depth_target(batch)
            v = valid.float()
            n = v.sum().clamp_min(1.0)
            losses["depth_mse"] = (((outputs["depth"].float() - t) ** 2) * v).sum() / n
            if c.is_slice:
                target = slice_targets(torch.where(valid, t, torch.full_like(t, float("nan"))), c.slices)
                bce = F.binary_cross_entropy_with_logits(outputs["slice_logits"].float(), target, reduction="none")
                losses["slice_bce"] = c.slice_loss_weight * (bce * v).sum() / (n * c.slices)
        return losses

    @torch.no_grad()
    def get_metrics_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, Any]:
        """Cheap batch metrics in data units (the full evaluation lives in pose2rgbd.evaluation)."""
        m: dict[str, Any] = {}
        if self.config.has_rgb:
            m["rgb_mae_px"] = (outputs["rgb"].float().clamp(-1, 1) - batch["rgb"]).abs().mean() * 127.5
        if self.config.has_depth:
            gt = batch["depth"].float()
            dn = self.depth_normalizer
            fin = torch.isfinite(gt) & (gt <= dn.max_m)
            if bool(fin.any()):
                pred = dn.denormalize(outputs["depth"].float())
                m["depth_mae"] = (pred - gt)[fin].abs().mean()
        return m


def build_model(
    cfg: Pose2RGBDConfig,
    depth_normalizer: DepthNormalizer | None = None,
    pose_normalizer: PoseNormalizer | None = None,
) -> Pose2RGBDNet:
    """The network for ``cfg``. ``model(pose)`` returns a dict:

    * ``"rgb"`` ``(B, 3, S, S)`` in [-1, 1] when ``cfg.outputs`` has RGB;
    * ``"depth"`` ``(B, 1, S, S)`` in [-1, 1] (see ``model.depth_normalizer``) when it has depth;
    * slice presets also ``"slices"`` ``(B, K, S, S)`` probabilities, ``"slice_logits"`` and
      ``"confidence"`` ``(B, 1, S, S)`` = sum of the slice probabilities.

    The normalizers are the model's transforms (buffers); left out, they are set later (training fits them,
    a checkpoint load restores them).
    """
    return Pose2RGBDNet(cfg, depth_normalizer, pose_normalizer)
