"""The hybrid's network part -- the Pose2RGBD decoder and the fill U-Net -- as one module with plain tensor inputs
and outputs, so it exports to ONNX and runs in ONNX Runtime while the warp (data-dependent scatters, no graph)
stays in torch / numba.

:class:`FillUNet` is the fill network (its input: the ``FILL_INPUTS`` channels of decoder and warped RGB-D, valid
and hits). :class:`NetworkPart` ``(pose, warped rgb, warped depth, valid, hits) -> (rgb, log depth scale)``: exactly the
computation of :meth:`pose2rgbd.methods.hybrid.net.HybridNet.forward` between the warp and the depth correction.
:func:`export_network_part` writes it to an ``.onnx`` file (dynamic batch axis) and checks the file against torch;
:class:`OnnxNetworkPart` runs such a file with the same call signature. The render engine uses them when a hybrid
``.pt`` checkpoint is served with ``engine.backend onnxruntime``
(:meth:`~pose2rgbd.methods.hybrid.net.HybridNet.serve_network_part_with_onnxruntime`).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pose2rgbd.errors import CheckpointError
from pose2rgbd.methods.hybrid.fill_serving import fused_forward

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

log = logging.getLogger(__name__)

INPUTS = ("pose", "warped_rgb", "warped_depth", "valid", "hits")
OUTPUTS = ("rgb", "log_scale")
DEFAULT_TOLERANCE = 1e-3  # max abs difference to torch, in the outputs' units ([-1, 1] colour, log scale)
FILL_INPUTS = 10  # decoder RGB 3 + depth 1, warped RGB 3 + depth 1, valid 1, hits 1
DECODER_CHANNELS = 4  # the leading ones: the decoder's RGB and depth (zeros in a model without one)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class FillUNet(nn.Module):
    """A small U-Net: ``levels`` stride-2 stages of two 3x3 convolutions (widths c, 2c, 4c, ...), bilinear
    upsampling with skip connections, a zero-initialized 3x3 output convolution (4 channels: RGB + depth).

    ``space_to_depth`` s > 1 runs the whole U-Net at 1/s of the image's resolution: the input's s x s pixel blocks
    become channels (``pixel_unshuffle``; input channel i is channels i*s^2 .. (i+1)*s^2 - 1) and the output
    convolution answers the s^2 pixels of each block (``pixel_shuffle``, sub-pixel convolution: Shi et al., CVPR
    2016). No convolution runs at full resolution, where a narrow layer is slowest per operation on a CPU
    (docs/serving.md, "A fill at half resolution")."""

    def __init__(self, cin: int, channels: int, levels: int, space_to_depth: int = 1) -> None:
        super().__init__()
        c = int(channels)
        self.space_to_depth = s = int(space_to_depth)
        if s < 1:
            raise ValueError(f"space_to_depth {space_to_depth} must be >= 1")
        self.stem = nn.Sequential(_conv(cin * s * s, c), _conv(c, c))
        widths = [c * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList(
            nn.Sequential(_conv(widths[i], widths[i + 1], 2), _conv(widths[i + 1], widths[i + 1]))
            for i in range(levels)
        )
        self.up = nn.ModuleList(_conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(levels)))
        self.out = nn.Conv2d(c, 4 * s * s, 3, padding=1)
        with torch.no_grad():  # the residual starts at zero: the untrained model answers the warped frames
            self.out.weight.zero_()
            self.out.bias.zero_()  # type: ignore[union-attr]

    def check_sides(self, x: torch.Tensor) -> None:
        """A ValueError naming the sides of ``x`` where they are not multiples of :attr:`space_to_depth`."""
        s = self.space_to_depth
        h, w = x.shape[-2:]
        if h % s or w % s:
            raise ValueError(f"the fill's space_to_depth {s} needs image sides that are multiples of {s}, got {h}x{w}")

    def to_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The input at the U-Net's resolution (:attr:`space_to_depth`'s blocks as channels); sides that are not
        multiples of the block are a ValueError naming them."""
        self.check_sides(x)
        return x if self.space_to_depth == 1 else F.pixel_unshuffle(x, self.space_to_depth)

    def from_blocks(self, y: torch.Tensor) -> torch.Tensor:
        """The output convolution's answer at the image's resolution (the inverse of :meth:`to_blocks`)."""
        s = self.space_to_depth
        return y if s == 1 else F.pixel_shuffle(y, s)

    def forward(self, x: torch.Tensor, absent: int = 0) -> torch.Tensor:
        """``x`` (B, cin, H, W), or with ``absent`` > 0 its channels from ``absent`` on, the leading ones known to
        be zero (the decoder's, in a model without one): they add nothing to the first convolution, which then
        runs on the others alone (serving: at 256x256 on one thread the stem 1.25 -> 0.82 ms, and no zeros to
        build; docs/serving.md). Serving on a CPU (no gradients) takes the fused convolutions of
        :mod:`~pose2rgbd.methods.hybrid.fill_serving` where they answer as :meth:`forward_eager` does."""
        y = fused_forward(self, x, absent)
        return self.forward_eager(x, absent) if y is None else y

    def forward_eager(self, x: torch.Tensor, absent: int = 0) -> torch.Tensor:
        """:meth:`forward` one torch op at a time (training; where the fused path does not serve). Training on a CPU
        runs it in channels-last: oneDNN's convolutions and their gradients take the layout of their input, and in
        channels-last a training step of ``hybrid-fast``'s fill (batch 16 at 128x128, one AVX2 thread, float32) took
        0.61-0.77 of its time in the default layout (docs/results.md, "Training in channels-last")."""
        if x.device.type == "cpu" and torch.is_grad_enabled():
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.to_blocks(x)
        if absent:  # input channel i is the blocks' channels i*s^2 .. (i+1)*s^2 - 1: the absent ones lead still
            conv, relu = cast(tuple[nn.Conv2d, nn.ReLU], tuple(cast(nn.Sequential, self.stem[0])))
            first = relu(F.conv2d(x, self._weight_from(conv, absent * self.space_to_depth**2), conv.bias, padding=1))
            skips = [self.stem[1](first)]
        else:
            skips = [self.stem(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        y = skips.pop()
        for stage in self.up:
            s = skips.pop()
            y = F.interpolate(y, size=s.shape[-2:], mode="bilinear", align_corners=False)
            # stage(cat([y, s])) as two convolutions summed: the same sum of products without the copy of both
            # inputs into one tensor (on a CPU in channels-last the copy cost more than the convolutions saved:
            # the fill at 512x512 on 2 threads, 47.6 -> 41.7 ms; docs/serving.md)
            conv, relu = cast(tuple[nn.Conv2d, nn.ReLU], tuple(cast(nn.Sequential, stage)))
            w_y, w_s = self._split_weight(conv, y.shape[1])
            y = relu(F.conv2d(y, w_y, conv.bias, padding=1) + F.conv2d(s, w_s, padding=1))
        return self.from_blocks(self.out(y))

    def _split_weight(self, conv: nn.Conv2d, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``conv``'s weight split after input channel ``c``. Serving (no gradient): contiguous copies in the
        weight's own layout, made once per weight (slices of a channels-last weight are re-laid out by oneDNN at
        every call: the fill at 512x512 ran 10 % slower); training: views, so the gradient reaches the weight."""
        w = conv.weight
        if torch.is_grad_enabled() and w.requires_grad:
            return w[:, :c], w[:, c:]
        cache: dict[tuple[int, int], Any] = self.__dict__.setdefault("_split_cache", {})
        key = (w.data_ptr(), w._version, c, w.stride())
        hit = cache.get((id(conv), c))
        if hit is None or hit[0] != key:
            fmt = torch.channels_last if w.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            hit = (key, w[:, :c].contiguous(memory_format=fmt), w[:, c:].contiguous(memory_format=fmt))
            cache[(id(conv), c)] = hit
        return hit[1], hit[2]

    def _weight_from(self, conv: nn.Conv2d, c: int) -> torch.Tensor:
        """``conv``'s weight from input channel ``c`` on (:meth:`_split_weight`'s second part)."""
        return self._split_weight(conv, c)[1]


def decoder_inputs(decoder: nn.Module | None, pose: torch.Tensor, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """The decoder's ``"rgb"`` (B, 3, S, S) and ``"depth"`` (B, 1, S, S) for the fill network: its render of
    ``pose`` (fixed dimensions already 0), or zeros shaped and typed as ``like`` (the warped RGB) without one
    (``model.decoder`` false)."""
    if decoder is not None:
        return decoder(pose)  # type: ignore[no-any-return]
    z = like.new_zeros((like.shape[0], 1, *like.shape[-2:]))
    return {"rgb": z.expand(-1, 3, -1, -1), "depth": z}


class NetworkPart(nn.Module):
    """Decoder + fill of a hybrid model (shares their weights): ``forward(pose (B, D) normalized, warped_rgb
    (B, 3, S, S), warped_depth (B, 1, S, S) normalized, valid (B, 1, S, S) float, hits (B, 1, S, S)) ->
    (rgb (B, 3, S, S), log_scale (B, 1, S, S))``."""

    def __init__(self, decoder: nn.Module | None, fill: nn.Module, pose_fixed: torch.Tensor) -> None:
        super().__init__()
        self.decoder = decoder
        self.fill = fill
        self.pose_fixed: torch.Tensor
        self.register_buffer("pose_fixed", pose_fixed.clone(), persistent=False)

    def forward(
        self, pose: torch.Tensor, w_rgb: torch.Tensor, w_depth: torch.Tensor, valid: torch.Tensor, hits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dec = decoder_inputs(self.decoder, pose.masked_fill(self.pose_fixed, 0.0), w_rgb)
        dt = dec["rgb"].dtype
        x = torch.cat([dec["rgb"], dec["depth"], w_rgb.to(dt), w_depth.to(dt), valid.to(dt), hits.to(dt)], dim=1)
        res = self.fill(x)
        return w_rgb + res[:, :3], res[:, 3:4]


def example_inputs(pose_dim: int, size: int, batch: int, *, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs in the ranges the warp produces."""
    g = torch.Generator().manual_seed(seed)
    s = int(size)
    pose = torch.rand((batch, pose_dim), generator=g) * 2 - 1
    rgb = torch.rand((batch, 3, s, s), generator=g) * 2 - 1
    depth = torch.rand((batch, 1, s, s), generator=g) * 2 - 1
    valid = (torch.rand((batch, 1, s, s), generator=g) > 0.2).float()
    hits = torch.randint(0, 4, (batch, 1, s, s), generator=g).float() / 3.0
    return pose, rgb, depth, valid, hits


def export_network_part(
    part: NetworkPart,
    path: str | Path,
    *,
    pose_dim: int,
    size: int,
    opset: int = 17,
    tolerance: float = DEFAULT_TOLERANCE,
) -> float:
    """Write ``part`` (a CPU fp32 copy) to ``path`` as ONNX (torchscript exporter, dynamic batch), check it in ONNX
    Runtime at batches 2 and 1 against torch and return the max abs error; a larger error than ``tolerance``
    raises :class:`CheckpointError` and leaves no file."""
    import onnxruntime as ort

    m = copy.deepcopy(part).cpu().float().eval()
    for mod in m.modules():  # the exporter traces in the default layout
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            mod.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    p = Path(path)
    x1 = example_inputs(pose_dim, size, 1)
    dyn = {n: {0: "batch"} for n in (*INPUTS, *OUTPUTS)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter; the result is checked below
            torch.onnx.export(
                m, x1, str(p), input_names=list(INPUTS), output_names=list(OUTPUTS), opset_version=opset,
                dynamo=False, dynamic_axes=dyn,
            )  # fmt: skip
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        err = 0.0
        for i, b in enumerate((2, 1)):
            xs = example_inputs(pose_dim, size, b, seed=1 + i)
            with torch.inference_mode():
                ref = m(*xs)
            got = sess.run(list(OUTPUTS), ort_feed(graph_inputs(sess), xs))
            for r, g in zip(ref, got, strict=True):
                err = max(err, float(np.abs(r.numpy() - g).max()))
        if not err <= tolerance:
            raise CheckpointError(
                f"the hybrid's network part exported to ONNX does not match torch: max abs error {err:.3g} > "
                f"{tolerance:g}; serve it with engine.backend torch"
            )
    except Exception:
        if p.exists():
            os.unlink(p)
        raise
    return err


def graph_inputs(session: InferenceSession) -> frozenset[str]:
    """The names of the inputs an exported network part kept: without a decoder (``model.decoder`` false) no output
    depends on the pose, and the exporter drops it."""
    return frozenset(i.name for i in session.get_inputs())


def ort_feed(kept: frozenset[str], xs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """The network part's inputs ``xs`` (in :data:`INPUTS` order) as an ONNX Runtime feed of the graph's inputs
    ``kept`` (:func:`graph_inputs`)."""
    named = zip(INPUTS, xs, strict=True)
    return {n: x.detach().to("cpu", torch.float32).contiguous().numpy() for n, x in named if n in kept}


class OnnxNetworkPart:
    """An exported network part in an ONNX Runtime session, called like :class:`NetworkPart` (torch tensors in,
    torch tensors out on the inputs' device)."""

    def __init__(self, path: str | Path, device: torch.device, threads: int = 0) -> None:
        from pose2rgbd.inference.backends import ort_session

        self.session = ort_session(path, device, threads)
        self.device = device
        self.inputs = graph_inputs(self.session)  # read once: every render feeds them

    def __call__(self, *xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        got: list[Any] = self.session.run(list(OUTPUTS), ort_feed(self.inputs, xs))
        rgb, log_scale = (torch.from_numpy(g).to(self.device) for g in got)
        return rgb, log_scale
