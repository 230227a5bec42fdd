#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default (CPU, offline): the smoke sweep
# - a synthetic MVTec-format dataset, 4 HaloAE trials run by Ray Tune on a local Ray, recorded in
# MLflow (sqlite) - then the paper-style table it produced and how to open the MLflow UI.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true
# --resume: a second ./demo.sh continues (or just re-reports) the same sweep instead of refusing
.venv/bin/haloae sweep sweeps/smoke.yaml --resume
.venv/bin/haloae tables --sweep smoke --table table3
.venv/bin/haloae tables --sweep smoke --table table2
db="$PWD/runs/sweeps/smoke/mlflow.db"
cat <<MSG

The sweep's records: runs/sweeps/smoke/ (spec.yaml, mlflow.db, artifacts/, ray/).
Open the MLflow UI:
  .venv/bin/mlflow ui --backend-store-uri sqlite:///$db --port 5000
  then http://127.0.0.1:5000  -> experiment "smoke" -> the runs table (#/experiments/<id>/runs)
MSG
