# SPDX-License-Identifier: Apache-2.0
"""HaloAE: a HaloNet-based local-attention auto-encoder for anomaly detection (pure PyTorch).

This package never imports Ray, Optuna or MLflow; ``sweeps`` and ``analysis`` build on it.
The public names load on first use, so ``haloae --help`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from haloae.config import ConfigError, HaloAEConfig
    from haloae.model import HaloAE, HaloAEOutput

_EXPORTS = {
    "ConfigError": "haloae.config",
    "HaloAEConfig": "haloae.config",
    "HaloAE": "haloae.model",
    "HaloAEOutput": "haloae.model",
}
__all__ = ["ConfigError", "HaloAE", "HaloAEConfig", "HaloAEOutput"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'haloae' has no attribute {name!r}")
