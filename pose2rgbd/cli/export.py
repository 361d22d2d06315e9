"""``pose2rgbd export``: a checkpoint -> an ONNX file that ONNX Runtime / TensorRT run (see docs/serving.md), or
(``--bundle``) a hybrid checkpoint with the keyframes of its place map inside (docs/place-map.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "export",
        help="export a checkpoint's network to ONNX (dynamic batch, checked against torch)",
        description=(
            "Export the network of a servable checkpoint (render or localize kind) to ONNX: the graph takes the "
            "model's network input (normalized pose, or images in [-1, 1]) and returns its serving outputs; the "
            "transforms' state (pose normalization, depth range, camera, ...) is stored in the file's metadata "
            "'pose2rgbd'. The file is checked against torch with ONNX Runtime before it is kept. Serve it with "
            "engine.checkpoint MODEL.onnx (engine.backend auto | onnxruntime)."
        ),
        allow_abbrev=False,
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint (.pt) from `pose2rgbd train`")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (onnx)")
    p.add_argument("--out", type=Path, required=True, help="output file (.onnx; with --bundle a .pt)")
    p.add_argument(
        "--bundle",
        action="store_true",
        help="instead of ONNX: one self-contained checkpoint (.pt) of a hybrid model, its weights and the keyframes "
        "of the place map it names inside (at the model's size, as it warps them): it renders what the checkpoint "
        "renders with its map, and needs no map beside it",
    )
    p.add_argument(
        "--exporter",
        choices=["dynamo", "torchscript"],
        default="dynamo",
        help="torch.onnx exporter: dynamo (torch.export based, the default) or torchscript (the older tracer)",
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset version (default 18)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest max abs difference allowed between ONNX Runtime's and torch's outputs (default 1e-4)",
    )
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier output of this command (an exported .onnx, or a bundle)")  # fmt: skip
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.models.checkpoint import load_checkpoint
    from pose2rgbd.models.export import export_onnx, is_exported_onnx
    from pose2rgbd.output_guard import OutputError, OutputKind, check_output, refuse_existing

    out: Path = args.out
    if args.bundle:
        return _bundle(args)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {out}: an ONNX file must end in .onnx (the engine picks its backend by it)")
    check_output(out, OutputKind("ONNX model", False, suffixes=(".onnx",)), inputs=[args.checkpoint],
                 overwrite=args.overwrite)  # fmt: skip
    if args.overwrite and out.is_file() and not is_exported_onnx(out):
        raise OutputError(
            f"{out} exists and is not an ONNX file of `pose2rgbd export` (no pose2rgbd metadata in it: another "
            "model of yours?); --overwrite only replaces an earlier export. Choose another --out or move it away "
            "yourself (nothing was written)"
        )
    refuse_existing(out, overwrite=args.overwrite)
    loaded = load_checkpoint(args.checkpoint, map_location="cpu")
    rep = export_onnx(loaded, out, exporter=args.exporter, opset=args.opset, tolerance=args.tolerance)
    errs = ", ".join(f"{k} {v:.2e}" for k, v in rep.max_abs_error.items())
    print(f"{rep.path}: {loaded.kind} ({loaded.family.engine} engine), {rep.exporter} exporter, opset {rep.opset}")
    print(f"  input {['batch', *rep.input_shape]} -> outputs {list(rep.outputs)} (dynamic batch)")
    print(f"  checked with ONNX Runtime at batch {' and '.join(map(str, rep.batches_checked))}: max abs error {errs}"
          f" (tolerance {rep.tolerance:g})")  # fmt: skip
    print(f"  serve it: engine.checkpoint {rep.path} (engine.backend auto picks onnxruntime)")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from pose2rgbd.errors import CheckpointError
    from pose2rgbd.methods.hybrid import HybridNet
    from pose2rgbd.methods.hybrid.stored import bundle_keyframes, is_bundle
    from pose2rgbd.models.checkpoint import load_checkpoint, save_loaded
    from pose2rgbd.models.coverage import DATUM_KEY, model_datum
    from pose2rgbd.models.depth_uncertainty import EXTRA_KEY as DU_KEY
    from pose2rgbd.output_guard import OutputError, check_checkpoint_output

    out: Path = args.out
    if out.suffix.lower() != ".pt":
        raise OutputError(f"--out {out}: a bundle is a checkpoint file, ending in .pt")
    check_checkpoint_output(out, inputs=[args.checkpoint], overwrite=args.overwrite)
    if args.overwrite and out.is_file() and not is_bundle(out):
        raise OutputError(
            f"{out} exists and is not a bundle of `export --bundle` (a checkpoint with its keyframes inside): a "
            "checkpoint or file of yours, which a copy elsewhere may not keep; --overwrite only replaces an earlier "
            "bundle. Choose another --out or move it away yourself (nothing was written)"
        )
    loaded = load_checkpoint(args.checkpoint, map_location="cpu")  # opens the map it names, checked
    model = loaded.model
    if not isinstance(model, HybridNet) or model.keyframes is None:
        raise CheckpointError(
            f"{args.checkpoint}: a {loaded.kind!r} checkpoint without keyframes; --bundle packs a hybrid model's "
            "keyframes into its checkpoint (other checkpoints are one file already)"
        )
    n = model.n_keyframes
    bundled = "place_map" not in loaded.extra  # its keyframes inside already (a bundle bundled again): no map
    # the GPS datum of the map, kept: the bundle no longer names the map (a checkpoint written before DATUM_KEY)
    datum = model_datum(loaded)
    bundle_keyframes(model)
    extra = {k: v for k, v in loaded.extra.items() if k != "place_map"}
    if datum is not None:
        extra[DATUM_KEY] = datum.to_dict()
    save_loaded(loaded, out, extra=extra)
    was = f"{args.checkpoint}: {args.checkpoint.stat().st_size / 1e6:.1f} MB" + ("" if bundled else " + the map")
    print(f"{out}: {loaded.kind} checkpoint with its {n} keyframes inside ({out.stat().st_size / 1e6:.1f} MB; {was})")
    if DU_KEY not in loaded.extra:
        print(
            f"  note: {args.checkpoint} carries no depth uncertainty (saved before training fitted it: a mid-run "
            "checkpoint, or an older one), so neither does the bundle: its renders will have no depth_sigma. Bundle "
            "a finished run's best.pt, or add it first: `pose2rgbd evaluate --checkpoint "
            f"{args.checkpoint} --dataset DATASET --fit-depth-uncertainty`"
        )
    return 0
