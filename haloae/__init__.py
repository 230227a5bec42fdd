# SPDX-License-Identifier: Apache-2.0
"""HaloAE: a HaloNet-based local-attention auto-encoder for anomaly detection (pure PyTorch).

This package never imports Ray, Optuna or MLflow; ``sweeps`` and ``analysis`` build on it.
"""

from haloae.config import ConfigError, HaloAEConfig
from haloae.model import HaloAE, HaloAEOutput, build_model

__all__ = ["ConfigError", "HaloAE", "HaloAEConfig", "HaloAEOutput", "build_model"]
__version__ = "0.1.0"
