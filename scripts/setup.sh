#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the project with its dev extra. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x .venv/bin/python ]; then
  python3.11 -m venv .venv
fi
# torch/torchvision first, pinned: pip takes these builds from local disk on the project's machines
.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install -q -e ".[dev]"
