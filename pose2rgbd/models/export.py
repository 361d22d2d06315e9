"""ONNX export of a servable model, and loading an exported file back for serving.

**What the graph is.** The ONNX graph is the network's ``forward`` on its *network input* -- the tensor the
model's ``poses_to_input`` (pose -> image models: normalized pose ``(N, D)`` float32) or ``images_to_input``
(image -> pose models: ``(N, 3, H, W)`` float32 in [-1, 1]) makes -- and it returns only the outputs the serving
transforms read (:func:`serving_output_names`: ``rgb`` / ``depth`` / ``confidence``, or ``pose`` /
``confidence``), each as a named graph output. The batch axis is dynamic. The pose -> input and output ->
image / depth / pose transforms are *not* baked into the graph: they stay the model's own methods (numpy pose
encoding, out-of-bounds flags, uint8 / metre conversion) and their state (the model's top-level buffers:
``pose_min`` / ``pose_max``, ``depth_range``, ...) travels in the file's ``metadata_props`` under the key
``pose2rgbd`` (a JSON document, :data:`ONNX_META_KEY`), together with the model kind and config, the camera,
depth kind, world frame, dataset fingerprint and the check the export passed. :func:`load_onnx_checkpoint`
rebuilds the model's transforms from it (the weights stay in the graph; the rebuilt module holds no weights),
so an engine serves the file through ONNX Runtime with exactly the torch engine's transforms. Another runtime
(TensorRT, a C++ program) reads the same JSON; docs/serving.md writes the transforms out.

**The check.** After export the file is run with ONNX Runtime (CPU) on random network inputs at a batch size
other than the traced one, and at batch 1; every output must match torch's within ``tolerance`` (max absolute
difference). On failure the temporary file is deleted and nothing is written at the output path. The file
appears atomically (hidden sibling + rename, :mod:`pose2rgbd.atomic`).
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pose2rgbd import config as cfgmod
from pose2rgbd.atomic import atomic_file, sibling_prefix, sweep_stale_siblings
from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.models.base import ModelBase
from pose2rgbd.models.checkpoint import Expectations, LoadedCheckpoint, parse_header
from pose2rgbd.models.coverage import DATUM_KEY, model_datum
from pose2rgbd.models.depth_uncertainty import EXTRA_KEY
from pose2rgbd.models.device import example_input, network_input_shape
from pose2rgbd.models.interfaces import ImageToPose, PoseToImage

log = logging.getLogger(__name__)

ONNX_META_KEY = "pose2rgbd"
ONNX_FORMAT = "pose2rgbd-onnx"
ONNX_VERSION = 1
INPUT_NAME = "input"
EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how well the file matches torch."""

    path: Path
    exporter: str
    opset: int
    input_shape: tuple[int, ...]  # one sample, without the batch axis
    outputs: tuple[str, ...]
    max_abs_error: dict[str, float]  # per output, over the batches checked
    tolerance: float
    batches_checked: tuple[int, ...]


def serving_output_names(model: nn.Module) -> tuple[str, ...]:
    """The outputs the model's serving transforms read (a model may override ``serving_outputs``)."""
    names = getattr(model, "serving_outputs", None)
    if names is not None:
        return tuple(names)
    if isinstance(model, PoseToImage):
        return ("rgb", "depth", "confidence")
    if isinstance(model, ImageToPose):
        return ("pose", "confidence")
    raise CheckpointError(
        f"a {type(model).__name__} model is neither a pose -> image nor an image -> pose model: nothing serves it"
    )


class ServingGraph(nn.Module):
    """``forward(x) -> tuple`` of the serving outputs, in :attr:`names` order (the graph ONNX exports)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[k] for k in self.names)


def transform_buffers(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The model's own transform state: its top-level persistent buffers (``pose_min``, ``pose_max``,
    ``depth_range``, ...), as JSON-able ``{name: {"dtype", "shape", "data"}}``."""
    persistent = set(model.state_dict(keep_vars=True))
    out: dict[str, dict[str, Any]] = {}
    for name, buf in model.named_buffers(recurse=False):
        if name in persistent and buf is not None:
            a = buf.detach().cpu()
            out[name] = {
                "dtype": str(a.dtype).removeprefix("torch."),
                "shape": list(a.shape),
                "data": a.flatten().tolist(),
            }
    return out


