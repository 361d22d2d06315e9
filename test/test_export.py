"""`pose2rgbd export --format onnx`: the ONNX file of each serving kind (Pose2RGBD Base and Slice, an image -> pose
toy kind) runs in ONNX Runtime with torch's outputs (max abs error <= 1e-4) at batch sizes other than the traced
one, carries the transforms in its metadata, and is written atomically; a file that does not match is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_helpers import LOC_FAMILY, localize_checkpoint, pose2rgbd_checkpoint

from pose2rgbd.cli.main import main
from pose2rgbd.errors import CheckpointError
from pose2rgbd.models import load_checkpoint
from pose2rgbd.models.export import ONNX_META_KEY, export_onnx, load_onnx_checkpoint
from pose2rgbd.models.registry import register_family, unregister_family

TOL = 1e-4  # outputs in [-1, 1] (confidence in [0, S]); fp32 graph rewrites differ by ~1e-6


@pytest.fixture
def loc_kind():
    register_family(LOC_FAMILY)
    yield LOC_FAMILY
    unregister_family(LOC_FAMILY.kind)


def _ort_vs_torch(onnx_path: Path, ckpt: Path, x: torch.Tensor) -> dict[str, float]:
    """Max abs error per graph output: ONNX Runtime against the checkpoint's torch model (no export code used)."""
    model = load_checkpoint(ckpt).model.eval()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(names, {sess.get_inputs()[0].name: x.numpy()})
    with torch.inference_mode():
        ref = model(x)
    assert all(g.shape[0] == len(x) for g in got)
    return {n: float(np.abs(ref[n].numpy() - g).max()) for n, g in zip(names, got, strict=True)}


