#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded default: `pose2rgbd demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
.venv/bin/pose2rgbd demo --out "${1:-out/demo}"
