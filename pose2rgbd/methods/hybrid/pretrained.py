"""Where a new hybrid's fill network starts (``model.fill_init``): the weights shipped with the package, a fill
file, or zero.

The shipped fill (``pose2rgbd/resources/hybrid_fill/fill-c<channels>-l<levels>[-s<space_to_depth>].pt``, one per
fill shape of the presets) was trained on many simulated places with sensor realism by
:mod:`pose2rgbd.methods.hybrid.pretrain`, with no pose decoder (``model.decoder`` false): it refines the warped
keyframes of any place, so a new place starts from a fill that already knows what holes, disocclusions and noisy
sensor depth look like, and training there only fine-tunes it (with ``train.patience``: until validation stops
improving). A model that has a decoder starts with the fill's weights on the decoder channels at zero: its first
answer is the pretrained fill's, and the decoder's render is let in as it learns.

A fill file is a ``torch.save`` dict (read with ``weights_only``): ``format`` :data:`FILL_FORMAT`, ``version``,
``fill_channels``, ``fill_levels``, ``fill_space_to_depth`` (version 2; 1 where absent), ``state_dict`` (the
:class:`~pose2rgbd.methods.hybrid.network.FillUNet`'s) and ``meta`` (how it was made: places, steps, command).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pose2rgbd.errors import ConfigError
from pose2rgbd.methods.hybrid.network import DECODER_CHANNELS

if TYPE_CHECKING:
    from torch import nn

    from pose2rgbd.methods.hybrid.net import HybridNet

log = logging.getLogger(__name__)

FILL_FORMAT = "pose2rgbd-hybrid-fill"
FILL_VERSION = 2  # 2: fill_space_to_depth (a file of a fill at full resolution is still written as version 1)
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "resources" / "hybrid_fill"


def shipped_path(channels: int, levels: int, space_to_depth: int = 1) -> Path:
    """The shipped fill file of this fill shape (it may not exist: not every shape is shipped)."""
    blocks = "" if int(space_to_depth) == 1 else f"-s{int(space_to_depth)}"
    return SHIPPED_DIR / f"fill-c{int(channels)}-l{int(levels)}{blocks}.pt"


@dataclass
class FillFile:
    """A fill network's weights with its shape and how they were made."""

    channels: int
    levels: int
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, object] = field(default_factory=dict)
    space_to_depth: int = 1

    def describe(self) -> str:
        """Its fill shape in words (:func:`describe_shape`)."""
        return describe_shape(self.channels, self.levels, self.space_to_depth)


def describe_shape(channels: int, levels: int, space_to_depth: int) -> str:
    """A fill shape in words, for messages."""
    blocks = "" if int(space_to_depth) == 1 else f" from 1/{int(space_to_depth)} resolution"
    return f"{int(channels)} channels / {int(levels)} levels{blocks}"


def read_fill_file(path: str | Path) -> FillFile:
    """Read a fill file; a file that is not one (or damaged) is a :class:`ConfigError` naming it."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"model.fill_init {p}: no such file (pass pretrained, none or a fill file's path)")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged or foreign file: torch raises many kinds
        raise ConfigError(f"model.fill_init {p}: not a readable fill file ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or data.get("format") != FILL_FORMAT:
        raise ConfigError(
            f"model.fill_init {p}: not a hybrid fill file (written by `python -m pose2rgbd.methods.hybrid.pretrain`); "
            "a training checkpoint is continued with `pose2rgbd train --resume` instead"
        )
    if int(data.get("version", 0)) > FILL_VERSION:
        raise ConfigError(f"model.fill_init {p}: fill file version {data['version']} is newer than this pose2rgbd")
    return FillFile(
        int(data["fill_channels"]), int(data["fill_levels"]), dict(data["state_dict"]), dict(data["meta"]),
        int(data.get("fill_space_to_depth", 1)),
    )  # fmt: skip


def write_fill_file(
    path: str | Path, fill: nn.Module, channels: int, levels: int, meta: dict[str, object], space_to_depth: int = 1
) -> Path:
    """Write ``fill``'s weights (CPU, fp32) as a fill file, atomically (version 1 for a fill at full resolution,
    which every pose2rgbd reads; version 2 with ``fill_space_to_depth`` otherwise)."""
    from pose2rgbd.atomic.swap import atomic_file

    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in fill.state_dict().items()}
    data: dict[str, object] = {
        "format": FILL_FORMAT, "version": 1, "fill_channels": int(channels), "fill_levels": int(levels),
        "state_dict": state, "meta": dict(meta),
    }  # fmt: skip
    if int(space_to_depth) != 1:
        data.update(version=FILL_VERSION, fill_space_to_depth=int(space_to_depth))
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(p) as f:
        torch.save(data, f)
    return p


def init_fill(model: HybridNet, spec: str) -> str:
    """Give a new ``model``'s fill network its starting weights per ``spec`` (``model.fill_init``: pretrained |
    none | PATH); returns what it started from, for the log. A file of another fill shape is a
    :class:`ConfigError`; ``pretrained`` for a shape the package ships no weights for starts from zero."""
    mc = model.config
    c, lv, blocks = int(mc.fill_channels), int(mc.fill_levels), int(mc.fill_space_to_depth)
    s = str(spec).strip()
    if s == "none":
        return "zero (model.fill_init none)"
    if s == "pretrained":
        path = shipped_path(c, lv, blocks)
        if not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in SHIPPED_DIR.glob("fill-*.pt"))) or "none"
            log.info(
                "hybrid: no pretrained fill is shipped for a fill of %s (shipped: %s); the fill starts from zero",
                describe_shape(c, lv, blocks), shipped,
            )  # fmt: skip
            return "zero (no pretrained fill of this shape)"
    else:
        path = Path(s).expanduser()
    ff = read_fill_file(path)
    if (ff.channels, ff.levels, ff.space_to_depth) != (c, lv, blocks):
        raise ConfigError(
            f"model.fill_init {path}: a fill of {ff.describe()}; this model's is {describe_shape(c, lv, blocks)} "
            "(model.fill_channels, model.fill_levels, model.fill_space_to_depth): use a file of this shape, or "
            "model.fill_init none"
        )
    try:
        model.fill.load_state_dict(ff.state_dict)
    except RuntimeError as e:  # the file's weights are not of the shape its header states
        raise ConfigError(
            f"model.fill_init {path}: its weights do not fit the fill of {ff.describe()} it states (a damaged or "
            f"hand-edited file): write it again with `python -m pose2rgbd.methods.hybrid.pretrain`, or use "
            f"model.fill_init none ({str(e).splitlines()[0]})"
        ) from e
    if model.decoder is not None:  # the pretrained fill saw zeros there: let the decoder in as it learns
        with torch.no_grad():  # (each input channel is blocks^2 channels of the first convolution's input)
            first_conv(model.fill).weight[:, : DECODER_CHANNELS * blocks**2].zero_()
    places = ff.meta.get("places")
    return f"{path}" + (f" ({places} places)" if places else "")


def first_conv(fill: nn.Module) -> nn.Conv2d:
    """The fill U-Net's first convolution (the one that reads the input channels)."""
    from torch import nn

    conv = next(m for m in fill.modules() if isinstance(m, nn.Conv2d))
    assert isinstance(conv, nn.Conv2d)
    return conv
