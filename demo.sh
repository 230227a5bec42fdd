#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default (CPU, offline): the smoke sweep
# - a synthetic MVTec-format dataset, 12 HaloAE trials (working vs no attention x 2 categories x 3
# paired seeds, Table 3's fm-only loss) run by Ray Tune on a local Ray, recorded in MLflow (sqlite) - then its Table 3 with
# intervals and the paired test, the HTML report, and the link that opens its runs in the MLflow UI.
# About 6 minutes on 2 idle cores once set up (the first set-up adds 3 to 5).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true
# --resume: a second ./demo.sh continues (or just re-reports) the same sweep instead of refusing
.venv/bin/haloae sweep sweeps/smoke.yaml --resume
echo
# Table 3's shape (text / object means) with its statistics: 95% t intervals over seeds, the paired
# Wilcoxon test against the first row, whether validation ranks the runs as test does
.venv/bin/haloae tables --sweep smoke --table table3
.venv/bin/haloae tables --sweep smoke --table table2 --no-stats
sweep_dir="$PWD/runs/sweeps/smoke"
report=$(.venv/bin/haloae report --sweep smoke --out "$sweep_dir/report.html" | tail -n 1)
runs_link=$(.venv/bin/python - "$sweep_dir/mlflow.db" <<'PY'
import sys

from mlflow import MlflowClient

from sweeps.loading import load_spec
from sweeps.ui_view import runs_page

spec = load_spec("sweeps/smoke.yaml")
experiment = MlflowClient(f"sqlite:///{sys.argv[1]}").get_experiment_by_name(spec.experiment_name())
print(runs_page("http://127.0.0.1:5000", experiment.experiment_id, spec.name))
PY
)
cat <<MSG

The sweep's records: runs/sweeps/smoke/ (spec.yaml, mlflow.db, artifacts/, ray/).
The report (tables, critical-difference diagram, bars with intervals, val-vs-test, learning curves,
overlays), one self-contained file:
  $report
Open the MLflow UI:
  .venv/bin/mlflow ui --backend-store-uri sqlite:///$sweep_dir/mlflow.db --host 127.0.0.1 --port 5000
  then $runs_link
MSG
