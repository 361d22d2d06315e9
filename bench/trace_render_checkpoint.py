"""The way the render node's configure takes with a checkpoint (not a test, not a timing).

    .venv/bin/python bench/trace_render_checkpoint.py --work /tmp/trace-render     # trains a small hybrid first
    .venv/bin/python bench/trace_render_checkpoint.py --checkpoint CKPT            # an existing checkpoint

What the node host (the rclpy host, the offline bag runner) does when the render node is configured -- the spec's
``configure`` (:data:`pose2rgbd.nodes.renderer.RENDERER`: the engine loaded from ``engine.checkpoint``) then its
``build`` (the node around the engine) -- runs in this process under :func:`sys.setprofile` with the tracer of
``bench/bench_common.py`` (the sibling of ``bench/trace_localize_images.py``, whose docstring defines stops, places,
returns and the way). The piece is the whole of it: node -> inference (engine, load) -> models (checkpoint, model
build) -> the hybrid's named place map -> inference (backend, coverage) -> node. It is counted twice: as the way to
and from the model, the model's own code (``pose2rgbd.methods``: building its network, restoring its keyframes
from the place map, its warm-up forward passes) one place with everything it calls -- the path of the serving
layers the issue counts --, and everything, the model's code too. The default checkpoint is a
hybrid-lite trained for 2 steps at 64x64 on a toy dataset (its keyframes a place map the checkpoint names, opened
at load), the interesting case; the engine runs on the CPU in fp32 with the node's defaults otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_common import Tracer, print_trace  # noqa: E402

MODEL = ("pose2rgbd.methods",)  # the model's own code: one place with all it calls (Tracer's ``opaque``)


def build_checkpoint(work: Path) -> Path:
    """A hybrid-lite at 64x64 trained for 2 steps on a toy dataset; its checkpoint names its keyframe map."""
    from pose2rgbd.cli.main import main as cli
    from pose2rgbd.experiments.toy import make_toy_dataset

    ds, run = work / "dataset", work / "run"
    if not (run / "last.pt").exists():
        if not ds.exists():
            make_toy_dataset(ds, n_survey=30, n_route=8, size=64)
        args = [
            "train", "--method", "hybrid", "--preset", "hybrid-lite", "--dataset", str(ds), "--out", str(run),
            "--cache-root", str(work / "cache"), "--set", "model.size=64", "--set", "train.split=random",
            "--set", "train.max_steps=2", "--set", "train.batch_size=4", "--set", "train.epochs=1",
            "--set", "train.device=cpu", "--set", "train.progress=false", "--set", "train.tensorboard=false",
            "--set", "train.recalibrate_bn=false", "--set", "model.max_keyframes=12", "--overwrite",
        ]  # fmt: skip
        if cli(args) != 0:
            raise SystemExit("training the small hybrid failed")
    return run / "last.pt"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint (default: train one under --work)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pose2rgbd-trace-render"), help="where the small run goes")
    ap.add_argument("--show", action="store_true", help="print the sequences")
    args = ap.parse_args()
    ckpt = args.checkpoint if args.checkpoint is not None else build_checkpoint(args.work)

    from pose2rgbd.inference.common import EngineConfig
    from pose2rgbd.messages import TypestoreFactory, new_typestore, register_custom_msgs
    from pose2rgbd.nodes.renderer import RENDERER, Renderer, RendererConfig

    cfg = RendererConfig(engine=EngineConfig(checkpoint=str(ckpt), device="cpu", precision="fp32"))
    factory = TypestoreFactory(register_custom_msgs(new_typestore("humble")))

    def configure() -> Renderer:
        return RENDERER.build(cfg, factory, None, **RENDERER.configure(cfg))

    configure().close()  # warm: imports and first-use caches do not count
    for what, opaque in (("the way to and from the model", MODEL), ("everything, the model's code too", ())):
        tracer = Tracer(opaque=opaque)
        sys.setprofile(tracer)
        try:
            node = configure()
        finally:
            sys.setprofile(None)
        node.close()
        engine = node.engine
        print(f"{what}: {ckpt} ({engine.loaded.kind}, {engine.size}x{engine.size}, {engine.backend.name})")
        print_trace(tracer.seq, "configure", show=args.show)
    return 0


if __name__ == "__main__":
    sys.exit(main())
