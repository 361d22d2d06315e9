"""Checkpoints of every model kind: ``torch.save`` of a dict of plain types and tensors (``weights_only=True``).

Layout (format ``pose2rgbd-checkpoint`` v2)::

    format, version (2), model_kind (a registry kind, e.g. "pose2rgbd"), model_config (dict),
    state_dict (weights and the model's transform buffers: pose normalization, depth range, ...),
    parameters (int), dataset_fingerprint (str), camera (dict scaled to the output size, or None),
    depth_kind ("metric" | "unscaled" | "none"), world_frame (str), train_config (dict), step, epoch,
    optimizers (dict of optimizer state dicts, for resume), extra (dict), created_utc, pose2rgbd_version,
    content_sha256 (the SHA-256 of every other entry, :func:`content_digest`; absent in older files).

:func:`load_checkpoint` rebuilds the right model through :mod:`pose2rgbd.models.registry` and checks what the
caller expects (:class:`Expectations`: kind, output size, preset, dataset fingerprint) once, naming what differs.
Version-1 checkpoints (``pose_normalizer`` / ``depth_normalizer`` entries next to the weights, kind
``pose2rgbd``) are converted on load by the family's ``upgrade_v1``; then the family's ``migrate`` (if any) moves
settings of older checkpoints to where the current config keeps them (Pose2RGBD: ``train_config``'s
``depth_max`` / ``depth_max_percentile`` into ``model_config``).

Writes are atomic (temporary file + rename), so a crash never leaves half a checkpoint behind. A file damaged
since (truncated, or a byte changed by a bad copy or disk) is a :class:`CheckpointDamagedError` naming it: torch
reports a truncated file, but loads a changed tensor byte silently, so the content digest is compared on every
load (files written before it was recorded load without the comparison).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pose2rgbd import config as cfgmod
from pose2rgbd.atomic import atomic_file, sweep_stale_siblings
from pose2rgbd.errors import CheckpointError, ConfigError, DamagedFileError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.models.base import ModelBase, count_parameters
from pose2rgbd.models.interfaces import ImageToPose, PoseToImage
from pose2rgbd.models.registry import ModelFamily, get_family, model_identity

CHECKPOINT_FORMAT = "pose2rgbd-checkpoint"
CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)
DIGEST_KEY = "content_sha256"
RETRAIN = "use an intact copy, or train it again with `pose2rgbd train` (the run's config.yaml holds its settings)"


class CheckpointDamagedError(CheckpointError, DamagedFileError):
    """A checkpoint file was truncated or changed after it was written."""


def content_digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 over a checkpoint dict's entries except :data:`DIGEST_KEY`, in a canonical order: every tensor
    as its dtype, shape and bytes, every plain value as its ``repr``. torch's zip container keeps no checksum it
    checks on load, hence this one (hashlib; one pass over the weights, about 0.8 GB/s on one core)."""
    h = hashlib.sha256()

    def feed(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(obj.shape)}:".encode())
            h.update(t.view(torch.uint8).numpy().data)
        elif isinstance(obj, Mapping):
            h.update(f"D{len(obj)}:".encode())
            for k in sorted(obj, key=repr):
                h.update(repr(k).encode())
                feed(obj[k])
        elif isinstance(obj, (list, tuple)):
            h.update(f"{type(obj).__name__[0]}{len(obj)}:".encode())
            for v in obj:
                feed(v)
        else:
            h.update(f"V{obj!r};".encode())

    feed({k: v for k, v in payload.items() if k != DIGEST_KEY})
    return h.hexdigest()


