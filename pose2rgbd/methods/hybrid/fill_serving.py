"""The fill U-Net's forward for serving on a CPU (bfloat16 or float32), with each convolution's ReLU -- and in the up
stages the sum of the two convolutions -- done inside the convolution (oneDNN post-ops), its weights laid out once.

In eager torch every ReLU and every sum is one more pass over a full-resolution tensor. Fused, the fill of a
``hybrid`` render node took 19.95 -> 18.9 ms at 256x256 on one thread and 42.8 -> 40.9 ms at 512x512 on two (an AMD
EPYC with avx512_bf16, no AMX; docs/serving.md, "The fill's convolutions fused"). The fusion is torch's own: the op its
compiler (``torch.compile``, inductor) emits for the same pattern, ``torch.ops.mkldnn._convolution_pointwise``.
Not ``torch.compile`` itself: it needs a C++ compiler on the robot and compiles for about a minute at start.

A fill that runs from 1/s of the image's resolution (``space_to_depth`` s > 1) reads its blocks straight from the
full-resolution input (:func:`blocks_kernel`: one strided convolution, no rearranging copy). In float32 on a CPU with
AVX2 alone that is most of what this path gains: ``hybrid-subpixel``'s fill took 0.87 of the eager forward's time at
256x256 on one thread, ``hybrid-fast``'s and ``hybrid``'s (no blocks) 0.97 (docs/serving.md, "Float32 through the fused
convolutions, and narrower fills").

An up stage of few channels (``hybrid-fast``'s last) also folds its bilinear upsampling into its first convolution:
one convolution at the lower resolution with four times the outputs, rearranged into the full-resolution image
(:func:`upsample_conv_kernel`, :func:`phases_to_image`: the same sums away from the edges; the outermost ring of
pixels is answered apart).

The op is private to torch, so it is trusted only after it answered as the eager forward did on the same input
(:func:`fused_forward` checks it once per module, dtype and weights, within :data:`TOLERANCE` of the dtype); where it
is missing, fails or disagrees, the eager forward serves and one line says so. On a CPU whose oneDNN has no bfloat16
convolutions (AVX2 alone) the path is not tried in bfloat16 (:func:`fused_available`): the engine serves float32
there, through this path, and warns where it is told to use bf16. Training (gradients on) never takes this path.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class FillUNet(Protocol):
    """What this path reads of :class:`~pose2rgbd.methods.hybrid.network.FillUNet` (which calls it: a protocol, not
    an import, keeps the two modules out of a cycle)."""

    stem: nn.Sequential
    down: nn.ModuleList
    up: nn.ModuleList
    out: nn.Conv2d
    space_to_depth: int

    def check_sides(self, x: torch.Tensor) -> None: ...

    def from_blocks(self, y: torch.Tensor) -> torch.Tensor: ...

    def forward_eager(self, x: torch.Tensor, absent: int = 0) -> torch.Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


# the dtypes the path serves (fp16 autocast on a CPU: the eager forward), each with how far the fused answer may be
# from the eager one, as a share of the eager answer's largest magnitude (at least 0.01): bfloat16 keeps 8 bits;
# float32 sums the same products in another order
TOLERANCE = {torch.bfloat16: 0.03, torch.float32: 1e-4}
DTYPES = tuple(TOLERANCE)


class FusedConvolution(Protocol):
    """torch's ``mkldnn._convolution_pointwise``: ``(x, weight, bias, padding, stride, dilation, groups, unary,
    scalars, algorithm)``, and ``.binary(x, other, weight, bias, ..., groups, binary, alpha, unary, scalars,
    algorithm)`` = ``unary(conv(x) <binary> other)``."""

    def __call__(self, *args: object) -> torch.Tensor: ...

    def binary(self, *args: object) -> torch.Tensor: ...


def _op() -> FusedConvolution | None:
    """torch's fused convolution op, or None where this build has none."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return cast(FusedConvolution, torch.ops.mkldnn._convolution_pointwise)
    except (AttributeError, RuntimeError):
        return None


