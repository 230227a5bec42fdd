#!/usr/bin/env bash
# Set everything up, then run the demo on the embedded default (CPU, offline): a synthetic
# MVTec-format dataset, one HaloAE training run on it, its metrics and anomaly-map overlays.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true
.venv/bin/haloae summary --preset paper --set model.backbone.weights=random --batch 1
.venv/bin/haloae synth --out runs/demo/data --categories synth_disc,synth_brick
.venv/bin/haloae train --data-root runs/demo/data --category synth_disc --preset cpu \
  --set train.epochs=4 --set train.steps_per_epoch=8 --out runs/demo/synth_disc
echo "run directory: runs/demo/synth_disc (metrics.json, overlays/*.png, best.pt, checkpoint.pt)"