def _compare(ref: tuple[torch.Tensor, ...], got: list[np.ndarray], names: tuple[str, ...]) -> dict[str, float]:
    """Max abs difference per output; non-finite values must agree exactly (e.g. +inf depth above a horizon)."""
    err: dict[str, float] = {}
    for name, r, g in zip(names, ref, got, strict=True):
        a = r.detach().float().cpu().numpy()
        b = np.asarray(g, dtype=np.float32)
        if a.shape != b.shape:
            err[name] = float("inf")
            continue
        fa = np.isfinite(a)
        if not np.array_equal(fa, np.isfinite(b)) or not np.array_equal(a[~fa], b[~fa], equal_nan=True):
            err[name] = float("inf")  # +inf / NaN in other places
            continue
        err[name] = float(np.abs(a[fa] - b[fa]).max()) if fa.any() else 0.0
    return err


def _torch_export(graph: ServingGraph, x: torch.Tensor, path: Path, *, exporter: str, opset: int) -> None:
    names = list(graph.names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation / tracer chatter; the result is checked below
        if exporter == "dynamo":
            torch.onnx.export(
                graph,
                (x,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=names,
                opset_version=opset,
                dynamo=True,
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
                external_data=False,
                verbose=False,
            )
        else:
            torch.onnx.export(
                graph,
                (x,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=names,
                opset_version=opset,
                dynamo=False,
                dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}},
            )


def export_onnx(
    loaded: LoadedCheckpoint,
    out: str | Path,
    *,
    exporter: str = "dynamo",
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    check_batch: int = 3,
    seed: int = 0,
) -> ExportReport:
    """Export ``loaded``'s model to ``out`` (see the module docstring), check it against torch, and rename it
    into place. The caller checks ``out`` with :func:`pose2rgbd.output_guard.check_output` first.

    Raises :class:`CheckpointError` when the model cannot be exported or the file does not match torch within
    ``tolerance`` (then nothing is left at ``out`` or beside it)."""
    import onnx
    import onnxruntime as ort

    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter {exporter!r} is not one of {list(EXPORTERS)}")
    if not tolerance > 0:
        raise ConfigError(f"tolerance must be > 0, got {tolerance}")
    if check_batch < 2:
        raise ConfigError(f"check_batch must be >= 2 (it checks the dynamic batch axis), got {check_batch}")
    family = loaded.family
    if family.engine is None:
        raise CheckpointError(f"{loaded.where}: model kind {loaded.kind!r} is not served by any engine: no export")
    why_not = getattr(loaded.model, "onnx_unsupported", None)  # a model class says why it has no ONNX graph
    if why_not:
        raise CheckpointError(f"{loaded.where}: a {loaded.kind!r} model cannot be exported to ONNX: {why_not}")
    model = copy.deepcopy(loaded.model).cpu().float().eval()
    names_all = serving_output_names(model)
    x1 = example_input(model, 1, seed=seed)
    with torch.inference_mode():
        probe = model(x1)
    names = tuple(n for n in names_all if isinstance(probe.get(n), torch.Tensor))
    if not names:
        raise CheckpointError(f"{loaded.where}: the model returns none of the serving outputs {list(names_all)}")
    graph = ServingGraph(model, names).eval()
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_siblings(p)
    tmp = p.with_name(sibling_prefix(p, "tmp") + ".onnx")
    try:
        try:
            _torch_export(graph, x1, tmp, exporter=exporter, opset=opset)
        except Exception as e:  # the exporters raise many types; name the model and what to try
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            other = "torchscript" if exporter == "dynamo" else "dynamo"
            raise CheckpointError(
                f"{loaded.where}: the {exporter} ONNX exporter failed on this {loaded.kind!r} model ({first}); "
                f"try --exporter {other}"
            ) from e
        graph.eval()  # the torchscript exporter restores the training flag it found; make sure
        # the check: ONNX Runtime on CPU, at a batch other than the traced one and at batch 1
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        err = dict.fromkeys(names, 0.0)
        batches = (int(check_batch), 1)
        for i, b in enumerate(batches):
            xb = example_input(model, b, seed=seed + 1 + i)
            with torch.inference_mode():
                ref = graph(xb)
            got = sess.run(list(names), {INPUT_NAME: xb.numpy()})
            for k, v in _compare(ref, got, names).items():
                err[k] = max(err[k], v)
        del sess
        bad = {k: v for k, v in err.items() if not v <= tolerance}
        if bad:
            raise CheckpointError(
                f"{loaded.where}: the exported ONNX model does not match torch: max abs error "
                + ", ".join(f"{k} {v:.3g}" for k, v in bad.items())
                + f" > tolerance {tolerance:g} (nothing was written). Try the other --exporter, another --opset, "
                "or a larger --tolerance if the difference is acceptable"
            )
        meta = {
            "format": ONNX_FORMAT,
            "version": ONNX_VERSION,
            "engine": family.engine,
            "model_kind": family.kind,
            "model_config": cfgmod.to_dict(loaded.model_config),
            "transforms": transform_buffers(model),
            "input": {"name": INPUT_NAME, "shape": ["batch", *network_input_shape(model)], "dtype": "float32"},
            "outputs": list(names),
            "dataset_fingerprint": loaded.dataset_fingerprint,
            "camera": None if loaded.camera is None else loaded.camera.to_dict(),
            "depth_kind": loaded.depth_kind,
            "world_frame": loaded.world_frame,
            "step": loaded.step,
            "source": str(loaded.path) if loaded.path is not None else None,
            "exporter": exporter,
            "opset": opset,
            "check": {"max_abs_error": err, "tolerance": tolerance, "batches": list(batches)},
            # the training cameras, for the coverage the render engine reports (absent in older checkpoints)
            "coverage": _coverage_meta(loaded.extra),
            # the depth's uncertainty fitted at the end of training (absent in older checkpoints)
            EXTRA_KEY: loaded.extra.get(EXTRA_KEY),
            # the GPS datum of the model's world frame, which the render node places GPS fixes with (absent in older
            # checkpoints and for datasets without GPS)
            DATUM_KEY: None if (datum := model_datum(loaded)) is None else datum.to_dict(),
        }
        m = onnx.load(str(tmp))
        meta[GRAPH_DIGEST_KEY] = graph_digest(m)  # the weights and the graph, checked where the file is read
        del m.metadata_props[:]
        entry = m.metadata_props.add()
        entry.key, entry.value = ONNX_META_KEY, json.dumps(meta)
        m.doc_string = (
            f"pose2rgbd {family.kind} model (network input -> serving outputs); see metadata '{ONNX_META_KEY}'"
        )
        with atomic_file(p) as f:  # the one single-file writer: hidden sibling, fsync, rename
            f.write(m.SerializeToString())
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("exported %s (%s, opset %d): max abs error %s", p, exporter, opset, err)
    return ExportReport(p, exporter, opset, network_input_shape(model), names, err, tolerance, batches)


# the key of the ONNX metadata that records graph_digest at export (a file whose graph no longer matches is refused)
GRAPH_DIGEST_KEY = "graph_sha256"


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``pose2rgbd`` metadata of an exported file (raises :class:`CheckpointError` with a clear message)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: ONNX file not found")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: the ONNX file is empty (0 bytes; an interrupted copy?): copy or export it again")
    try:
        m = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        raise CheckpointError(f"{p}: cannot read the ONNX file (damaged or not ONNX): {str(e)[:200]}") from e
    props = {e.key: e.value for e in m.metadata_props}
    if ONNX_META_KEY not in props:
        raise CheckpointError(
            f"{p}: an ONNX file without pose2rgbd metadata (the transforms are missing); export it with "
            "`pose2rgbd export --checkpoint CKPT.pt --format onnx --out MODEL.onnx`"
        )
    try:
        meta = json.loads(props[ONNX_META_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: damaged pose2rgbd metadata ({e})") from e
    if meta.get("format") != ONNX_FORMAT or meta.get("version") != ONNX_VERSION:
        raise CheckpointError(
            f"{p}: pose2rgbd ONNX metadata {meta.get('format')!r} version {meta.get('version')!r}; this pose2rgbd "
            f"reads {ONNX_FORMAT!r} version {ONNX_VERSION}: export again"
        )
    want = meta.get(GRAPH_DIGEST_KEY)
    if want is not None and graph_digest(m) != want:  # (absent in files exported before it was written)
        raise CheckpointError(
            f"{p}: its graph and weights are not the ones exported (their SHA-256 differs from the one its metadata "
            "recorded): the file was changed or damaged after export. Export it again from its checkpoint"
        )
    return meta  # type: ignore[no-any-return]


def is_exported_onnx(path: str | Path) -> bool:
    """Whether ``path`` is an ONNX file with pose2rgbd's metadata (an earlier ``export``), whether or not its graph
    still matches its digest: what ``export --overwrite`` may replace."""
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX (whatever the parser raises for it)
        return False
    return any(e.key == ONNX_META_KEY for e in m.metadata_props)


def graph_digest(model: Any) -> str:
    """SHA-256 of an ONNX model's graph (its nodes and weights; not the metadata that records the digest), as the
    ``onnx`` package serializes the parsed graph: the same bytes at export and wherever the file is read."""
    import hashlib

    return hashlib.sha256(model.graph.SerializeToString()).hexdigest()


def _build_transforms_only(family: Any, config: Any, transforms: dict[str, Any], where: Path) -> ModelBase:
    """The model with its transform buffers restored, built without weights where it can be (on the meta
    device: no memory, and a forward call fails loudly); built normally (random weights, never run) when its
    constructor computes other state that the transforms may need (e.g. a ray table)."""
    for meta_device in (True, False):
        try:
            if meta_device:
                with torch.device("meta"):
                    model: ModelBase = family.build(config)
            else:
                model = family.build(config)
        except Exception:
            if meta_device:  # a constructor doing real computation on tensors
                continue
            raise
        bufs = dict(model.named_buffers(recurse=False))
        for name, spec in transforms.items():
            if name not in bufs:
                raise CheckpointError(f"{where}: transform {name!r} is not a buffer of a {family.kind!r} model")
            t = torch.tensor(spec["data"], dtype=getattr(torch, spec["dtype"])).reshape(spec["shape"])
            model._buffers[name] = t  # the saved state (CPU) replaces the placeholder
        if not any(b is not None and b.is_meta for b in model.buffers(recurse=False)):
            return model.eval()
    raise CheckpointError(f"{where}: cannot rebuild the {family.kind!r} model's transforms; export again")


def _coverage_meta(extra: dict[str, Any]) -> dict[str, Any] | None:
    """``training_poses`` (as nested lists) and ``coverage_rot_weight_m`` of a checkpoint's extra, or None."""
    tq = extra.get("training_poses")
    if tq is None:
        return None
    return {
        "training_poses": np.asarray(tq, dtype=np.float64).round(6).tolist(),
        "coverage_rot_weight_m": float(extra.get("coverage_rot_weight_m", 10.0)),
    }


def _uncertainty_extra(meta: dict[str, object]) -> dict[str, object]:
    """The depth uncertainty an exported file's metadata carries, as a checkpoint's extra holds it (or nothing)."""
    return {EXTRA_KEY: meta[EXTRA_KEY]} if meta.get(EXTRA_KEY) else {}


def load_onnx_checkpoint(path: str | Path, *, expect: Expectations | None = None) -> LoadedCheckpoint:
    """A :class:`LoadedCheckpoint` for an exported file: the model's transforms rebuilt from the metadata (its
    ``forward`` is not usable; serve the graph with ONNX Runtime), ``extra["onnx"]`` the metadata."""
    p = Path(path)
    meta = read_onnx_metadata(p)
    h = parse_header(p, meta, expect or Expectations())
    model = _build_transforms_only(h.family, h.config, dict(meta.get("transforms") or {}), p)
    return LoadedCheckpoint(
        path=p,
        model=model,
        family=h.family,
        model_config=h.config,
        dataset_fingerprint=h.fingerprint,
        camera=h.camera,
        depth_kind=h.depth_kind,
        world_frame=h.world_frame,
        step=h.step,
        extra={
            "onnx": meta,
            **(meta.get("coverage") or {}),
            **_uncertainty_extra(meta),
            **({DATUM_KEY: meta[DATUM_KEY]} if meta.get(DATUM_KEY) else {}),
        },
    )