@functools.cache
def _cpu_runs(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs convolutions in ``dtype`` on this CPU: bfloat16 needs avx512bw, avx512vl and avx512dq
    or avx_ne_convert (torch's own check; on a CPU with AVX2 alone the op raises, and the eager forward runs the
    convolutions in bfloat16 that torch emulates)."""
    if dtype != torch.bfloat16:
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the check: the first input's check decides
        return True


def _usable_op(dtype: torch.dtype) -> FusedConvolution | None:
    """torch's fused op where it may serve convolutions in ``dtype`` here: one of :data:`DTYPES`, the op present and
    the CPU able to run it in that dtype; else None."""
    return _op() if dtype in DTYPES and _cpu_runs(dtype) else None


def fused_available(dtype: torch.dtype) -> bool:
    """Whether this path can serve convolutions in ``dtype`` here (:func:`_usable_op`; each served input is still
    checked once, :func:`fused_forward`)."""
    return _usable_op(dtype) is not None


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the convolutions of ``x`` run in: the CPU autocast's where it is on, else ``x``'s."""
    try:  # torch >= 2.4
        on, dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    except (TypeError, AttributeError):  # torch 2.1-2.3: the CPU's own calls
        on, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    return dtype if on else x.dtype


@dataclass(frozen=True)
class _Geometry:
    """How a prepared convolution slides over its input."""

    padding: list[int]
    stride: list[int]
    dilation: list[int]
    groups: int

    @classmethod
    def of(cls, conv: nn.Conv2d) -> _Geometry:
        return cls(list(cast(tuple[int, int], conv.padding)), list(conv.stride), list(conv.dilation), conv.groups)


def blocks_kernel(w: torch.Tensor, s: int) -> torch.Tensor:
    """The stem's first 3x3 convolution over the s x s blocks as channels (``FillUNet.to_blocks``: input channel
    c's block pixel (i, j) is channel c*s^2 + i*s + j), ``w`` (O, C*s^2, 3, 3), as one (O, C, 3s, 3s) convolution
    of the full-resolution input with stride s and padding s: block tap (a, b) and pixel (i, j) are kernel tap
    (s*a + i, s*b + j). The same sum of products without rearranging the input (at 256x256 in bfloat16 the
    rearranging copy took 0.74 ms; with it the stem's first convolution 1.33 ms, as one strided convolution 0.59)."""
    o, cs2 = w.shape[:2]
    c = cs2 // (s * s)
    return w.reshape(o, c, s, s, 3, 3).permute(0, 1, 4, 2, 5, 3).reshape(o, c, 3 * s, 3 * s)


# Bilinear 2x upsampling (align_corners=False) as weights: full-resolution row 2k + t (t = -1..2) is
# _BILINEAR[t + 1] . (rows k-1, k, k+1) of the half-resolution input, away from the image's edges.
_BILINEAR = torch.tensor(
    [[0.75, 0.25, 0.0], [0.25, 0.75, 0.0], [0.0, 0.75, 0.25], [0.0, 0.25, 0.75]], dtype=torch.float64
)


# An up stage of at most this many output channels runs its upsampling and first convolution as one convolution at
# the lower resolution (upsample_conv_kernel). Measured in bfloat16 on one thread (an AMD EPYC with avx512_bf16):
# 16 -> 8 channels 2.20 -> 1.61 ms at 256x256 and 9.42 -> 6.23 ms at 512x512; with 32 -> 16 or 64 -> 32 channels it
# was no faster (1.02 -> 1.26, 4.32 -> 4.29, 3.25 -> 3.66 ms): four times the outputs at a quarter of the pixels pay
# where oneDNN's full-resolution convolution of few channels is slow per operation.
COMPOSITE_MAX_CHANNELS = 8


def upsample_conv_kernel(w: torch.Tensor) -> torch.Tensor:
    """A 3x3 convolution ``w`` (O, C, 3, 3) of the input upsampled 2x (bilinear) as one 3x3 convolution of the
    input itself with 4 O outputs, the 2 x 2 full-resolution pixels of each input pixel (output o's pixel (a, b) is
    channel (2 a + b) O + o, :func:`phases_to_image`'s order): exact away from the edges (the input padded by
    replication, as the upsampling clamps), :func:`_upsample_conv` mends the outermost ring. Output pixel 2k + a
    reads full-resolution rows 2k + a - 1 .. 2k + a + 1, each a mix of input rows k - 1 .. k + 1 (:data:`_BILINEAR`)."""
    o, c = w.shape[:2]
    taps = torch.stack([_BILINEAR[a : a + 3] for a in (0, 1)])  # (a, p, d): tap p of phase a on input row k + d - 1
    k = torch.einsum("ocpq,apd,bqe->abocde", w.double(), taps, taps)
    return k.reshape(4 * o, c, 3, 3).to(w.dtype)


def phases_to_image(z: torch.Tensor) -> torch.Tensor:
    """``z`` (N, 4 O, H, W), channel (2 a + b) O + o holding output o's pixel (2 h + a, 2 w + b), as the (N, O, 2 H,
    2 W) image, channels-last. A pixel shuffle with the phases leading instead of trailing: in channels-last memory
    each input pixel's 4 O values are its two output rows' 2 O-long runs, so the rearranging is one copy of runs
    (at 256x256 with 8 channels in bfloat16 0.32 ms; ``F.pixel_shuffle`` of the same values in its own order 1.49)."""
    n, c4, h, w = z.shape
    c = c4 // 4
    v = z.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, c)  # (n, h, w, a, b, o)
    return v.permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)


