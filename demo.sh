#!/usr/bin/env bash
# Set everything up, then run the demo on the embedded default (CPU, offline).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true
.venv/bin/haloae summary --preset paper --set model.backbone.weights=random --batch 1
.venv/bin/haloae summary --preset cpu --batch 2
.venv/bin/python bench/attention.py --quick