@dataclass
class Expectations:
    """What a caller requires of a checkpoint (``None`` / empty: no check)."""

    kind: str | None = None
    size: int | None = None
    preset: str | None = None
    fingerprint: str | None = None

    def problems(self, kind: str, config: Any, fingerprint: str) -> list[str]:
        """One sentence per expectation the checkpoint does not meet."""
        out: list[str] = []
        if self.kind and kind != self.kind:
            out.append(f"model kind is {kind!r}, expected {self.kind!r}")
        if self.fingerprint and fingerprint != self.fingerprint:
            out.append(
                f"the checkpoint was trained on dataset fingerprint {fingerprint}, but {self.fingerprint} is "
                "expected (this dataset's); use a checkpoint trained on this dataset, or score it on another one on "
                "purpose with `evaluate --allow-other-dataset` (from Python: load it without expect_fingerprint)"
            )
        for name, want in (("size", self.size), ("preset", self.preset)):
            if not want:
                continue
            if not hasattr(config, name):
                out.append(f"model kind {kind!r} has no {name} (expected {name} {want!r})")
                continue
            have = getattr(config, name)
            if name == "size" and int(have) != int(want):
                out.append(f"output size is {have}, expected {want}")
            elif name == "preset" and have != want:
                out.append(f"model preset is {have!r}, expected {want!r}")
        return out


@dataclass
class LoadedCheckpoint:
    """A model ready for inference (eval mode on ``map_location``) and what was saved with it."""

    path: Path | None  # None for a checkpoint built in memory
    model: ModelBase
    family: ModelFamily
    model_config: Any
    dataset_fingerprint: str
    camera: PinholeCamera | None
    depth_kind: str = "metric"
    world_frame: str = "map"
    train_config: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    epoch: int = 0
    optimizers: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    source_version: int = CHECKPOINT_VERSION  # the format version the file was written in

    @property
    def kind(self) -> str:
        return self.family.kind

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else f"<in-memory {self.kind} model>"


def _output_hw(model: ModelBase) -> tuple[int, int] | None:
    if isinstance(model, PoseToImage):
        return model.image_hw
    if isinstance(model, ImageToPose):
        return model.input_hw
    return None


