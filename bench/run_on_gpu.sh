#!/usr/bin/env bash
# The GPU measurements of docs/results.md on a bare CUDA machine, in phases that fit 10-minute commands.
#
#   bash bench/run_on_gpu.sh setup            # wheels (from .whl/ when the machine is offline), machine facts
#                                              #   (an image with torch, numba, OpenCV, SciPy, onnxruntime lacks
#                                              #   kornia, kornia_rs, pymap3d, rosbags and rosbags' apsw,
#                                              #   backports.zstd, lz4, ruamel.yaml: the `gpu` tests and benches import them)
#   bash bench/run_on_gpu.sh table4           # Table 4 analog, GPU columns (512x512, fp32, synchronized)
#   bash bench/run_on_gpu.sh render           # the default renderer on CUDA: its `gpu` tests, then latency and
#                                              #   renders/s at 512x512 (bench/bench_engine.py; about 3 minutes)
#   bash bench/run_on_gpu.sh graphs           # engine.cuda_graphs: the `gpu` tests, then CUDA graphs against eager
#                                              #   renders, interleaved (bench/bench_cuda_graphs.py; about 3 minutes)
#   bash bench/run_on_gpu.sh profile          # where one render's time goes on CUDA at batch 1 and 16, 512x512
#                                              #   (bench/profile_render.py: operators, kernels, Python)
#   bash bench/run_on_gpu.sh start [SHARDS]   # experiments in SHARDS parallel processes + the self-supervised
#                                              #   depth benches (phase ssd), all detached (they outlive this command)
#   bash bench/run_on_gpu.sh wait SECONDS     # progress until all jobs end or SECONDS pass; packs results
#
# Work lives in $WORK (default /tmp/p2r-gpu): a copy of the checkout the jobs run from (so that the checkout
# can change meanwhile), the experiments' OUT, the benches' outputs and logs. Results are packed into
# $OUT/gpu-results.tar.gz (result.json of every finished run, results of the shards, bench JSON, logs).
# The experiments' settings are in EXP_ARGS below; `pose2rgbd experiments` without --set shard=... on the same
# OUT afterwards (here or on any machine with the packed result.json files) writes the tables.
# EXP_MINUTES (default 1.2) caps each run; with EXP_MINUTES=30 the runs end on the validation plateau
# (early stopping validates every epoch), the converged tables that "Converged tables on this CPU" measured at 64x64.
set -euo pipefail
WORK=${WORK:-/tmp/p2r-gpu}
OUT=${OUT:-$WORK/out}
PY=${PYTHON:-python3}
phase=${1:?phase: setup | table4 | render | graphs | profile | start | wait}
mkdir -p "$WORK" "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if [ -d /tmp/site ]; then export PYTHONPATH=/tmp/site; fi

EXP_ARGS=(--set size=128 --set epochs_table1=400 --set epochs_table2=400 --set budget_minutes=${EXP_MINUTES:-1.2}
          --set patience=5 --set min_delta=0.005 --set paper_lr_control=false --tables 1 2 g
          --splits random route --seeds 0 1 2 --eval-max-frames 300 --no-progress ${EXP_EXTRA:-})

case "$phase" in
setup)
    if [ -d .whl ]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    fi
    export PYTHONPATH=/tmp/site
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
      lscpu | grep -E "Model name|^CPU\(s\)|Flags" | sed 's/Flags:.*/Flags: (see cpu_flags)/'
      $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    } | tee "$OUT/machine.txt"
    grep -o -w -E "avx2|avx512f|avx512_bf16|amx_bf16|fma" /proc/cpuinfo | sort -u | tr '\n' ' ' >> "$OUT/machine.txt"
    rm -rf "$WORK/src" && mkdir -p "$WORK/src" && cp -r pose2rgbd bench "$WORK/src/"
    ;;
table4)
    cd "$WORK/src"
    $PY - <<'EOF' | tee "$OUT/table4_gpu.md"
import json, os
from pose2rgbd.experiments.table4 import run_table4, table4_markdown, machine_description
from pose2rgbd.methods.pose2rgbd import PAPER_PARAMETERS
rows = run_table4(size=512, min_seconds=2.0, devices=("cpu", "cuda"), progress=False)
json.dump({"machine": machine_description(), "rows": rows}, open(os.environ["OUT"] + "/table4_gpu.json", "w"), indent=1)
print(table4_markdown(rows, PAPER_PARAMETERS))
EOF
    ;;