@pytest.mark.parametrize("preset", ["base", "slice10"])
def test_cli_exports_pose2rgbd_with_dynamic_batch(tmp_path: Path, preset: str, capsys) -> None:
    ck = pose2rgbd_checkpoint(tmp_path, preset)
    out = tmp_path / f"{preset}.onnx"
    assert (
        main(["export", "--checkpoint", str(ck), "--format", "onnx", "--out", str(out), "--exporter", "torchscript"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "max abs error" in printed and "torchscript" in printed
    m = onnx.load(str(out))
    onnx.checker.check_model(m)
    assert [i.name for i in m.graph.input] == ["input"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis
    outputs = [o.name for o in m.graph.output]
    assert outputs == (["rgb", "depth"] if preset == "base" else ["rgb", "depth", "confidence"])  # no slice maps
    meta = json.loads({p.key: p.value for p in m.metadata_props}[ONNX_META_KEY])
    assert meta["model_kind"] == "pose2rgbd" and meta["engine"] == "render" and meta["model_config"]["preset"] == preset
    assert meta["dataset_fingerprint"] == "fp-test" and meta["camera"]["width"] == 64
    assert set(meta["transforms"]) == {"pose_min", "pose_max", "depth_range"}
    assert meta["transforms"]["depth_range"]["data"] == [1.0, 200.0]
    assert max(meta["check"]["max_abs_error"].values()) <= TOL
    # traced at batch 1, run at batch 3 and 1 on inputs the export never saw
    x = torch.rand(3, 7, generator=torch.Generator().manual_seed(42)) * 2 - 1
    assert max(_ort_vs_torch(out, ck, x).values()) <= TOL
    assert max(_ort_vs_torch(out, ck, x[:1]).values()) <= TOL
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_an_exported_file_damaged_after_export_is_refused(tmp_path: Path) -> None:
    """A weight changed after export (a damaged copy on the robot's disk) no longer matches the graph's digest the
    metadata recorded: the file is refused, naming what to do, instead of served with wrong renders; a file
    exported before the digest was recorded loads as before."""
    from pose2rgbd.models.export import GRAPH_DIGEST_KEY

    out = tmp_path / "m.onnx"
    export_onnx(load_checkpoint(pose2rgbd_checkpoint(tmp_path, "base")), out, exporter="torchscript")
    assert load_onnx_checkpoint(out).extra["onnx"][GRAPH_DIGEST_KEY]
    m = onnx.load(str(out))
    w = next(t for t in m.graph.initializer if len(t.raw_data) >= 64)
    w.raw_data = bytes(b ^ 0x5A for b in w.raw_data[:64]) + w.raw_data[64:]
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(m.SerializeToString())
    with pytest.raises(CheckpointError, match=r"changed or damaged after export.*Export it again"):
        load_onnx_checkpoint(damaged)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"the ONNX file is empty \(0 bytes"):
        load_onnx_checkpoint(tmp_path / "empty.onnx")
    props = {p.key: p for p in m.metadata_props}  # an older export: no digest recorded, nothing to check
    meta = json.loads(props[ONNX_META_KEY].value)
    del meta[GRAPH_DIGEST_KEY]
    props[ONNX_META_KEY].value = json.dumps(meta)
    older = tmp_path / "older.onnx"
    older.write_bytes(m.SerializeToString())
    assert GRAPH_DIGEST_KEY not in load_onnx_checkpoint(older).extra["onnx"]


@pytest.mark.slow  # the dynamo exporter takes ~15-40 s even for a tiny model
def test_dynamo_exporter_and_transforms_reload(tmp_path: Path) -> None:
    ck = pose2rgbd_checkpoint(tmp_path, "slice10")
    loaded = load_checkpoint(ck)
    rep = export_onnx(loaded, tmp_path / "s.onnx", exporter="dynamo")
    assert rep.exporter == "dynamo" and rep.batches_checked == (3, 1) and max(rep.max_abs_error.values()) <= TOL
    x = torch.rand(5, 7, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert max(_ort_vs_torch(rep.path, ck, x).values()) <= TOL
    back = load_onnx_checkpoint(rep.path)  # transforms only: the weights live in the graph
    assert back.kind == "pose2rgbd" and back.camera == loaded.camera and back.dataset_fingerprint == "fp-test"
    T = np.stack([np.eye(4), np.eye(4)])
    T[1, :3, 3] = [50.0, -20.0, 30.0]
    np.testing.assert_array_equal(back.model.poses_to_input(T)[0].numpy(), loaded.model.poses_to_input(T)[0].numpy())
    assert back.model.depth_range_m == loaded.model.depth_range_m == (1.0, 200.0)
    assert all(p.is_meta for p in back.model.parameters())  # no weights were built


def test_localize_kind_exports(tmp_path: Path, loc_kind) -> None:
    ck = localize_checkpoint(tmp_path)
    rep = export_onnx(load_checkpoint(ck), tmp_path / "loc.onnx", exporter="torchscript")
    assert rep.outputs == ("pose", "confidence") and rep.input_shape == (3, 16, 16)  # "unused" is not exported
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    assert max(_ort_vs_torch(rep.path, ck, x).values()) <= TOL


def test_mismatch_is_refused_and_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pose2rgbd.models.export as ex

    ck = pose2rgbd_checkpoint(tmp_path, "base")
    out = tmp_path / "sub" / "m.onnx"
    real = ex._compare

    def off_by_a_lot(ref, got, names):  # type: ignore[no-untyped-def]
        return {k: v + 0.5 for k, v in real(ref, got, names).items()}

    monkeypatch.setattr(ex, "_compare", off_by_a_lot)
    with pytest.raises(CheckpointError, match=r"does not match torch: max abs error rgb 0\.5.*nothing was written"):
        export_onnx(load_checkpoint(ck), out, exporter="torchscript")
    assert list(out.parent.iterdir()) == []


def test_cli_output_rules(tmp_path: Path, capsys) -> None:
    ck = pose2rgbd_checkpoint(tmp_path, "base")
    out = tmp_path / "m.onnx"
    args = ["export", "--checkpoint", str(ck), "--out", str(out), "--exporter", "torchscript"]
    assert main(["export", "--checkpoint", str(ck), "--out", str(tmp_path / "m.bin")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    out.write_text("mine")
    assert main(args) == 2
    assert "pass --overwrite" in capsys.readouterr().err and out.read_text() == "mine"
    assert main([*args, "--overwrite"]) == 2  # a file of the user's named .onnx: not an earlier export
    assert "not an ONNX file of `pose2rgbd export`" in capsys.readouterr().err and out.read_text() == "mine"
    out.unlink()
    assert main(args) == 0 and main([*args, "--overwrite"]) == 0  # an earlier export is replaced
    assert onnx.load(str(out)).graph.output[0].name == "rgb"
    onnx_in = tmp_path / "in.onnx"
    onnx_in.write_bytes(out.read_bytes())
    assert main(["export", "--checkpoint", str(onnx_in), "--out", str(onnx_in), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err
