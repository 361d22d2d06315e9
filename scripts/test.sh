#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: lint, types, tests. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
.venv/bin/python -m pytest -n 2 --dist loadfile "$@"