def save_checkpoint(
    path: str | Path,
    model: ModelBase,
    *,
    dataset_fingerprint: str,
    camera: PinholeCamera | None,
    depth_kind: str = "metric",
    world_frame: str = "map",
    train_config: dict[str, Any] | None = None,
    step: int = 0,
    epoch: int = 0,
    optimizers: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``model`` (any registered kind: its class ``kind`` and ``config`` say what it is).

    ``camera``: the dataset camera; it is scaled to the model's image size (pose -> image and image -> pose
    models). The model's transforms (pose normalization, depth range) are buffers and travel in its weights.
    """
    from pose2rgbd import __version__

    try:
        family, config = model_identity(model)
    except ConfigError as e:
        raise CheckpointError(f"{path}: cannot save: {e}") from e
    hw = _output_hw(model)
    if camera is not None and hw is not None and (camera.height, camera.width) != hw:
        camera = camera.scaled(hw[1], hw[0])
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_kind": family.kind,
        "model_config": cfgmod.to_dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "parameters": count_parameters(model),
        "dataset_fingerprint": str(dataset_fingerprint),
        "camera": None if camera is None else camera.to_dict(),
        "depth_kind": str(depth_kind),
        "world_frame": str(world_frame),
        "train_config": dict(train_config or {}),
        "step": int(step),
        "epoch": int(epoch),
        "optimizers": optimizers or {},
        "extra": {**(extra or {}), **model.checkpoint_extra(Path(path))},
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "pose2rgbd_version": __version__,
    }
    payload[DIGEST_KEY] = content_digest(payload)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_siblings(p)  # leftovers of a killed save (pose2rgbd.atomic)
    # serialized in memory, then written with plain file calls: a full disk or a read-only folder then raises the
    # OSError that names it (ENOSPC, EROFS, ...), where torch.save's zip writer reports only "unexpected pos"
    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_file(p) as f:  # fsynced before the rename: a power cut cannot leave a renamed, empty file
        f.write(buf.getbuffer())
    return p


def save_loaded(
    loaded: LoadedCheckpoint,
    path: str | Path,
    *,
    extra: dict[str, object] | None = None,
    keep_optimizers: bool = False,
) -> Path:
    """Write ``loaded``'s model (as it is now) at ``path`` with what was saved beside it (dataset, camera, depth
    kind, world frame, training settings, step, epoch; ``extra`` in place of its extra), without optimizer state
    (what ``export --bundle``, ``map link`` and :func:`save_for_inference` write) unless ``keep_optimizers`` (a
    checkpoint rewritten in place that a run may still resume from)."""
    return save_checkpoint(path, loaded.model, dataset_fingerprint=loaded.dataset_fingerprint, camera=loaded.camera,
                           depth_kind=loaded.depth_kind, world_frame=loaded.world_frame,
                           train_config=loaded.train_config, step=loaded.step, epoch=loaded.epoch,
                           optimizers=loaded.optimizers if keep_optimizers else None,
                           extra=loaded.extra if extra is None else extra)  # fmt: skip


def save_for_inference(src: LoadedCheckpoint | str | Path, dst: str | Path) -> Path:
    """Write the checkpoint ``src`` (a file, or one already loaded) again at ``dst`` without what only resuming its
    training needs: the optimizers' state (for Adam two moments per weight, twice the weights' size) and the
    trainer's (its position in the data, its random generators), so the copy cannot be resumed (``check_resume``
    says why). The weights, model and training settings, step and what the model saved beside them are kept; the
    copy is written anew (its own time and digest) and checked on load as any checkpoint."""
    loaded = src if isinstance(src, LoadedCheckpoint) else load_checkpoint(src, map_location="cpu")
    return save_loaded(loaded, dst, extra={k: v for k, v in loaded.extra.items() if k != "trainer_state"})


def _served(p: Path) -> bool:
    """Whether the file ``p`` holds a checkpoint of a kind an engine serves (its header alone is read: the weights
    are mapped, not loaded); False for anything that cannot be read so."""
    try:
        data = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        kind = str(data.get("model_kind") or "pose2rgbd") if isinstance(data, dict) else ""
        return bool(kind) and get_family(kind).engine is not None
    except Exception:  # not a checkpoint of a known kind (whatever torch raises for it): not suggested
        return False


def _folder_message(p: Path) -> str:
    """Why the folder ``p`` is no checkpoint and what to pass instead: for a dataset, the run to train from it; else
    the checkpoints in it that an engine serves (a dataset's depth network, e.g., is served by none)."""
    if (p / "manifest.yaml").is_file():  # pose2rgbd.dataset.format.MANIFEST
        return (
            f"{p}: is a dataset folder, not a checkpoint file: a model (a renderer, a localizer) is trained from it, "
            f"`pose2rgbd train --dataset {p} --out RUN`; then pass --checkpoint RUN/best.pt"
        )
    pts = sorted(p.glob("*.pt"))
    served = [x.name for x in pts if _served(x)]
    if served:
        hint = f"; it holds {', '.join(served)}: pass one of them, e.g. {p / served[0]}"
    elif pts:
        hint = f"; its {', '.join(x.name for x in pts)} {'hold' if len(pts) > 1 else 'holds'} no model an engine serves"
    else:
        hint = ""
    return f"{p}: is a folder, not a checkpoint file (a .pt written by `pose2rgbd train`){hint}"


def _check_checkpoint_file(p: Path) -> None:
    """Clear messages for what torch.load reports badly: a folder, a missing, empty or text file."""
    if p.is_dir():
        raise CheckpointError(_folder_message(p))
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found")
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"{p}: cannot open the checkpoint: {e.strerror or e}") from e
    if not head:
        raise CheckpointDamagedError(
            f"{p}: cannot read checkpoint: the file is empty (0 bytes; an interrupted copy?); {RETRAIN}", path=p
        )
    if head[:2] != b"PK" and head[:1] != b"\x80":  # a torch zip archive (or a legacy pickle)
        raise CheckpointError(
            f"{p}: cannot read checkpoint: not a torch file (it starts with {head!r}; a text file?); "
            "use a .pt written by `pose2rgbd train`"
        )


def read_checkpoint_dict(
    path: str | Path, *, map_location: str | torch.device = "cpu", check_digest: bool = True
) -> dict[str, Any]:
    """The raw checkpoint dict in the current layout (v1 files converted), validated as a pose2rgbd checkpoint
    (raises :class:`CheckpointError`). ``data["source_version"]`` is the version the file was written in.
    The content digest is compared with the one recorded at save (:class:`CheckpointDamagedError`) after the
    other checks, which name a more specific problem; ``check_digest=False`` leaves that to the caller
    (:func:`raise_if_changed`, which :func:`load_checkpoint` calls once the weights are in the model)."""
    p = Path(path)
    data, _ = _read_checkpoint(p, map_location)
    if check_digest:
        raise_if_changed(p, data)
    return data


