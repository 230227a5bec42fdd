#!/usr/bin/env bash
# Install haloae-sweeps and its pinned dependencies on one Ray cluster node (head or worker).
#
# Run by the `setup_commands` of cluster/aws-gpu.yaml, gcp-gpu.yaml and onprem.yaml after
# `ray up` has synced the repository to ~/haloae-sweeps; safe to run again (it is re-run
# whenever the synced files change). Extra arguments are extra pip requirements, e.g. the
# cloud SDK the autoscaler needs on the head node: `setup-node.sh boto3`.
#
# What it does:
#   1. a Python 3.11 virtual environment in $HALOAE_VENV (default ~/haloae-venv), created with
#      uv, which brings its own CPython: the images' system Pythons are 3.10 or 3.12;
#   2. torch/torchvision pinned first (the CUDA builds from PyPI), then this project in editable
#      mode (later syncs need no reinstall) with Ray pinned to the laptop's version plus
#      ray[default] (dashboard, Ray Jobs) - `ray up` and `ray job submit` need matching versions;
#   3. a ~/.bashrc hook that puts the venv first on PATH and exports ~/haloae.env, so the
#      shells of `ray submit` / `ray exec` and the Ray start commands see the same settings;
#   4. if HALOAE_DATA_URI and HALOAE_DATA_ROOT are set in ~/haloae.env, a one-time copy of the
#      dataset (s3://, gs:// or a local/NFS path) to HALOAE_DATA_ROOT on this node.
set -euo pipefail

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
RAY_VERSION=2.60.0
PYTHON_VERSION=3.11

REPO_DIR=${HALOAE_REPO_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
VENV=${HALOAE_VENV:-$HOME/haloae-venv}
ENV_FILE=${HALOAE_ENV_FILE:-$HOME/haloae.env}

log() { echo "[setup-node] $*"; }

[ -f "$REPO_DIR/pyproject.toml" ] || { echo "setup-node.sh: no pyproject.toml in $REPO_DIR (was the repository synced?)" >&2; exit 2; }

export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null 2>&1; then
  log "installing uv"
  curl -LsSf https://astral.sh/uv/install.sh | env UV_NO_MODIFY_PATH=1 sh
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV (Python $PYTHON_VERSION)"
  uv venv --seed --python "$PYTHON_VERSION" "$VENV"
fi

log "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
uv pip install --python "$VENV/bin/python" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
log "installing haloae-sweeps from $REPO_DIR with ray[default]==$RAY_VERSION $*"
uv pip install --python "$VENV/bin/python" -e "$REPO_DIR" "ray[default,tune]==$RAY_VERSION" "$@"

# One hook line in ~/.bashrc, added once. Ray runs its commands in `bash --login -i`, so the
# hook is read by every setup, start, `ray exec` and `ray submit` command on this node.
HOOK="[ -f $HOME/.haloae_profile ] && . $HOME/.haloae_profile"
cat > "$HOME/.haloae_profile" <<PROFILE
# written by haloae-sweeps cluster/setup-node.sh
export PATH="$VENV/bin:\$PATH"
if [ -f "$ENV_FILE" ]; then set -a; . "$ENV_FILE"; set +a; fi
PROFILE
grep -qxF "$HOOK" "$HOME/.bashrc" 2>/dev/null || echo "$HOOK" >> "$HOME/.bashrc"

if [ -f "$ENV_FILE" ]; then
  set -a
  # shellcheck source=/dev/null
  . "$ENV_FILE"
  set +a
fi
if [ -n "${HALOAE_DATA_URI:-}" ] && [ -n "${HALOAE_DATA_ROOT:-}" ]; then
  if [ -f "$HALOAE_DATA_ROOT/.haloae-copied" ]; then
    log "dataset already at $HALOAE_DATA_ROOT"
  else
    log "copying $HALOAE_DATA_URI to $HALOAE_DATA_ROOT"
    mkdir -p "$HALOAE_DATA_ROOT"
    # pyarrow (a Ray Tune dependency) reads s3:// and gs:// with the node's instance credentials
    "$VENV/bin/python" - "$HALOAE_DATA_URI" "$HALOAE_DATA_ROOT" <<'PY'
import sys

import pyarrow.fs as pafs

src, dst = sys.argv[1], sys.argv[2]
pafs.copy_files(src, dst, destination_filesystem=pafs.LocalFileSystem(), use_threads=True)
PY
    touch "$HALOAE_DATA_ROOT/.haloae-copied"
  fi
fi

"$VENV/bin/python" -c "import haloae, ray, torch; print('[setup-node] ready: ray', ray.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
