# SPDX-License-Identifier: Apache-2.0
"""A per-node cache of decoded category data, shared by the trials running on that node.

Decoding and resizing a category (and synthesising its validation anomalies) costs seconds to
minutes; a sweep runs tens of trials per category. The first trial on a node builds
``haloae.train.prepare_data`` once and saves it; the others ``torch.load(..., mmap=True)`` it: the
tensors are memory-mapped, so concurrent trials on the node share one copy in the page cache
instead of each holding (or unpickling) its own. The key covers everything the data depends on
(the folder, its file list and sizes, image size, split seed, validation fraction, CutPaste), so a
changed dataset or knob never reads a stale entry. A file lock keeps two trials from building the
same entry at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from filelock import FileLock

from haloae.config import HaloAEConfig
from haloae.train import CategoryData, prepare_data

DEFAULT_DIR = Path(tempfile.gettempdir()) / "haloae-data-cache"


def cache_key(cfg: HaloAEConfig, data_root: str | Path, category: str) -> str:
    root = Path(data_root).resolve() / category
    files = sorted(
        (str(p.relative_to(root)), p.stat().st_size, int(p.stat().st_mtime))
        for p in root.rglob("*")
        if p.is_file()
    )
    key = {
        "root": str(root),
        "files": files,
        "image_size": cfg.model.image_size,
        "seed": cfg.train.seed,
        "val_fraction": cfg.train.val_fraction,
        "cutpaste": repr(cfg.cutpaste),
        "format": 1,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def cached_category_data(
    cfg: HaloAEConfig, data_root: str | Path, category: str, cache_dir: str | Path | None = None
) -> CategoryData:
    """``prepare_data(cfg, data_root, category)``, built once per node and memory-mapped after."""
    directory = Path(cache_dir or os.environ.get("HALOAE_DATA_CACHE", DEFAULT_DIR))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{category}-{cache_key(cfg, data_root, category)}.pt"
    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            data = prepare_data(cfg, data_root, category)
            tmp = path.with_suffix(".tmp")
            torch.save(data, tmp)
            os.replace(tmp, path)
            return data
    return torch.load(path, mmap=True, weights_only=False)