render)
    # a failed test does not stop the measurement; the log says which failed
    $PY -m pytest -q -m gpu -p no:cacheprovider test/test_hybrid_serving.py test/test_training_trainer.py \
        test/test_geometry_training.py 2>&1 \
        | tee "$OUT/gpu-tests.log" || echo "gpu tests: FAILED (see above)"
    $PY bench/bench_engine.py --device "${RENDER_DEVICE:-cuda}" --presets hybrid-fast --sizes ${RENDER_SIZES:-512} \
        --precisions auto fp32 --keyframes "${RENDER_KEYFRAMES:-1801}" --bag-seconds 30 --throughput-batches 1 4 16 64 \
        --throughput-s 5 --settle-max-s 30 --latencies "$OUT/render-latencies.json" 2>&1 | tee "$OUT/render.log"
    ;;
graphs)
    # the `gpu` tests (CUDA graphs' among them), then renders with and without CUDA graphs in one process, in turns
    $PY -m pytest -q -m gpu -p no:cacheprovider test/test_hybrid_serving.py test/test_training_trainer.py \
        test/test_geometry_training.py test/test_hybrid_cuda_graphs.py 2>&1 \
        | tee "$OUT/gpu-tests.log" || echo "gpu tests: FAILED (see above)"
    $PY bench/bench_cuda_graphs.py --device "${RENDER_DEVICE:-cuda}" --size ${RENDER_SIZES:-512} \
        --keyframes "${RENDER_KEYFRAMES:-1801}" --reps 3 --batches 1 4 16 --out "$OUT" 2>&1 | tee "$OUT/cuda-graphs.log"
    ;;
profile)
    # where a batch-1 (and a batch-16) render's time goes on the GPU: operators, kernels per call, Python
    for b in 1 16; do
        $PY bench/profile_render.py --device "${RENDER_DEVICE:-cuda}" --size ${RENDER_SIZES:-512} --batch $b \
            --keyframes "${RENDER_KEYFRAMES:-1801}" --out "$OUT/profile-b$b" > "$OUT/profile-b$b.log" 2>&1 \
            || { echo "profile at batch $b: FAILED"; tail -n 20 "$OUT/profile-b$b.log"; }
    done
    for b in 1 16; do sed -n 5,8p "$OUT/profile-b$b/profile.md" 2>/dev/null; done   # machine, wall, GPU busy
    ;;
start)
    shards=${2:-8}
    cd "$WORK/src"
    mkdir -p "$WORK/logs"
    for k in $(seq 0 $((shards - 1))); do
        OMP_NUM_THREADS=1 setsid nohup $PY -m pose2rgbd experiments --out "$WORK/exp" "${EXP_ARGS[@]}" \
            --set shard=$k/$shards > "$WORK/logs/shard$k.log" 2>&1 < /dev/null &
    done
    setsid nohup bash bench/run_on_gpu.sh ssd > "$WORK/logs/ssd.log" 2>&1 < /dev/null &
    disown -a
    sleep 5
    echo "started $shards shards and the depth benches"
    ;;
ssd)
    # Algorithm 2 on the GPU: the self-supervised depth bench, GPS scale fitted afterwards vs the g2s loss
    cd "$WORK/src"
    mkdir -p "$WORK/logs"
    $PY -m pose2rgbd sim --out "$WORK/ssd/sim" --no-bag --no-video --size 128 96 --duration 120 \
        --route-duration 30 --stride 3 --no-progress --overwrite
    for v in 0 0.1; do
        OMP_NUM_THREADS=2 $PY bench/bench_selfsup_depth.py --dataset "$WORK/ssd/sim/dataset" \
            --out "$WORK/ssd/bench" --minutes "${SSD_MINUTES:-7}" --batch-size 8 --threads 2 \
            --pose-source posenet --velocity-weight $v > "$WORK/logs/ssd-v$v.log" 2>&1 &
    done
    wait
    ;;
wait)
    limit=${2:-500}
    t0=$(date +%s)
    while true; do
        n=$(pgrep -f "pose2rgbd experiments|bench_selfsup_depth|pose2rgbd sim" | wc -l || true)
        { cat "$WORK"/exp/progress.shard*.json 2>/dev/null | tr "\n" " " || true; }; echo " jobs=$n t=$(( $(date +%s) - t0 ))s"
        nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true
        [ "$n" -eq 0 ] && break
        [ $(( $(date +%s) - t0 )) -ge "$limit" ] && break
        sleep 30
    done
    cd "$WORK"
    { find exp -maxdepth 1 -name '*.json'; find exp/runs -name 'result.json' -o -name '*.key.json' \
        -o -name 'metrics.json' -o -name 'per_frame.csv'; find ssd/bench -maxdepth 1 -name '*.json'; echo logs; } \
        2>/dev/null > "$WORK/pack.txt" || true
    tar czf "$OUT/gpu-results.tar.gz" -T "$WORK/pack.txt" 2>/dev/null || true
    ls -la "$OUT"
    ;;
*)
    echo "unknown phase $phase" >&2
    exit 2
    ;;
esac
