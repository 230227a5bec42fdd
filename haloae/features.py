# SPDX-License-Identifier: Apache-2.0
"""Frozen-backbone features of fixed image sets: computed once per run, and once per node with a store.

    FeatureCache(model, ...)   ``model.features(normalize(images))`` of an image set, by set name
    RunFeatures(store)         one run's features in memory: what its epoch validations, the final
                               scorer and ``evaluate_splits`` share, each model instance of the run
                               (best.pt's included) reading through its own FeatureCache
    FeatureStore               the hook for features that outlive a run (``load`` / ``save`` by key);
                               ``sweeps.datacache.FeatureDiskStore`` implements it per node
    feature_key(...)           the key: everything fm depends on, hashed

The backbone is frozen and a category's image sets are fixed, so fm of a set is the same for every
epoch of a run and for every run of the same extractor on the same data: computing it once changes
no number. The key must then cover everything fm depends on (``feature_key``); a knob left out of
it would read another run's features, silently. A backbone that trains (none does today) is never
cached.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from haloae.data import normalize
from haloae.model import HaloAE


class FeatureStore(Protocol):
    """Where features outlive a run: ``load`` gives the tensor saved under ``key`` or None. haloae
    defines only the hook; ``sweeps.datacache.FeatureDiskStore`` keeps them per node, on disk."""

    def load(self, key: str) -> torch.Tensor | None: ...

    def save(self, key: str, features: torch.Tensor) -> None: ...


class RunFeatures:
    """The feature store of one run: what epoch validation, ``final_scorer`` and ``evaluate_splits``
    share (each model instance of the run, best.pt's included, reads it through a ``FeatureCache``),
    over an optional ``FeatureStore`` shared with other runs. Entries are keyed by ``feature_key``."""

    def __init__(self, store: FeatureStore | None = None) -> None:
        self.store = store
        self._memory: dict[str, torch.Tensor] = {}

    def get(self, key: str, compute: Callable[[], torch.Tensor], keep: bool, pin: bool) -> torch.Tensor:
        if key in self._memory:
            return self._memory[key]
        features = self.store.load(key) if self.store is not None else None
        if features is None:
            features = compute()
            if self.store is not None:
                self.store.save(key, features)
        if keep:  # kept on the host (the paper preset's fm of one validation set is ~1 GB), pinned
            # on CUDA so that each epoch's copy back is one asynchronous transfer per batch
            features = features.pin_memory() if pin else features
            self._memory[key] = features
        return features


class FeatureCache:
    """Frozen-backbone features ``model.features(normalize(images))`` of fixed image sets, computed
    once per run (``run``; by default this instance's own) and, with a ``FeatureStore`` behind the
    run, once per store. A backbone that trains (none does today) is never cached."""

    def __init__(self, model: HaloAE, device: torch.device, batch_size: int, run: RunFeatures | None = None) -> None:
        self.model, self.device, self.batch_size = model, torch.device(device), batch_size
        self.run = run if run is not None else RunFeatures()
        self._images: dict[str, tuple[torch.Tensor, str]] = {}  # name -> (images, their digest): hashed once

    def get(self, name: str, images01: torch.Tensor, keep: bool = True) -> torch.Tensor | None:
        """fm of ``images01`` ``(N, 3, S, S)`` in [0, 1], or None without a backbone; ``keep=False``
        for a set used once per run (the store still gets it): the run does not hold it in memory."""
        if not self.model.has_backbone:
            return None
        if any(p.requires_grad for p in self.model.backbone.parameters()):
            return self._compute(images01)  # features of weights that move are stale after a step
        if name not in self._images or self._images[name][0] is not images01:
            self._images[name] = (images01, tensor_digest(images01))
        key = feature_key(self.model, name, self._images[name][1], self.device, self.batch_size)
        return self.run.get(key, lambda: self._compute(images01), keep, pin=self.device.type == "cuda")

    @torch.no_grad()
    def _compute(self, images01: torch.Tensor) -> torch.Tensor:
        chunks = []
        for i in range(0, len(images01), self.batch_size):
            x = normalize(images01[i : i + self.batch_size]).to(self.device)
            chunks.append(self.model.features(x).cpu())
        return torch.cat(chunks)


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes."""
    digest = hashlib.sha256()
    _feed(digest, tensor)
    return digest.hexdigest()


def _feed(digest, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tensor.dtype}:{tuple(tensor.shape)};".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy())


@functools.cache
def _code_digest() -> str:
    """The extractor's source: an edited backbone must not read features of the old code from a store
    that outlives the process (the per-node one lives in the temp folder)."""
    import haloae.backbone
    import haloae.data
    import haloae.efficientnet_lite

    modules = (haloae.backbone, haloae.data, haloae.efficientnet_lite)
    return hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in modules)).hexdigest()


def feature_key(model: HaloAE, name: str, images_digest: str, device: torch.device, batch_size: int) -> str:
    """Everything fm depends on, hashed: the image set (name, digest of its exact tensor), the
    extractor's knobs, its weights and buffers (fm's standardisation statistics among them; the
    weights themselves, not ``backbone.weights``, which a reloaded checkpoint calls ``random``),
    dtype and autocast, and the numerics of the device and batch: on CUDA the same net gives other
    bits under TF32, another cuDNN or GPU, or another batch size (another kernel), so a store shared
    by runs of other settings would give numbers that differ from a recomputation."""
    m = model.cfg.model
    weights = hashlib.sha256()
    for key, value in model.backbone.state_dict().items():
        weights.update(f"{key};".encode())
        _feed(weights, value)
    dtype = next(iter(model.backbone.parameters()), torch.empty(0)).dtype
    kind = device.type
    autocast = str(torch.get_autocast_dtype(kind)) if torch.is_autocast_enabled(kind) else None
    numerics: dict = {"device": kind, "torch": torch.__version__, "matmul": torch.get_float32_matmul_precision()}
    if kind == "cuda":
        cudnn = torch.backends.cudnn
        numerics |= {
            "gpu": torch.cuda.get_device_name(device),
            "cudnn": [cudnn.version(), cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic],
            "tf32": torch.backends.cuda.matmul.allow_tf32,
        }
    key = {
        "format": 1,
        "set": name,
        "images": images_digest,
        "extractor": {"arch": m.arch, "image_size": m.image_size, **dataclasses.asdict(m.backbone)} | {"weights": None},
        "weights": weights.hexdigest(),
        "code": _code_digest(),
        "dtype": str(dtype),
        "autocast": autocast,
        "numerics": numerics,
        "batch_size": batch_size,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