def _read_checkpoint(p: Path, map_location: str | torch.device) -> tuple[dict[str, Any], ModelFamily]:
    """:func:`read_checkpoint_dict` before the digest comparison, and the family of its kind (resolved once:
    its conversion and migration run here, and :func:`load_checkpoint` builds the model with it)."""
    _check_checkpoint_file(p)
    try:
        data = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():  # damaged pickle data
            raise CheckpointError(f"{p}: cannot read checkpoint: the file is damaged or not a torch file") from e
        # weights_only refused an object: never in a file pose2rgbd wrote
        raise CheckpointError(
            f"{p}: not a pose2rgbd checkpoint: it holds Python objects other than tensors and plain values, "
            "which pose2rgbd never saves (not loaded: unpickling them could run code). Use a .pt written by "
            "`pose2rgbd train` (OUT/best.pt or OUT/last.pt)"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, Exception) as e:
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise CheckpointDamagedError(
            f"{p}: cannot read checkpoint: the file is damaged (truncated or modified) or not a torch file "
            f"({first[:160]}); {RETRAIN}",
            path=p,
        ) from e
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: not a pose2rgbd checkpoint (no 'format: {CHECKPOINT_FORMAT}' entry)")
    intact = DIGEST_KEY not in data or content_digest(data) == data[DIGEST_KEY]  # before any conversion
    version = data.get("version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{p}: checkpoint version {version!r}; this pose2rgbd reads versions {list(READABLE_VERSIONS)}"
        )
    kind = str(data.get("model_kind") or "pose2rgbd")  # v1 files of the first releases are all pose2rgbd
    try:
        family = get_family(kind)
    except ConfigError as e:
        raise CheckpointError(f"{p}: {e}") from e
    if version == 1:
        if family.upgrade_v1 is None:
            raise CheckpointError(f"{p}: version-1 checkpoint of kind {kind!r}, which never had version 1")
        try:
            data = family.upgrade_v1(dict(data))
        except (KeyError, ValueError, TypeError, ConfigError) as e:
            raise CheckpointError(f"{p}: cannot convert this version-1 checkpoint: {e}") from e
    if family.migrate is not None and isinstance(data.get("model_config"), dict):
        try:
            data = family.migrate(dict(data))
        except (KeyError, ValueError, TypeError, ConfigError) as e:
            raise CheckpointError(f"{p}: cannot bring this checkpoint's settings up to date: {e}") from e
    missing = [k for k in ("model_config", "state_dict", "dataset_fingerprint") if k not in data]
    if missing:
        raise CheckpointError(f"{p}: checkpoint lacks {missing}")
    data["model_kind"] = kind
    data["source_version"] = int(version)
    data["content_intact"] = intact
    return data, family


def raise_if_changed(p: Path, data: Mapping[str, Any]) -> None:
    """:class:`CheckpointDamagedError` when :func:`read_checkpoint_dict` found the content changed since it was
    saved (its SHA-256 differs from the recorded one; files without one pass)."""
    if not data.get("content_intact", True):
        again = "; a bundle: `export --bundle` it again from its run's checkpoint" if holds_keyframes(data) else ""
        raise CheckpointDamagedError(
            f"{p}: damaged checkpoint: its content is not what was saved (the SHA-256 recorded when it was written "
            f"differs: changed since, by a bad copy or disk); {RETRAIN}{again}",
            path=p,
        )


def holds_keyframes(data: Mapping[str, object]) -> bool:
    """Whether a checkpoint's dict holds its keyframes (an ``export --bundle`` output; the key of
    :data:`pose2rgbd.methods.hybrid.stored.KEYFRAMES`, written out here: the layers below the methods do not import
    them; :func:`pose2rgbd.methods.hybrid.stored.is_bundle` asks this of a file)."""
    extra = data.get("extra")
    return isinstance(extra, Mapping) and "keyframes" in extra


@dataclass
class CheckpointHeader:
    """What every saved model says about itself, in a ``.pt`` checkpoint or an exported file's metadata."""

    family: ModelFamily
    config: Any
    fingerprint: str
    camera: PinholeCamera | None
    depth_kind: str
    world_frame: str
    step: int


