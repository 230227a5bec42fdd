# SPDX-License-Identifier: Apache-2.0
"""A per-node cache of decoded category data and of its backbone features, shared by the trials on that node.

Decoding and resizing a category (and synthesising its validation anomalies) costs seconds to
minutes; a sweep runs tens of trials per category. The first trial on a node builds
``haloae.category_data.prepare_data`` once and saves it as tensors and plain values
(``CategoryData.to_state``) with ``haloae.checkpoint.save_checkpoint``; the others read it with
``read_checkpoint(..., mmap=True)``: a ``weights_only`` load (no pickled objects, so no code runs),
its sha256 verified, the tensors memory-mapped so that concurrent trials on the node share one
copy in the page cache. The entry holds its key, which covers everything the data depends on (the
folder, its file list and sizes, image size, split seed, validation fraction, CutPaste, whose
``image_jitter_at=full_size`` keeps the training images at their full size), so a
changed dataset or knob never reads a stale entry. A file lock keeps two trials from building the
same entry at once.

Beside each data entry, ``FeatureDiskStore`` keeps the frozen backbone's features of its image sets
(train/good, its per-epoch subset, validation, test: ``haloae.features``), one file per set and
extractor, ``fm-<category>-<data key>-<feature key>.pt``, written and read the same way (a
``weights_only`` load, sha256 verified, memory-mapped, a file lock per entry; an entry that cannot be
written, the disk full, is a warning: the features are computed again later). The feature key
covers the set's exact images, the extractor's knobs and its weights (``haloae.features.feature_key``),
so the trials of a sweep that differ only in what trains after the backbone compute each set once per
node and category, and any knob that changes fm makes its own entry. Sizes: fm of one image is
``C * (S / pool)^2`` floats, 11.5 MB with the paper's VGG19 at 256 px (an MVTec category's sets:
several GB); the folder is not pruned.

The folder is the user's own (``sweeps.cache_dir.private_dir``): whoever can write there chooses
the data a trial trains on.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from filelock import FileLock

from haloae.category_data import CategoryData, prepare_data
from haloae.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from haloae.config import HaloAEConfig
from haloae.features import FeatureStore
from sweeps.cache_dir import DataCacheError, private_dir

FORMAT = 2  # 1: pickled CategoryData objects in a shared folder


def cache_key(cfg: HaloAEConfig, data_root: str | Path, category: str) -> str:
    root = Path(data_root).resolve() / category
    files = sorted(
        (str(p.relative_to(root)), p.stat().st_size, int(p.stat().st_mtime)) for p in root.rglob("*") if p.is_file()
    )
    key = {
        "root": str(root),
        "files": files,
        "image_size": cfg.model.image_size,
        "seed": cfg.train.seed,
        "val_fraction": cfg.train.val_fraction,
        "val_anomalies": list(cfg.train.val_anomalies),
        # all of CutPaste, image_jitter_at among it: a full_size entry holds the full-size images
        "cutpaste": repr(cfg.cutpaste),
        "format": FORMAT,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def cached_category_data(
    cfg: HaloAEConfig, data_root: str | Path, category: str, cache_dir: str | Path | None = None
) -> CategoryData:
    """``prepare_data(cfg, data_root, category)``, built once per node and memory-mapped after."""
    key = cache_key(cfg, data_root, category)
    path = private_dir(cache_dir) / f"{category}-{key[:24]}.pt"
    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            data = prepare_data(cfg, data_root, category)
            save_checkpoint({"key": key, "data": data.to_state()}, path)
            return data
    try:
        entry = read_checkpoint(path, keys=("key", "data"), mmap=True)
    except CheckpointError as exc:
        raise DataCacheError(f"{exc}; remove it to rebuild the entry") from exc
    if entry["key"] != key:
        raise DataCacheError(
            f"{path}: a data cache entry for other data (key {entry['key'][:24]}); remove it to rebuild"
        )
    return CategoryData.from_state(entry["data"], cfg)


class FeatureDiskStore:
    """``haloae.features.FeatureStore`` on disk, beside the data entry of ``data_key``."""

    def __init__(self, directory: Path, data_key: str, category: str) -> None:
        self.directory, self.data_key, self.category = directory, data_key, category

    def path(self, key: str) -> Path:
        return self.directory / f"fm-{self.category}-{self.data_key[:16]}-{key[:24]}.pt"

    def load(self, key: str) -> torch.Tensor | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = read_checkpoint(path, keys=("key", "data_key", "features"), mmap=True)
        except CheckpointError as exc:
            raise DataCacheError(f"{exc}; remove it to rebuild the entry") from exc
        if (entry["key"], entry["data_key"]) != (key, self.data_key):
            raise DataCacheError(f"{path}: a feature cache entry for other features or data; remove it to rebuild")
        return entry["features"]

    def save(self, key: str, features: torch.Tensor) -> None:
        path = self.path(key)
        with FileLock(str(path) + ".lock"):
            if path.is_file():  # another trial's entry of the same key holds the same features
                return
            try:
                save_checkpoint({"key": key, "data_key": self.data_key, "features": features}, path)
            # a full disk (entries are GBs) costs later trials a recomputation, not this trial; torch.save
            # reports a failed write as RuntimeError ("PytorchStreamWriter failed writing file")
            except (OSError, RuntimeError) as exc:
                path.with_name(path.name + ".tmp").unlink(missing_ok=True)  # save_checkpoint's half-written file
                warnings.warn(f"{path}: feature cache entry not written ({exc}); later trials compute it", stacklevel=2)


def feature_store(
    cfg: HaloAEConfig, data_root: str | Path, category: str, cache_dir: str | Path | None = None
) -> FeatureStore:
    """The per-node feature store of the data ``cached_category_data(cfg, data_root, category)`` gives."""
    return FeatureDiskStore(private_dir(cache_dir), cache_key(cfg, data_root, category), category)
