#!/usr/bin/env bash
# Run a sweep definition on the Ray cluster this node belongs to, with the cluster's settings.
#
#   run-sweep.sh SPEC.yaml [more `haloae sweep` options...]
#
# = haloae sweep SPEC.yaml --address auto --resume --set storage=$HALOAE_STORAGE
#     [--set mlflow.tracking_uri=$MLFLOW_TRACKING_URI] [--set data.root=$HALOAE_DATA_ROOT]
#     [--set search.storage=$HALOAE_OPTUNA_STORAGE] ...
#
# The settings come from the environment: ~/haloae.env on launcher-made clusters (loaded by the
# ~/.bashrc hook of setup-node.sh and inherited by Ray Jobs), the Secret/env of the KubeRay pods,
# or the sbatch script. --resume is always passed: it starts the sweep when its storage holds
# nothing yet and continues it otherwise, so the same command both starts and restarts a sweep.
# --address auto joins the running cluster (RAY_ADDRESS if set) instead of starting a local Ray.
set -euo pipefail

die() { echo "run-sweep.sh: $*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: run-sweep.sh SPEC.yaml [haloae sweep options...]"
spec=$1
shift
[ -f "$spec" ] || die "$spec: no such sweep definition (run from the repository root, or give its path)"
[ -n "${HALOAE_STORAGE:-}" ] || die "HALOAE_STORAGE is not set: a multi-node sweep needs storage every node reaches (s3://bucket/prefix or a shared filesystem path)"
command -v haloae >/dev/null 2>&1 || die "haloae is not on PATH (activate the environment setup-node.sh made, or pip install -e .)"

args=(sweep "$spec" --address auto --resume --set "storage=$HALOAE_STORAGE")
if [ -n "${MLFLOW_TRACKING_URI:-}" ]; then
  args+=(--set "mlflow.tracking_uri=$MLFLOW_TRACKING_URI")
fi
if [ -n "${HALOAE_DATA_ROOT:-}" ]; then
  args+=(--set "data.root=$HALOAE_DATA_ROOT")
fi
# Optuna sweeps with remote storage keep their study in a database every retry can reach.
if [ -n "${HALOAE_OPTUNA_STORAGE:-}" ]; then
  args+=(--set "search.storage=$HALOAE_OPTUNA_STORAGE")
fi
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
echo "+ haloae ${args[*]} $*" >&2
exec haloae "${args[@]}" "$@"