def parse_header(
    p: Path, data: Mapping[str, Any], expect: Expectations, family: ModelFamily | None = None
) -> CheckpointHeader:
    """The header entries of a checkpoint dict or exported-file metadata (``model_kind``, ``model_config``,
    ``dataset_fingerprint``, ``camera``, ``depth_kind``, ``world_frame``, ``step``), checked against ``expect``;
    every problem a :class:`CheckpointError` naming ``p``. One parser for :func:`load_checkpoint` and
    :func:`pose2rgbd.models.export.load_onnx_checkpoint`. ``family``: the family of ``model_kind`` when the caller
    has it already (the checkpoint reader resolves it to convert and migrate the file)."""
    if family is None:
        try:
            family = get_family(str(data["model_kind"]))
        except (ConfigError, KeyError) as e:
            raise CheckpointError(f"{p}: {e}") from e
    try:
        config: object = cfgmod.from_dict(family.config_cls, data["model_config"], where="model_config")
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"{p}: bad model_config for kind {family.kind!r}: {e}") from e
    fingerprint = str(data.get("dataset_fingerprint", ""))
    problems = expect.problems(family.kind, config, fingerprint)
    if problems:
        raise CheckpointError(f"{p}: " + "; ".join(problems))
    try:
        camera = None if data.get("camera") is None else PinholeCamera.from_dict(data["camera"])
    except Exception as e:
        raise CheckpointError(f"{p}: bad camera entry: {e}") from e
    return CheckpointHeader(
        family, config, fingerprint, camera, str(data.get("depth_kind", "metric")), str(data.get("world_frame", "map")),
        int(data.get("step", 0)),
    )  # fmt: skip


def load_checkpoint(
    path: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    expect: Expectations | None = None,
    expect_kind: str | None = None,
    expect_fingerprint: str | None = None,
    expect_size: int | None = None,
    expect_preset: str | None = None,
    place_map: str | Path = "",
) -> LoadedCheckpoint:
    """Load a checkpoint of any registered kind for inference (model in eval mode on ``map_location``).

    ``expect`` (or the ``expect_*`` shorthands, merged into it) says what the caller requires; any mismatch or
    problem raises :class:`CheckpointError` naming what differs. What the model saved beside its weights is
    given back to it (:meth:`~pose2rgbd.models.base.ModelBase.restore_extra`: the hybrid opens the place map its
    checkpoint names, checked, or ``place_map`` instead).
    """
    p = Path(path)
    want = expect or Expectations()
    want = Expectations(
        kind=expect_kind or want.kind,
        size=expect_size or want.size,
        preset=expect_preset or want.preset,
        fingerprint=expect_fingerprint or want.fingerprint,
    )
    data, family = _read_checkpoint(p, map_location)
    h = parse_header(p, data, want, family)
    family, config, camera = h.family, h.config, h.camera
    model = family.build(config)
    try:
        model.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{p}: weights do not fit a {family.kind} model with this model_config: {e}") from e
    hw = _output_hw(model)
    if camera is not None and hw is not None and (camera.height, camera.width) != hw:
        raise CheckpointError(f"{p}: camera {camera.width}x{camera.height} does not match the model's {hw[1]}x{hw[0]}")
    raise_if_changed(p, data)  # the weights loaded, but are they what was saved
    try:
        extra = model.restore_extra(
            dict(data.get("extra") or {}), p, place_map=str(place_map or ""), dataset_fingerprint=h.fingerprint
        )
    except ConfigError as e:
        raise CheckpointError(f"{p}: {e}") from e
    model.to(map_location).eval()
    return LoadedCheckpoint(
        path=p,
        model=model,
        family=family,
        model_config=config,
        dataset_fingerprint=h.fingerprint,
        camera=camera,
        depth_kind=h.depth_kind,
        world_frame=h.world_frame,
        train_config=dict(data.get("train_config") or {}),
        step=h.step,
        epoch=int(data.get("epoch", 0)),
        optimizers=dict(data.get("optimizers") or {}),
        extra=extra,
        source_version=int(data["source_version"]),
    )