_SAME_3X3 = _Geometry([1, 1], [1, 1], [1, 1], 1)  # a 3x3 convolution's: stride 1, padded to keep the size
_VALID_3X3 = _Geometry([0, 0], [1, 1], [1, 1], 1)  # the composite's, on an input padded beforehand


@dataclass(frozen=True)
class _UpStage:
    """One up stage of the fill, prepared: ``relu(conv_y(upsample(y)) + conv_s(skip))``; ``k``/``k_bias`` the first
    convolution with the upsampling in it (:func:`upsample_conv_kernel`), None where the stage is not a 3x3
    convolution of stride 1 or is wider than :data:`COMPOSITE_MAX_CHANNELS` (the upsampling then runs on its own
    and ``w_y`` / ``bias`` convolve it; with the composite they answer the outermost ring)."""

    w_y: torch.Tensor | None
    w_s: torch.Tensor | None
    bias: torch.Tensor | None
    geometry: _Geometry
    k: torch.Tensor | None
    k_bias: torch.Tensor | None


class _Prepared:
    """The fill's convolution weights in one dtype, channels-last, split where the forward splits them."""

    def __init__(self, net: FillUNet, dtype: torch.dtype, absent: int, key: tuple[object, ...]) -> None:
        self.key = key
        self.dtype = dtype

        def lay(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            t = t.detach().to(dtype)
            return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t.contiguous()

        def conv_of(seq: nn.Module) -> nn.Conv2d:
            conv = seq[0] if isinstance(seq, nn.Sequential) else seq
            assert isinstance(conv, nn.Conv2d)
            return conv

        s = net.space_to_depth
        self.convs: list[tuple[torch.Tensor | None, torch.Tensor | None, _Geometry]] = []
        for i, stage in enumerate(net.stem):
            conv = conv_of(stage)
            if i == 0 and s > 1:  # the absent input channels lead the blocks' channels too (FillUNet.to_blocks)
                w = blocks_kernel(conv.weight[:, absent * s * s :], s)
                self.convs.append((lay(w), lay(conv.bias), _Geometry([s, s], [s, s], [1, 1], 1)))
                continue
            w = conv.weight[:, absent:] if i == 0 else conv.weight
            self.convs.append((lay(w), lay(conv.bias), _Geometry.of(conv)))
        for down in net.down:
            for stage in cast(nn.Sequential, down):
                conv = conv_of(stage)
                self.convs.append((lay(conv.weight), lay(conv.bias), _Geometry.of(conv)))
        # each up stage's upsampled input has the width of the level below it: the out-width of that down stage
        below = [conv_of(cast(nn.Sequential, net.down[i])[0]).out_channels for i in reversed(range(len(net.down)))]
        self.up: list[_UpStage] = []
        for stage, c in zip(net.up, below, strict=True):
            conv = conv_of(stage)
            g = _Geometry.of(conv)
            composite = conv.out_channels <= COMPOSITE_MAX_CHANNELS and conv.kernel_size == (3, 3) and g == _SAME_3X3
            # from the weights as they serve (stored in bfloat16 or cast to it: the same kernel, the same answer)
            k = upsample_conv_kernel(conv.weight[:, :c].detach().to(dtype)) if composite else None
            kb = conv.bias.detach().to(dtype).repeat(4) if composite and conv.bias is not None else None
            w_y, w_s, bias = lay(conv.weight[:, :c]), lay(conv.weight[:, c:]), lay(conv.bias)
            self.up.append(_UpStage(w_y, w_s, bias, g, lay(k), lay(kb)))
        self.out = (lay(net.out.weight), lay(net.out.bias), _Geometry.of(net.out))


def _weights_key(net: FillUNet, dtype: torch.dtype, absent: int) -> tuple[object, ...]:
    return (dtype, absent, *((p.data_ptr(), p._version) for p in net.parameters()))


def _conv(
    op: FusedConvolution, x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, g: _Geometry, relu: bool
) -> torch.Tensor:
    return op(x, w, b, g.padding, g.stride, g.dilation, g.groups, "relu" if relu else "none", [], "")


def _upsample_conv(op: FusedConvolution, y: torch.Tensor, size: torch.Size, up: _UpStage) -> torch.Tensor:
    """``conv_y(upsample(y))`` at ``size``, with its bias. Where ``size`` is twice ``y``'s and the stage has a
    composite kernel: one convolution of ``y`` padded by replication, rearranged (:func:`phases_to_image`; at 256x256
    on one thread in bfloat16, ``hybrid-fast``'s last up stage 2.18 -> 1.32 ms, its edges included; docs/serving.md,
    "The last up stage at half resolution"). Its outermost ring of pixels would read the upsampled image beyond its
    edge, which the convolution's zero padding leaves out: the ring is answered by upsampling and convolving the two
    input rows (columns) at each edge, as the stage without the composite kernel does the whole input."""

    def upsample_then_conv(t: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
        u = F.interpolate(t, size=out, mode="bilinear", align_corners=False)
        return _conv(op, u.contiguous(memory_format=torch.channels_last), up.w_y, up.bias, up.geometry, False)

    h, w = y.shape[-2:]
    if up.k is None or tuple(size) != (2 * h, 2 * w) or min(h, w) < 2:
        return upsample_then_conv(y, (size[0], size[1]))
    with torch.autocast("cpu", enabled=False):  # (the CPU's autocast pads by replication in float32)
        padded = F.pad(y, (1, 1, 1, 1), mode="replicate")
    a = phases_to_image(_conv(op, padded, up.k, up.k_bias, _VALID_3X3, False))
    n = len(y)
    rows = upsample_then_conv(torch.cat([y[..., :2, :], y[..., -2:, :]]), (4, 2 * w))  # both strips as one batch
    a[..., :1, :], a[..., -1:, :] = rows[:n, :, :1], rows[n:, :, -1:]
    cols = upsample_then_conv(torch.cat([y[..., :2], y[..., -2:]]), (2 * h, 4))
    a[..., :1], a[..., -1:] = cols[:n, ..., :1], cols[n:, ..., -1:]
    return a


def _run(op: FusedConvolution, net: FillUNet, p: _Prepared, x: torch.Tensor) -> torch.Tensor:
    """The fused forward of ``x`` (in the prepared dtype, channels-last)."""
    convs = iter(p.convs)
    w, b, conv = next(convs)
    y = _conv(op, x, w, b, conv, True)
    for _ in range(1, len(net.stem)):
        w, b, conv = next(convs)
        y = _conv(op, y, w, b, conv, True)
    skips = [y]
    for down in net.down:
        y = skips[-1]
        for _ in cast(nn.Sequential, down):
            w, b, conv = next(convs)
            y = _conv(op, y, w, b, conv, True)
        skips.append(y)
    y = skips.pop()
    for up in p.up:
        s = skips.pop()
        a = _upsample_conv(op, y, s.shape[-2:], up)
        g = up.geometry
        y = op.binary(  # relu(conv(s) + a)
            s, a, up.w_s, None, g.padding, g.stride, g.dilation, g.groups,
            "add", 1.0, "relu", [], "",
        )  # fmt: skip
    w, b, conv = p.out
    return net.from_blocks(_conv(op, y, w, b, conv, False))


def fused_forward(net: FillUNet, x: torch.Tensor, absent: int) -> torch.Tensor | None:
    """``net(x, absent)`` with the convolutions fused, in the compute dtype (:func:`compute_dtype`) and
    channels-last; None where this path does not serve (gradients on, not a CPU tensor, a dtype outside
    :data:`DTYPES`, no fused op in this torch, a CPU whose oneDNN cannot run it in that dtype, or it did not answer as
    the eager forward on its first input)."""
    if torch.is_grad_enabled() or x.device.type != "cpu":
        return None
    dtype = compute_dtype(x)
    op = _usable_op(dtype)
    if op is None:
        return None
    net.check_sides(x)  # the input's error, not the path's (the first convolution reads the blocks: blocks_kernel)
    state = net.__dict__.setdefault("_fused_serving", _State())
    key = _weights_key(net, dtype, absent)
    xd = x.to(dtype).contiguous(memory_format=torch.channels_last)
    p = state.prepared
    if p is None or p.key != key:
        if state.refused == key:
            return None
        p = _Prepared(net, dtype, absent, key)
        state.prepared = None
        checked = _checked_run(op, net, p, x, xd, absent)  # the check's fused answer is this call's answer
        if checked is None:
            state.refused = key
        else:
            state.prepared = p
        return checked
    try:
        return _run(op, net, p, xd)
    except Exception as e:  # a private op: whatever it raises on an input unlike the one it was checked on
        log.warning("hybrid fill: the fused convolutions failed on a %s input (%s): serving the eager forward",
                    tuple(x.shape), e)  # fmt: skip
        state.prepared, state.refused = None, key
        return None


@dataclass
class _State:
    """What a fill keeps of this path (in its ``__dict__``): its prepared weights, once checked, and the weights'
    key for which the check failed (not tried again)."""

    prepared: _Prepared | None = None
    refused: tuple[object, ...] | None = None


def _checked_run(
    op: FusedConvolution, net: FillUNet, p: _Prepared, x: torch.Tensor, xd: torch.Tensor, absent: int
) -> torch.Tensor | None:
    """The fused forward of ``xd`` (``x`` in the prepared dtype) where it answers as the eager forward of ``x`` does
    (within its dtype's :data:`TOLERANCE`), else None."""
    want = net.forward_eager(x, absent).float()
    try:
        fused = _run(op, net, p, xd)
    except Exception as e:  # a private op: whatever this torch's build raises means the eager forward
        log.info("hybrid fill: the fused convolutions are not available in this torch (%s); eager forward", e)
        return None
    got = fused.float()
    scale = float(want.abs().max()) if want.numel() else 0.0
    err = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
    if not err <= TOLERANCE[p.dtype] * max(scale, 1e-2):
        log.warning(
            "hybrid fill: the fused convolutions answered %.3g off the eager forward (largest value %.3g): "
            "serving the eager forward",
            err,
            scale,
        )
        return None
    return fused


__all__ = ["DTYPES", "compute_dtype", "fused_available", "fused_forward"]
