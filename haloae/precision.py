# SPDX-License-Identifier: Apache-2.0
"""The training forward's float precision (``train.precision``): resolved on a device, applied, recorded.

    applied_precision(requested, device)   auto -> bf16 on CUDA, fp32 elsewhere; bf16 / fp32 as asked
    autocast_for(device, precision)        the autocast context of that precision (bf16 on any device)
    with_applied_precision(cfg, device)    the config with the applied value: what a run records

Honest by construction: the value recorded (MLflow params, checkpoint configs) is the one applied.
``auto`` never reaches a record; an explicit ``bf16`` is applied on the CPU too (CPU bf16 autocast:
slower there, but what was asked), so no run says bf16 while it ran in fp32. The losses are fp32
under any of them (``haloae.losses``); evaluation never runs under autocast.
"""

from __future__ import annotations

import contextlib

import torch

from haloae.config import HaloAEConfig

AUTO, BF16, FP32 = "auto", "bf16", "fp32"


def applied_precision(requested: str, device: torch.device | str) -> str:
    """``bf16`` or ``fp32``: what ``train.precision=requested`` runs in on ``device``."""
    if requested == AUTO:
        return BF16 if torch.device(device).type == "cuda" else FP32
    if requested not in (BF16, FP32):
        raise ValueError(f"train.precision: unknown {requested!r}; valid: {AUTO}, {BF16}, {FP32}")
    return requested


def autocast_for(device: torch.device, precision: str = AUTO):
    """bf16 autocast on ``device``'s type when ``precision`` applies bf16 there; a no-op context for fp32."""
    if applied_precision(precision, device) == BF16:
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def with_applied_precision(cfg: HaloAEConfig, device: torch.device | str) -> HaloAEConfig:
    """``cfg`` with ``train.precision`` the value applied on ``device`` (``cfg`` itself when already concrete)."""
    applied = applied_precision(cfg.train.precision, device)
    return cfg if applied == cfg.train.precision else cfg.replace(**{"train.precision": applied})
